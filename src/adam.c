#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/adam.h"
#include "dpcnn/isa.h"

typedef struct {
    float b1, b2, a1, a2, step_size, bc2_sqrt, eps;
} Coef;

/* The update, element by element: multiplications, additions, a square
 * root and divisions, each rounded on its own (no fusing: -ffp-contract=off),
 * so compiling it for wider vectors changes the speed, not the bits. */
static inline __attribute__((always_inline)) void
update(float *restrict params, float *restrict m, float *restrict v, const float *restrict grads,
       size_t n, const Coef k)
{
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i];
        m[i] = m[i] * k.b1 + k.a1 * g;
        v[i] = v[i] * k.b2 + k.a2 * g * g;
        const float denom = sqrtf(v[i]) / k.bc2_sqrt + k.eps;
        params[i] = params[i] - k.step_size * (m[i] / denom);
    }
}

/* Subnormal numbers. A parameter whose gradient is exactly 0 step after step
 * (a ReLU unit that no longer fires; the exact sum's grid rounds the tiniest
 * gradients to 0) has its m shrink by b1 every step, into the subnormal range
 * within about 700 steps, and it stays there: the smallest subnormal times
 * 0.9 rounds back to itself. After four epochs of the tutorial 13,000 of its
 * 33,000 m's are subnormal. On x86 a vector multiplication or division that
 * reads or yields a subnormal float takes a microcode assist of about a
 * hundred cycles, and the update ran ten times slower.
 *
 * So a block of 16 elements holding a tiny value goes through the same
 * operations in double: each float operation is done in double on its float
 * operands, and the result rounded to float at once. A product of two floats
 * is exact in double; a sum, quotient or square root is rounded twice, to
 * double and then to float, which gives the correctly rounded float whenever
 * the wider format has at least 2p + 2 bits (Figueroa, "When is double
 * rounding innocuous?", 1995; 53 >= 2*24 + 2), subnormal results included. So
 * the bits are those of the float arithmetic above. A subnormal float is a
 * normal double, and rounding to a subnormal float is a conversion, which
 * takes no assist. The rounding goes through the conversion instructions
 * (round8), which the compiler cannot fold back into float arithmetic.
 *
 * Tiny means nonzero and below 2^-118 (m, v) or 2^-56 (g, which is squared):
 * above these, at the usual betas and learning rates, no product or quotient
 * of the float path is subnormal. The bounds only steer speed: both paths
 * give the same bits for every input. The plain C path keeps the float
 * arithmetic alone. */
enum { BLOCK = 16 };
#define TINY_MV ((uint32_t)(127 - 118) << 23) /* the bits of 2^-118 */
#define TINY_G ((uint32_t)(127 - 56) << 23)

static inline __attribute__((always_inline)) uint32_t tiny(float x, uint32_t bound)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7fffffffu) - 1 < bound - 1; /* 0 < |x| < bound */
}

/* Which of a block's values are tiny: bit 0 some m, bit 1 some v or g. */
static inline __attribute__((always_inline)) int tiny_kinds(const float *m, const float *v,
                                                            const float *g)
{
    uint32_t in_m = 0, in_vg = 0;
    for (int i = 0; i < BLOCK; i++) {
        in_m |= tiny(m[i], TINY_MV);
        in_vg |= tiny(v[i], TINY_MV) | tiny(g[i], TINY_G);
    }
    return (in_m != 0) | (in_vg != 0) << 1;
}

/* Eight lanes of the double path. They pass between inline functions only,
 * never across a call, so GCC's note that returning a 64-byte vector outside
 * an AVX-512 function changes the ABI does not apply (it is given at the end
 * of the file, hence the pragma for the whole of it). */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double d8 __attribute__((vector_size(64)));
typedef float f8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) d8 splat(double x)
{
    return (d8){x, x, x, x, x, x, x, x};
}

/* Eight floats from src as doubles (exact), and eight doubles that hold
 * floats back to dst (exact too). */
static inline __attribute__((always_inline)) d8 widen(const float *src)
{
    f8 f;
    memcpy(&f, src, sizeof f);
    return __builtin_convertvector(f, d8);
}

static inline __attribute__((always_inline)) void narrow(float *dst, d8 x)
{
    const f8 f = __builtin_convertvector(x, f8);
    memcpy(dst, &f, sizeof f);
}

/* One block in double; R rounds every lane to float and back, S is the
 * square root. Each line is the float line of update() above. */
static inline __attribute__((always_inline)) void
block_in_double(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                const Coef k, d8 (*R)(d8), d8 (*S)(d8))
{
    const d8 b1 = splat(k.b1), b2 = splat(k.b2), a1 = splat(k.a1), a2 = splat(k.a2);
    const d8 step = splat(k.step_size), c2 = splat(k.bc2_sqrt), eps = splat(k.eps);
    for (int h = 0; h < BLOCK; h += 8) {
        const d8 G = widen(g + h);
        const d8 M = R(R(widen(m + h) * b1) + R(a1 * G));
        const d8 V = R(R(widen(v + h) * b2) + R(R(a2 * G) * G));
        const d8 denom = R(R(R(S(V)) / c2) + eps);
        narrow(p + h, R(widen(p + h) - R(step * R(M / denom))));
        narrow(m + h, M);
        narrow(v + h, V);
    }
}

