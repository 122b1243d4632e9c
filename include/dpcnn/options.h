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
/* A whole number written as plain digits, in [lo, hi]; -1 otherwise. */
int options_parse_whole(const char *s, unsigned long long lo, unsigned long long hi,
                        unsigned long long *out);
/* A finite decimal number > 0 (>= 0 with zero_ok), plainly written; -1 otherwise. */
int options_parse_real(const char *s, int zero_ok, double *out);
/* The first data file that exists among the default places, or NULL. */
const char *options_default_data(void);

#endif
