/* The step: a rank's micro-batches, then the agreement and the exact sum.
 *
 *   1. each micro-batch runs forward and backward on one worker thread into
 *      its own gradient slot (single-threaded OpenBLAS, the same shapes
 *      wherever it runs, so the same bits wherever it runs);
 *   2. one MPI_MAX over a few integers agrees on the largest exponent of every
 *      tensor's gradient and of the loss (the fixed-point grid), on whether
 *      anything was non-finite, and on whether to stop;
 *   3. every slot is rounded onto the grid and the integers are summed:
 *      exact, so the same for any split of the micro-batches over ranks and
 *      threads. Where the ranks share a node's memory, every slot lies in it
 *      and rank r sums the r-th part of every rank's slots straight to
 *      floats, which the ranks then copy from each other; elsewhere the
 *      integers go through one MPI_SUM over int64.
 * doc/determinism.md has the design and its cost. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "dpcnn/error.h"
#include "dpcnn/step.h"
#include "dpcnn/watchdog.h"
#include "dpcnn/xsum.h"

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* A rank's slots lie in one block, a segment: the slots' gradients, losses
 * and correct counts, then (shared only) this rank's part of the summed
 * gradient as floats; every piece 64-byte aligned. In a shared window every
 * segment is laid out alike, for the most slots of any rank. */
static size_t align64(size_t b)
{
    return (b + 63) & ~(size_t)63;
}

static void slots_layout(Stepper *st, int slots)
{
    st->seg_loss = align64(sizeof(float) * (size_t)slots * st->nparams);
    st->seg_correct = st->seg_loss + align64(sizeof(double) * (size_t)slots);
    st->seg_part = st->seg_correct + align64(sizeof(int) * (size_t)slots);
}

static void slots_point(Stepper *st, char *seg)
{
    st->slot_grads = (float *)(void *)seg;
    st->slot_loss = (double *)(void *)(seg + st->seg_loss);
    st->slot_correct = (int *)(void *)(seg + st->seg_correct);
}

Stepper *stepper_create(const Net *net, const InputTransform *input, int micro_batch,
                        int max_slots, int max_micro_total, int threads, size_t max_chunks,
                        int reduction)
{
    Stepper *st = XCALLOC(Stepper, 1);
    st->net = net;
    st->nparams = net->nparams;
    st->nstats = 2 * net->bn_channels;
    st->reduction = reduction;
    st->fsum = XCALLOC(float, st->nparams + 4);
    st->micro_batch = micro_batch;
    st->max_slots = max_slots < 1 ? 1 : max_slots;
    st->threads = threads < 1 ? 1 : threads;
    st->max_chunks = max_chunks;
    st->sample_bytes = shape_count(net->input);
    st->ws = XCALLOC(Workspace *, (size_t)st->threads);
    for (int i = 0; i < st->threads; i++)
        st->ws[i] = workspace_create(net, input, micro_batch);
    const int NT = net->ntensors;
    slots_layout(st, st->max_slots);
    st->own = XCALLOC(char, st->seg_part);
    st->seg = XCALLOC(void *, 1);
    st->seg[0] = st->own;
    slots_point(st, st->own);
    st->slot_exp = XCALLOC(int, (size_t)st->max_slots * (NT + 1));
    st->slot_stats = XCALLOC(float, (size_t)st->max_slots * st->nstats);
    st->all_stats = XCALLOC(float, (size_t)(max_micro_total > 0 ? max_micro_total : 1) * st->nstats);
    st->acc = XCALLOC(int64_t, st->nparams + 2);
    /* every slot of a step, over all ranks: at most max_micro_total */
    const int most = max_micro_total > st->max_slots ? max_micro_total : st->max_slots;
    st->slot_ptr = XCALLOC(const float *, (size_t)most);
    /* pieces of at most PIECE floats, each inside one tensor (its own grid) */
    enum { PIECE = 4096 };
    size_t np = 0;
    for (int t = 0; t < NT; t++)
        np += (net->tensors[t].count + PIECE - 1) / PIECE;
    st->piece_tensor = XCALLOC(int, np + 1);
    st->piece_off = XCALLOC(size_t, np + 1);
    st->piece_len = XCALLOC(size_t, np + 1);
    for (int t = 0; t < NT; t++)
        for (size_t at = 0; at < net->tensors[t].count; at += PIECE) {
            const size_t left = net->tensors[t].count - at;
            st->piece_tensor[st->npieces] = t;
            st->piece_off[st->npieces] = net->tensors[t].offset + at;
            st->piece_len[st->npieces++] = left < PIECE ? left : PIECE;
        }
    st->chunk_loss = XCALLOC(double, max_chunks + 1);
    st->confusion = XCALLOC(int64_t, (size_t)st->threads * net->classes * net->classes);
    st->eval_acc = XCALLOC(int64_t, 1 + (size_t)net->classes * net->classes);
    st->stage = XCALLOC(uint8_t, (size_t)st->threads * micro_batch * st->sample_bytes);
    return st;
}

