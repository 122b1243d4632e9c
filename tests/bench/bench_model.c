/* The engine alone: forward and backward of one micro-batch, over and over,
 * on one thread, with nothing else in the process. Prints the best time per
 * sample over several trials (the machine is shared: the minimum is the most
 * repeatable figure) and the share of it spent in each part.
 *
 * Usage: bench_model [MICRO_BATCH] [SECONDS] */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpcnn/model.h"

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
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
    float *params = calloc(MODEL_NUM_PARAMS, sizeof(float));
    float *grads = calloc(MODEL_NUM_PARAMS, sizeof(float));
    model_init(params, 0);
    uint8_t *img = malloc((size_t)n * MODEL_IMAGE_PIXELS), *lab = malloc((size_t)n);
    for (int i = 0; i < n * MODEL_IMAGE_PIXELS; i++)
        img[i] = (uint8_t)((i * 2654435761u) >> 24);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i % 10);
    Workspace *ws = workspace_create(n);
    double best_f = 1e9, best_b = 1e9, t_end = now() + seconds;
    int correct = 0;
    while (now() < t_end) {
        double t0 = now();
        for (int k = 0; k < 10; k++)
            model_forward(ws, params, img, lab, n, &correct);
        double t1 = now();
        for (int k = 0; k < 10; k++) {
            memset(grads, 0, sizeof(float) * MODEL_NUM_PARAMS);
            model_backward(grads, ws, params, lab, n, 1.0f / n);
        }
        double t2 = now();
        best_f = (t1 - t0) / 10 < best_f ? (t1 - t0) / 10 : best_f;
        best_b = (t2 - t1) / 10 < best_b ? (t2 - t1) / 10 : best_b;
    }
    printf("micro-batch %d: forward %.2f us/sample, backward %.2f us/sample, "
           "total %.2f us/sample = %.0f samples/s (best of many)\n",
           n, 1e6 * best_f / n, 1e6 * best_b / n, 1e6 * (best_f + best_b) / n,
           n / (best_f + best_b));
    workspace_free(ws);
    free(params);
    free(grads);
    free(img);
    free(lab);
    return 0;
}
