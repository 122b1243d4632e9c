/* Average pool, kernel K, stride S, no padding (PyTorch's floor rule):
 *   y[s,c,i,j] = (sum_{a,b < K} x[s,c, i*S+a, j*S+b]) / (K*K)
 *   dx[s,c, i*S+a, j*S+b] += dy[s,c,i,j] / (K*K)      (each a, b < K)
 * As PyTorch's CPU avg_pool2d: the window is summed in float in scan order
 * (row by row) and the sum divided by K*K (a division, not a multiplication by
 * the reciprocal, which would round differently); the backward pass divides dy
 * once and adds the quotient to each element of the window. Overlapping
 * windows (S < K) add their shares. Without padding count_include_pad changes
 * nothing. */
#include "config.h"

#include <string.h>

#include "dpcnn/error.h"
#include "dpcnn/isa.h"
#include "dpcnn/lanes.h"
#include "dpcnn/layers.h"

static inline __attribute__((always_inline)) void
avg_planes(float *restrict y, const float *restrict x, size_t planes, int H, int W, int OH, int OW,
           int K, int S)
{
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++) {
        const float *xp = x + plane * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float *win = xp + (size_t)i * S * W + (size_t)j * S;
                float sum = 0.0f;
                for (int a = 0; a < K; a++)
                    for (int b = 0; b < K; b++)
                        sum += win[(size_t)a * W + b];
                y[(plane * OH + i) * OW + j] = sum / div;
            }
    }
}

void avgpool_forward(float *y, const float *x, int n, const PoolShape *p)
{
    const size_t planes = (size_t)n * p->C;
    if (p->K == 2 && p->S == 2) /* LeNet-5's */
        avg_planes(y, x, planes, p->H, p->W, p->OH, p->OW, 2, 2);
    else
        avg_planes(y, x, planes, p->H, p->W, p->OH, p->OW, p->K, p->S);
}

/* Non-overlapping windows (S = K) give each dx element one term: a row of the
 * pool's quotients, then each of the K input rows takes it, element v from
 * quotient v / K (plain loops the compiler vectorises; a division per window
 * in the inner loop was most of the time). Overlapping windows add their
 * shares window by window. */
static inline __attribute__((always_inline)) void
avg_back_tiled(float *restrict dx, const float *restrict dy, size_t planes, int H, int W, int OH,
               int OW, int K)
{
    const float div = (float)(K * K);
    float q[1024];
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *dyr = dy + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 1024) {
                const int nj = OW - j0 < 1024 ? OW - j0 : 1024;
                for (int j = 0; j < nj; j++)
                    q[j] = dyr[j0 + j] / div;
                for (int a = 0; a < K; a++) {
                    float *row = dx + (plane * H + (size_t)i * K + a) * W + (size_t)j0 * K;
                    for (int v = 0; v < nj * K; v++)
                        row[v] += q[v / K];
                }
            }
        }
}

void avgpool_backward(float *dx, const float *dy, int n, const PoolShape *p)
{
    const int K = p->K, S = p->S, H = p->H, W = p->W, OH = p->OH, OW = p->OW;
    const size_t planes = (size_t)n * p->C;
    if (K == 2 && S == 2) {
        avg_back_tiled(dx, dy, planes, H, W, OH, OW, 2);
        return;
    }
    if (K == S) {
        avg_back_tiled(dx, dy, planes, H, W, OH, OW, K);
        return;
    }
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++) {
        float *dxp = dx + plane * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float g = dy[(plane * OH + i) * OW + j] / div;
                float *win = dxp + (size_t)i * S * W + (size_t)j * S;
                for (int a = 0; a < K; a++)
                    for (int b = 0; b < K; b++)
                        win[(size_t)a * W + b] += g;
            }
    }
}

