/* The engine alone: forward and backward of one micro-batch, over and over,
 * on one thread, with nothing else in the process. Prints the best time per
 * sample over several trials (the machine is shared: the minimum is the most
 * repeatable figure) and the share of it spent in each part: forward passes
 * and backward passes each timed in runs of ten, where every pass finds its
 * inputs in cache. Then forward and backward in turn, as training runs them,
 * where a backward pass reads what its forward pass wrote.
 *
 * Then a profile of the same passes step by step (each step timed on its
 * own, so the steps add up to a little more than the total): time per sample
 * forward and backward, and for the convolutions and linear layers their
 * dense arithmetic (the products' multiply-adds, two FLOPs each) as GFLOP/s
 * and, given the core's peak (fma_peak), as a fraction of it.
 *
 * Usage: bench_model [MICRO_BATCH] [SECONDS] [MODEL] [PEAK_GFLOPS] [KERNELS]
 * (KERNELS native or openblas; DPCNN_ISA picks the native path). */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpcnn/error.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"
#include "dpcnn/model.h"
#include "dpcnn/net.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 25;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    const char *model = argc > 3 ? argv[3] : "tutorial";
    if (n <= 0 || !(seconds > 0) || argc > 6) {
        fprintf(stderr, "usage: bench_model [MICRO_BATCH] [SECONDS] [MODEL] [PEAK_GFLOPS] "
                        "[KERNELS]\n");
        return 2;
    }
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
    if (isa_select() < 0 || engine_select(argc > 5 ? argv[5] : "native") < 0) {
        fprintf(stderr, "bench_model: %s\n", err_get());
        return 1;
    }
    static Net net;
    if (net_load(&net, model, (Shape){1, 28, 28, 0}, 10) < 0) {
        fprintf(stderr, "bench_model: %s\n", err_get());
        return 1;
    }
    float *params = calloc(net.nparams, sizeof(float));
    float *grads = calloc(net.nparams, sizeof(float));
    float *buffers = calloc(net.nbuffer_floats + 1, sizeof(float));
    int64_t *batches = calloc((size_t)net.nbatchnorm + 1, sizeof(int64_t));
    net_init(&net, params, buffers, batches, 0);
    const size_t pix = shape_count(net.input);
    uint8_t *img = malloc((size_t)n * pix), *lab = malloc((size_t)n);
    for (size_t i = 0; i < (size_t)n * pix; i++)
        img[i] = (uint8_t)((i * 2654435761u) >> 24);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i % 10);
    const InputTransform none = {0};
    Workspace *ws = workspace_create(&net, &none, n);
    const PassInfo pass = {1, 0, 1, 0};
    double best_f = 1e9, best_b = 1e9, t_end = now() + seconds;
    int correct = 0;
    while (now() < t_end) {
        double t0 = now();
        for (int k = 0; k < 10; k++)
            model_forward(ws, params, buffers, img, lab, n, &correct, &pass);
        double t1 = now();
        for (int k = 0; k < 10; k++) {
            memset(grads, 0, sizeof(float) * net.nparams);
            model_backward(grads, ws, params, lab, n, 1.0f / n);
        }
        double t2 = now();
        best_f = (t1 - t0) / 10 < best_f ? (t1 - t0) / 10 : best_f;
        best_b = (t2 - t1) / 10 < best_b ? (t2 - t1) / 10 : best_b;
    }
    /* forward and backward in turn, as training runs them: the backward
     * pass then reads what this forward pass left, not its own last inputs */
    double best_t = 1e9;
    t_end = now() + seconds;
    while (now() < t_end) {
        double t0 = now();
        for (int k = 0; k < 10; k++) {
            model_forward(ws, params, buffers, img, lab, n, &correct, &pass);
            memset(grads, 0, sizeof(float) * net.nparams);
            model_backward(grads, ws, params, lab, n, 1.0f / n);
        }
        const double t = (now() - t0) / 10;
        best_t = t < best_t ? t : best_t;
    }
    /* the dense arithmetic per sample, forward and backward, by step */
    double dense_f[NET_MAX_LAYERS] = {0}, dense_b[NET_MAX_LAYERS] = {0}, all_f = 0, all_b = 0;
    char names[NET_MAX_LAYERS][96];
    int nsteps = 0, first, span;
    while (model_step_info(ws, nsteps, names[nsteps], sizeof names[0], &first, &span) == 0) {
        for (int j = first; j < first + span; j++) {
            const Layer *l = &net.layers[j];
            double f = 0;
            if (l->type == LAYER_CONV2D)
                f = 2.0 * l->in_shape.c * l->kernel * l->kernel * l->out * l->out_shape.h *
                    l->out_shape.w;
            else if (l->type == LAYER_LINEAR)
                f = 2.0 * l->in * l->out;
            dense_f[nsteps] += f;
            dense_b[nsteps] += ws->grad[first] ? 2 * f : f; /* dW, and dx if wanted */
        }
        all_f += dense_f[nsteps];
        all_b += dense_b[nsteps];
        nsteps++;
    }
    const double peak = argc > 4 ? atof(argv[4]) : 0.0;
    printf("%s (%s, %s), micro-batch %d: forward %.2f us/sample, backward %.2f us/sample, "
           "total %.2f us/sample = %.0f samples/s (best of many)\n",
           model, engine_current()->name, isa_name(isa_current()), n, 1e6 * best_f / n, 1e6 * best_b / n, 1e6 * (best_f + best_b) / n,
           n / (best_f + best_b));
    printf("  forward and backward in turn, as in training: %.2f us/sample\n", 1e6 * best_t / n);
    printf("  dense arithmetic %.3f MFLOP/sample: %.1f GFLOP/s", 1e-6 * (all_f + all_b),
           1e-9 * (all_f + all_b) * n / (best_f + best_b));
    if (peak > 0)
        printf(" = %.0f%% of the core's %.1f", 100 * 1e-9 * (all_f + all_b) * n /
                                                   (best_f + best_b) / peak, peak);
    printf("\n");

    /* the profile: as many passes again, each step timed */
    double *pf = calloc((size_t)nsteps, sizeof(double)), *pb = calloc((size_t)nsteps, sizeof(double));
    ws->prof_forward = pf;
    ws->prof_backward = pb;
    int passes = 0;
    t_end = now() + seconds / 2;
    while (now() < t_end) {
        model_forward(ws, params, buffers, img, lab, n, &correct, &pass);
        model_backward(grads, ws, params, lab, n, 1.0f / n);
        passes++;
    }
    printf("  %-28s %9s %9s %9s %9s%s\n", "step (us per sample)", "forward", "backward",
           "fwd GF/s", "bwd GF/s", peak > 0 ? "  fwd/bwd % of peak" : "");
    for (int k = 0; k < nsteps; k++) {
        const double tf = pf[k] / passes / n, tb = pb[k] / passes / n;
        printf("  %-28.28s %9.2f %9.2f", names[k], 1e6 * tf, 1e6 * tb);
        if (dense_f[k] > 0) {
            printf(" %9.1f %9.1f", 1e-9 * dense_f[k] / tf, tb > 0 ? 1e-9 * dense_b[k] / tb : 0.0);
            if (peak > 0)
                printf("  %5.0f%% %5.0f%%", 100 * 1e-9 * dense_f[k] / tf / peak,
                       tb > 0 ? 100 * 1e-9 * dense_b[k] / tb / peak : 0.0);
        }
        printf("\n");
    }
    free(pf);
    free(pb);
    ws->prof_forward = ws->prof_backward = NULL;
    workspace_free(ws);
    free(params);
    free(grads);
    free(buffers);
    free(batches);
    free(img);
    free(lab);
    return 0;
}
