/* One training step's gradient and one evaluation pass, exact across ranks.
 *
 * A rank's micro-batches are run by its worker threads, one micro-batch per
 * thread at a time, each into its own gradient slot; the slots of every rank
 * are then summed exactly (xsum.h), so the gradient and the loss are the same
 * bits however the micro-batches were spread over ranks and threads. Both
 * calls are collective over the Dist. */
#ifndef DPCNN_STEP_H
#define DPCNN_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "dpcnn/dist.h"
#include "dpcnn/model.h"

/* How micro-batch gradients are combined across ranks. */
enum {
    REDUCE_EXACT = 0, /* int64 fixed point: the same bits at any rank count (default) */
    REDUCE_FLOAT = 1, /* one float32 MPI_SUM: one collective less, bits depend on the ranks */
};

typedef struct {
    int micro_batch, max_slots, threads, reduction;
    Workspace **ws;       /* one per thread */
    float *slot_grads;    /* [max_slots][MODEL_NUM_PARAMS] */
    double *slot_loss;
    int *slot_correct;
    int *slot_exp;        /* [max_slots][MODEL_NUM_TENSORS + 1] */
    int64_t *acc;         /* gradients, loss, correct */
    double *chunk_loss;   /* evaluation: one loss per chunk */
    int64_t *confusion;   /* evaluation: [threads][10][10] */
    uint8_t *stage;       /* [threads][micro_batch][784]: a micro-batch's images, gathered */
    float *fsum;          /* REDUCE_FLOAT: gradients, loss, correct, stop, bad */
    size_t max_chunks;
    double reduce_seconds; /* time spent combining gradients (agreement, sums, MPI) */
} Stepper;

Stepper *stepper_create(int micro_batch, int max_slots, int threads, size_t max_chunks,
                        int reduction);
void stepper_free(Stepper *st);

#define STEP_SOME_RANK (1 << 30) /* REDUCE_FLOAT knows that a rank failed, not which */

typedef struct {
    double loss_sum;   /* summed cross-entropy of the global batch */
    int64_t correct;   /* correct predictions in the global batch */
    int stop;          /* in: this rank wants to stop; out: some rank does */
    int bad_rank;      /* out: a rank that saw a non-finite value, STEP_SOME_RANK, or -1 */
    int loss_bad;      /* out: the loss itself was non-finite */
} StepSums;

/* grads = d(loss_sum / batch_total)/d params, over every rank's micro-batches.
 * This rank's nmicro micro-batches follow one another in images (a pointer
 * to each sample's 784 pixels) and labels, with the given sizes; nmicro_total
 * counts them over all ranks. Returns -1 on every rank if any value was
 * non-finite (grads then untouched). */
int stepper_gradient(Stepper *st, Dist *d, float *grads, StepSums *sums, const float *params,
                     const uint8_t *const *images, const uint8_t *labels, const int *sizes,
                     int nmicro, int nmicro_total, int batch_total);

/* The second half of stepper_gradient, on its own for the benchmark: combine
 * the nmicro filled slots (gradients, losses, counts, exponents) over ranks. */
int stepper_reduce(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                   int nmicro_total);

typedef struct {
    double loss_sum;
    int64_t correct, count;
    int64_t confusion[MODEL_CLASSES * MODEL_CLASSES]; /* [true][predicted] */
} EvalResult;

/* Forward passes over this rank's chunks (chunk c holds samples
 * [c*micro_batch, ...) of `count`, relative to images/labels), summed exactly
 * over ranks; chunks_total counts the chunks over all ranks. */
void stepper_evaluate(Stepper *st, Dist *d, EvalResult *r, const float *params,
                      const uint8_t *images, const uint8_t *labels, size_t count,
                      size_t chunks_total);

#endif
