/* The matrix product on AVX2 with FMA (gemm.h has the contract): tiles of MR
 * rows by 16 columns (two 8-float registers), k innermost, one fused
 * multiply-add per term, as the other paths. Column tails use masked loads
 * and stores. */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>

#include "dpcnn/gemm.h"

#define TARGET __attribute__((target("avx2,fma")))
enum { MR = 6, NR = 16 };

static inline TARGET __m256i lanes(int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx); /* lane i: i < n */
}

/* Written out: with arrays of accumulators GCC kept them in memory. */
/* MR rows (rows past M repeat the last one and are not stored) by 1 vectors */
static TARGET void tile_1(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                       const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                       ptrdiff_t ldc, __m256i k0, __m256i k1)
{
    (void)k1;
    const float *a[MR];
    float *c[MR];
    for (int r = 0; r < MR; r++) {
        const int rr = r < mr ? r : mr - 1;
        a[r] = A + rr * ams;
        c[r] = C + rr * ldc;
    }
    __m256 c00 = _mm256_maskload_ps(c[0] + 0, k0);
    __m256 c10 = _mm256_maskload_ps(c[1] + 0, k0);
    __m256 c20 = _mm256_maskload_ps(c[2] + 0, k0);
    __m256 c30 = _mm256_maskload_ps(c[3] + 0, k0);
    __m256 c40 = _mm256_maskload_ps(c[4] + 0, k0);
    __m256 c50 = _mm256_maskload_ps(c[5] + 0, k0);
    for (int k = 0; k < K; k++) {
        const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
        const __m256 b0 = _mm256_maskload_ps(b + 0, k0);
        const ptrdiff_t o = (ptrdiff_t)k * aks;
        const __m256 a0 = _mm256_broadcast_ss(&a[0][o]);
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        const __m256 a1 = _mm256_broadcast_ss(&a[1][o]);
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        const __m256 a2 = _mm256_broadcast_ss(&a[2][o]);
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        const __m256 a3 = _mm256_broadcast_ss(&a[3][o]);
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        const __m256 a4 = _mm256_broadcast_ss(&a[4][o]);
        c40 = _mm256_fmadd_ps(a4, b0, c40);
        const __m256 a5 = _mm256_broadcast_ss(&a[5][o]);
        c50 = _mm256_fmadd_ps(a5, b0, c50);
    }
    _mm256_maskstore_ps(c[0] + 0, k0, c00);
    if (1 < mr)
        _mm256_maskstore_ps(c[1] + 0, k0, c10);
    if (2 < mr)
        _mm256_maskstore_ps(c[2] + 0, k0, c20);
    if (3 < mr)
        _mm256_maskstore_ps(c[3] + 0, k0, c30);
    if (4 < mr)
        _mm256_maskstore_ps(c[4] + 0, k0, c40);
    if (5 < mr)
        _mm256_maskstore_ps(c[5] + 0, k0, c50);
}

/* MR rows (rows past M repeat the last one and are not stored) by 2 vectors */
static TARGET void tile_2(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                       const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                       ptrdiff_t ldc, __m256i k0, __m256i k1)
{
    (void)k1;
    const float *a[MR];
    float *c[MR];
    for (int r = 0; r < MR; r++) {
        const int rr = r < mr ? r : mr - 1;
        a[r] = A + rr * ams;
        c[r] = C + rr * ldc;
    }
    __m256 c00 = _mm256_maskload_ps(c[0] + 0, k0);
    __m256 c01 = _mm256_maskload_ps(c[0] + 8, k1);
    __m256 c10 = _mm256_maskload_ps(c[1] + 0, k0);
    __m256 c11 = _mm256_maskload_ps(c[1] + 8, k1);
    __m256 c20 = _mm256_maskload_ps(c[2] + 0, k0);
    __m256 c21 = _mm256_maskload_ps(c[2] + 8, k1);
    __m256 c30 = _mm256_maskload_ps(c[3] + 0, k0);
    __m256 c31 = _mm256_maskload_ps(c[3] + 8, k1);
    __m256 c40 = _mm256_maskload_ps(c[4] + 0, k0);
    __m256 c41 = _mm256_maskload_ps(c[4] + 8, k1);
    __m256 c50 = _mm256_maskload_ps(c[5] + 0, k0);
    __m256 c51 = _mm256_maskload_ps(c[5] + 8, k1);
    for (int k = 0; k < K; k++) {
        const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
        const __m256 b0 = _mm256_maskload_ps(b + 0, k0);
        const __m256 b1 = _mm256_maskload_ps(b + 8, k1);
        const ptrdiff_t o = (ptrdiff_t)k * aks;
        const __m256 a0 = _mm256_broadcast_ss(&a[0][o]);
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        c01 = _mm256_fmadd_ps(a0, b1, c01);
        const __m256 a1 = _mm256_broadcast_ss(&a[1][o]);
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        c11 = _mm256_fmadd_ps(a1, b1, c11);
        const __m256 a2 = _mm256_broadcast_ss(&a[2][o]);
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        c21 = _mm256_fmadd_ps(a2, b1, c21);
        const __m256 a3 = _mm256_broadcast_ss(&a[3][o]);
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        c31 = _mm256_fmadd_ps(a3, b1, c31);
        const __m256 a4 = _mm256_broadcast_ss(&a[4][o]);
        c40 = _mm256_fmadd_ps(a4, b0, c40);
        c41 = _mm256_fmadd_ps(a4, b1, c41);
        const __m256 a5 = _mm256_broadcast_ss(&a[5][o]);
        c50 = _mm256_fmadd_ps(a5, b0, c50);
        c51 = _mm256_fmadd_ps(a5, b1, c51);
    }
    _mm256_maskstore_ps(c[0] + 0, k0, c00);
    _mm256_maskstore_ps(c[0] + 8, k1, c01);
    if (1 < mr) {
        _mm256_maskstore_ps(c[1] + 0, k0, c10);
        _mm256_maskstore_ps(c[1] + 8, k1, c11);
    }
    if (2 < mr) {
        _mm256_maskstore_ps(c[2] + 0, k0, c20);
        _mm256_maskstore_ps(c[2] + 8, k1, c21);
    }
    if (3 < mr) {
        _mm256_maskstore_ps(c[3] + 0, k0, c30);
        _mm256_maskstore_ps(c[3] + 8, k1, c31);
    }
    if (4 < mr) {
        _mm256_maskstore_ps(c[4] + 0, k0, c40);
        _mm256_maskstore_ps(c[4] + 8, k1, c41);
    }
    if (5 < mr) {
        _mm256_maskstore_ps(c[5] + 0, k0, c50);
        _mm256_maskstore_ps(c[5] + 8, k1, c51);
    }
}

TARGET void gemm_acc_avx2(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                          const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc)
{
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int w = N - n0 < NR ? N - n0 : NR;
        const int nv = w > 8 ? 2 : 1;
        const __m256i k0 = lanes(w), k1 = lanes(w - 8);
        for (int m0 = 0; m0 < M; m0 += MR) {
            const int mr = M - m0 < MR ? M - m0 : MR;
            (nv == 2 ? tile_2 : tile_1)(mr, K, A + (ptrdiff_t)m0 * ams, ams, aks, B + n0, boff,
                                        ldb, C + (ptrdiff_t)m0 * ldc + n0, ldc, k0, k1);
        }
    }
}
