/* The matrix product on AVX2 with FMA (gemm.h has the contract): tiles of MR
 * rows by 16 columns (two 8-float registers), k innermost, one fused
 * multiply-add per term, as the other paths. A column tail (the last
 * vector of the last block) uses masked loads and stores; every other load
 * and store is a plain one (a masked load takes an ALU operation beside the
 * load, as on AVX-512: gemm_avx512.c). */
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
/* vector v of a row (v < NV): masked only as the tail */
#define LOADV(v, p) (TAIL && v == NV - 1 ? _mm256_maskload_ps(p, kt) : _mm256_loadu_ps(p))
#define STOREV(v, p, x)                                                                        \
    do {                                                                                       \
        if (TAIL && v == NV - 1)                                                               \
            _mm256_maskstore_ps(p, kt, x);                                                     \
        else                                                                                   \
            _mm256_storeu_ps(p, x);                                                            \
    } while (0)
/* the start of row r's accumulators: C, or the row's c0 (+0 without one) */
#define ROW_LOAD(r)                                                                            \
    const __m256 s##r = r < mr && st.c0 ? _mm256_set1_ps(st.c0[r]) : _mm256_setzero_ps();      \
    __m256 c##r##0 = r < mr && st.from_c ? LOADV(0, c[r]) : s##r;                              \
    __m256 c##r##1 = NV > 1 && r < mr && st.from_c ? LOADV(1, c[r] + 8) : s##r
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
            STOREV(0, c[r], c##r##0);                                                          \
            if (NV > 1)                                                                        \
                STOREV(1, c[r] + 8, c##r##1);                                                  \
        }                                                                                      \
    } while (0)

static inline TARGET __attribute__((always_inline)) void
tile(int NV, int TAIL, int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
     const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc, __m256i kt,
     GemmStart st)
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
        const __m256 b0 = LOADV(0, b);
        const __m256 b1 = NV > 1 ? LOADV(1, b + 8) : _mm256_setzero_ps();
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

/* One function per tile width and tail, the rows a run-time count (the
 * rows' branches sit outside the k loop). */
#define TILE_FN(NV, T)                                                                         \
    static TARGET void tile_##NV##_##T(int mr, int K, const float *A, ptrdiff_t ams,           \
                                       ptrdiff_t aks, const float *B, const ptrdiff_t *boff,   \
                                       ptrdiff_t ldb, float *C, ptrdiff_t ldc, __m256i kt,     \
                                       GemmStart st)                                           \
    {                                                                                          \
        tile(NV, T, mr, K, A, ams, aks, B, boff, ldb, C, ldc, kt, st);                         \
    }
TILE_FN(1, 0)
TILE_FN(2, 0)
TILE_FN(1, 1)
TILE_FN(2, 1)
#undef TILE_FN

typedef void (*Tile)(int, int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                     const ptrdiff_t *, ptrdiff_t, float *, ptrdiff_t, __m256i, GemmStart);
/* [tail][vectors - 1] */
static const Tile tiles[2][2] = {{tile_1_0, tile_2_0}, {tile_1_1, tile_2_1}};

TARGET void gemm_avx2(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                      const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                      GemmStart start)
{
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int w = N - n0 < NR ? N - n0 : NR;
        const int nv = w > 8 ? 2 : 1;
        const int tail = w % 8 != 0;
        const __m256i kt = lanes8(w - 8 * (nv - 1));
        for (int m0 = 0; m0 < M; m0 += MR) {
            const int mr = M - m0 < MR ? M - m0 : MR;
            const GemmStart st = {start.from_c, start.c0 ? start.c0 + m0 : NULL};
            tiles[tail][nv - 1](mr, K, A + (ptrdiff_t)m0 * ams, ams, aks, B + n0, boff, ldb,
                                C + (ptrdiff_t)m0 * ldc + n0, ldc, kt, st);
        }
    }
}
