/* Max-pool, kernel K, stride S, no padding (PyTorch's floor rule), with the
 * winner of each window remembered; and the fused ReLU + max-pool.
 *
 * The winner is kept as its offset within the input plane, so the backward
 * pass is a plain scatter-add; with overlapping windows (S < K) an input may
 * win several windows and its gradient is the sum. PyTorch scans the window
 * row by row and replaces the running maximum only when a value is strictly
 * larger or is a NaN (`val > maxval || isnan(val)`), so on ties the first
 * element wins and a NaN always wins (of several NaNs, the last). After a ReLU
 * ties at zero are common, and matching the rule keeps gradients equal to
 * PyTorch's, not merely equivalent. pool_shape() lives here for both pools. */
#include "config.h"

#include <math.h>
#include <stdint.h>

#include "dpcnn/layers.h"

int pool_shape(PoolShape *p)
{
    if (p->C <= 0 || p->K <= 0 || p->S <= 0 || p->H < p->K || p->W < p->K)
        return -1;
    if ((int64_t)p->H * p->W > INT32_MAX) /* arg keeps plane offsets in int32 */
        return -1;
    p->OH = (p->H - p->K) / p->S + 1;
    p->OW = (p->W - p->K) / p->S + 1;
    return 0;
}

/* One output row: the windows whose top row starts at r0, the first element of
 * window j at plane offset base + j*S. Branch-free (after a ReLU the
 * comparisons are coin flips, and mispredictions cost more than the
 * arithmetic). Starting from the window's first element is PyTorch's start
 * from -inf: the first element replaces -inf unless it is -inf itself, and
 * then the first index is kept either way. Always inlined with K and S
 * literals for the common shapes, so the window loops disappear. */
static inline __attribute__((always_inline)) void
pool_row(float *restrict yr, int32_t *restrict ar, const float *restrict r0, int32_t base, int W,
         int OW, int K, int S)
{
    for (int j = 0; j < OW; j++) {
        const float *win = r0 + (size_t)j * S;
        const int32_t o = base + j * S;
        float best = win[0];
        int32_t at = o;
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++) {
                if (a == 0 && b == 0)
                    continue;
                const float v = win[(size_t)a * W + b];
                const int take = (v > best) | (v != v);
                best = take ? v : best;
                at = take ? o + a * W + b : at;
            }
        yr[j] = best;
        ar[j] = at;
    }
}

static inline __attribute__((always_inline)) void
pool_planes(float *y, int32_t *arg, const float *x, size_t planes, int H, int W, int OH, int OW,
            int K, int S)
{
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++)
            pool_row(y + (plane * OH + i) * OW, arg + (plane * OH + i) * OW,
                     x + (plane * H + (size_t)i * S) * W, i * S * W, W, OW, K, S);
}

void maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p)
{
    const size_t planes = (size_t)n * p->C;
    if (p->K == 2 && p->S == 2)
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, 2, 2);
    else if (p->K == 3 && p->S == 2)
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, 3, 2);
    else
        pool_planes(y, arg, x, planes, p->H, p->W, p->OH, p->OW, p->K, p->S);
}

void maxpool_backward(float *dx, const float *dy, const int32_t *arg, int n, const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++) {
        float *dxp = dx + plane * in;
        for (size_t k = 0; k < out; k++)
            dxp[arg[plane * out + k]] += dy[plane * out + k];
    }
}

void relu_maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p)
{
    maxpool_forward(y, arg, x, n, p);
    const size_t out = (size_t)n * p->C * p->OH * p->OW;
    for (size_t k = 0; k < out; k++) /* x < 0 ? 0 : x, as relu_forward: NaN passes */
        y[k] = y[k] < 0.0f ? 0.0f : y[k];
}

void relu_maxpool_backward(float *dx, const float *dy, const float *y, const int32_t *arg, int n,
                           const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++) {
        float *dxp = dx + plane * in;
        for (size_t k = 0; k < out; k++) {
            const size_t o = plane * out + k;
            const float g = dy[o];
            dxp[arg[o]] += y[o] > 0.0f ? g : 0.0f;
        }
    }
}

/* The reference recomputes the winner from x rather than trusting arg, by
 * PyTorch's own loop: from -inf, take v when v > best or v is NaN. */
static size_t winner_ref(const double *xp, int W, int i, int j, const PoolShape *p)
{
    size_t win = (size_t)i * p->S * W + (size_t)j * p->S;
    double best = -INFINITY;
    for (int a = 0; a < p->K; a++)
        for (int b = 0; b < p->K; b++) {
            const size_t o = (size_t)(i * p->S + a) * W + (size_t)j * p->S + b;
            if (xp[o] > best || isnan(xp[o])) {
                best = xp[o];
                win = o;
            }
        }
    return win;
}

void maxpool_forward_ref(double *y, const double *x, int n, const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                const double *xp = x + plane * in;
                y[plane * out + (size_t)i * p->OW + j] = xp[winner_ref(xp, p->W, i, j, p)];
            }
}

void maxpool_backward_ref(double *dx, const double *dy, const double *x, int n,
                          const PoolShape *p)
{
    const size_t in = (size_t)p->H * p->W, out = (size_t)p->OH * p->OW;
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++)
                dx[plane * in + winner_ref(x + plane * in, p->W, i, j, p)] +=
                    dy[plane * out + (size_t)i * p->OW + j];
}
