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
 * is summed from zero for each sample and filter, then added to dw once.
 *
 * The work per winner is C*K rows of K multiply-adds. The native engine keeps
 * up to ROW_BLOCK rows of dw[f]'s partial sums in registers, one 8-lane vector
 * per kernel row (K <= 8, no padding: every window inside the plane), and
 * runs the winners past them; dx's rows are read, added to and written back
 * in a local copy of the plane (planes 8 to 16 wide) or with masked 8-lane
 * moves in place. Its paths differ only in the multiply-add:
 * AVX2 + FMA (which the AVX-512 path uses too: rows of 3 or 5 floats gain
 * nothing from wider vectors) and plain C's software fused multiply-add, with
 * the same bits. Other shapes, and the OpenBLAS engine (whose product and sum
 * round apart, as dpcnn computed it before it had its own kernels), run the
 * general loop: dw[f] summed in a local buffer (no aliasing, stays in L1). No
 * kernel allocates, so the buffers have fixed sizes: the winners are gathered
 * in runs of WINNERS_AT_ONCE (which changes no sum), and a filter with more
 * than ACC_FLOATS weights sums straight into dw instead. */
#include "config.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"
#include "dpcnn/lanes.h"
#include "dpcnn/layers.h"

enum {
    WINNERS_AT_ONCE = 256, /* the gathered list of winners */
    ACC_FLOATS = 4096,     /* the local dw accumulator, C*K*K floats at most */
    ROW_BLOCK = 12,        /* kernel rows of dw held in registers (16 on AVX2) */
    PLANE_FLOATS = 4096,   /* the local dx copy: C*H rows of 16 */
    TABLE_ROWS = 128,      /* a filter's kernel rows, 32 floats each, for dx */
};

/* t + g*x: mode 0 rounds the product and the sum apart (the OpenBLAS engine);
 * mode 1 fuses them in software, mode 2 in hardware, the same bits. */
static inline __attribute__((always_inline)) float madd(int mode, float g, float x, float t)
{
    return mode == 0 ? t + g * x : mode == 1 ? fma_exact(g, x, t) : __builtin_fmaf(g, x, t);
}

/* The winners that pass the ReLU, as plane offsets and gradients: a compact
 * list first, so the arithmetic below runs without unpredictable branches. */
static inline __attribute__((always_inline)) int
gather(int32_t *at, float *g, const float *dy, const float *y, const int32_t *arg, int count)
{
    int m = 0;
    for (int k = 0; k < count; k++) {
        at[m] = arg[k];
        g[m] = dy[k];
        m += y[k] > 0.0f;
    }
    return m;
}

static inline int imin(int a, int b)
{
    return a < b ? a : b;
}

static inline int imax(int a, int b)
{
    return a > b ? a : b;
}

/* A winner's row in the conv plane is its offset / OW: by multiplying with
 * ceil(2^32 / OW), exact while offsets and OW stay below 2^16 (a division per
 * winner was a good part of the time). */
typedef struct {
    int small;
    uint64_t magic;
} RowDiv;

static inline RowDiv row_div(const ConvShape *cs)
{
    RowDiv d = {cs->OW < 65536 && cs->OH * cs->OW < 65536, 0};
    d.magic = ((UINT64_C(1) << 32) + (uint64_t)cs->OW - 1) / (uint64_t)cs->OW;
    return d;
}

static inline int row_of(const RowDiv *d, int32_t at, int OW)
{
    return d->small ? (int)(((uint64_t)at * d->magic) >> 32) : at / OW;
}

/* ---- The general loop: any K, S, P ---- */