void stepper_free(Stepper *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->threads; i++)
        workspace_free(st->ws[i]);
    free(st->ws);
    free(st->own); /* NULL where the slots lie in the Dist's window */
    free(st->seg);
    free(st->slot_ptr);
    free(st->slot_exp);
    free(st->slot_stats);
    free(st->all_stats);
    free(st->stat_counts);
    free(st->stat_displs);
    free(st->acc);
    free(st->piece_tensor);
    free(st->piece_off);
    free(st->piece_len);
    free(st->chunk_loss);
    free(st->confusion);
    free(st->eval_acc);
    free(st->stage);
    free(st->fsum);
    free(st);
}

int stepper_share(Stepper *st, Dist *d)
{
    const int P = dist_size(d);
    int most = st->max_slots;
    dist_max_int(d, &most, 1);
    slots_layout(st, most); /* (this rank still fills at most max_slots) */
    void **seg = XCALLOC(void *, (size_t)P);
    if (dist_shared_alloc(d, st->seg_part + sizeof(float) * st->nparams, seg) < 0) {
        free(seg);
        slots_layout(st, st->max_slots);
        return -1;
    }
    for (int q = 0; q < P; q++)
        if ((uintptr_t)seg[q] % sizeof(double))
            DIE("rank %d's shared segment is not aligned for doubles", q);
    free(st->own);
    st->own = NULL;
    free(st->seg);
    st->seg = seg;
    slots_point(st, seg[dist_rank(d)]);
    return 0;
}

/* Control integers agreed by MPI_MAX: the exponents first (one per tensor,
 * then the loss), then the rank that saw a non-finite value, then the stop. */
#define CTL_LOSS(nt) (nt)
#define CTL_BAD_RANK(nt) ((nt) + 1)
#define CTL_STOP(nt) ((nt) + 2)
#define CTL_COUNT(nt) ((nt) + 3)

/* The sum where every slot can be read: rank r takes the r-th part of the
 * parameters (of P), sums every rank's slots there straight to floats in its
 * segment, and after a barrier every rank copies every part. One rank takes
 * all of it, into grads. The dist_max_int before was the barrier that makes
 * the slots visible. Integers add in any order, so the bits are sum_mpi's. */
static void sum_parts(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                      const int *rank_micros, const int *shift)
{
    const Net *net = st->net;
    const int NT = net->ntensors, P = dist_size(d), r = dist_rank(d);
    const size_t NPARAM = st->nparams;
    int ns = 0;
    int64_t loss = 0, correct = 0;
    for (int q = 0; q < P; q++) {
        const char *seg = st->seg[q];
        const float *g = (const float *)(const void *)seg;
        const double *l = (const double *)(const void *)(seg + st->seg_loss);
        const int *c = (const int *)(const void *)(seg + st->seg_correct);
        const int n = P == 1 ? nmicro : rank_micros[q];
        for (int k = 0; k < n; k++) {
            st->slot_ptr[ns++] = g + (size_t)k * NPARAM;
            xsum_add_f64(&loss, &l[k], 1, shift[NT]);
            correct += c[k];
        }
    }
    const size_t lo = NPARAM * (size_t)r / (size_t)P, hi = NPARAM * (size_t)(r + 1) / (size_t)P;
    float *part = P == 1 ? grads : (float *)((char *)st->seg[r] + st->seg_part);
#pragma omp parallel for num_threads(st->threads) schedule(static)
    for (int p = 0; p < st->npieces; p++) {
        const size_t a = st->piece_off[p] > lo ? st->piece_off[p] : lo;
        const size_t end = st->piece_off[p] + st->piece_len[p], b = end < hi ? end : hi;
        if (a >= b)
            continue;
        const float *slot[ns > 0 ? ns : 1];
        for (int k = 0; k < ns; k++)
            slot[k] = st->slot_ptr[k] + a;
        xsum_sum_get_f32(part + a, slot, ns, b - a, shift[st->piece_tensor[p]]);
    }
    if (P > 1) {
        dist_shared_sync(d);
        for (int q = 0; q < P; q++) {
            const size_t a = NPARAM * (size_t)q / (size_t)P;
            const size_t b = NPARAM * (size_t)(q + 1) / (size_t)P;
            memcpy(grads + a, (const float *)((const char *)st->seg[q] + st->seg_part) + a,
                   sizeof(float) * (b - a));
        }
    }
    sums->loss_sum = xsum_get_f64(loss, shift[NT]);
    sums->correct = correct;
}

