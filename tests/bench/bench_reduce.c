/* The cost of combining one step's gradients across ranks, exact (int64 fixed
 * point) against plain (float32 MPI_SUM), with everything else taken away:
 * the slots hold fixed random gradients, and a barrier before each timing
 * removes the ranks' skew. Run under mpirun; prints the median per step.
 *
 * Usage: mpirun -np P bench_reduce [MICRO_BATCHES_PER_STEP] [REPEATS] */
#include "config.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/dist.h"
#include "dpcnn/net.h"
#include "dpcnn/rng.h"
#include "dpcnn/shard.h"
#include "dpcnn/step.h"
#include "dpcnn/xsum.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    Dist *d = dist_init(&argc, &argv, 1);
    int total = argc > 1 ? atoi(argv[1]) : 4, reps = argc > 2 ? atoi(argv[2]) : 2000;
    int P = dist_size(d), r = dist_rank(d);
    int first = (int)part_first((size_t)total, P, r), last = (int)part_first((size_t)total, P, r + 1);
    int mine = last - first;
    int *rank_micros = calloc((size_t)P, sizeof(int));
    for (int q = 0; q < P; q++)
        rank_micros[q] =
            (int)(part_first((size_t)total, P, q + 1) - part_first((size_t)total, P, q));
    static Net net;
    if (net_load(&net, "tutorial", (Shape){1, 28, 28, 0}, 10) < 0)
        return 1;
    const size_t NP = net.nparams;
    const int NT = net.ntensors;
    const InputTransform none = {0};
    float *grads = calloc(NP, sizeof(float));
    double med[2];
    for (int mode = 0; mode < 2; mode++) {
        Stepper *st = stepper_create(&net, &none, 25, mine > 0 ? mine : 1, total, 1, 1, mode);
        stepper_share(st, d);
        Rng rng;
        rng_init(&rng, 1, 3, (uint64_t)r);
        for (int k = 0; k < mine; k++) {
            float *g = st->slot_grads + (size_t)k * NP;
            for (size_t i = 0; i < NP; i++)
                g[i] = (rng_uniform(&rng) - 0.5f) * 1e-3f;
            st->slot_loss[k] = 57.5;
            st->slot_correct[k] = 20;
            for (int t = 0; t < NT; t++)
                st->slot_exp[(size_t)k * (NT + 1) + t] = xsum_exponent_f32(
                    g + net.tensors[t].offset, net.tensors[t].count);
            st->slot_exp[(size_t)k * (NT + 1) + NT] =
                xsum_exponent_f64(&st->slot_loss[k], 1);
        }
        double *t = calloc((size_t)reps, sizeof(double));
        for (int i = 0; i < reps; i++) {
            StepSums sums = {0, 0, 0, -1, 0};
            dist_barrier(d);
            double t0 = dist_wtime();
            stepper_reduce(st, d, grads, &sums, mine, total, rank_micros);
            t[i] = dist_wtime() - t0;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp);
        med[mode] = t[reps / 2];
        free(t);
        stepper_free(st);
    }
    if (r == 0)
        printf("ranks %d, %d micro-batches per step: combining one step's gradients takes "
               "%.1f us exact, %.1f us float (median of %d; rank 0)\n",
               P, total, 1e6 * med[0], 1e6 * med[1], reps);

    /* The collectives alone, for the scaling model: a latency-bound one (the
     * exact mode's agreement on 13 integers) and the gradient-sized ones. */
    int ctl[13] = {0};
    int64_t *i64 = calloc(NP, sizeof(int64_t));
    float *f32 = calloc(NP, sizeof(float));
    double col[3];
    for (int kind = 0; kind < 3; kind++) {
        double *t = calloc((size_t)reps, sizeof(double));
        for (int i = 0; i < reps; i++) {
            dist_barrier(d);
            double t0 = dist_wtime();
            if (kind == 0)
                dist_max_int(d, ctl, 13);
            else if (kind == 1)
                dist_sum_float(d, f32, NP);
            else
                dist_sum_int64(d, i64, NP);
            t[i] = dist_wtime() - t0;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp);
        col[kind] = t[reps / 2];
        free(t);
    }
    if (r == 0)
        printf("ranks %d: MPI_Allreduce of 13 ints %.1f us, of %zu floats %.1f us, of %zu "
               "int64 %.1f us\n",
               P, 1e6 * col[0], NP, 1e6 * col[1], NP, 1e6 * col[2]);
    free(i64);
    free(f32);
    free(grads);
    free(rank_micros);
    dist_finalize(d);
    return 0;
}