static inline __attribute__((always_inline)) void
general(float *dx, float *dw, const float *dy, const float *y, const int32_t *arg,
        const float *x, const float *w, int n, const ConvShape *cs, const PoolShape *ps, int K,
        int S, int P, int C, int mode)
{
    const int H = cs->H, W = cs->W, F = cs->F, OW = cs->OW;
    const int pooled = ps->OH * ps->OW;
    const int R = C * K * K;
    const int direct = R > ACC_FLOATS;
    int32_t at[WINNERS_AT_ONCE];
    float gs[WINNERS_AT_ONCE], local[ACC_FLOATS];
    const RowDiv rd = row_div(cs);
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * C * H * W;
        float *dxs = dx ? dx + (size_t)s * C * H * W : NULL;
        for (int f = 0; f < F; f++) {
            const size_t base = ((size_t)s * F + f) * pooled;
            const float *wf = w + (size_t)f * R;
            float *dwf = dw + (size_t)f * R;
            float *acc = direct ? dwf : local; /* acc[(c*K + p)*K + q] */
            if (!direct)
                for (int r = 0; r < R; r++)
                    acc[r] = 0.0f;
            for (int k0 = 0; k0 < pooled; k0 += WINNERS_AT_ONCE) {
                const int m = gather(at, gs, dy + base + k0, y + base + k0, arg + base + k0,
                                     imin(WINNERS_AT_ONCE, pooled - k0));
                for (int e = 0; e < m; e++) {
                    const float g = gs[e];
                    const int row = row_of(&rd, at[e], OW);
                    const int u0 = row * S - P, v0 = (at[e] - row * OW) * S - P;
                    /* only the part of the window inside the plane */
                    const int p0 = imax(0, -u0), p1 = imin(K, H - u0);
                    const int q0 = imax(0, -v0), q1 = imin(K, W - v0);
                    for (int c = 0; c < C; c++)
                        for (int p = p0; p < p1; p++) {
                            float *t = acc + (c * K + p) * K;
                            const float *xr = xs + ((size_t)c * H + u0 + p) * W + v0;
                            for (int q = q0; q < q1; q++)
                                t[q] = madd(mode, g, xr[q], t[q]);
                        }
                    if (dxs)
                        for (int c = 0; c < C; c++)
                            for (int p = p0; p < p1; p++) {
                                float *t = dxs + ((size_t)c * H + u0 + p) * W + v0;
                                const float *wr = wf + (c * K + p) * K;
                                for (int q = q0; q < q1; q++)
                                    t[q] = madd(mode, g, wr[q], t[q]);
                            }
                }
            }
            if (!direct)
                for (int r = 0; r < R; r++)
                    dwf[r] += acc[r];
        }
    }
}

/* The shape classes: the common ones get loops the compiler knows to the end
 * (the kernel side, stride 1 without padding, the first layer on grey images
 * with no input gradient). */
static inline __attribute__((always_inline)) void
general_classes(float *dx, float *dw, const float *dy, const float *y,
                const int32_t *arg, const float *x, const float *w, int n, const ConvShape *c,
                const PoolShape *p, int mode)
{
    if (c->S == 1 && c->P == 0 && c->K == 5 && c->C == 1 && !dx)
        general(NULL, dw, dy, y, arg, x, w, n, c, p, 5, 1, 0, 1, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 5)
        general(dx, dw, dy, y, arg, x, w, n, c, p, 5, 1, 0, c->C, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 3)
        general(dx, dw, dy, y, arg, x, w, n, c, p, 3, 1, 0, c->C, mode);
    else
        general(dx, dw, dy, y, arg, x, w, n, c, p, c->K, c->S, c->P, c->C, mode);
}

/* ---- The native engine's rows: K <= 8, no padding ----
 * A kernel row of K floats is one 8-lane vector, its lanes past K masked
 * (never read or written). Row r = (c,p) of a window at input offset o
 * starts at o + off[r], off[r] = (c*H + p)*W. */

#define TARGET_FMA __attribute__((target("avx2,fma")))

/* dw[f]'s rows r0 .. r0+NB-1: their running sums (acc) loaded into
 * registers, the winners added, stored back */