/* ---- ReLU + average pool ----
 *
 * Forward: each window's sum in scan order of the ReLU's outputs, r(v) =
 * v < 0 ? 0 : v, from 0, then the division: the sum relu_forward and
 * avgpool_forward form. Backward, windows not overlapping: the pool's pass
 * would leave 0 + dy/(K*K) in each of the window's elements of a zeroed
 * gradient (0 + q is q but for a -0, which turns +0), and the ReLU's pass
 * would add that to a zeroed dx where x > 0 and +0 elsewhere, leaving
 * x > 0 ? q : +0 (q is never -0); here that is written straight into dx, and
 * +0 where no window reaches (the last row or column the floor rule drops),
 * so dx needs no zeroing before (model.c does not zero it). */
static inline __attribute__((always_inline)) float relu1(float v)
{
    return v < 0.0f ? 0.0f : v;
}

static void relu_avg_forward(float *restrict y, const float *restrict x, size_t planes, int H,
                             int W, int OH, int OW, int K, int S)
{
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++) {
        const float *xp = x + plane * H * W;
        float *yp = y + plane * OH * OW;
        for (int i = 0; i < OH; i++) {
            const float *r0 = xp + (size_t)i * S * W;
            for (int j = 0; j < OW; j++) {
                const float *win = r0 + (size_t)j * S;
                float sum = 0.0f;
                for (int a = 0; a < K; a++)
                    for (int b = 0; b < K; b++)
                        sum += relu1(win[(size_t)a * W + b]);
                yp[i * OW + j] = sum / div;
            }
        }
    }
}

static void relu_avg_backward(float *restrict dx, const float *restrict dy,
                              const float *restrict x, size_t planes, int H, int W, int OH,
                              int OW, int K)
{
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *g = dy + (plane * OH + i) * OW;
            for (int a = 0; a < K; a++) {
                const size_t row = (plane * H + (size_t)i * K + a) * W;
                float *d = dx + row;
                const float *xr = x + row;
                for (int j = 0; j < OW; j++) {
                    const float q = 0.0f + g[j] / div;
                    for (int b = 0; b < K; b++)
                        d[j * K + b] = xr[j * K + b] > 0.0f ? q : 0.0f;
                }
            }
        }
}

/* 2x2 windows on AVX-512, written out: the compiler's build of the loops
 * above, per path, left rows of fewer than 16 windows (LeNet-5's 14 and 5)
 * to scalar code; other windows take the loops above on every path.
 * Forward, sixteen windows of a row pair at once, even and odd columns pulled
 * apart by two-register permutes as in maxpool.c, the four ReLU'd terms
 * summed in the scan order from 0. Backward, eight windows (sixteen columns)
 * at once, each quotient doubled into its two columns by a permute, +0 where
 * x <= 0. */
#define TARGET_512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))

static inline TARGET_512 __attribute__((always_inline)) __m512 relu16(__m512 v)
{
    const __m512 zero = _mm512_setzero_ps();
    return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
}

static TARGET_512 void relu_avg2_forward_avx512(float *y, const float *x, size_t planes, int H,
                                                int W, int OH, int OW)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 four = _mm512_set1_ps(4.0f);
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + (plane * H + (size_t)(2 * i)) * W, *r1 = r0 + W;
            float *yr = y + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 16) {
                const int nj = OW - j0 < 16 ? OW - j0 : 16;
                const __mmask16 ka = lanes16(2 * nj), kb = lanes16(2 * nj - 16);
                const float *a = r0 + 2 * j0, *b = r1 + 2 * j0;
                const __m512 a0 = relu16(_mm512_maskz_loadu_ps(ka, a));
                const __m512 a1 = relu16(_mm512_maskz_loadu_ps(kb, a + 16));
                const __m512 b0 = relu16(_mm512_maskz_loadu_ps(ka, b));
                const __m512 b1 = relu16(_mm512_maskz_loadu_ps(kb, b + 16));
                __m512 sum = _mm512_add_ps(_mm512_setzero_ps(), _mm512_permutex2var_ps(a0, even, a1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(a0, odd, a1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b0, even, b1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b0, odd, b1));
                _mm512_mask_storeu_ps(yr + j0, lanes16(nj), _mm512_div_ps(sum, four));
            }
        }
}

