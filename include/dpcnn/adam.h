/* Adam, exactly as torch.optim.Adam (PyTorch 1.13, weight_decay 0, amsgrad off):
 *   m = b1 m + (1-b1) g            v = b2 v + (1-b2) g^2
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * The bias corrections are computed in double and rounded to float once, as
 * PyTorch's Python scalars are (b^t by squaring, not the C library's pow);
 * eps is added after the square root. */
#ifndef DPCNN_ADAM_H
#define DPCNN_ADAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lr, beta1, beta2, eps;
} AdamConfig;

#define ADAM_DEFAULTS {0.01, 0.9, 0.999, 1e-8}

/* One step; step is the count after this update (1 for the first). */
void adam_step(float *params, float *m, float *v, const float *grads, size_t n,
               const AdamConfig *cfg, int64_t step);

#endif