static inline TARGET_FMA __attribute__((always_inline)) void
dw_block(float *acc, const float *xs, const int32_t *woff, const float *g, int m,
         const int32_t *off, int r0, int NB, int K, __m256i mask)
{
    __m256 a[ROW_BLOCK];
#pragma GCC unroll 12
    for (int r = 0; r < NB; r++)
        a[r] = _mm256_maskload_ps(acc + (r0 + r) * K, mask);
    for (int e = 0; e < m; e++) {
        const float *o = xs + woff[e];
        const __m256 gv = _mm256_set1_ps(g[e]);
#pragma GCC unroll 12
        for (int r = 0; r < NB; r++)
            a[r] = _mm256_fmadd_ps(gv, _mm256_maskload_ps(o + off[r0 + r], mask), a[r]);
    }
#pragma GCC unroll 12
    for (int r = 0; r < NB; r++)
        _mm256_maskstore_ps(acc + (r0 + r) * K, mask, a[r]);
}

/* dx summed in a local copy of the sample's input gradient whose rows sit 16
 * floats apart (planes up to 16 wide), as on the AVX-512 path (below): a
 * winner's kernel row is the plane row's two aligned halves, each loaded,
 * multiply-added, blended so that every lane outside the window's K columns
 * keeps its value exactly, and stored whole, so the next winner's load of the
 * row is forwarded from the store. The masked store this replaces is
 * microcode on AMD's cores: on Zen 4 it was 70% of the tutorial's second
 * backward convolution, which ran 3.3x slower than on the AVX-512 path. The
 * filter's kernel row r sits at tab[r*32 + 16 ..], zeros around it, so a load
 * from tab + r*32 + 16 - v0 puts it at the window's column v0; the blend's
 * mask comes from sel the same way. Each dx element takes the same
 * multiply-adds in the same order as the masked route. */
static inline TARGET_FMA __attribute__((always_inline)) void
dx_plane_fma(float *lp, const float *tab, const int32_t *sel, const int32_t *lo, const float *g,
             int m, int C, int H, int K)
{
    for (int e = 0; e < m; e++) {
        const int v0 = lo[e] & 15;
        float *t = lp + (lo[e] - v0);
        const float *wr = tab + 16 - v0;
        const __m256 k0 = _mm256_castsi256_ps(_mm256_loadu_si256((const void *)(sel + 16 - v0)));
        const __m256 k1 = _mm256_castsi256_ps(_mm256_loadu_si256((const void *)(sel + 24 - v0)));
        const __m256 gv = _mm256_set1_ps(g[e]);
        for (int c = 0; c < C; c++, t += H * 16, wr += K * 32)
#pragma GCC unroll 8
            for (int p = 0; p < K; p++) {
                const __m256 a = _mm256_load_ps(t + p * 16), b = _mm256_load_ps(t + p * 16 + 8);
                const __m256 wa = _mm256_loadu_ps(wr + p * 32), wb = _mm256_loadu_ps(wr + p * 32 + 8);
                _mm256_store_ps(t + p * 16, _mm256_blendv_ps(a, _mm256_fmadd_ps(gv, wa, a), k0));
                _mm256_store_ps(t + p * 16 + 8,
                                _mm256_blendv_ps(b, _mm256_fmadd_ps(gv, wb, b), k1));
            }
    }
}

static TARGET_FMA __attribute__((noinline)) void
dx_plane_avx2(float *lp, const float *tab, const int32_t *sel, const int32_t *lo, const float *g,
              int m, int C, int H, int K)
{
    if (K == 5)
        dx_plane_fma(lp, tab, sel, lo, g, m, C, H, 5);
    else if (K == 3)
        dx_plane_fma(lp, tab, sel, lo, g, m, C, H, 3);
    else
        dx_plane_fma(lp, tab, sel, lo, g, m, C, H, K);
}

/* A plane row of W (8 to 16) floats between dx and the local copy: two
 * 8-float moves that overlap where W < 16 (the overlap gets the same floats
 * twice), no masked store. The local row's lanes past W are +0. */
static inline TARGET_FMA __attribute__((always_inline)) void row_in(float *l, const float *d, int W)
{
    _mm256_store_ps(l + 8, _mm256_setzero_ps());
    _mm256_storeu_ps(l, _mm256_loadu_ps(d));
    _mm256_storeu_ps(l + W - 8, _mm256_loadu_ps(d + W - 8));
}

