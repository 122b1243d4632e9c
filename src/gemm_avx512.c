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

/* One tile: MR rows (rows past M repeat the last one and are not stored) by
 * NV vectors. The accumulators are named variables, one per row and vector
 * (with an array of them GCC kept them in memory); NV is a literal in the two
 * callers, so the second vector's work disappears from tile_1. */
#define ROW_LOAD(r)                                                                            \
    __m512 c##r##0 = _mm512_maskz_loadu_ps(k0, c[r]);                                          \
    __m512 c##r##1 = NV > 1 ? _mm512_maskz_loadu_ps(k1, c[r] + 16) : _mm512_setzero_ps()
#define ROW_FMA(r)                                                                             \
    do {                                                                                       \
        const __m512 a##r = _mm512_set1_ps(a[r][o]);                                           \
        c##r##0 = _mm512_fmadd_ps(a##r, b0, c##r##0);                                          \
        if (NV > 1)                                                                            \
            c##r##1 = _mm512_fmadd_ps(a##r, b1, c##r##1);                                      \
    } while (0)
#define ROW_STORE(r)                                                                           \
    do {                                                                                       \
        if (r < mr) {                                                                          \
            _mm512_mask_storeu_ps(c[r], k0, c##r##0);                                          \
            if (NV > 1)                                                                        \
                _mm512_mask_storeu_ps(c[r] + 16, k1, c##r##1);                                 \
        }                                                                                      \
    } while (0)

static inline TARGET __attribute__((always_inline)) void
tile(int NV, int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks, const float *B,
     const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc, __mmask16 k0, __mmask16 k1)
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
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, b);
        const __m512 b1 = NV > 1 ? _mm512_maskz_loadu_ps(k1, b + 16) : _mm512_setzero_ps();
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
                          ptrdiff_t ldc, __mmask16 k0, __mmask16 k1)
{
    tile(1, mr, K, A, ams, aks, B, boff, ldb, C, ldc, k0, k1);
}

static TARGET void tile_2(int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                          const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C,
                          ptrdiff_t ldc, __mmask16 k0, __mmask16 k1)
{
    tile(2, mr, K, A, ams, aks, B, boff, ldb, C, ldc, k0, k1);
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