static TARGET_512 void relu_avg2_backward_avx512(float *dx, const float *dy, const float *x,
                                                 size_t planes, int H, int W, int OH, int OW)
{
    const __m512i twice = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512 four = _mm512_set1_ps(4.0f), zero = _mm512_setzero_ps();
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *g = dy + (plane * OH + i) * OW;
            const size_t row = (plane * H + (size_t)(2 * i)) * W;
            for (int j0 = 0; j0 < OW; j0 += 8) {
                const int nj = OW - j0 < 8 ? OW - j0 : 8;
                const __mmask16 k = lanes16(2 * nj);
                const __m512 q = _mm512_add_ps(
                    zero, _mm512_div_ps(_mm512_maskz_loadu_ps(lanes16(nj), g + j0), four));
                const __m512 q2 = _mm512_permutexvar_ps(twice, q);
                for (int a = 0; a < 2; a++) {
                    float *d = dx + row + (size_t)a * W + 2 * j0;
                    const __m512 xv = _mm512_maskz_loadu_ps(k, x + row + (size_t)a * W + 2 * j0);
                    const __mmask16 pass = _mm512_cmp_ps_mask(xv, zero, _CMP_GT_OQ);
                    _mm512_mask_storeu_ps(d, k, _mm512_maskz_mov_ps(pass, q2));
                }
            }
        }
}

/* The same on AVX2: eight windows (forward) or four (backward) at once. */
#define TARGET_AVX2 __attribute__((target("avx2")))

static inline TARGET_AVX2 __attribute__((always_inline)) __m256 relu8(__m256 v)
{
    const __m256 zero = _mm256_setzero_ps();
    return _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
}

static TARGET_AVX2 void relu_avg2_forward_avx2(float *y, const float *x, size_t planes, int H,
                                               int W, int OH, int OW)
{
    const __m256 four = _mm256_set1_ps(4.0f);
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + (plane * H + (size_t)(2 * i)) * W, *r1 = r0 + W;
            float *yr = y + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 8) {
                const int nj = OW - j0 < 8 ? OW - j0 : 8;
                const __m256i ka = lanes8(2 * nj), kb = lanes8(2 * nj - 8);
                const float *a = r0 + 2 * j0, *b = r1 + 2 * j0;
                const __m256 a0 = relu8(_mm256_maskload_ps(a, ka));
                const __m256 a1 = relu8(_mm256_maskload_ps(a + 8, kb));
                const __m256 b0 = relu8(_mm256_maskload_ps(b, ka));
                const __m256 b1 = relu8(_mm256_maskload_ps(b + 8, kb));
                __m256 sum = _mm256_add_ps(_mm256_setzero_ps(), columns(a0, a1, 0));
                sum = _mm256_add_ps(sum, columns(a0, a1, 1));
                sum = _mm256_add_ps(sum, columns(b0, b1, 0));
                sum = _mm256_add_ps(sum, columns(b0, b1, 1));
                /* rows of y follow each other, written in order */
                store8_ahead(yr + j0, _mm256_div_ps(sum, four), nj, y + planes * OH * OW);
            }
        }
}

