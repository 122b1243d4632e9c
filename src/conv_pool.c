/* Backward through convolution, ReLU and 2x2 max-pool at once, over the
 * pooling winners only (layers.h has the formulas). The dense route would
 * scatter dy into a mostly-zero dL/dc and run two matrix products over it;
 * here each nonzero gradient touches one K x K window per input channel.
 * Sums run sample by sample, channel by channel, window by window: one fixed
 * order, so the bits do not depend on anything but the inputs. */
#include "config.h"

#include <stdint.h>

#include "dpcnn/layers.h"

/* acc[0..K) += g * src[0..K): one kernel row. For K = 5 (the tutorial's) as
 * one 4-wide vector operation and one scalar: GCC's vector extension, since
 * a loop of 5 is too short for the auto-vectoriser to bother. Neither pointer
 * is aligned. */
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
gather(int32_t *at, float *g, const float *dy, const float *y, const int32_t *arg, int pooled)
{
    int m = 0;
    for (int k = 0; k < pooled; k++) {
        at[m] = arg[k];
        g[m] = dy[k];
        m += y[k] > 0.0f;
    }
    return m;
}

static inline __attribute__((always_inline)) void
backward(float *dx, float *dw, float *db, const float *dy, const float *y, const int32_t *arg,
         const float *x, const float *w, int n, int C, int H, int W, int F, int K)
{
    const int OW = W - K + 1, OH = H - K + 1;
    const int pooled = (OH / 2) * (OW / 2);
    const int R = C * K * K;
    int32_t at[pooled];
    float gs[pooled], acc[R];
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * C * H * W;
        float *dxs = dx ? dx + (size_t)s * C * H * W : NULL;
        for (int f = 0; f < F; f++) {
            const size_t base = ((size_t)s * F + f) * pooled;
            const int m = gather(at, gs, dy + base, y + base, arg + base, pooled);
            const float *wf = w + (size_t)f * R;
            /* dw[f] in a local accumulator: no aliasing, stays in L1 */
            for (int r = 0; r < R; r++)
                acc[r] = 0.0f;
            float dbf = 0.0f;
            for (int e = 0; e < m; e++) {
                const float g = gs[e];
                const int i = at[e] / OW, j = at[e] % OW;
                dbf += g;
                for (int c = 0; c < C; c++)
                    for (int p = 0; p < K; p++)
                        axpy_row(acc + (c * K + p) * K, xs + ((size_t)c * H + i + p) * W + j, g, K);
                if (dxs)
                    for (int c = 0; c < C; c++)
                        for (int p = 0; p < K; p++)
                            axpy_row(dxs + ((size_t)c * H + i + p) * W + j, wf + (c * K + p) * K,
                                     g, K);
            }
            float *dwf = dw + (size_t)f * R;
            for (int r = 0; r < R; r++)
                dwf[r] += acc[r];
            db[f] += dbf;
        }
    }
}

void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n, int C, int H,
                        int W, int F, int K)
{
    /* the tutorial's two layers get loops the compiler knows to the end */
    if (C == 1 && K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, 1, H, W, F, 5);
    else if (C == 6 && K == 5)
        backward(dx, dw, db, dy, y, arg, x, w, n, 6, H, W, F, 5);
    else
        backward(dx, dw, db, dy, y, arg, x, w, n, C, H, W, F, K);
}