/* The sum through MPI, for ranks that share no memory: this rank's slots
 * summed onto the grid (threads take pieces of the parameters), one MPI_SUM
 * over the int64, then the floats. */
static void sum_mpi(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                    const int *shift)
{
    const int NT = st->net->ntensors;
    const size_t NPARAM = st->nparams;
    int64_t *acc = st->acc;
#pragma omp parallel for num_threads(st->threads) schedule(static)
    for (int p = 0; p < st->npieces; p++) {
        const size_t off = st->piece_off[p];
        const float *slot[nmicro > 0 ? nmicro : 1];
        for (int k = 0; k < nmicro; k++)
            slot[k] = st->slot_grads + (size_t)k * NPARAM + off;
        xsum_sum_f32(acc + off, slot, nmicro, st->piece_len[p], shift[st->piece_tensor[p]]);
    }
    acc[NPARAM] = acc[NPARAM + 1] = 0;
    for (int k = 0; k < nmicro; k++) {
        xsum_add_f64(acc + NPARAM, &st->slot_loss[k], 1, shift[NT]);
        acc[NPARAM + 1] += st->slot_correct[k];
    }
    dist_sum_int64(d, acc, NPARAM + 2);
#pragma omp parallel for num_threads(st->threads) schedule(static)
    for (int p = 0; p < st->npieces; p++)
        xsum_get_f32(grads + st->piece_off[p], acc + st->piece_off[p], st->piece_len[p],
                     shift[st->piece_tensor[p]]);
    sums->loss_sum = xsum_get_f64(acc[NPARAM], shift[NT]);
    sums->correct = acc[NPARAM + 1];
}

/* The exact combination: agree on a fixed-point grid per tensor (one MPI_MAX
 * over a few integers), round every slot onto it and add the integers (from
 * every rank's slots where they can be read, sum_parts; else through one
 * MPI_SUM over int64, sum_mpi). Exact, so the same for any split over ranks
 * and threads. */
static int reduce_exact(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                        int nmicro_total, const int *rank_micros)
{
    const Net *net = st->net;
    const int NT = net->ntensors;
    int ctl[CTL_COUNT(NET_MAX_TENSORS)];
    for (int i = 0; i <= NT; i++)
        ctl[i] = XSUM_ZERO;
    ctl[CTL_BAD_RANK(NT)] = -1;
    ctl[CTL_STOP(NT)] = sums->stop;
    for (int k = 0; k < nmicro; k++)
        for (int i = 0; i <= NT; i++) {
            int e = st->slot_exp[(size_t)k * (NT + 1) + i];
            ctl[i] = e > ctl[i] ? e : ctl[i];
            if (e == XSUM_NONFINITE)
                ctl[CTL_BAD_RANK(NT)] = dist_rank(d);
        }
    dist_max_int(d, ctl, CTL_COUNT(NT));
    sums->stop = ctl[CTL_STOP(NT)];
    sums->bad_rank = ctl[CTL_BAD_RANK(NT)];
    sums->loss_bad = ctl[CTL_LOSS(NT)] == XSUM_NONFINITE;
    if (sums->bad_rank >= 0)
        return -1;

    int shift[NET_MAX_TENSORS + 1];
    for (int i = 0; i <= NT; i++)
        shift[i] = xsum_shift(ctl[i], nmicro_total);
    const int P = dist_size(d);
    if (P == 1 || !st->own)
        sum_parts(st, d, grads, sums, nmicro, rank_micros, shift);
    else
        sum_mpi(st, d, grads, sums, nmicro, shift);
    return 0;
}

/* The plain combination, for when the exact one costs too much (very many
 * ranks): each rank adds its slots in float, in slot order, and one float32
 * MPI_SUM adds the ranks'. Same bits run to run at a given rank count, but
 * not across rank counts. Loss, correct count and the flags ride along. */
