/* The command line of dpcnn. */
#ifndef DPCNN_OPTIONS_H
#define DPCNN_OPTIONS_H

#include <stdio.h>

#include "dpcnn/train.h"

enum { OPTIONS_RUN = 0, OPTIONS_EXIT_OK = 1, OPTIONS_EXIT_USAGE = 2 };

/* Fills cfg from argv. Prints help, version or one usage error when `speak`
 * (rank 0), and says whether to run or to exit. */
int options_parse(TrainConfig *cfg, int argc, char **argv, int speak);
void options_usage(FILE *f);
/* The first data file that exists among the default places, or NULL. */
const char *options_default_data(void);

#endif