static inline TARGET_FMA __attribute__((always_inline)) void row_out(float *d, const float *l, int W)
{
    _mm256_storeu_ps(d, _mm256_load_ps(l));
    _mm256_storeu_ps(d + W - 8, _mm256_loadu_ps(l + W - 8));
}

static TARGET_FMA void rows_fma(float *dx, float *dw, const float *dy, const float *y,
                                const int32_t *arg, const float *x, const float *w, int n,
                                const ConvShape *cs, const PoolShape *ps)
{
    const int C = cs->C, H = cs->H, W = cs->W, F = cs->F, K = cs->K, S = cs->S, OW = cs->OW;
    const int pooled = ps->OH * ps->OW, CK = C * K, R = CK * K;
    const __m256i mask = lanes8(K);
    int32_t at[WINNERS_AT_ONCE], lo[WINNERS_AT_ONCE], off[ACC_FLOATS];
    float gs[WINNERS_AT_ONCE], acc[ACC_FLOATS];
    for (int r = 0; r < CK; r++)
        off[r] = (r / K * H + r % K) * W;
    const RowDiv rd = row_div(cs);
    /* the local dx copy where the plane fits (rows of 8 or fewer floats keep
     * the masked route: their copy would need the masked store again) */
    const int plane = dx && W >= 8 && W <= 16 && C * H * 16 <= PLANE_FLOATS && CK <= TABLE_ROWS;
    float lp[PLANE_FLOATS] __attribute__((aligned(32)));
    float tab[TABLE_ROWS * 32];
    int32_t sel[32] = {0};
    for (int q = 0; q < K; q++)
        sel[16 + q] = -1;
    if (plane)
        memset(tab, 0, sizeof(float) * 32 * (size_t)CK);
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * C * H * W;
        float *dxs = dx ? dx + (size_t)s * C * H * W : NULL;
        if (plane)
            for (int r = 0; r < C * H; r++)
                row_in(lp + r * 16, dxs + (size_t)r * W, W);
        for (int f = 0; f < F; f++) {
            const size_t base = ((size_t)s * F + f) * pooled;
            const float *wf = w + (size_t)f * R;
            float *dwf = dw + (size_t)f * R;
            for (int r = 0; r < R; r++)
                acc[r] = 0.0f;
            if (plane) /* the filter's rows into the table (its zeros stay) */
                for (int r = 0; r < CK; r++)
                    _mm256_storeu_ps(tab + r * 32 + 16, _mm256_maskload_ps(wf + r * K, mask));
            for (int k0 = 0; k0 < pooled; k0 += WINNERS_AT_ONCE) {
                const int m = gather(at, gs, dy + base + k0, y + base + k0, arg + base + k0,
                                     imin(WINNERS_AT_ONCE, pooled - k0));
                for (int e = 0; e < m; e++) { /* the winner's window in the input plane */
                    const int row = row_of(&rd, at[e], OW), col = at[e] - row * OW;
                    at[e] = row * S * W + col * S;
                    lo[e] = row * S * 16 + col * S; /* and in the local copy */
                }
                /* dw: the winners past the rows' running sums, block by block */
                for (int r0 = 0; r0 < CK; r0 += ROW_BLOCK)
                    switch (imin(ROW_BLOCK, CK - r0)) { /* a literal keeps them in registers */
#define DW_CASE(NB)                                                                              \
    case NB: dw_block(acc, xs, at, gs, m, off, r0, NB, K, mask); break;
                        DW_CASE(1) DW_CASE(2) DW_CASE(3) DW_CASE(4) DW_CASE(5) DW_CASE(6)
                        DW_CASE(7) DW_CASE(8) DW_CASE(9) DW_CASE(10) DW_CASE(11) DW_CASE(12)
#undef DW_CASE
                    }
                if (plane)
                    dx_plane_avx2(lp, tab, sel, lo, gs, m, C, H, K);
                else if (dxs)
                    for (int e = 0; e < m; e++) {
                        float *o = dxs + at[e];
                        const __m256 gv = _mm256_set1_ps(gs[e]);
                        for (int r = 0; r < CK; r++) {
                            float *t = o + off[r];
                            const __m256 wr = _mm256_maskload_ps(wf + r * K, mask);
                            _mm256_maskstore_ps(
                                t, mask, _mm256_fmadd_ps(gv, wr, _mm256_maskload_ps(t, mask)));
                        }
                    }
            }
            for (int r = 0; r < R; r++)
                dwf[r] += acc[r];
        }
        if (plane)
            for (int r = 0; r < C * H; r++)
                row_out(dxs + (size_t)r * W, lp + r * 16, W);
    }
}

