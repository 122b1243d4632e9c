#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/options.h"
#include "dpcnn/shard.h"


size_t part_first(size_t n, int parts, int r)
{
    return (size_t)((unsigned __int128)n * (unsigned)r / (unsigned)parts);
}

int part_owner(size_t n, int parts, size_t i)
{
    /* floor(r n / P) <= i  <=>  r < (i+1) P / n, so r = floor(((i+1) P - 1) / n). */
    return (int)(((unsigned __int128)(i + 1) * (unsigned)parts - 1) / n);
}

size_t sched_steps(const Schedule *s)
{
    return (s->n + (size_t)s->batch - 1) / (size_t)s->batch;
}

int sched_step_size(const Schedule *s, size_t step)
{
    size_t start = step * (size_t)s->batch;
    size_t left = s->n - start;
    return (int)(left < (size_t)s->batch ? left : (size_t)s->batch);
}

int sched_micro_count(const Schedule *s, size_t step)
{
    return (sched_step_size(s, step) + s->micro - 1) / s->micro;
}

int sched_micro_size(const Schedule *s, size_t step, int j)
{
    int b = sched_step_size(s, step);
    int left = b - j * s->micro;
    return left < s->micro ? left : s->micro;
}

void sched_rank_micros(const Schedule *s, size_t step, int rank, int *first, int *last)
{
    int M = sched_micro_count(s, step);
    *first = (int)part_first((size_t)M, s->ranks, rank);
    *last = (int)part_first((size_t)M, s->ranks, rank + 1);
}

size_t sched_rank_step_samples(const Schedule *s, size_t step, int rank)
{
    int f, l;
    sched_rank_micros(s, step, rank, &f, &l);
    size_t total = 0;
    for (int j = f; j < l; j++)
        total += (size_t)sched_micro_size(s, step, j);
    return total;
}

size_t sched_rank_offset(const Schedule *s, size_t step, int rank)
{
    size_t total = 0;
    for (size_t st = 0; st < step; st++)
        total += sched_rank_step_samples(s, st, rank);
    return total;
}

size_t sched_rank_samples(const Schedule *s, int rank)
{
    return sched_rank_offset(s, sched_steps(s), rank);
}

int sched_max_rank_micros(const Schedule *s)
{
    /* Only the full step and the last step differ. */
    int best = 0;
    size_t steps = sched_steps(s);
    size_t probe[2] = {0, steps ? steps - 1 : 0};
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < s->ranks; r++) {
            int f, l;
            sched_rank_micros(s, probe[k], r, &f, &l);
            best = l - f > best ? l - f : best;
        }
    return best;
}

/* The rank that trains on epoch position pos. */
static int rank_of_position(const Schedule *s, size_t pos)
{
    size_t step = pos / (size_t)s->batch;
    int j = (int)((pos - step * (size_t)s->batch) / (size_t)s->micro);
    int M = sched_micro_count(s, step);
    return part_owner((size_t)M, s->ranks, (size_t)j);
}

int shard_read_test(Block *out, size_t *chunks, size_t *chunks_total, const Dataset *ds,
                    size_t n, size_t chunk, int rank, int ranks)
{
    *chunks_total = (n + chunk - 1) / chunk;
    const size_t c0 = part_first(*chunks_total, ranks, rank);
    *chunks = part_first(*chunks_total, ranks, rank + 1) - c0;
    const size_t end = (c0 + *chunks) * chunk;
    out->first = c0 * chunk;
    out->count = *chunks ? (end < n ? end : n) - out->first : 0;
    out->images = XCALLOC(uint8_t, out->count * ds->sample_bytes);
    out->labels = XCALLOC(uint8_t, out->count);
    return dataset_read(ds, SPLIT_TEST, out->first, out->count, out->images, out->labels);
}

size_t exchange_round_bytes(size_t record)
{
    unsigned long long v;
    const char *e = getenv("DPCNN_EXCHANGE_BYTES");
    if (e && options_parse_whole(e, 1, (unsigned long long)1 << 40, &v) == 0)
        return v < record ? record : (size_t)v;
    return EXCHANGE_ROUND_BYTES;
}

void exchange_init(Exchange *x, const Schedule *s, int rank, size_t sample_bytes)
{
    memset(x, 0, sizeof *x);
    x->sched = *s;
    x->rank = rank;
    x->sample_bytes = sample_bytes;
    const size_t REC = sample_bytes + 1; /* one record on the wire: pixels, then the label */
    const int P = s->ranks;
    size_t mine = sched_rank_samples(s, rank);
    size_t held = part_first(s->n, P, rank + 1) - part_first(s->n, P, rank);
    x->count = mine;
    x->sample = XCALLOC(const uint8_t *, mine);
    x->label = XCALLOC(uint8_t, mine);
    x->positions = XCALLOC(size_t, mine);
    size_t k = 0, steps = sched_steps(s);
    for (size_t st = 0; st < steps; st++) {
        int f, l;
        sched_rank_micros(s, st, rank, &f, &l);
        /* the rank's micro-batches of a step are one run of positions */
        const size_t p0 = st * (size_t)s->batch + (size_t)f * (size_t)s->micro;
        const size_t cnt = sched_rank_step_samples(s, st, rank);
        for (size_t q = 0; q < cnt; q++)
            x->positions[k++] = p0 + q;
    }
    if (P > 1) {
        /* Everything trained on comes in; what goes out goes in rounds, their
         * number from the largest block (rank 0's), so every rank agrees. A
         * round sends at most ceil(count / rounds) to each destination. */
        const size_t most = part_first(s->n, P, 1);
        const size_t round = exchange_round_bytes(REC);
        x->rounds = (int)((most * REC + round - 1) / round);
        x->rounds = x->rounds < 1 ? 1 : x->rounds;
        x->sendbuf = XCALLOC(uint8_t, (held / (size_t)x->rounds + (size_t)P + 1) * REC);
        x->recvbuf = XCALLOC(uint8_t, mine * REC);
        x->order = XCALLOC(uint32_t, held);
    }
    x->round_scount = XCALLOC(int, P);
    x->round_sdispl = XCALLOC(int, P);
    x->round_rcount = XCALLOC(int, P);
    x->round_rdispl = XCALLOC(int, P);
    x->scount = XCALLOC(int, P);
    x->sdispl = XCALLOC(int, P);
    x->rcount = XCALLOC(int, P);
    x->rdispl = XCALLOC(int, P);
    x->cursor = XCALLOC(int, P);
}

