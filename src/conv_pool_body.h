/* The body of the backward pass through convolution, ReLU and max-pool over
 * the pooling winners (conv_pool.c has the math), included by conv_pool.c
 * (the plain C path, and the OpenBLAS engine's unfused multiply-adds) and by
 * conv_pool_fma.c (compiled for AVX2 and FMA). The including file defines
 *   madd(mode, g, x, t)          t + g*x, as that file's mode takes it
 *   axpy_row(acc, src, g, K, mode)  acc[q] = madd(mode, g, src[q], acc[q]), q < K
 * so each output's terms come in the same order whatever the file. */
enum {
    WINNERS_AT_ONCE = 256, /* the gathered list of winners */
    ACC_FLOATS = 4096,     /* the local dw accumulator, C*K*K floats at most */
};

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
         int S, int P, int C, int mode)
{
    const int H = cs->H, W = cs->W, F = cs->F, OW = cs->OW;
    const int pooled = ps->OH * ps->OW;
    const int R = C * K * K;
    /* a filter too large for the local accumulator accumulates straight into dw */
    const int direct = R > ACC_FLOATS;
    int32_t at[WINNERS_AT_ONCE];
    float gs[WINNERS_AT_ONCE], local[ACC_FLOATS];
    /* a winner's row is its offset / OW: by multiplying with ceil(2^32 / OW),
     * exact while offsets and OW stay below 2^16 (a division per winner was
     * a good part of the time) */
    const int small = OW < 65536 && cs->OH * OW < 65536;
    const uint64_t magic = ((UINT64_C(1) << 32) + (uint64_t)OW - 1) / (uint64_t)OW;
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
                    const int row = small ? (int)(((uint64_t)at[e] * magic) >> 32) : at[e] / OW;
                    const int u0 = row * S - P, v0 = (at[e] - row * OW) * S - P;
                    dbf += g;
                    if (P == 0 || (u0 >= 0 && v0 >= 0 && u0 + K <= H && v0 + K <= W)) {
                        /* the whole window is inside the plane */
                        for (int c = 0; c < C; c++)
                            for (int p = 0; p < K; p++)
                                axpy_row(acc + (c * K + p) * K,
                                         xs + ((size_t)c * H + u0 + p) * W + v0, g, K, mode);
                        if (dxs)
                            for (int c = 0; c < C; c++)
                                for (int p = 0; p < K; p++)
                                    axpy_row(dxs + ((size_t)c * H + u0 + p) * W + v0,
                                             wf + (c * K + p) * K, g, K, mode);
                        continue;
                    }
                    /* the window crosses the padded border: only the inside */
                    const int p0 = imax(0, -u0), p1 = imin(K, H - u0);
                    const int q0 = imax(0, -v0), q1 = imin(K, W - v0);
                    for (int c = 0; c < C; c++)
                        for (int p = p0; p < p1; p++)
                            for (int q = q0; q < q1; q++)
                            {
                                float *t = &acc[(c * K + p) * K + q];
                                *t = madd(mode, g, xs[((size_t)c * H + u0 + p) * W + v0 + q], *t);
                            }
                    if (dxs)
                        for (int c = 0; c < C; c++)
                            for (int p = p0; p < p1; p++)
                                for (int q = q0; q < q1; q++)
                                {
                                    float *t = &dxs[((size_t)c * H + u0 + p) * W + v0 + q];
                                    *t = madd(mode, g, wf[(c * K + p) * K + q], *t);
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

/* The shape classes, for one mode: the common shapes get loops the compiler
 * knows to the end. */
static inline __attribute__((always_inline)) void
dispatch(float *dx, float *dw, float *db, const float *dy, const float *y, const int32_t *arg,
         const float *x, const float *w, int n, const ConvShape *c, const PoolShape *p, int mode)
{
    if (c->S == 1 && c->P == 0 && c->K == 5 && c->C == 1 && !dx)
        backward(NULL, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, 1, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 5, 1, 0, c->C, mode);
    else if (c->S == 1 && c->P == 0 && c->K == 3)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 3, 1, 0, c->C, mode);
    else if (c->K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 5, c->S, c->P, c->C, mode);
    else if (c->K == 3)
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, 3, c->S, c->P, c->C, mode);
    else
        backward(dx, dw, db, dy, y, arg, x, w, n, c, p, c->K, c->S, c->P, c->C, mode);
}