static TARGET_FMA void general_fma(float *dx, float *dw, const float *dy,
                                   const float *y, const int32_t *arg, const float *x,
                                   const float *w, int n, const ConvShape *c, const PoolShape *p)
{
    general_classes(dx, dw, dy, y, arg, x, w, n, c, p, 2);
}

/* ---- The AVX-512 path's rows ----
 * The same sums as rows_fma, term for term (so the same bits), with what
 * AVX-512 adds:
 *  - mask-register loads and stores, one micro-op each (AVX2's masked store
 *    is several, and a later load of the same row waits for it to retire);
 *  - the winners gathered 16 at a time, compressed to a list in order;
 *  - 32 registers: dw's rows in passes of up to NB512 over the winners (their
 *    offsets stay in registers too), and where a filter has fewer than 8 rows
 *    (the first layer on grey images has 5) GROUP(CK) filters side by side:
 *    each row's sum is one chain of dependent multiply-adds, and one filter's
 *    few chains left the multiply-add unit waiting on its latency;
 *  - dx summed in a local copy of the sample's input gradient whose rows sit
 *    16 floats apart (for planes up to 16 wide): a winner's kernel row is one
 *    aligned load of the whole plane row, a fused multiply-add masked to the
 *    window's K columns (the other lanes keep their value exactly) and one
 *    aligned store, so the next winner's load of that row is forwarded from
 *    the store; the filter's kernel rows come from a table laid out so that
 *    one unaligned load puts a row at the window's column.
 * Grouped filters take their winners in one run (pooled <= WINNERS_AT_ONCE),
 * so that each filter's dx terms still come before the next filter's. */

#define TARGET_512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

enum {
    NB512 = 10,          /* dw rows per pass over the winners */
    GROUP_MAX = 8,       /* filters side by side */
    LIST = WINNERS_AT_ONCE + 16,
};

/* enough independent chains (8: two multiply-add units, four cycles each) */
#define GROUP(CK) ((CK) >= 8 ? 1 : (8 + (CK) - 1) / (CK))

typedef struct {
    int m;
    int32_t xo[LIST]; /* the window's top-left corner in the input plane */
    int32_t lo[LIST]; /* the same in the local dx copy: u0*16 + v0 */
    float g[LIST];
} Winners;

/* The winners of count windows that pass the ReLU, in window order. A
 * winner's row is offset / OW: the float quotient, correctly rounded, then
 * truncated, which is exact while offsets stay below 2^16 (its distance from
 * the next integer, at least 1/OW, exceeds half an ulp). */
static inline TARGET_512 __attribute__((always_inline)) void
gather512(Winners *wn, const float *dy, const float *y, const int32_t *arg, int count, int OW,
          int S, int W)
{
    const __m512 ow = _mm512_set1_ps((float)OW);
    const __m512i vow = _mm512_set1_epi32(OW), vsw = _mm512_set1_epi32(S * W),
                  vs16 = _mm512_set1_epi32(S * 16), vs = _mm512_set1_epi32(S);
    int m = 0;
    for (int k = 0; k < count; k += 16) {
        const __mmask16 in = lanes16(count - k);
        const __mmask16 pass = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, y + k),
                                                       _mm512_setzero_ps(), _CMP_GT_OQ);
        const __m512i a = _mm512_maskz_loadu_epi32(in, arg + k);
        const __m512i row = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(a), ow));
        const __m512i col = _mm512_mullo_epi32(_mm512_sub_epi32(a, _mm512_mullo_epi32(row, vow)), vs);
        _mm512_storeu_si512(wn->xo + m, _mm512_maskz_compress_epi32(
                                            pass, _mm512_add_epi32(_mm512_mullo_epi32(row, vsw), col)));
        _mm512_storeu_si512(wn->lo + m, _mm512_maskz_compress_epi32(
                                            pass, _mm512_add_epi32(_mm512_mullo_epi32(row, vs16), col)));
        _mm512_storeu_ps(wn->g + m, _mm512_maskz_compress_ps(pass, _mm512_maskz_loadu_ps(in, dy + k)));
        m += __builtin_popcount(pass);
    }
    wn->m = m;
}

