/* The backward pass over the pooling winners with hardware fused
 * multiply-adds: this file is compiled with -mavx2 -mfma (Makefile.am) and
 * called only on CPUs that have them (conv_pool.c); AVX-512 has nothing to
 * add for rows of 3 or 5. Each output's terms are those of the plain C path,
 * in the same order, each one fused multiply-add (conv_pool_body.h). */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>

#include "dpcnn/layers.h"

static inline __attribute__((always_inline)) float madd(int mode, float g, float x, float t)
{
    (void)mode;
    return __builtin_fmaf(g, x, t); /* vfmadd231ss */
}

/* acc[0..K) = fma(g, src, acc), four lanes (four outputs) at a time */
static inline __attribute__((always_inline)) void axpy_row(float *restrict acc,
                                                           const float *restrict src, float g,
                                                           int K, int mode)
{
    (void)mode;
    const __m128 gv = _mm_set1_ps(g);
    int q = 0;
    for (; q + 4 <= K; q += 4)
        _mm_storeu_ps(acc + q, _mm_fmadd_ps(gv, _mm_loadu_ps(src + q), _mm_loadu_ps(acc + q)));
    for (; q < K; q++)
        acc[q] = __builtin_fmaf(g, src[q], acc[q]);
}

#include "conv_pool_body.h"

void conv_pool_backward_fma(float *dx, float *dw, float *db, const float *dy, const float *y,
                            const int32_t *arg, const float *x, const float *w, int n,
                            const ConvShape *c, const PoolShape *p);

void conv_pool_backward_fma(float *dx, float *dw, float *db, const float *dy, const float *y,
                            const int32_t *arg, const float *x, const float *w, int n,
                            const ConvShape *c, const PoolShape *p)
{
    dispatch(dx, dw, db, dy, y, arg, x, w, n, c, p, 2);
}