static int reduce_float(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro)
{
    const int NT = st->net->ntensors;
    const size_t NPARAM = st->nparams;
    float *f = st->fsum;
    memset(f, 0, sizeof(float) * (NPARAM + 4));
    int bad = 0;
    for (int k = 0; k < nmicro; k++) {
        const float *g = st->slot_grads + (size_t)k * NPARAM;
        for (size_t i = 0; i < NPARAM; i++)
            f[i] += g[i];
        f[NPARAM] += (float)st->slot_loss[k];
        f[NPARAM + 1] += (float)st->slot_correct[k];
        for (int i = 0; i <= NT; i++)
            bad |= st->slot_exp[(size_t)k * (NT + 1) + i] == XSUM_NONFINITE;
    }
    f[NPARAM + 2] = (float)sums->stop;
    f[NPARAM + 3] = (float)bad;
    dist_sum_float(d, f, NPARAM + 4);
    sums->stop = f[NPARAM + 2] > 0.0f;
    sums->loss_bad = !isfinite(f[NPARAM]);
    sums->bad_rank = f[NPARAM + 3] > 0.0f ? STEP_SOME_RANK : -1;
    if (sums->bad_rank >= 0)
        return -1;
    memcpy(grads, f, sizeof(float) * NPARAM);
    sums->loss_sum = f[NPARAM];
    sums->correct = (int64_t)f[NPARAM + 1];
    return 0;
}

/* Batch norm's running statistics: every rank's micro-batch statistics,
 * gathered in the global order of the micro-batches (ranks hold contiguous
 * runs of them), applied one after another, as PyTorch would update them
 * forward pass after forward pass. Gathered, not summed: no arithmetic on the
 * wire, so the same bits at any rank count. */
static void update_running(Stepper *st, Dist *d, float *buffers, int64_t *batches,
                           const StepBatch *b)
{
    const int P = dist_size(d);
    if (!st->stat_counts) {
        st->stat_counts = XCALLOC(int, (size_t)P);
        st->stat_displs = XCALLOC(int, (size_t)P);
    }
    int off = 0;
    for (int r = 0; r < P; r++) {
        st->stat_counts[r] = b->rank_micros[r] * (int)st->nstats;
        st->stat_displs[r] = off;
        off += st->stat_counts[r];
    }
    dist_allgatherv_float(d, st->slot_stats, st->stat_counts[dist_rank(d)], st->all_stats,
                          st->stat_counts, st->stat_displs);
    for (int j = 0; j < b->nmicro_total; j++)
        model_update_running(st->net, buffers, batches, st->all_stats + (size_t)j * st->nstats);
}

int stepper_gradient(Stepper *st, Dist *d, float *grads, float *buffers, int64_t *batches,
                     StepSums *sums, const float *params, const StepBatch *b)
{
    const int nmicro = b->nmicro;
    if (nmicro > st->max_slots)
        DIE("%d micro-batches exceed the %d slots", nmicro, st->max_slots);
    const Net *net = st->net;
    const int NT = net->ntensors;
    const size_t NPARAM = st->nparams, PIX = st->sample_bytes;
    const float scale = 1.0f / (float)b->batch_total;
    int offset[nmicro > 0 ? nmicro : 1];
    for (int k = 0, off = 0; k < nmicro; k++) {
        offset[k] = off;
        off += b->sizes[k];
    }

#pragma omp parallel for num_threads(st->threads) schedule(static)
    for (int k = 0; k < nmicro; k++) {
        const int tid = thread_id();
        Workspace *ws = st->ws[tid];
        float *g = st->slot_grads + (size_t)k * NPARAM;
        /* gather the micro-batch's images (they may lie anywhere) into one array */
        uint8_t *img = st->stage + (size_t)tid * st->micro_batch * PIX;
        for (int i = 0; i < b->sizes[k]; i++)
            memcpy(img + (size_t)i * PIX, b->images[offset[k] + i], PIX);
        /* and ask for the next one's while this one computes (a static
         * schedule gives each thread a contiguous run of micro-batches): in
         * shuffled order each image was a run of cache misses the copy waited
         * for, 3% of an epoch */
        if (k + 1 < nmicro)
            for (int i = 0; i < b->sizes[k + 1]; i++)
                for (size_t o = 0; o < PIX; o += 64)
                    __builtin_prefetch(b->images[offset[k + 1] + i] + o);
        const uint8_t *lab = b->labels + offset[k];
        const PassInfo pass = {1, b->seed, b->step, b->positions[offset[k]]};
        int correct = 0;
        memset(g, 0, sizeof(float) * NPARAM);
        st->slot_loss[k] = model_forward(ws, params, buffers, img, lab, b->sizes[k], &correct,
                                         &pass);
        model_backward(g, ws, params, lab, b->sizes[k], scale);
        st->slot_correct[k] = correct;
        if (st->nstats)
            memcpy(st->slot_stats + (size_t)k * st->nstats, ws->bn_stats,
                   sizeof(float) * st->nstats);
        int *e = st->slot_exp + (size_t)k * (NT + 1);
        for (int t = 0; t < NT; t++)
            e[t] = xsum_exponent_f32(g + net->tensors[t].offset, net->tensors[t].count);
        e[NT] = xsum_exponent_f64(&st->slot_loss[k], 1);
    }

    if (stepper_reduce(st, d, grads, sums, nmicro, b->nmicro_total, b->rank_micros) < 0)
        return -1;
    if (st->nstats)
        update_running(st, d, buffers, batches, b);
    return 0;
}