/* G filters' dw rows (NB each, row r of filter g at acc[g] + r*K, in the
 * input at offset off[r] from the window): winners e0 .. e1-1 of every filter
 * in turn. G and NB are literals in every caller. */
static inline TARGET_512 __attribute__((always_inline)) void
dw_pass(float *const *acc, const float *xs, const Winners *const *wn, int e0, int e1,
        const int32_t *off, int G, int NB, int K, __mmask8 km)
{
    __m256 a[GROUP_MAX * 8 > NB512 ? GROUP_MAX * 8 : NB512];
#pragma GCC unroll 16
    for (int g = 0; g < G; g++)
#pragma GCC unroll 16
        for (int r = 0; r < NB; r++)
            a[g * NB + r] = _mm256_maskz_loadu_ps(km, acc[g] + r * K);
    for (int e = e0; e < e1; e++)
#pragma GCC unroll 16
        for (int g = 0; g < G; g++) {
            const float *o = xs + wn[g]->xo[e];
            const __m256 gv = _mm256_set1_ps(wn[g]->g[e]);
#pragma GCC unroll 16
            for (int r = 0; r < NB; r++)
                a[g * NB + r] =
                    _mm256_fmadd_ps(gv, _mm256_maskz_loadu_ps(km, o + off[r]), a[g * NB + r]);
        }
#pragma GCC unroll 16
    for (int g = 0; g < G; g++)
#pragma GCC unroll 16
        for (int r = 0; r < NB; r++)
            _mm256_mask_storeu_ps(acc[g] + r * K, km, a[g * NB + r]);
}

/* One filter's rows, all its winners, in passes of up to NB512 rows. */
static TARGET_512 __attribute__((noinline)) void dw_rows512(float *acc, const float *xs, const Winners *wn, int e0,
                                  const int32_t *off, int CK, int K, __mmask8 km)
{
    const Winners *const one[1] = {wn};
    for (int r0 = 0; r0 < CK; r0 += NB512) {
        float *const at[1] = {acc + r0 * K};
        switch (imin(NB512, CK - r0)) {
#define NB_CASE(NB)                                                                              \
    case NB: dw_pass(at, xs, one, e0, wn->m, off + r0, 1, NB, K, km); break;
            NB_CASE(1) NB_CASE(2) NB_CASE(3) NB_CASE(4) NB_CASE(5)
            NB_CASE(6) NB_CASE(7) NB_CASE(8) NB_CASE(9) NB_CASE(10)
#undef NB_CASE
        }
    }
}

/* GROUP(CK) filters of CK < 8 rows each over their first e1 winners. */
static TARGET_512 __attribute__((noinline)) void dw_group512(float *const *acc, const float *xs, const Winners *const *wn,
                                   int e1, const int32_t *off, int CK, int K, __mmask8 km)
{
    switch (CK) {
#define GROUP_CASE(CK)                                                                           \
    case CK: dw_pass(acc, xs, wn, 0, e1, off, GROUP(CK), CK, K, km); break;
        GROUP_CASE(1) GROUP_CASE(2) GROUP_CASE(3) GROUP_CASE(4)
        GROUP_CASE(5) GROUP_CASE(6) GROUP_CASE(7)
#undef GROUP_CASE
    }
}

