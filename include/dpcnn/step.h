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
#include "dpcnn/net.h"

/* How micro-batch gradients are combined across ranks. */
enum {
    REDUCE_EXACT = 0, /* int64 fixed point: the same bits at any rank count (default) */
    REDUCE_FLOAT = 1, /* one float32 MPI_SUM: one collective less, bits depend on the ranks */
};

typedef struct {
    const Net *net;
    int micro_batch, max_slots, threads, reduction;
    size_t nparams, nstats;  /* floats of parameters, of one micro-batch's BN statistics */
    Workspace **ws;          /* one per thread */
    float *slot_grads;       /* [max_slots][nparams], in the slots' block */
    double *slot_loss;
    int *slot_correct;
    int *slot_exp;           /* [max_slots][ntensors + 1] */
    float *slot_stats;       /* [max_slots][nstats]: batch-norm statistics */
    float *all_stats;        /* [max_micro_total][nstats]: every rank's, in order */
    int *stat_counts, *stat_displs;
    int64_t *acc;            /* gradients, loss, correct (ranks that share no memory) */
    char *own;               /* the slots' block (step.c), NULL once stepper_share put them */
    void **seg;              /* in a shared window: every rank's block; else {own} */
    size_t seg_loss, seg_correct, seg_part; /* where in a block (bytes) */
    const float **slot_ptr;  /* every slot of a step, over all ranks */
    int npieces;             /* the parameters in pieces of one tensor each, */
    int *piece_tensor;       /* for the threads to convert and add: which tensor, */
    size_t *piece_off, *piece_len; /* where and how long */
    double *chunk_loss;      /* evaluation: one loss per chunk */
    int64_t *confusion;      /* evaluation: [threads][classes][classes] */
    int64_t *eval_acc;       /* evaluation: the loss, then the confusion matrix, summed */
    uint8_t *stage;          /* [threads][micro_batch][sample bytes]: a micro-batch, gathered */
    size_t sample_bytes;
    float *fsum;             /* REDUCE_FLOAT: gradients, loss, correct, stop, bad */
    size_t max_chunks;
    double reduce_seconds;   /* time spent combining gradients (agreement, sums, MPI) */
} Stepper;

/* max_slots: this rank's largest number of micro-batches in a step;
 * max_micro_total: the most micro-batches of one step over all ranks. */
Stepper *stepper_create(const Net *net, const InputTransform *input, int micro_batch,
                        int max_slots, int max_micro_total, int threads, size_t max_chunks,
                        int reduction);
void stepper_free(Stepper *st);
/* Put the slots where every rank of the node can read them (dist_shared_alloc),
 * so that the exact sum reads them there (step.c). Collective; where there is
 * no such memory the slots stay this rank's and the sum goes through MPI.
 * Returns 0 if the slots are shared. */
int stepper_share(Stepper *st, Dist *d);

#define STEP_SOME_RANK (1 << 30) /* REDUCE_FLOAT knows that a rank failed, not which */

typedef struct {
    double loss_sum;   /* summed cross-entropy of the global batch */
    int64_t correct;   /* correct predictions in the global batch */
    int stop;          /* in: this rank wants to stop; out: some rank does */
    int bad_rank;      /* out: a rank that saw a non-finite value, STEP_SOME_RANK, or -1 */
    int loss_bad;      /* out: the loss itself was non-finite */
} StepSums;

/* What one step trains on: this rank's nmicro micro-batches, which follow
 * one another in images (a pointer to each sample's pixels) and labels, with
 * the given sizes; positions[i] is sample i's position in the epoch (for
 * dropout's keys). rank_micros[r] is rank r's count of micro-batches, and
 * nmicro_total their sum; batch_total the samples of the global batch. */
typedef struct {
    const uint8_t *const *images;
    const uint8_t *labels;
    const size_t *positions;
    const int *sizes;
    int nmicro, nmicro_total;
    const int *rank_micros;
    int batch_total;
    uint64_t seed;
    int64_t step; /* the global step being trained, from 1 */
} StepBatch;

/* grads = d(loss_sum / batch_total)/d params over every rank's micro-batches,
 * and batch norm's running statistics (buffers, batches) updated once per
 * micro-batch in the global order. Returns -1 on every rank if any value was
 * non-finite (grads and buffers then untouched). */
int stepper_gradient(Stepper *st, Dist *d, float *grads, float *buffers, int64_t *batches,
                     StepSums *sums, const float *params, const StepBatch *b);

/* The second half of stepper_gradient, on its own for the benchmark: combine
 * the nmicro filled slots (gradients, losses, counts, exponents) over ranks,
 * rank_micros[r] of them on rank r. */
int stepper_reduce(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                   int nmicro_total, const int *rank_micros);

typedef struct {
    double loss_sum;
    int64_t correct, count;
    int64_t *confusion; /* [classes][classes], [true][predicted]; the caller's */
} EvalResult;

/* Forward passes (evaluation mode: running statistics, no dropout) over this
 * rank's chunks (chunk c holds samples [c*micro_batch, ...) of `count`,
 * relative to images/labels), summed exactly over ranks; chunks_total counts
 * the chunks over all ranks. */
void stepper_evaluate(Stepper *st, Dist *d, EvalResult *r, const float *params,
                      const float *buffers, const uint8_t *images, const uint8_t *labels,
                      size_t count, size_t chunks_total);

#endif
