/* Two pieces of the dense convolution backward on AVX-512, the same bits as
 * conv2d.c's plain route.
 *
 * 1. The weight gradient with the filters in the vector lanes, reading the
 * input in place (no im2col).
 *
 * With stride 1, output position k = (i,j) and r = (c,p,q):
 *   dw[f][r] += sum over k, in k order, of dy[f][k] * x[c][i+p][j+q]
 * (x the zero-padded plane when there is padding), one fused multiply-add per
 * term, sample after sample: exactly the chains gemm_acc runs over im2col's
 * columns. Here lane f of a vector holds filter f's sum, so one term for all
 * filters at once is one multiply-add of dy[.][k] (the 16 filters' gradients
 * at k, transposed once per sample into dyT) by x[c][i+p][j+q] broadcast from
 * memory. A channel's K*K sums stay in registers (25 for K = 5) while the
 * positions run past them: one load per multiply-add, against im2col's
 * copying of R * NP floats and the product's reading of them. dwT[r] holds
 * the sums across the samples of a call; the caller moves dw into it first
 * and back after (dw_lanes_load, dw_lanes_store). Filters beyond F are masked
 * off, so 12 to 16 filters use the lanes well; fewer stay on the product
 * (LeNet-5's first layer, 6 filters: 6.4 us per sample there, 8.1 in lanes).
 * LeNet-5's second layer (16 filters): 14.6 -> 11.1-11.6 us per sample with
 * this and the col2im below. */
#include "config.h"

#include <immintrin.h>
#include <string.h>

#include "dpcnn/lanes.h"
#include "dpcnn/layers.h"
#include "dpcnn/transpose.h"

#define TARGET_512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

/* Into the filter lanes: dst[16*k + f] = src[f*N + k], and +0 in lanes F
 * to 15 (garbage there could be subnormal and slow every multiply-add). A
 * register transpose, where a masked gather per column was 5-10% of LeNet-5's
 * second layer on a core whose gathers are microcoded (AMD Zen 4). */
static void to_lanes(float *dst, const float *src, int F, int N)
{
    if (F < 16)
        memset(dst, 0, sizeof(float) * 16 * (size_t)N);
    transpose_f32(dst, 16, src, N, F, N);
}

TARGET_512 void dw_lanes_load(float *dwT, const float *dw, int F, int R)
{
    to_lanes(dwT, dw, F, R);
}

TARGET_512 void dw_lanes_store(float *dw, const float *dwT, int F, int R)
{
    transpose_f32(dw, R, dwT, 16, R, F); /* dw[f*R + r] = dwT[16*r + f] */
}

/* One sample: x its (padded) input planes, Hx x Wx each; dy its gradient
 * [F][OH*OW]; dyT room for 16 * OH*OW floats. */
static inline TARGET_512 __attribute__((always_inline)) void
dw_lanes_k(float *dwT, float *dyT, const float *dy, const float *x, int F, int C, int Hx, int Wx,
           int OH, int OW, int K)
{
    const int NP = OH * OW;
    to_lanes(dyT, dy, F, NP);
    for (int c = 0; c < C; c++) {
        float *wT = dwT + (size_t)16 * c * K * K;
        __m512 acc[25];
#pragma GCC unroll 25
        for (int t = 0; t < K * K; t++)
            acc[t] = _mm512_loadu_ps(wT + 16 * t);
        for (int i = 0; i < OH; i++) {
            const float *g = dyT + (size_t)16 * i * OW;
            const float *xr = x + ((size_t)c * Hx + i) * Wx;
            for (int j = 0; j < OW; j++, xr++) {
                /* an opaque step of xr: GCC would otherwise keep the row's
                 * floats from the last j in registers and broadcast them
                 * from there, a shuffle on a multiply-add port each, where a
                 * broadcast from memory is a load (measured: ~ +25% on
                 * LeNet-5's second layer) */
                __asm__("" : "+r"(xr));
                const __m512 gk = _mm512_loadu_ps(g + 16 * j);
#pragma GCC unroll 5
                for (int p = 0; p < K; p++)
#pragma GCC unroll 5
                    for (int q = 0; q < K; q++)
                        acc[p * K + q] = _mm512_fmadd_ps(
                            gk, _mm512_set1_ps(xr[(size_t)p * Wx + q]), acc[p * K + q]);
            }
        }
#pragma GCC unroll 25
        for (int t = 0; t < K * K; t++)
            _mm512_storeu_ps(wT + 16 * t, acc[t]);
    }
}

TARGET_512 void dw_lanes(float *dwT, float *dyT, const float *dy, const float *x, int F, int C,
                         int Hx, int Wx, int OH, int OW, int K)
{
    if (K == 5)
        dw_lanes_k(dwT, dyT, dy, x, F, C, Hx, Wx, OH, OW, 5);
    else
        dw_lanes_k(dwT, dyT, dy, x, F, C, Hx, Wx, OH, OW, 3);
}

/* 2. col2im for stride 1, no padding, planes up to 16 wide: dx's row h =
 * i + p of channel c takes, for q = 0 .. K-1 in turn, dcol's row (c,p,q,i)
 * at columns q .. q + OW - 1. The row is loaded once (one masked vector),
 * the K shifted rows of dcol are added to it in register (a masked load
 * starting q floats early puts each at its columns), eight rows side by
 * side, and it is stored once:
 * the plain loop's K overlapping load-add-store passes over the same floats
 * each waited on the store before. Each dx element takes its terms in the
 * same (c,p,q) order. The lanes a shifted row does not cover add +0, which
 * changes nothing: dx starts at +0 and no term is -0 (each dcol element is a
 * multiply-add chain from +0), so dx is never -0. */
static inline TARGET_512 __attribute__((always_inline)) void
col2im_rows_k(float *dx, const float *dcol, int C, int H, int W, int OH, int OW, int K)
{
    const size_t NP = (size_t)OH * OW;
    const __mmask16 row = lanes16(W);
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++) {
            const float *src = dcol + (size_t)(c * K + p) * K * NP;
            /* eight rows at a time: eight independent chains of adds */
            for (int i0 = 0; i0 < OH; i0 += 8) {
                const int ni = OH - i0 < 8 ? OH - i0 : 8;
                float *d = dx + ((size_t)c * H + i0 + p) * W;
                __m512 v[8];
                for (int i = 0; i < ni; i++)
                    v[i] = _mm512_maskz_loadu_ps(row, d + (size_t)i * W);
#pragma GCC unroll 5
                for (int q = 0; q < K; q++) {
                    const __mmask16 at = (__mmask16)(lanes16(OW) << q);
                    const float *s = src + q * NP + (size_t)i0 * OW - q;
                    for (int i = 0; i < ni; i++)
                        v[i] = _mm512_add_ps(v[i], _mm512_maskz_loadu_ps(at, s + (size_t)i * OW));
                }
                for (int i = 0; i < ni; i++)
                    _mm512_mask_storeu_ps(d + (size_t)i * W, row, v[i]);
            }
        }
}

TARGET_512 void col2im_rows(float *dx, const float *dcol, const ConvShape *c)
{
    if (c->K == 5)
        col2im_rows_k(dx, dcol, c->C, c->H, c->W, c->OH, c->OW, 5);
    else if (c->K == 3)
        col2im_rows_k(dx, dcol, c->C, c->H, c->W, c->OH, c->OW, 3);
    else
        col2im_rows_k(dx, dcol, c->C, c->H, c->W, c->OH, c->OW, c->K);
}
