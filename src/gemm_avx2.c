/* The matrix product on AVX2 with FMA (gemm.h has the contract): tiles of MR
 * rows by 16 columns (two 8-float registers), k innermost, one fused
 * multiply-add per term, as the other paths. Column tails use masked loads
 * and stores. */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>

#include "dpcnn/gemm.h"
#include "dpcnn/lanes.h"

#define TARGET __attribute__((target("avx2,fma")))
enum { MR = 6, NR = 16 };

/* One tile: MR rows (rows past M repeat the last one and are not stored) by
 * NV vectors. The accumulators are named variables, one per row and vector
 * (with an array of them GCC kept them in memory); NV is a literal in the two
 * callers, so the second vector's work disappears from tile_1. */
#define ROW_LOAD(r)                                                                            \
    __m256 c##r##0 = _mm256_maskload_ps(c[r], k0);                                             \
    __m256 c##r##1 = NV > 1 ? _mm256_maskload_ps(c[r] + 8, k1) : _mm256_setzero_ps()
#define ROW_FMA(r)                                                                             \
    do {                                                                                       \
        const __m256 a##r = _mm256_broadcast_ss(&a[r][o]);                                     \
        c##r##0 = _mm256_fmadd_ps(a##r, b0, c##r##0);                                          \
        if (NV > 1)                                                                            \
            c##r##1 = _mm256_fmadd_ps(a##r, b1, c##r##1);                                      \
    } while (0)
#define ROW_STORE(r)                                                                           \
    do {                                                                                       \
        if (r < mr) {                                                                          \
            _mm256_maskstore_ps(c[r], k0, c##r##0);                                            \
            if (NV > 1)                                                                        \
                _mm256_maskstore_ps(c[r] + 8, k1, c##r##1);                                    \
        }                                                                                      \
    } while (0)

static inline TARGET __attribute__((always_inline)) void
tile(int NV, int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks, const float *B,
     const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc, __m256i k0, __m256i k1)
{
    const float *a[MR];
    float *c[MR];
    for (int r = 0; r < MR; r++) {
        const int rr = r < mr ? r : mr - 1;
        a[r] = A + rr * ams;
        c[r] = C + rr * ldc;
    }
    ROW_LOAD(0);
    ROW_LOAD(1);
    ROW_LOAD(2);
    ROW_LOAD(3);
    ROW_LOAD(4);
    ROW_LOAD(5);
    for (int k = 0; k < K; k++) {
        const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
        const __m256 b0 = _mm256_maskload_ps(b, k0);
        const __m256 b1 = NV > 1 ? _mm256_maskload_ps(b + 8, k1) : _mm256_setzero_ps();
        const ptrdiff_t o = (ptrdiff_t)k * aks;
        ROW_FMA(0);
        ROW_FMA(1);
        ROW_FMA(2);
        ROW_FMA(3);
        ROW_FMA(4);
        ROW_FMA(5);
    }
    ROW_STORE(0);
    ROW_STORE(1);
    ROW_STORE(2);
    ROW_STORE(3);
    ROW_STORE(4);
    ROW_STORE(5);
}

static TARGET void tile_1(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                          const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc, __m256i k0, __m256i k1)
{
    tile(1, mr, K, A, ams, aks, B, boff, ldb, C, ldc, k0, k1);
}

static TARGET void tile_2(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                          const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc, __m256i k0, __m256i k1)
{
    tile(2, mr, K, A, ams, aks, B, boff, ldb, C, ldc, k0, k1);
}

TARGET void gemm_acc_avx2(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                          const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc)
{
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int w = N - n0 < NR ? N - n0 : NR;
        const int nv = w > 8 ? 2 : 1;
        const __m256i k0 = lanes8(w), k1 = lanes8(w - 8);
        for (int m0 = 0; m0 < M; m0 += MR) {
            const int mr = M - m0 < MR ? M - m0 : MR;
            (nv == 2 ? tile_2 : tile_1)(mr, K, A + (ptrdiff_t)m0 * ams, ams, aks, B + n0, boff,
                                        ldb, C + (ptrdiff_t)m0 * ldc + n0, ldc, k0, k1);
        }
    }
}
