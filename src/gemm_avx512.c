/* The matrix product on AVX-512 (gemm.h has the contract): tiles of MR rows
 * by 32 columns (two 16-float registers), the row's k loop innermost, each
 * accumulator one output lane: c = fma(a, b, c), k after k, as the plain C
 * path does it element by element. Column tails use masked loads and stores
 * (a masked lane is never read or written). */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>

#include "dpcnn/gemm.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
enum { MR = 6, NR = 32 };

/* Written out: with arrays of accumulators GCC kept them in memory. */
/* MR rows (rows past M repeat the last one and are not stored) by 1 vectors */
static TARGET void tile_1(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                       const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                       ptrdiff_t ldc, __mmask16 k0, __mmask16 k1)
{
    (void)k1;
    const float *a[MR];
    float *c[MR];
    for (int r = 0; r < MR; r++) {
        const int rr = r < mr ? r : mr - 1;
        a[r] = A + rr * ams;
        c[r] = C + rr * ldc;
    }
    __m512 c00 = _mm512_maskz_loadu_ps(k0, c[0] + 0);
    __m512 c10 = _mm512_maskz_loadu_ps(k0, c[1] + 0);
    __m512 c20 = _mm512_maskz_loadu_ps(k0, c[2] + 0);
    __m512 c30 = _mm512_maskz_loadu_ps(k0, c[3] + 0);
    __m512 c40 = _mm512_maskz_loadu_ps(k0, c[4] + 0);
    __m512 c50 = _mm512_maskz_loadu_ps(k0, c[5] + 0);
    for (int k = 0; k < K; k++) {
        const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, b + 0);
        const ptrdiff_t o = (ptrdiff_t)k * aks;
        const __m512 a0 = _mm512_set1_ps(a[0][o]);
        c00 = _mm512_fmadd_ps(a0, b0, c00);
        const __m512 a1 = _mm512_set1_ps(a[1][o]);
        c10 = _mm512_fmadd_ps(a1, b0, c10);
        const __m512 a2 = _mm512_set1_ps(a[2][o]);
        c20 = _mm512_fmadd_ps(a2, b0, c20);
        const __m512 a3 = _mm512_set1_ps(a[3][o]);
        c30 = _mm512_fmadd_ps(a3, b0, c30);
        const __m512 a4 = _mm512_set1_ps(a[4][o]);
        c40 = _mm512_fmadd_ps(a4, b0, c40);
        const __m512 a5 = _mm512_set1_ps(a[5][o]);
        c50 = _mm512_fmadd_ps(a5, b0, c50);
    }
    _mm512_mask_storeu_ps(c[0] + 0, k0, c00);
    if (1 < mr)
        _mm512_mask_storeu_ps(c[1] + 0, k0, c10);
    if (2 < mr)
        _mm512_mask_storeu_ps(c[2] + 0, k0, c20);
    if (3 < mr)
        _mm512_mask_storeu_ps(c[3] + 0, k0, c30);
    if (4 < mr)
        _mm512_mask_storeu_ps(c[4] + 0, k0, c40);
    if (5 < mr)
        _mm512_mask_storeu_ps(c[5] + 0, k0, c50);
}