/* dx of one filter's winners, in the local copy (rows 16 apart). tab holds
 * the filter's kernel row r at tab[r*32 + 16 ..]: loaded from tab + r*32 +
 * 16 - v0, it sits in lanes v0 .. v0+K-1 (the other lanes are masked off).
 * Always inlined with K a literal for the common K = 3 and K = 5: a row is
 * then an unaligned load, an aligned load, the masked multiply-add and an
 * aligned store, with no loop control between rows. */
static inline TARGET_512 __attribute__((always_inline)) void
dx_plane_k(float *lp, float *tab, const float *wf, const Winners *wn, int C, int H, int K,
           __mmask8 km)
{
    const int CK = C * K;
    for (int r = 0; r < CK; r++)
        _mm256_storeu_ps(tab + r * 32 + 16, _mm256_maskz_loadu_ps(km, wf + r * K));
    const __mmask16 row = (__mmask16)((1u << K) - 1);
    for (int e = 0; e < wn->m; e++) {
        const int v0 = wn->lo[e] & 15;
        float *t = lp + (wn->lo[e] - v0);
        const float *wr = tab + 16 - v0;
        const __mmask16 kk = (__mmask16)(row << v0);
        const __m512 gv = _mm512_set1_ps(wn->g[e]);
        for (int c = 0; c < C; c++, t += H * 16, wr += K * 32)
#pragma GCC unroll 8
            for (int p = 0; p < K; p++) {
                __m512 v = _mm512_mask3_fmadd_ps(gv, _mm512_loadu_ps(wr + p * 32),
                                                 _mm512_load_ps(t + p * 16), kk);
                /* the whole row stored (GCC would store only the masked lanes,
                 * and a masked store does not forward to the next load) */
                __asm__("" : "+v"(v));
                _mm512_store_ps(t + p * 16, v);
            }
    }
}

static TARGET_512 __attribute__((noinline)) void
dx_plane512(float *lp, float *tab, const float *wf, const Winners *wn, int C, int H, int K,
            __mmask8 km)
{
    if (K == 5)
        dx_plane_k(lp, tab, wf, wn, C, H, 5, km);
    else if (K == 3)
        dx_plane_k(lp, tab, wf, wn, C, H, 3, km);
    else
        dx_plane_k(lp, tab, wf, wn, C, H, K, km);
}

/* dx of one filter's winners in place (planes wider than 16). */
static TARGET_512 __attribute__((noinline)) void dx_direct512(float *dxs, const float *wf, const Winners *wn,
                                    const int32_t *off, int CK, int K, __mmask8 km)
{
    for (int e = 0; e < wn->m; e++) {
        float *o = dxs + wn->xo[e];
        const __m256 gv = _mm256_set1_ps(wn->g[e]);
        for (int r = 0; r < CK; r++) {
            float *t = o + off[r];
            const __m256 wr = _mm256_maskz_loadu_ps(km, wf + r * K);
            _mm256_mask_storeu_ps(t, km, _mm256_fmadd_ps(gv, wr, _mm256_maskz_loadu_ps(km, t)));
        }
    }
}

