/* Max-pool, kernel K, stride S, no padding (PyTorch's floor rule), with the
 * winner of each window remembered; and the fused ReLU + max-pool.
 *
 * The winner is kept as its offset within the input plane, so the backward
 * pass is a plain scatter-add; with overlapping windows (S < K) an input may
 * win several windows and its gradient is the sum. PyTorch scans the window
 * row by row and replaces the running maximum only when a value is strictly
 * larger or is a NaN (`val > maxval || isnan(val)`), so on ties the first
 * element wins and a NaN always wins (of several NaNs, the last). After a ReLU
 * ties at zero are common, and matching the rule keeps gradients equal to
 * PyTorch's, not merely equivalent. pool_shape() lives here for both pools. */
#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "dpcnn/isa.h"
#include "dpcnn/lanes.h"
#include "dpcnn/layers.h"

int pool_shape(PoolShape *p)
{
    if (p->C <= 0 || p->K <= 0 || p->S <= 0 || p->H < p->K || p->W < p->K)
        return -1;
    if ((int64_t)p->H * p->W > INT32_MAX) /* arg keeps plane offsets in int32 */
        return -1;
    p->OH = (p->H - p->K) / p->S + 1;
    p->OW = (p->W - p->K) / p->S + 1;
    return 0;
}

/* One output row: the windows whose top row starts at r0, the first element of
 * window j at plane offset base + j*S. Branch-free (after a ReLU the
 * comparisons are coin flips, and mispredictions cost more than the
 * arithmetic). Starting from the window's first element is PyTorch's start
 * from -inf: the first element replaces -inf unless it is -inf itself, and
 * then the first index is kept either way. Always inlined with K and S
 * literals for the common shapes, so the window loops disappear. */
static inline __attribute__((always_inline)) void
pool_row(float *restrict yr, int32_t *restrict ar, const float *restrict r0, int32_t base, int W,
         int OW, int K, int S)
{
    for (int j = 0; j < OW; j++) {
        const float *win = r0 + (size_t)j * S;
        const int32_t o = base + j * S;
        float best = win[0];
        int32_t at = o;
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                if (a == 0 && b == 0)
                    continue;
                const float v = win[(size_t)a * W + b];
                const int take = (v > best) | (v != v);
                best = take ? v : best;
                at = take ? o + a * W + b : at;
            }
        yr[j] = best;
        ar[j] = at;
    }
}

static inline __attribute__((always_inline)) void
pool_planes(float *y, int32_t *arg, const float *x, size_t planes, int H, int W, int OH, int OW,
            int K, int S)
{
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++)
            pool_row(y + (plane * OH + i) * OW, arg + (plane * OH + i) * OW,
                     x + (plane * H + (size_t)i * S) * W, i * S * W, W, OW, K, S);
}

/* 2x2 windows, stride 2, on AVX-512: sixteen windows of a row at once. A
 * row's even and odd columns are pulled apart with one two-register permute
 * each; the four candidates are taken in pool_row's order with its rule, lane
 * by lane, so the winners and values are pool_row's, bit for bit. Input rows
 * are ld floats apart and planes xp apart (a convolution's wide output can be
 * pooled where it lies); winners are offsets in a plane of rows W wide. With
 * relu, the ReLU follows (x < 0 ? 0 : x, as relu_forward). */
#define TARGET_512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))

static inline TARGET_512 __attribute__((always_inline)) void
take(__m512 *best, __m512i *at, __m512 v, __m512i where)
{
    const __mmask16 m = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *best = _mm512_mask_mov_ps(*best, m, v);
    *at = _mm512_mask_mov_epi32(*at, m, where);
}

/* Sixteen windows: their even and odd columns pulled from rows a (top) and b
 * (bottom), each held in two registers, the candidates taken in pool_row's
 * order from first (each window's first element), then the ReLU if asked. */
