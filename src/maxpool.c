/* 2x2 max-pool, stride 2, with the winner of each window remembered.
 *
 * The winner index w in 0..3 names the window element (w>>1, w&1). PyTorch
 * scans the window row by row and replaces the running maximum only when a
 * value is strictly larger (or NaN), so on ties the first element wins; after
 * a ReLU ties at zero are common, and matching the rule keeps gradients equal
 * to PyTorch's, not merely equivalent. */
#include "config.h"

#include <math.h>

#include "dpcnn/layers.h"

void maxpool2_forward(float *y, uint8_t *arg, const float *x, int n, int C, int H, int W)
{
    const int OH = H / 2, OW = W / 2;
    for (size_t plane = 0; plane < (size_t)n * C; plane++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + (plane * H + 2 * i) * W, *r1 = r0 + W;
            float *yr = y + (plane * OH + i) * OW;
            uint8_t *ar = arg + (plane * OH + i) * OW;
            /* Branch-free (after a ReLU the comparisons are coin flips, and
             * mispredictions cost more than the arithmetic), and vectorisable. */
            for (int j = 0; j < OW; j++) {
                const float v0 = r0[2 * j], v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1];
                float best = v0;
                int win = 0, take;
                take = (v1 > best) | (v1 != v1);
                best = take ? v1 : best;
                win = take ? 1 : win;
                take = (v2 > best) | (v2 != v2);
                best = take ? v2 : best;
                win = take ? 2 : win;
                take = (v3 > best) | (v3 != v3);
                best = take ? v3 : best;
                win = take ? 3 : win;
                yr[j] = best;
                ar[j] = (uint8_t)win;
            }
        }
}

void maxpool2_backward(float *dx, const float *dy, const uint8_t *arg, int n, int C, int H,
                       int W)
{
    const int OH = H / 2, OW = W / 2;
    for (size_t plane = 0; plane < (size_t)n * C; plane++) {
        float *dxp = dx + plane * H * W;
        const float *dyp = dy + plane * OH * OW;
        const uint8_t *ap = arg + plane * OH * OW;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const int k = ap[i * OW + j];
                dxp[(size_t)(2 * i + (k >> 1)) * W + 2 * j + (k & 1)] += dyp[i * OW + j];
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