int stepper_reduce(Stepper *st, Dist *d, float *grads, StepSums *sums, int nmicro,
                   int nmicro_total, const int *rank_micros)
{
    const double t0 = dist_wtime();
    int rc = st->reduction == REDUCE_FLOAT
                 ? reduce_float(st, d, grads, sums, nmicro)
                 : reduce_exact(st, d, grads, sums, nmicro, nmicro_total, rank_micros);
    st->reduce_seconds += dist_wtime() - t0;
    return rc;
}

void stepper_evaluate(Stepper *st, Dist *d, EvalResult *r, const float *params,
                      const float *buffers, const uint8_t *images, const uint8_t *labels,
                      size_t count, size_t chunks_total)
{
    const size_t m = (size_t)st->micro_batch, PIX = st->sample_bytes;
    const int K = st->net->classes;
    const size_t NCONF = (size_t)K * K;
    const size_t chunks = (count + m - 1) / m;
    if (chunks > st->max_chunks)
        DIE("%zu evaluation chunks exceed the %zu planned", chunks, st->max_chunks);
    memset(st->confusion, 0, sizeof(int64_t) * (size_t)st->threads * NCONF);
    const PassInfo pass = {0, 0, 0, 0};
#pragma omp parallel for num_threads(st->threads) schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        const int tid = thread_id();
        Workspace *ws = st->ws[tid];
        const size_t first = c * m;
        const int n = (int)(first + m <= count ? m : count - first);
        int correct = 0;
        st->chunk_loss[c] = model_forward(ws, params, buffers, images + first * PIX,
                                          labels + first, n, &correct, &pass);
        watchdog_tick(); /* a long evaluation is progress, chunk by chunk */
        int64_t *conf = st->confusion + (size_t)tid * NCONF;
        for (int s = 0; s < n; s++) {
            const float *z = model_logits(ws, s);
            int best = 0;
            for (int k = 1; k < K; k++)
                if (z[k] > z[best])
                    best = k;
            conf[labels[first + s] * K + best]++;
        }
    }
    int e = xsum_exponent_f64(st->chunk_loss, chunks);
    dist_max_int(d, &e, 1);
    const int shift = xsum_shift(e, (long)chunks_total);
    int64_t *acc = st->eval_acc;
    memset(acc, 0, sizeof(int64_t) * (1 + NCONF));
    for (size_t c = 0; c < chunks && e != XSUM_NONFINITE; c++)
        xsum_add_f64(acc, &st->chunk_loss[c], 1, shift);
    for (int t = 0; t < st->threads; t++)
        for (size_t i = 0; i < NCONF; i++)
            acc[1 + i] += st->confusion[(size_t)t * NCONF + i];
    dist_sum_int64(d, acc, 1 + NCONF);
    r->loss_sum = e == XSUM_NONFINITE ? NAN : xsum_get_f64(acc[0], shift);
    r->correct = r->count = 0;
    for (size_t i = 0; i < NCONF; i++) {
        if (r->confusion)
            r->confusion[i] = acc[1 + i];
        r->count += acc[1 + i];
        if (i / (size_t)K == i % (size_t)K)
            r->correct += acc[1 + i];
    }
}