static inline TARGET_512 __attribute__((always_inline)) void
windows16(__m512 *best, __m512i *at, __m512 a0, __m512 a1, __m512 b0, __m512 b1, __m512i first,
          int W, int relu, __m512i even, __m512i odd)
{
    *best = _mm512_permutex2var_ps(a0, even, a1);
    *at = first;
    take(best, at, _mm512_permutex2var_ps(a0, odd, a1),
         _mm512_add_epi32(first, _mm512_set1_epi32(1)));
    take(best, at, _mm512_permutex2var_ps(b0, even, b1),
         _mm512_add_epi32(first, _mm512_set1_epi32(W)));
    take(best, at, _mm512_permutex2var_ps(b0, odd, b1),
         _mm512_add_epi32(first, _mm512_set1_epi32(W + 1)));
    if (relu)
        *best = _mm512_mask_mov_ps(
            *best, _mm512_cmp_ps_mask(*best, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
}

/* Rows of at most 8 windows (the tutorial's second layer pools 8 x 8 into
 * 4 x 4): two rows of windows at once, the upper one in lanes 8 and up, so
 * that the same permutes pull each row's even and odd columns apart from
 * two registers that hold a row each; the winners and values are compacted
 * into the two output rows, which follow each other. */
static inline TARGET_512 __attribute__((always_inline)) void
plane_pairs(float *y, int32_t *arg, const float *xs, int ld, int W, int OH, int OW, int relu,
            __m512i even, __m512i odd)
{
    const __mmask16 row = lanes16(2 * OW), both = (__mmask16)(lanes16(OW) | lanes16(OW) << 8);
    /* lanes 8 and up: the next row of windows, 2 W further into the plane */
    const __m512i upper = _mm512_maskz_mov_epi32(0xff00, _mm512_set1_epi32(2 * W - 16));
    for (int i = 0; i < OH; i += 2) {
        const int two = i + 1 < OH;
        const float *r0 = xs + (size_t)(2 * i) * ld;
        const __mmask16 next = two ? row : 0;
        const __m512 a0 = _mm512_maskz_loadu_ps(row, r0);
        const __m512 b0 = _mm512_maskz_loadu_ps(row, r0 + ld);
        const __m512 a1 = _mm512_maskz_loadu_ps(next, r0 + 2 * (size_t)ld);
        const __m512 b1 = _mm512_maskz_loadu_ps(next, r0 + 3 * (size_t)ld);
        const __m512i first =
            _mm512_add_epi32(_mm512_add_epi32(even, upper), _mm512_set1_epi32(2 * i * W));
        __m512 best;
        __m512i at;
        windows16(&best, &at, a0, a1, b0, b1, first, W, relu, even, odd);
        const __mmask16 keep = two ? both : lanes16(OW), out = lanes16(two ? 2 * OW : OW);
        _mm512_mask_storeu_ps(y + (size_t)i * OW, out, _mm512_maskz_compress_ps(keep, best));
        _mm512_mask_storeu_epi32(arg + (size_t)i * OW, out, _mm512_maskz_compress_epi32(keep, at));
    }
}

static TARGET_512 void planes_avx512(float *y, int32_t *arg, const float *x, size_t planes,
                                     size_t xp, int ld, int W, int OH, int OW, int relu)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    if (OW <= 8) {
        for (size_t plane = 0; plane < planes; plane++)
            plane_pairs(y + plane * OH * OW, arg + plane * OH * OW, x + plane * xp, ld, W, OH, OW,
                        relu, even, odd);
        return;
    }
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + plane * xp + (size_t)(2 * i) * ld, *r1 = r0 + ld;
            float *yr = y + (plane * OH + i) * OW;
            int32_t *ar = arg + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 16) {
                const int nj = OW - j0 < 16 ? OW - j0 : 16;
                const __mmask16 ka = lanes16(2 * nj), kb = lanes16(2 * nj - 16);
                const float *a = r0 + 2 * j0, *b = r1 + 2 * j0;
                const __m512 a0 = _mm512_maskz_loadu_ps(ka, a), a1 = _mm512_maskz_loadu_ps(kb, a + 16);
                const __m512 b0 = _mm512_maskz_loadu_ps(ka, b), b1 = _mm512_maskz_loadu_ps(kb, b + 16);
                /* the window's first element: row 0, even column */
                const __m512i first = _mm512_add_epi32(even, _mm512_set1_epi32(2 * i * W + 2 * j0));
                __m512 best;
                __m512i at;
                windows16(&best, &at, a0, a1, b0, b1, first, W, relu, even, odd);
                const __mmask16 out = lanes16(nj);
                _mm512_mask_storeu_ps(yr + j0, out, best);
                _mm512_mask_storeu_epi32(ar + j0, out, at);
            }
        }
}

/* The same on AVX2, eight windows at a time: AVX2 has no two-register
 * permute, so a row's 16 floats are split into even and odd columns by a
 * shuffle within each 128-bit half and a swap of the middle 64-bit pieces. */
#define TARGET_AVX2 __attribute__((target("avx2")))

static inline TARGET_AVX2 __attribute__((always_inline)) void
take8(__m256 *best, __m256i *at, __m256 v, __m256i where)
{
    const __m256 m = _mm256_or_ps(_mm256_cmp_ps(v, *best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    *best = _mm256_blendv_ps(*best, v, m);
    *at = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(*at), _mm256_castsi256_ps(where), m));
}