static TARGET_AVX2 void relu_avg2_backward_avx2(float *dx, const float *dy, const float *x,
                                                size_t planes, int H, int W, int OH, int OW)
{
    const __m256i twice = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 four = _mm256_set1_ps(4.0f), zero = _mm256_setzero_ps();
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *g = dy + (plane * OH + i) * OW;
            const size_t row = (plane * H + (size_t)(2 * i)) * W;
            for (int j0 = 0; j0 < OW; j0 += 4) {
                const int nj = OW - j0 < 4 ? OW - j0 : 4;
                const __m256i k = lanes8(2 * nj);
                const __m256 q = _mm256_add_ps(
                    zero, _mm256_div_ps(_mm256_maskload_ps(g + j0, lanes8(nj)), four));
                const __m256 q2 = _mm256_permutevar8x32_ps(q, twice);
                for (int a = 0; a < 2; a++) {
                    float *d = dx + row + (size_t)a * W + 2 * j0;
                    const __m256 xv = _mm256_maskload_ps(x + row + (size_t)a * W + 2 * j0, k);
                    const __m256 pass = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);
                    if (nj == 4) /* a masked store is microcode on AMD's cores */
                        _mm256_storeu_ps(d, _mm256_and_ps(pass, q2));
                    else
                        _mm256_maskstore_ps(d, k, _mm256_and_ps(pass, q2));
                }
            }
        }
}

void relu_avgpool_forward(float *y, const float *x, int n, const PoolShape *p)
{
    const size_t planes = (size_t)n * p->C;
    const int two = p->K == 2 && p->S == 2;
    if (two && isa_current() == ISA_AVX512)
        relu_avg2_forward_avx512(y, x, planes, p->H, p->W, p->OH, p->OW);
    else if (two && isa_current() == ISA_AVX2)
        relu_avg2_forward_avx2(y, x, planes, p->H, p->W, p->OH, p->OW);
    else
        relu_avg_forward(y, x, planes, p->H, p->W, p->OH, p->OW, p->K, p->S);
}

/* +0 in what no window reaches: the columns right of the last window, then
 * the rows below it */
static void zero_uncovered(float *dx, size_t planes, int H, int W, int OH, int OW, int K)
{
    for (size_t plane = 0; plane < planes; plane++) {
        float *d = dx + plane * H * W;
        if (OW * K < W)
            for (int i = 0; i < OH * K; i++)
                memset(d + (size_t)i * W + OW * K, 0, sizeof(float) * (size_t)(W - OW * K));
        if (OH * K < H)
            memset(d + (size_t)OH * K * W, 0, sizeof(float) * (size_t)(H - OH * K) * W);
    }
}

void relu_avgpool_backward(float *dx, const float *dy, const float *x, int n, const PoolShape *p)
{
    if (p->S != p->K)
        DIE("the fused ReLU + average pool needs windows that do not overlap (K %d, S %d)", p->K,
            p->S);
    const size_t planes = (size_t)n * p->C;
    zero_uncovered(dx, planes, p->H, p->W, p->OH, p->OW, p->K);
    if (p->K == 2 && isa_current() == ISA_AVX512)
        relu_avg2_backward_avx512(dx, dy, x, planes, p->H, p->W, p->OH, p->OW);
    else if (p->K == 2 && isa_current() == ISA_AVX2)
        relu_avg2_backward_avx2(dx, dy, x, planes, p->H, p->W, p->OH, p->OW);
    else
        relu_avg_backward(dx, dy, x, planes, p->H, p->W, p->OH, p->OW, p->K);
}

void avgpool_forward_ref(double *y, const double *x, int n, const PoolShape *p)
{
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                double sum = 0.0;
                for (int a = 0; a < p->K; a++)
                    for (int b = 0; b < p->K; b++)
                        sum += x[(plane * p->H + (size_t)i * p->S + a) * p->W + (size_t)j * p->S +
                                 b];
                y[(plane * p->OH + i) * p->OW + j] = sum / (p->K * p->K);
            }
}

void avgpool_backward_ref(double *dx, const double *dy, int n, const PoolShape *p)
{
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                const double g = dy[(plane * p->OH + i) * p->OW + j] / (p->K * p->K);
                for (int a = 0; a < p->K; a++)
                    for (int b = 0; b < p->K; b++)
                        dx[(plane * p->H + (size_t)i * p->S + a) * p->W + (size_t)j * p->S + b] +=
                            g;
            }
}
