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
 * is accumulated in a local buffer (no aliasing, stays in L1) and added once.
 * No kernel allocates, so the buffers have fixed sizes: the winners are
 * gathered in runs (which changes no sum), and a filter with more than
 * ACC_FLOATS weights accumulates straight into dw instead. */
#include "config.h"

#include <stdint.h>

#include "dpcnn/layers.h"

enum {
    WINNERS_AT_ONCE = 256, /* the gathered list of winners */
    ACC_FLOATS = 4096,     /* the local dw accumulator, C*K*K floats at most */
};

/* acc[0..K) += g * src[0..K): one kernel row. For K = 5 as one 4-wide vector
 * operation and one scalar: GCC's vector extension, since a loop of 5 is too
 * short for the auto-vectoriser to bother. Neither pointer is aligned. The
 * products and sums are the scalar loop's, element by element. */
typedef float v4 __attribute__((vector_size(16), aligned(4)));

static inline __attribute__((always_inline)) void axpy_row(float *restrict acc,
                                                           const float *restrict src, float g,
                                                           int K)
{
    if (K == 5) {
        v4 a, x;
        __builtin_memcpy(&a, acc, sizeof a);
        __builtin_memcpy(&x, src, sizeof x);
        a += g * x;
        __builtin_memcpy(acc, &a, sizeof a);
        acc[4] += g * src[4];
        return;
    }
    for (int q = 0; q < K; q++)
        acc[q] += g * src[q];
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

/* Inlined with literals for the common classes of shape: the kernel side K;
 * stride 1 without padding (S = 1, P = 0), where every window is inside the
 * plane and the border test folds away; and the first layer on grey images
 * (one input channel, no input gradient: dx a literal NULL), where the work per
 * winner is K rows and loop overhead and register spills would cost as much
 * (measured: 8% of the tutorial network's backward pass without it). */
static inline __attribute__((always_inline)) void
backward(float *dx, float *dw, float *db, const float *dy, const float *y, const int32_t *arg,
         const float *x, const float *w, int n, const ConvShape *cs, const PoolShape *ps, int K,
         int S, int P, int C)
{
    const int H = cs->H, W = cs->W, F = cs->F, OW = cs->OW;
    const int pooled = ps->OH * ps->OW;
    const int R = C * K * K;
    /* a filter too large for the local accumulator accumulates straight into dw */
    const int direct = R > ACC_FLOATS;
    int32_t at[WINNERS_AT_ONCE];
    float gs[WINNERS_AT_ONCE], local[ACC_FLOATS];
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
                    const int u0 = at[e] / OW * S - P, v0 = at[e] % OW * S - P;
                    dbf += g;
                    if (P == 0 || (u0 >= 0 && v0 >= 0 && u0 + K <= H && v0 + K <= W)) {
                        /* the whole window is inside the plane */
                        for (int c = 0; c < C; c++)
                            for (int p = 0; p < K; p++)
                                axpy_row(acc + (c * K + p) * K,
                                         xs + ((size_t)c * H + u0 + p) * W + v0, g, K);
                        if (dxs)
                            for (int c = 0; c < C; c++)
                                for (int p = 0; p < K; p++)
                                    axpy_row(dxs + ((size_t)c * H + u0 + p) * W + v0,
                                             wf + (c * K + p) * K, g, K);
                        continue;
                    }
                    /* the window crosses the padded border: only the inside */
                    const int p0 = imax(0, -u0), p1 = imin(K, H - u0);
                    const int q0 = imax(0, -v0), q1 = imin(K, W - v0);
                    for (int c = 0; c < C; c++)
                        for (int p = p0; p < p1; p++)
                            for (int q = q0; q < q1; q++)
                                acc[(c * K + p) * K + q] +=
                                    g * xs[((size_t)c * H + u0 + p) * W + v0 + q];
                    if (dxs)
                        for (int c = 0; c < C; c++)
                            for (int p = p0; p < p1; p++)
                                for (int q = q0; q < q1; q++)
                                    dxs[((size_t)c * H + u0 + p) * W + v0 + q] +=
                                        g * wf[(c * K + p) * K + q];
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

void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n,
                        const ConvShape *c, const PoolShape *p)
{
    /* the common shapes get loops the compiler knows to the end */
    if (c->S == 1 && c->P == 0 && c->K == 5 && c->C == 1 && !dx)
        backward(NULL, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, 1);
    else if (c->S == 1 && c->P == 0 && c->K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, c->C);
    else if (c->S == 1 && c->P == 0 && c->K == 3)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 3, 1, 0, c->C);
    else if (c->K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 5, c->S, c->P, c->C);
    else if (c->K == 3)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 3, c->S, c->P, c->C);
    else
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, c->K, c->S, c->P, c->C);
}