void exchange_free(Exchange *x)
{
    free(x->sample);
    free(x->label);
    free(x->positions);
    free(x->sendbuf);
    free(x->recvbuf);
    free(x->scount);
    free(x->sdispl);
    free(x->rcount);
    free(x->rdispl);
    free(x->cursor);
    free(x->round_scount);
    free(x->round_sdispl);
    free(x->round_rcount);
    free(x->round_rdispl);
    free(x->order);
    memset(x, 0, sizeof *x);
}

/* The samples that change rank: every rank knows perm, so each can list, in
 * epoch order, what it must send to whom and what it will receive from whom
 * (no counts to exchange), leaving out what it holds and trains on itself. */
static void exchange_others(Exchange *x, const Block *mine, const uint32_t *perm, Dist *d)
{
    const Schedule *s = &x->sched;
    const int P = s->ranks, me = x->rank;
    const size_t PIX = x->sample_bytes, REC = PIX + 1;
    memset(x->scount, 0, sizeof(int) * P);
    memset(x->rcount, 0, sizeof(int) * P);
    for (size_t pos = 0; pos < s->n; pos++) {
        const int dst = rank_of_position(s, pos);
        if (dst != me && part_owner(s->n, P, perm[pos]) == me)
            x->scount[dst]++;
    }
    for (size_t k = 0; k < x->count; k++) {
        const int src = part_owner(s->n, P, perm[x->positions[k]]);
        if (src != me)
            x->rcount[src]++;
    }
    for (int r = 1; r < P; r++) {
        x->sdispl[r] = x->sdispl[r - 1] + x->scount[r - 1];
        x->rdispl[r] = x->rdispl[r - 1] + x->rcount[r - 1];
    }
    memcpy(x->cursor, x->sdispl, sizeof(int) * P);
    for (size_t pos = 0; pos < s->n; pos++) {
        const size_t i = perm[pos];
        const int dst = rank_of_position(s, pos);
        if (dst != me && part_owner(s->n, P, i) == me)
            x->order[x->cursor[dst]++] = (uint32_t)i;
    }
    /* Round t carries the t-th slice of every pair's list, ceil(count/rounds)
     * long: sender and receiver know the count, so they cut it alike. */
    for (int t = 0; t < x->rounds; t++) {
        int at = 0;
        for (int r = 0; r < P; r++) {
            const int b = (x->scount[r] + x->rounds - 1) / x->rounds;
            const int lo = t * b < x->scount[r] ? t * b : x->scount[r];
            const int hi = lo + b < x->scount[r] ? lo + b : x->scount[r];
            x->round_scount[r] = hi - lo;
            x->round_sdispl[r] = at;
            for (int j = lo; j < hi; j++, at++) {
                const size_t i = x->order[x->sdispl[r] + j];
                uint8_t *rec = x->sendbuf + (size_t)at * REC;
                memcpy(rec, mine->images + (i - mine->first) * PIX, PIX);
                rec[PIX] = mine->labels[i - mine->first];
            }
        }
        for (int r = 0; r < P; r++) {
            const int b = (x->rcount[r] + x->rounds - 1) / x->rounds;
            const int lo = t * b < x->rcount[r] ? t * b : x->rcount[r];
            const int hi = lo + b < x->rcount[r] ? lo + b : x->rcount[r];
            x->round_rcount[r] = hi - lo;
            x->round_rdispl[r] = x->rdispl[r] + lo;
        }
        dist_alltoallv(d, x->sendbuf, x->round_scount, x->round_sdispl, x->recvbuf,
                       x->round_rcount, x->round_rdispl, REC);
    }
}

void exchange_run(Exchange *x, const Block *mine, const uint32_t *perm, Dist *d)
{
    const Schedule *s = &x->sched;
    const int P = s->ranks, me = x->rank;
    const size_t PIX = x->sample_bytes, REC = PIX + 1;
    if (P > 1) /* a world of one holds everything */
        exchange_others(x, mine, perm, d);
    /* Senders packed in epoch order, so each source's records arrive in the
     * order this rank needs them: walk the positions, taking the next from
     * each, or this rank's own sample where it lies (at np = 2, half of them:
     * they never go through the buffers). */
    memcpy(x->cursor, x->rdispl, sizeof(int) * P);
    for (size_t k = 0; k < x->count; k++) {
        const size_t i = perm[x->positions[k]];
        const int src = part_owner(s->n, P, i);
        if (src == me) {
            x->sample[k] = mine->images + (i - mine->first) * PIX;
            x->label[k] = mine->labels[i - mine->first];
            continue;
        }
        const uint8_t *rec = x->recvbuf + (size_t)x->cursor[src]++ * REC;
        x->sample[k] = rec;
        x->label[k] = rec[PIX];
    }
}
