/* The matrix product on AVX-512 (gemm.h has the contract): tiles of MR rows
 * by up to 64 columns (four 16-float registers: 24 accumulators, the four
 * vectors of B's row and a broadcast fill 29 of the 32 registers, and each
 * broadcast of A then feeds four multiply-adds), the row's k loop innermost, each
 * accumulator one output lane: c = fma(a, b, c), k after k, as the plain C
 * path does it element by element. A column tail (the last vector of the
 * last column block) uses masked loads and stores: a masked lane is never
 * read or written. Only the tail is masked: a masked load costs an ALU
 * operation beside the load on this generation of cores, and the ALU ports
 * are the multiply-adds' (measured: a 6 x 64 tile with every load masked
 * ran at 78% of the core's peak, and with plain loads at 95%). */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>

#include "dpcnn/gemm.h"
#include "dpcnn/lanes.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
enum { MR = 6, NR = 64 };

/* One tile: MR rows (rows past M repeat the last one and are not stored) by
 * NV vectors. The accumulators are named variables, one per row and vector
 * (with an array of them GCC kept them in memory); NV is a literal in the two
 * callers, so the second vector's work disappears from tile_1. */
/* vector v of a row (v < NV): masked only as the tail */
#define LOADV(v, p) (TAIL && v == NV - 1 ? _mm512_maskz_loadu_ps(kt, p) : _mm512_loadu_ps(p))
#define STOREV(v, p, x)                                                                        \
    do {                                                                                       \
        if (TAIL && v == NV - 1)                                                               \
            _mm512_mask_storeu_ps(p, kt, x);                                                   \
        else                                                                                   \
            _mm512_storeu_ps(p, x);                                                            \
    } while (0)
/* the start of row r's accumulators: C, or the row's c0 (+0 without one) */
#define ROW_LOAD(r)                                                                            \
    const __m512 s##r = r < mr && st.c0 ? _mm512_set1_ps(st.c0[r]) : _mm512_setzero_ps();      \
    __m512 c##r##0 = r < mr && st.from_c ? LOADV(0, c[r]) : s##r;                              \
    __m512 c##r##1 = NV > 1 && r < mr && st.from_c ? LOADV(1, c[r] + 16) : s##r;               \
    __m512 c##r##2 = NV > 2 && r < mr && st.from_c ? LOADV(2, c[r] + 32) : s##r;               \
    __m512 c##r##3 = NV > 3 && r < mr && st.from_c ? LOADV(3, c[r] + 48) : s##r
#define ROW_FMA(r)                                                                             \
    if (r < mr)                                                                                \
    do {                                                                                       \
        const __m512 a##r = _mm512_set1_ps(a[r][o]);                                           \
        c##r##0 = _mm512_fmadd_ps(a##r, b0, c##r##0);                                          \
        if (NV > 1)                                                                            \
            c##r##1 = _mm512_fmadd_ps(a##r, b1, c##r##1);                                      \
        if (NV > 2)                                                                            \
            c##r##2 = _mm512_fmadd_ps(a##r, b2, c##r##2);                                      \
        if (NV > 3)                                                                            \
            c##r##3 = _mm512_fmadd_ps(a##r, b3, c##r##3);                                      \
    } while (0)
