#include "config.h"

#include <math.h>

#include "dpcnn/adam.h"
#include "dpcnn/isa.h"

/* The update, element by element: multiplications, additions, a square
 * root and divisions, each rounded on its own (no fusing: -ffp-contract=off),
 * so compiling it for wider vectors changes the speed, not the bits. */
static inline __attribute__((always_inline)) void
update(float *restrict params, float *restrict m, float *restrict v, const float *restrict grads,
       size_t n, float b1, float b2, float a1, float a2, float step_size, float bc2_sqrt,
       float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i];
        m[i] = m[i] * b1 + a1 * g;
        v[i] = v[i] * b2 + a2 * g * g;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] = params[i] - step_size * (m[i] / denom);
    }
}

#define ARGS                                                                                    \
    float *params, float *m, float *v, const float *grads, size_t n, float b1, float b2,        \
        float a1, float a2, float step_size, float bc2_sqrt, float eps
#define PASS params, m, v, grads, n, b1, b2, a1, a2, step_size, bc2_sqrt, eps
static void update_generic(ARGS) { update(PASS); }
__attribute__((target("avx2"))) static void update_avx2(ARGS) { update(PASS); }
__attribute__((target("avx512f"))) static void update_avx512(ARGS) { update(PASS); }

/* b^e by squaring: plain double multiplications, so the bias corrections do
 * not depend on the C library's pow (which picks its code by CPU). Within a
 * few ulp of pow, far below the float they are rounded to. */
static double power(double b, int64_t e)
{
    double r = 1.0;
    for (; e > 0; e >>= 1, b *= b)
        if (e & 1)
            r *= b;
    return r;
}

void adam_step(float *params, float *m, float *v, const float *grads, size_t n,
               const AdamConfig *cfg, int64_t step)
{
    const float b1 = (float)cfg->beta1, b2 = (float)cfg->beta2;
    const float a1 = (float)(1.0 - cfg->beta1), a2 = (float)(1.0 - cfg->beta2);
    const double bc1 = 1.0 - power(cfg->beta1, step);
    const double bc2 = 1.0 - power(cfg->beta2, step);
    const float step_size = (float)(cfg->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)cfg->eps;
    switch (isa_current()) {
    case ISA_AVX512: update_avx512(PASS); break;
    case ISA_AVX2: update_avx2(PASS); break;
    default: update_generic(PASS); break;
    }
}
