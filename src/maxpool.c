/* 2x2 max-pool, stride 2, with the winner of each window remembered.
 *
 * The winner is kept as its offset within the input plane, so the backward
 * pass is a plain scatter-add. PyTorch
 * scans the window row by row and replaces the running maximum only when a
 * value is strictly larger (or NaN), so on ties the first element wins; after
 * a ReLU ties at zero are common, and matching the rule keeps gradients equal
 * to PyTorch's, not merely equivalent. */
#include "config.h"

#include <math.h>

#include "dpcnn/layers.h"

/* One output row: the windows over input rows r0 and r1 (= r0 + W), whose
 * first element sits at plane offset base. Branch-free (after a ReLU the
 * comparisons are coin flips, and mispredictions cost more than the
 * arithmetic); always inlined with the width as a literal, so it vectorises. */
static inline __attribute__((always_inline)) void
pool_row(float *restrict yr, int32_t *restrict ar, const float *restrict r0, int32_t base, int W,
         int OW)
{
    const float *restrict r1 = r0 + W;
    for (int j = 0; j < OW; j++) {
        const float v0 = r0[2 * j], v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1];
        const int32_t o = base + 2 * j;
        float best = v0;
        int32_t at = o;
        int take = (v1 > best) | (v1 != v1);
        best = take ? v1 : best;
        at = take ? o + 1 : at;
        take = (v2 > best) | (v2 != v2);
        best = take ? v2 : best;
        at = take ? o + W : at;
        take = (v3 > best) | (v3 != v3);
        best = take ? v3 : best;
        at = take ? o + W + 1 : at;
        yr[j] = best;
        ar[j] = at;
    }
}

void maxpool2_forward(float *y, int32_t *arg, const float *x, int n, int C, int H, int W)
{
    const int OH = H / 2, OW = W / 2;
    for (size_t plane = 0; plane < (size_t)n * C; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + (plane * H + 2 * i) * W;
            float *yr = y + (plane * OH + i) * OW;
            int32_t *ar = arg + (plane * OH + i) * OW;
            const int32_t base = 2 * i * W;
            if (W == 24)
                pool_row(yr, ar, r0, base, 24, 12);
            else if (W == 8)
                pool_row(yr, ar, r0, base, 8, 4);
            else
                pool_row(yr, ar, r0, base, W, OW);
        }
}

void maxpool2_backward(float *dx, const float *dy, const int32_t *arg, int n, int C, int H,
                       int W)
{
    const size_t out = (size_t)(H / 2) * (W / 2);
    for (size_t plane = 0; plane < (size_t)n * C; plane++) {
        float *dxp = dx + plane * H * W;
        for (size_t k = 0; k < out; k++)
            dxp[arg[plane * out + k]] += dy[plane * out + k];
    }
}

void relu_maxpool2_forward(float *y, int32_t *arg, const float *x, int n, int C, int H, int W)
{
    maxpool2_forward(y, arg, x, n, C, H, W);
    const size_t out = (size_t)n * C * (H / 2) * (W / 2);
    for (size_t k = 0; k < out; k++) /* x < 0 ? 0 : x, as relu_forward: NaN passes */
        y[k] = y[k] < 0.0f ? 0.0f : y[k];
}

void relu_maxpool2_backward(float *dx, const float *dy, const float *y, const int32_t *arg,
                            int n, int C, int H, int W)
{
    const size_t out = (size_t)(H / 2) * (W / 2);
    for (size_t plane = 0; plane < (size_t)n * C; plane++) {
        float *dxp = dx + plane * H * W;
        for (size_t k = 0; k < out; k++) {
            const size_t o = plane * out + k;
            const float g = dy[o];
            dxp[arg[o]] += y[o] > 0.0f ? g : 0.0f;
        }
    }
}

/* The reference recomputes the winner from x rather than trusting arg. */
static int winner_ref(const double *xp, int W, int i, int j)
{
    int win = 0;
    double best = xp[(size_t)(2 * i) * W + 2 * j];
    for (int k = 1; k < 4; k++) {
        double v = xp[(size_t)(2 * i + (k >> 1)) * W + 2 * j + (k & 1)];
        if (v > best || isnan(v)) {
            best = v;
            win = k;
        }
    }
    return win;
}

void maxpool2_forward_ref(double *y, const double *x, int n, int C, int H, int W)
{
    const int OH = H / 2, OW = W / 2;
    for (size_t plane = 0; plane < (size_t)n * C; plane++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const double *xp = x + plane * H * W;
                int k = winner_ref(xp, W, i, j);
                y[plane * OH * OW + i * OW + j] = xp[(size_t)(2 * i + (k >> 1)) * W + 2 * j + (k & 1)];
            }
}

void maxpool2_backward_ref(double *dx, const double *dy, const double *x, int n, int C,
                           int H, int W)
{
    const int OH = H / 2, OW = W / 2;
    for (size_t plane = 0; plane < (size_t)n * C; plane++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                int k = winner_ref(x + plane * H * W, W, i, j);
                dx[plane * H * W + (size_t)(2 * i + (k >> 1)) * W + 2 * j + (k & 1)] +=
                    dy[plane * OH * OW + i * OW + j];
            }
}
