/* Backward through convolution, ReLU and max-pool at once, over the pooling
 * winners only (layers.h has the contract, doc/math.md the derivation).
 *
 * With g = dy[s,f,k] at window k's winner (i,j) in the conv output plane, for
 * y[s,f,k] > 0, and (u0, v0) = (i*S - P, j*S - P) the window's top-left corner
 * in the input plane:
 *   db[f] += g,   dw[f,c,p,q] += g x[s,c,u0+p,v0+q],   dx[s,c,u0+p,v0+q] += g w[f,c,p,q]
 * over the (p,q) whose input position is inside the plane (the padding is
 * constant zero: no dw term, no dx). Where pooling windows overlap, one conv
 * position can win several windows; each win is a term of its own, which is the
 * dense route's sum dL/dc[i,j] = sum of those dy. The dense route would scatter
 * dy into a mostly-zero dL/dc and run two matrix products over it; here each
 * nonzero gradient touches one K x K window per input channel.
 *
 * Sums run sample by sample, filter by filter, winner by winner (in window
 * order): one fixed order, so the bits depend on nothing but the inputs. dw[f]
 * is accumulated in a local buffer (no aliasing, stays in L1) and added once.
 * No kernel allocates, so the buffers have fixed sizes: the winners are
 * gathered in runs (which changes no sum), and a filter with more than
 * ACC_FLOATS weights accumulates straight into dw instead. */
#include "config.h"

#include <stdint.h>

#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"

/* One multiply-add, t + g*x: mode 0 rounds the product and the sum apart
 * (the OpenBLAS engine, as dpcnn computed it before it had its own kernels);
 * mode 1 fuses them in software, with the bits of the hardware fused
 * multiply-add that conv_pool_fma.c uses (isa.h). */
static inline __attribute__((always_inline)) float madd(int mode, float g, float x, float t)
{
    return mode == 0 ? t + g * x : fma_exact(g, x, t);
}

static inline __attribute__((always_inline)) void axpy_row(float *restrict acc,
                                                           const float *restrict src, float g,
                                                           int K, int mode)
{
    for (int q = 0; q < K; q++)
        acc[q] = madd(mode, g, src[q], acc[q]);
}

#include "conv_pool_body.h"

#define ARGS                                                                                    \
    float *dx, float *dw, float *db, const float *dy, const float *y, const int32_t *arg,       \
        const float *x, const float *w, int n, const ConvShape *c, const PoolShape *p
#define PASS dx, dw, db, dy, y, arg, x, w, n, c, p

/* conv_pool_fma.c: the AVX2 + FMA code serves the AVX-512 path too (rows of
 * 3 or 5 gain nothing from wider vectors) */
void conv_pool_backward_fma(ARGS);

void conv_pool_backward(ARGS)
{
    if (isa_current() != ISA_GENERIC)
        conv_pool_backward_fma(PASS);
    else
        dispatch(PASS, 1);
}

void conv_pool_backward_blas(ARGS)
{
    dispatch(PASS, 0);
}