#define ROW_STORE(r)                                                                           \
    do {                                                                                       \
        if (r < mr) {                                                                          \
            STOREV(0, c[r], c##r##0);                                                          \
            if (NV > 1)                                                                        \
                STOREV(1, c[r] + 16, c##r##1);                                                 \
            if (NV > 2)                                                                        \
                STOREV(2, c[r] + 32, c##r##2);                                                 \
            if (NV > 3)                                                                        \
                STOREV(3, c[r] + 48, c##r##3);                                                 \
        }                                                                                      \
    } while (0)

static inline TARGET __attribute__((always_inline)) void
tile(int NV, int TAIL, int mr, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
     const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc, __mmask16 kt,
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
        const __m512 b0 = LOADV(0, b);
        const __m512 b1 = NV > 1 ? LOADV(1, b + 16) : _mm512_setzero_ps();
        const __m512 b2 = NV > 2 ? LOADV(2, b + 32) : _mm512_setzero_ps();
        const __m512 b3 = NV > 3 ? LOADV(3, b + 48) : _mm512_setzero_ps();
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

/* One function per tile shape, the rows, vectors and tail literals: a tile
 * of fewer than MR rows (the last of M = 25) does only its own rows' work.
 * Each runs nb tiles down the rows, one after another: no call per tile,
 * which weighed where K is short (16 to 25 terms, a few hundred cycles a
 * tile). */
#define TILE_FN(NV, T, MRL)                                                                    \
    static TARGET void tile_##NV##_##T##_##MRL(int nb, int K, const float *A, ptrdiff_t ams,   \
                                               ptrdiff_t aks, const float *B,                  \
                                               const ptrdiff_t *boff, ptrdiff_t ldb, float *C, \
                                               ptrdiff_t ldc, __mmask16 kt, GemmStart st)      \
    {                                                                                          \
        for (int b = 0; b < nb; b++) {                                                         \
            const GemmStart sb = {st.from_c, st.c0 ? st.c0 + b * MR : NULL};                   \
            tile(NV, T, MRL, K, A + (ptrdiff_t)b * MR * ams, ams, aks, B, boff, ldb,           \
                 C + (ptrdiff_t)b * MR * ldc, ldc, kt, sb);                                    \
        }                                                                                      \
    }
#define TILE_ROWS(NV, T)                                                                       \
    TILE_FN(NV, T, 1)                                                                          \
    TILE_FN(NV, T, 2) TILE_FN(NV, T, 3) TILE_FN(NV, T, 4) TILE_FN(NV, T, 5) TILE_FN(NV, T, 6)
TILE_ROWS(1, 0)
TILE_ROWS(2, 0)
TILE_ROWS(3, 0)
TILE_ROWS(4, 0)
TILE_ROWS(1, 1)
TILE_ROWS(2, 1)
TILE_ROWS(3, 1)
TILE_ROWS(4, 1)
#undef TILE_ROWS
#undef TILE_FN

typedef void (*Tile)(int, int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                     const ptrdiff_t *, ptrdiff_t, float *, ptrdiff_t, __mmask16, GemmStart);
#define TILE_ROW(NV, T)                                                                        \
    {tile_##NV##_##T##_1, tile_##NV##_##T##_2, tile_##NV##_##T##_3,                            \
     tile_##NV##_##T##_4, tile_##NV##_##T##_5, tile_##NV##_##T##_6}
/* [tail][vectors - 1][rows - 1] */
static const Tile tiles[2][4][MR] = {{TILE_ROW(1, 0), TILE_ROW(2, 0), TILE_ROW(3, 0), TILE_ROW(4, 0)},
                                     {TILE_ROW(1, 1), TILE_ROW(2, 1), TILE_ROW(3, 1), TILE_ROW(4, 1)}};
#undef TILE_ROW

TARGET void gemm_avx512(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                        const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                        GemmStart start)
{
    /* column blocks outside, row blocks inside: a block of B (K x 64) is read
     * from L1 by every row block */
    /* four vectors wide at any K (two had paid where K is long while every
     * load was masked; with plain loads four are 1-2% faster on the tutorial
     * and LeNet-5, measured side by side) */
    for (int n0 = 0; n0 < N; n0 += NR) {
        const int w = N - n0 < NR ? N - n0 : NR;
        const int nv = (w + 15) / 16;
        const int tail = w % 16 != 0;
        const __mmask16 kt = lanes16(w - 16 * (nv - 1));
        /* a column offset into B: every row pointer moves by n0 */
        const int full = M / MR, rest = M % MR, m0 = full * MR;
        if (full)
            tiles[tail][nv - 1][MR - 1](full, K, A, ams, aks, B + n0, boff, ldb, C + n0, ldc, kt,
                                        start);
        if (rest) {
            const GemmStart st = {start.from_c, start.c0 ? start.c0 + m0 : NULL};
            tiles[tail][nv - 1][rest - 1](1, K, A + (ptrdiff_t)m0 * ams, ams, aks, B + n0, boff,
                                          ldb, C + (ptrdiff_t)m0 * ldc + n0, ldc, kt, st);
        }
    }
}
