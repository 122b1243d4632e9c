/* dpcnn evaluate CHECKPOINT: test loss and accuracy, accuracy per class, and
 * the confusion matrix, printed and optionally written as CSV. Runs on any
 * number of ranks, with the same exact sums as training. */
#ifndef DPCNN_EVALUATE_H
#define DPCNN_EVALUATE_H

#include <stddef.h>

#include "dpcnn/dist.h"

typedef struct {
    const char *weights;   /* a checkpoint or weights file */
    const char *data_path;
    const char *csv;       /* where to write the confusion matrix, or NULL */
    const char *model;     /* --model, for a weights file without a network, or NULL */
    const char *normalize; /* --normalize, likewise, or NULL */
    const char *kernels;   /* --kernels, or NULL (native) */
    size_t test_limit;
    int threads, micro_batch;
    double hang_timeout; /* seconds without progress before the job is ended */
} EvalConfig;

/* argv[0] is "evaluate". Same return values as options_parse. */
int evaluate_parse(EvalConfig *cfg, int argc, char **argv, int speak);
int evaluate_run(const EvalConfig *cfg, Dist *d);

#endif