/* A block whose tiny values are m's alone (the usual case: a unit that no
 * longer fires has g = 0 and a v that shrinks far more slowly): v and the
 * denominator in float, 16 lanes at a time, and only the chain m takes part
 * in (its product, the quotient and the step) in double. */
static inline __attribute__((always_inline)) void
block_m_in_double(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                  const Coef k, d8 (*R)(d8))
{
    float t[BLOCK], denom[BLOCK];
    for (int i = 0; i < BLOCK; i++) {
        t[i] = k.a1 * g[i];
        v[i] = v[i] * k.b2 + k.a2 * g[i] * g[i];
        denom[i] = sqrtf(v[i]) / k.bc2_sqrt + k.eps;
    }
    const d8 b1 = splat(k.b1), step = splat(k.step_size);
    for (int h = 0; h < BLOCK; h += 8) {
        const d8 M = R(R(widen(m + h) * b1) + widen(t + h));
        const d8 S = R(step * R(M / widen(denom + h)));
        f8 fp;
        memcpy(&fp, p + h, sizeof fp);
        fp = fp - __builtin_convertvector(S, f8); /* a float subtraction */
        memcpy(p + h, &fp, sizeof fp);
        narrow(m + h, M);
    }
}

static inline __attribute__((always_inline)) void
update_blocks(float *restrict params, float *restrict m, float *restrict v,
              const float *restrict grads, size_t n, const Coef k, d8 (*R)(d8), d8 (*S)(d8))
{
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        switch (tiny_kinds(m + i, v + i, grads + i)) {
        case 0: update(params + i, m + i, v + i, grads + i, BLOCK, k); break;
        case 1: block_m_in_double(params + i, m + i, v + i, grads + i, k, R); break;
        default: block_in_double(params + i, m + i, v + i, grads + i, k, R, S); break;
        }
    }
    update(params + i, m + i, v + i, grads + i, n - i, k);
}

__attribute__((target("avx512f"))) static inline d8 round8_avx512(d8 x)
{
    return (d8)_mm512_cvtps_pd(_mm512_cvtpd_ps((__m512d)x));
}
__attribute__((target("avx512f"))) static inline d8 sqrt8_avx512(d8 x)
{
    return (d8)_mm512_sqrt_pd((__m512d)x);
}

/* AVX2 has four doubles to a register: each half on its own */
typedef double d4 __attribute__((vector_size(32)));
#define HALVES(x) __builtin_shufflevector(x, x, 0, 1, 2, 3), __builtin_shufflevector(x, x, 4, 5, 6, 7)
#define JOIN(lo, hi) __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7)
__attribute__((target("avx2"))) static inline d4 round4_avx2(d4 x)
{
    return (d4)_mm256_cvtps_pd(_mm256_cvtpd_ps((__m256d)x));
}
__attribute__((target("avx2"))) static inline d8 round8_avx2(d8 x)
{
    const d4 h[2] = {HALVES(x)};
    return JOIN(round4_avx2(h[0]), round4_avx2(h[1]));
}
__attribute__((target("avx2"))) static inline d8 sqrt8_avx2(d8 x)
{
    const d4 h[2] = {HALVES(x)};
    return JOIN((d4)_mm256_sqrt_pd((__m256d)h[0]), (d4)_mm256_sqrt_pd((__m256d)h[1]));
}

#define ARGS float *params, float *m, float *v, const float *grads, size_t n, Coef k
#define PASS params, m, v, grads, n, k
static void update_generic(ARGS) { update(PASS); }
__attribute__((target("avx2"))) static void update_avx2(ARGS)
{
    update_blocks(PASS, round8_avx2, sqrt8_avx2);
}
__attribute__((target("avx512f"))) static void update_avx512(ARGS)
{
    update_blocks(PASS, round8_avx512, sqrt8_avx512);
}

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
    const double bc1 = 1.0 - power(cfg->beta1, step);
    const double bc2 = 1.0 - power(cfg->beta2, step);
    const Coef k = {
        .b1 = (float)cfg->beta1,
        .b2 = (float)cfg->beta2,
        .a1 = (float)(1.0 - cfg->beta1),
        .a2 = (float)(1.0 - cfg->beta2),
        .step_size = (float)(cfg->lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)cfg->eps,
    };
    switch (isa_current()) {
    case ISA_AVX512: update_avx512(PASS); break;
    case ISA_AVX2: update_avx2(PASS); break;
    default: update_generic(PASS); break;
    }
}
