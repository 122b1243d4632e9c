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
/* The parameters that decide a run's result, as an experiment names them: the
 * axes of `dpcnn sweep`, its run directories' names and the columns of its
 * table. Each is set by one option (shuffle by two flags). */
typedef enum {
    PARAM_NONE = -1,
    PARAM_EPOCHS, PARAM_BATCH_SIZE, PARAM_MICRO_BATCH, PARAM_LR, PARAM_WARMUP, PARAM_SEED,
    PARAM_SHUFFLE, PARAM_LIMIT, PARAM_TEST_LIMIT, PARAM_DATA, PARAM_MODEL, PARAM_NORMALIZE,
    PARAM_INIT, PARAM_REDUCTION, PARAM_KERNELS,
    PARAM_COUNT
} RunParam;
/* "batch_size", "lr", ... */
const char *options_param_name(RunParam p);
/* The parameter's value in cfg as text: "0.01", "yes", "all" (no --limit) ... */
void options_param_value(const TrainConfig *cfg, RunParam p, char *buf, size_t n);

/* The shortest decimal that reads back as x: 0.01, not 0.01000000000000000021. */
void options_format_real(char *buf, size_t n, double x);

/* One option of a training run (the table options_parse reads). */
typedef struct {
    const char *name; /* without the dashes: "batch-size" */
    int id;
    int takes_value;
    RunParam param;         /* what it decides, or PARAM_NONE: it never changes a bit */
    const char *flag_value; /* for a flag that sets a parameter: its value ("no") */
} OptionSpec;
/* The training option called name (without dashes), or NULL. */
const OptionSpec *options_find(const char *name);

/* The first data file that exists among the default places, or NULL. */
const char *options_default_data(void);

#endif