static TARGET_AVX2 void planes_avx2(float *y, int32_t *arg, const float *x, size_t planes,
                                    size_t xp, int ld, int W, int OH, int OW, int relu)
{
    const __m256i two = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + plane * xp + (size_t)(2 * i) * ld, *r1 = r0 + ld;
            float *yr = y + (plane * OH + i) * OW;
            int32_t *ar = arg + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 8) {
                const int nj = OW - j0 < 8 ? OW - j0 : 8;
                const __m256i ka = lanes8(2 * nj), kb = lanes8(2 * nj - 8);
                const float *a = r0 + 2 * j0, *b = r1 + 2 * j0;
                const __m256 a0 = _mm256_maskload_ps(a, ka), a1 = _mm256_maskload_ps(a + 8, kb);
                const __m256 b0 = _mm256_maskload_ps(b, ka), b1 = _mm256_maskload_ps(b + 8, kb);
                const __m256i first = _mm256_add_epi32(two, _mm256_set1_epi32(2 * i * W + 2 * j0));
                __m256 best = columns(a0, a1, 0);
                __m256i at = first;
                take8(&best, &at, columns(a0, a1, 1), _mm256_add_epi32(first, _mm256_set1_epi32(1)));
                take8(&best, &at, columns(b0, b1, 0), _mm256_add_epi32(first, _mm256_set1_epi32(W)));
                take8(&best, &at, columns(b0, b1, 1),
                      _mm256_add_epi32(first, _mm256_set1_epi32(W + 1)));
                if (relu)
                    best = _mm256_blendv_ps(best, _mm256_setzero_ps(),
                                            _mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_LT_OQ));
                /* rows of y and arg follow each other, written in order */
                store8_ahead(yr + j0, best, nj, y + planes * OH * OW);
                store8i_ahead(ar + j0, at, nj, arg + planes * OH * OW);
            }
        }
}

void maxpool2_planes(float *y, int32_t *arg, const float *x, size_t planes, size_t xp, int ld,
                     int W, int OH, int OW, int relu)
{
    if (isa_current() == ISA_AVX512)
        planes_avx512(y, arg, x, planes, xp, ld, W, OH, OW, relu);
    else
        planes_avx2(y, arg, x, planes, xp, ld, W, OH, OW, relu);
}

void maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p)
{
    const size_t planes = (size_t)n * p->C;
    if (p->K == 2 && p->S == 2 && isa_current() != ISA_GENERIC)
        maxpool2_planes(y, arg, x, planes, (size_t)p->H * p->W, p->W, p->W, p->OH, p->OW, 0);
    else if (p->K == 2 && p->S == 2)
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, 2, 2);
    else if (p->K == 3 && p->S == 2)
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, 3, 2);
    else
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, p->K, p->S);
}

void maxpool_backward(float *dx, const float *dy, const int32_t *arg, int n, const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++) {
        float *dxp = dx + plane * in;
        for (size_t k = 0; k < out; k++)
            dxp[arg[plane * out + k]] += dy[plane * out + k];
    }
}

void relu_maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p)
{
    if (p->K == 2 && p->S == 2 && isa_current() != ISA_GENERIC) {
        maxpool2_planes(y, arg, x, (size_t)n * p->C, (size_t)p->H * p->W, p->W, p->W, p->OH,
                        p->OW, 1);
        return;
    }
    maxpool_forward(y, arg, x, n, p);
    const size_t out = (size_t)n * p->C * p->OH * p->OW;
    for (size_t k = 0; k < out; k++) /* x < 0 ? 0 : x, as relu_forward: NaN passes */
        y[k] = y[k] < 0.0f ? 0.0f : y[k];
}

void relu_maxpool_backward(float *dx, const float *dy, const float *y, const int32_t *arg, int n,
                           const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++) {
        float *dxp = dx + plane * in;
        for (size_t k = 0; k < out; k++) {
            const size_t o = plane * out + k;
            const float g = dy[o];
            dxp[arg[o]] += y[o] > 0.0f ? g : 0.0f;
        }
    }
}

/* The reference recomputes the winner from x rather than trusting arg, by
 * PyTorch's own loop: from -inf, take v when v > best or v is NaN. */
static size_t winner_ref(const double *xp, int W, int i, int j, const PoolShape *p)
{
    size_t win = (size_t)i * p->S * W + (size_t)j * p->S;
    double best = -INFINITY;
    for (int a = 0; a < p->K; a++)
        for (int b = 0; b < p->K; b++) {
            const size_t o = (size_t)(i * p->S + a) * W + (size_t)j * p->S + b;
            if (xp[o] > best || isnan(xp[o])) {
                best = xp[o];
                win = o;
            }
        }
    return win;
}

void maxpool_forward_ref(double *y, const double *x, int n, const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                const double *xp = x + plane * in;
                y[plane * out + (size_t)i * p->OW + j] = xp[winner_ref(xp, p->W, i, j, p)];
            }
}

void maxpool_backward_ref(double *dx, const double *dy, const double *x, int n,
                          const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++)
                dx[plane * in + winner_ref(x + plane * in, p->W, i, j, p)] +=
                    dy[plane * out + (size_t)i * p->OW + j];
}
