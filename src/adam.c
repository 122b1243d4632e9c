#include "config.h"

#include <math.h>

#include "dpcnn/adam.h"

void adam_step(float *params, float *m, float *v, const float *grads, size_t n,
               const AdamConfig *cfg, int64_t step)
{
    const float b1 = (float)cfg->beta1, b2 = (float)cfg->beta2;
    const float a1 = (float)(1.0 - cfg->beta1), a2 = (float)(1.0 - cfg->beta2);
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    const float step_size = (float)(cfg->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)cfg->eps;
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i];
        m[i] = m[i] * b1 + a1 * g;
        v[i] = v[i] * b2 + a2 * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] = params[i] - step_size * (m[i] / denom);
    }
}
