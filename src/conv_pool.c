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
 * with the same masked 8-lane moves. Its paths differ only in the multiply-add:
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

#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"

enum {
    WINNERS_AT_ONCE = 256, /* the gathered list of winners */
    ACC_FLOATS = 4096,     /* the local dw accumulator, C*K*K floats at most */
    ROW_BLOCK = 12,        /* kernel rows of dw held in registers (16 on AVX2) */
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
general(float *dx, float *dw, float *db, const float *dy, const float *y, const int32_t *arg,
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
            float dbf = 0.0f;
            for (int k0 = 0; k0 < pooled; k0 += WINNERS_AT_ONCE) {
                const int m = gather(at, gs, dy + base + k0, y + base + k0, arg + base + k0,
                                     imin(WINNERS_AT_ONCE, pooled - k0));
                for (int e = 0; e < m; e++) {
                    const float g = gs[e];
                    const int row = row_of(&rd, at[e], OW);
                    const int u0 = row * S - P, v0 = (at[e] - row * OW) * S - P;
                    dbf += g;
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
            if (db)
                db[f] += dbf;
        }
    }
}

/* The shape classes: the common ones get loops the compiler knows to the end
 * (the kernel side, stride 1 without padding, the first layer on grey images
 * with no input gradient). */
static inline __attribute__((always_inline)) void
general_classes(float *dx, float *dw, float *db, const float *dy, const float *y,
                const int32_t *arg, const float *x, const float *w, int n, const ConvShape *c,
                const PoolShape *p, int mode)
{
    if (c->S == 1 && c->P == 0 && c->K == 5 && c->C == 1 && !dx)
        general(NULL, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, 1, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 5)
        general(dx, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, c->C, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 3)
        general(dx, dw, db, dy, y, arg, x, w, n, c, p, 3, 1, 0, c->C, mode);
    else
        general(dx, dw, db, dy, y, arg, x, w, n, c, p, c->K, c->S, c->P, c->C, mode);
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

static TARGET_FMA void rows_fma(float *dx, float *dw, float *db, const float *dy, const float *y,
                                const int32_t *arg, const float *x, const float *w, int n,
                                const ConvShape *cs, const PoolShape *ps)
{
    const int C = cs->C, H = cs->H, W = cs->W, F = cs->F, K = cs->K, S = cs->S, OW = cs->OW;
    const int pooled = ps->OH * ps->OW, CK = C * K, R = CK * K;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(K),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int32_t at[WINNERS_AT_ONCE], off[ACC_FLOATS];
    float gs[WINNERS_AT_ONCE], acc[ACC_FLOATS];
    for (int r = 0; r < CK; r++)
        off[r] = (r / K * H + r % K) * W;
    const RowDiv rd = row_div(cs);
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * C * H * W;
        float *dxs = dx ? dx + (size_t)s * C * H * W : NULL;
        for (int f = 0; f < F; f++) {
            const size_t base = ((size_t)s * F + f) * pooled;
            const float *wf = w + (size_t)f * R;
            float *dwf = dw + (size_t)f * R;
            float dbf = 0.0f;
            for (int r = 0; r < R; r++)
                acc[r] = 0.0f;
            for (int k0 = 0; k0 < pooled; k0 += WINNERS_AT_ONCE) {
                const int m = gather(at, gs, dy + base + k0, y + base + k0, arg + base + k0,
                                     imin(WINNERS_AT_ONCE, pooled - k0));
                for (int e = 0; e < m; e++) { /* the winner's window in the input plane */
                    const int row = row_of(&rd, at[e], OW);
                    at[e] = row * S * W + (at[e] - row * OW) * S;
                    dbf += gs[e];
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
                if (dxs)
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
            if (db)
                db[f] += dbf;
        }
    }
}

static TARGET_FMA void general_fma(float *dx, float *dw, float *db, const float *dy,
                                   const float *y, const int32_t *arg, const float *x,
                                   const float *w, int n, const ConvShape *c, const PoolShape *p)
{
    general_classes(dx, dw, db, dy, y, arg, x, w, n, c, p, 2);
}

void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n,
                        const ConvShape *c, const PoolShape *p)
{
    /* (C*K*K <= ACC_FLOATS also bounds rows_fma's C*K row offsets) */
    const int rows = c->P == 0 && c->K <= 8 && (int64_t)c->C * c->K * c->K <= ACC_FLOATS;
    if (isa_current() == ISA_GENERIC)
        general_classes(dx, dw, db, dy, y, arg, x, w, n, c, p, 1);
    else if (rows)
        rows_fma(dx, dw, db, dy, y, arg, x, w, n, c, p);
    else
        general_fma(dx, dw, db, dy, y, arg, x, w, n, c, p);
}

void conv_pool_backward_blas(float *dx, float *dw, float *db, const float *dy, const float *y,
                             const int32_t *arg, const float *x, const float *w, int n,
                             const ConvShape *c, const PoolShape *p)
{
    general_classes(dx, dw, db, dy, y, arg, x, w, n, c, p, 0);
}