static TARGET_512 void rows_avx512(float *dx, float *dw, const float *dy,
                                   const float *y, const int32_t *arg, const float *x,
                                   const float *w, int n, const ConvShape *cs, const PoolShape *ps)
{
    const int C = cs->C, H = cs->H, W = cs->W, F = cs->F, K = cs->K, S = cs->S, OW = cs->OW;
    const int pooled = ps->OH * ps->OW, CK = C * K, R = CK * K;
    const __mmask8 km = (__mmask8)((1u << K) - 1);
    const int G = GROUP(CK) <= F && pooled <= WINNERS_AT_ONCE ? GROUP(CK) : 1;
    const int plane = dx && W <= 16 && C * H * 16 <= PLANE_FLOATS && CK <= TABLE_ROWS;
    int32_t off[ACC_FLOATS];
    float acc[ACC_FLOATS];
    Winners wn[GROUP_MAX];
    float lp[PLANE_FLOATS] __attribute__((aligned(64)));
    float tab[TABLE_ROWS * 32] __attribute__((aligned(64)));
    for (int r = 0; r < CK; r++)
        off[r] = (r / K * H + r % K) * W;
    if (plane)
        memset(tab, 0, sizeof(float) * 32 * (size_t)CK);
    const __mmask16 wrow = lanes16(W);
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * C * H * W;
        float *dxs = dx ? dx + (size_t)s * C * H * W : NULL;
        if (plane)
            for (int r = 0; r < C * H; r++)
                _mm512_store_ps(lp + r * 16, _mm512_maskz_loadu_ps(wrow, dxs + (size_t)r * W));
        for (int f0 = 0; f0 < F; f0 += G) {
            const int gn = imin(G, F - f0);
            float *accs[GROUP_MAX];
            const Winners *wns[GROUP_MAX];
            for (int g = 0; g < gn; g++) {
                accs[g] = acc + g * R;
                wns[g] = &wn[g];
            }
            for (int r = 0; r < gn * R; r++)
                acc[r] = 0.0f;
            for (int k0 = 0; k0 < pooled; k0 += WINNERS_AT_ONCE) {
                const int count = imin(WINNERS_AT_ONCE, pooled - k0);
                int common = WINNERS_AT_ONCE;
                for (int g = 0; g < gn; g++) {
                    const size_t base = ((size_t)s * F + f0 + g) * pooled + k0;
                    gather512(&wn[g], dy + base, y + base, arg + base, count, OW, S, W);
                    common = imin(common, wn[g].m);
                }
                /* dw: grouped filters side by side over their common winners,
                 * then each filter alone over the rest */
                if (gn == G && G > 1)
                    dw_group512(accs, xs, wns, common, off, CK, K, km);
                else
                    common = 0;
                for (int g = 0; g < gn; g++)
                    if (wn[g].m > common)
                        dw_rows512(accs[g], xs, &wn[g], common, off, CK, K, km);
                if (dxs)
                    for (int g = 0; g < gn; g++) {
                        const float *wf = w + (size_t)(f0 + g) * R;
                        if (plane)
                            dx_plane512(lp, tab, wf, &wn[g], C, H, K, km);
                        else
                            dx_direct512(dxs, wf, &wn[g], off, CK, K, km);
                    }
            }
            for (int g = 0; g < gn; g++) {
                float *dwf = dw + (size_t)(f0 + g) * R;
                for (int r = 0; r < R; r++)
                    dwf[r] += accs[g][r];
            }
        }
        if (plane)
            for (int r = 0; r < C * H; r++)
                _mm512_mask_storeu_ps(dxs + (size_t)r * W, wrow, _mm512_load_ps(lp + r * 16));
    }
}

void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n,
                        const ConvShape *c, const PoolShape *p)
{
    /* (C*K*K <= ACC_FLOATS also bounds rows_fma's C*K row offsets) */
    const int rows = c->P == 0 && c->K <= 8 && (int64_t)c->C * c->K * c->K <= ACC_FLOATS;
    if (db)
        bias_sums(db, dy, y, n, c->F, p->OH * p->OW); /* over the winners that pass */
    if (isa_current() == ISA_GENERIC)
        general_classes(dx, dw, dy, y, arg, x, w, n, c, p, 1);
    else if (rows && isa_current() == ISA_AVX512 && (int64_t)c->OH * c->OW < 65536)
        rows_avx512(dx, dw, dy, y, arg, x, w, n, c, p);
    else if (rows)
        rows_fma(dx, dw, dy, y, arg, x, w, n, c, p);
    else
        general_fma(dx, dw, dy, y, arg, x, w, n, c, p);
}

void conv_pool_backward_blas(float *dx, float *dw, float *db, const float *dy, const float *y,
                             const int32_t *arg, const float *x, const float *w, int n,
                             const ConvShape *c, const PoolShape *p)
{
    if (db)
        bias_sums(db, dy, y, n, c->F, p->OH * p->OW); /* over the winners that pass */
    general_classes(dx, dw, dy, y, arg, x, w, n, c, p, 0);
}