/* MR rows (rows past M repeat the last one and are not stored) by 2 vectors */
static TARGET void tile_2(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                       const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                       ptrdiff_t ldc, __mmask16 k0, __mmask16 k1)
{
    (void)k1;
    const float *a[MR];
    float *c[MR];
    for (int r = 0; r < MR; r++) {
        const int rr = r < mr ? r : mr - 1;
        a[r] = A + rr * ams;
        c[r] = C + rr * ldc;
    }
    __m512 c00 = _mm512_maskz_loadu_ps(k0, c[0] + 0);
    __m512 c01 = _mm512_maskz_loadu_ps(k1, c[0] + 16);
    __m512 c10 = _mm512_maskz_loadu_ps(k0, c[1] + 0);
    __m512 c11 = _mm512_maskz_loadu_ps(k1, c[1] + 16);
    __m512 c20 = _mm512_maskz_loadu_ps(k0, c[2] + 0);
    __m512 c21 = _mm512_maskz_loadu_ps(k1, c[2] + 16);
    __m512 c30 = _mm512_maskz_loadu_ps(k0, c[3] + 0);
    __m512 c31 = _mm512_maskz_loadu_ps(k1, c[3] + 16);
    __m512 c40 = _mm512_maskz_loadu_ps(k0, c[4] + 0);
    __m512 c41 = _mm512_maskz_loadu_ps(k1, c[4] + 16);
    __m512 c50 = _mm512_maskz_loadu_ps(k0, c[5] + 0);
    __m512 c51 = _mm512_maskz_loadu_ps(k1, c[5] + 16);
    for (int k = 0; k < K; k++) {
        const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, b + 0);
        const __m512 b1 = _mm512_maskz_loadu_ps(k1, b + 16);
        const ptrdiff_t o = (ptrdiff_t)k * aks;
        const __m512 a0 = _mm512_set1_ps(a[0][o]);
        c00 = _mm512_fmadd_ps(a0, b0, c00);
        c01 = _mm512_fmadd_ps(a0, b1, c01);
        const __m512 a1 = _mm512_set1_ps(a[1][o]);
        c10 = _mm512_fmadd_ps(a1, b0, c10);
        c11 = _mm512_fmadd_ps(a1, b1, c11);
        const __m512 a2 = _mm512_set1_ps(a[2][o]);
        c20 = _mm512_fmadd_ps(a2, b0, c20);
        c21 = _mm512_fmadd_ps(a2, b1, c21);
        const __m512 a3 = _mm512_set1_ps(a[3][o]);
        c30 = _mm512_fmadd_ps(a3, b0, c30);
        c31 = _mm512_fmadd_ps(a3, b1, c31);
        const __m512 a4 = _mm512_set1_ps(a[4][o]);
        c40 = _mm512_fmadd_ps(a4, b0, c40);
        c41 = _mm512_fmadd_ps(a4, b1, c41);
        const __m512 a5 = _mm512_set1_ps(a[5][o]);
        c50 = _mm512_fmadd_ps(a5, b0, c50);
        c51 = _mm512_fmadd_ps(a5, b1, c51);
    }
    _mm512_mask_storeu_ps(c[0] + 0, k0, c00);
    _mm512_mask_storeu_ps(c[0] + 16, k1, c01);
    if (1 < mr) {
        _mm512_mask_storeu_ps(c[1] + 0, k0, c10);
        _mm512_mask_storeu_ps(c[1] + 16, k1, c11);
    }
    if (2 < mr) {
        _mm512_mask_storeu_ps(c[2] + 0, k0, c20);
        _mm512_mask_storeu_ps(c[2] + 16, k1, c21);
    }
    if (3 < mr) {
        _mm512_mask_storeu_ps(c[3] + 0, k0, c30);
        _mm512_mask_storeu_ps(c[3] + 16, k1, c31);
    }
    if (4 < mr) {
        _mm512_mask_storeu_ps(c[4] + 0, k0, c40);
        _mm512_mask_storeu_ps(c[4] + 16, k1, c41);
    }
    if (5 < mr) {
        _mm512_mask_storeu_ps(c[5] + 0, k0, c50);
        _mm512_mask_storeu_ps(c[5] + 16, k1, c51);
    }
}

static inline __mmask16 lanes(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

TARGET void gemm_acc_avx512(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                            const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                            ptrdiff_t ldc)
{
    /* column blocks outside, row blocks inside: a block of B (K x 32) is read
     * from L1 by every row block */
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int w = N - n0 < NR ? N - n0 : NR;
        const int nv = w > 16 ? 2 : 1;
        const __mmask16 k0 = lanes(w), k1 = lanes(w - 16);
        /* a column offset into B: every row pointer moves by n0 */
        for (int m0 = 0; m0 < M; m0 += MR) {
            const int mr = M - m0 < MR ? M - m0 : MR;
            const float *Bn = B + n0;
            (nv == 2 ? tile_2 : tile_1)(mr, K, A + (ptrdiff_t)m0 * ams, ams, aks, Bn, boff, ldb,
                                        C + (ptrdiff_t)m0 * ldc + n0, ldc, k0, k1);
        }
    }
}
