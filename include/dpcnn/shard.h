/* Who trains on which sample, and getting the samples there.
 *
 * An epoch visits the training set in the order perm (drawn from seed and
 * epoch only). Step s takes the global batch of positions [s*B, s*B + b_s),
 * b_s = min(B, N - s*B). The batch is cut into micro-batches of m positions
 * (the last one shorter): these boundaries depend on N, B and m only, never on
 * the rank count. The M micro-batches of a step are dealt to the P ranks in
 * contiguous runs, rank r taking [floor(r M / P), floor((r+1) M / P)).
 *
 * Storage is separate from use: rank r keeps the contiguous block of sample
 * indices [floor(r N / P), floor((r+1) N / P)) in memory, read once from the
 * HDF5 file with one hyperslab; at each epoch start the ranks exchange samples
 * (one MPI_Alltoallv) so each holds its shard of the epoch, in the order it
 * will train on it. No rank ever reads another rank's part of the file. Per
 * rank, data takes its block (N/P samples) plus, with several ranks, the
 * shard received and a send buffer (about 2 N/P more); a single rank trains
 * straight from its block. */
#ifndef DPCNN_SHARD_H
#define DPCNN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "dpcnn/dist.h"

typedef struct {
    size_t n;  /* samples per epoch */
    int batch; /* B, the global batch */
    int micro; /* m, the micro-batch */
    int ranks; /* P */
} Schedule;

/* floor(r n / P): the first index of part r of n split into P contiguous parts. */
size_t part_first(size_t n, int parts, int r);
/* The part holding index i. */
int part_owner(size_t n, int parts, size_t i);

size_t sched_steps(const Schedule *s);
int sched_step_size(const Schedule *s, size_t step);
int sched_micro_count(const Schedule *s, size_t step);
/* The size of micro-batch j of a step. */
int sched_micro_size(const Schedule *s, size_t step, int j);
/* Rank r's micro-batches of a step: [*first, *last). */
void sched_rank_micros(const Schedule *s, size_t step, int rank, int *first, int *last);
/* Samples rank r trains on in one step: its micro-batches, one run of positions. */
size_t sched_rank_step_samples(const Schedule *s, size_t step, int rank);
/* Samples rank r trains on in steps 0 .. step-1: where that step starts in its shard. */
size_t sched_rank_offset(const Schedule *s, size_t step, int rank);
/* Samples rank r trains on per epoch (the same every epoch). */
size_t sched_rank_samples(const Schedule *s, int rank);
/* The largest number of micro-batches any rank gets in any step. */
int sched_max_rank_micros(const Schedule *s);

/* Samples held in memory: images [count, C*H*W] and labels [count]. */
typedef struct {
    size_t first, count;
    uint8_t *images, *labels;
} Block;

/* The exchange, with buffers allocated once for the whole run. What a rank
 * sends goes out in `rounds` collectives of at most exchange_round_bytes()
 * (and a record per destination) each: a send buffer as large as the rank's
 * block was a third of a rank's memory at np = 4. */
#define EXCHANGE_ROUND_BYTES ((size_t)4 << 20)
/* EXCHANGE_ROUND_BYTES, or $DPCNN_EXCHANGE_BYTES (less memory, more
 * collectives; never less than one record). The same on every rank. */
size_t exchange_round_bytes(size_t record);
typedef struct {
    Schedule sched;
    int rank;
    size_t sample_bytes;      /* C*H*W */
    size_t count;             /* samples this rank trains on per epoch */
    const uint8_t **sample;   /* this epoch's images [C*H*W bytes each], in training order */
    uint8_t *label;           /* and their labels */
    uint8_t *sendbuf, *recvbuf;
    int *scount, *sdispl, *rcount, *rdispl, *cursor;
    int *round_scount, *round_sdispl, *round_rcount, *round_rdispl;
    uint32_t *order;        /* the samples this rank holds, by destination, in epoch order */
    int rounds;
    size_t *positions;      /* this rank's epoch positions, ascending */
} Exchange;

/* The test set is split by evaluation chunks of `chunk` samples (the
 * micro-batch size), dealt to ranks in contiguous runs: read this rank's part
 * of the first n test samples. Sets *chunks (this rank's) and *chunks_total. */
struct Dataset;
int shard_read_test(Block *out, size_t *chunks, size_t *chunks_total, const struct Dataset *ds,
                    size_t n, size_t chunk, int rank, int ranks);

void exchange_init(Exchange *x, const Schedule *s, int rank, size_t sample_bytes);
void exchange_free(Exchange *x);
/* Point x->sample and fill x->label for the epoch whose order is perm,
 * from every rank's block. x->positions[k] is the epoch position of x->sample[k]. */
void exchange_run(Exchange *x, const Block *mine, const uint32_t *perm, Dist *d);

#endif
