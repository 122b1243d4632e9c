/* The engine alone: forward and backward of one micro-batch, over and over,
 * on one thread, with nothing else in the process. Prints the best time per
 * sample over several trials (the machine is shared: the minimum is the most
 * repeatable figure) and the share of it spent in each part.
 *
 * Usage: bench_model [MICRO_BATCH] [SECONDS] [MODEL] */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpcnn/error.h"
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
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
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
    printf("%s, micro-batch %d: forward %.2f us/sample, backward %.2f us/sample, "
           "total %.2f us/sample = %.0f samples/s (best of many)\n",
           model, n, 1e6 * best_f / n, 1e6 * best_b / n, 1e6 * (best_f + best_b) / n,
           n / (best_f + best_b));
    workspace_free(ws);
    free(params);
    free(grads);
    free(buffers);
    free(batches);
    free(img);
    free(lab);
    return 0;
}
