/* Average pool, kernel K, stride S, no padding (PyTorch's floor rule):
 *   y[s,c,i,j] = (sum_{a,b < K} x[s,c, i*S+a, j*S+b]) / (K*K)
 *   dx[s,c, i*S+a, j*S+b] += dy[s,c,i,j] / (K*K)      (each a, b < K)
 * As PyTorch's CPU avg_pool2d: the window is summed in float in scan order
 * (row by row) and the sum divided by K*K (a division, not a multiplication by
 * the reciprocal, which would round differently); the backward pass divides dy
 * once and adds the quotient to each element of the window. Overlapping
 * windows (S < K) add their shares. Without padding count_include_pad changes
 * nothing. */
#include "config.h"

#include "dpcnn/layers.h"

static inline __attribute__((always_inline)) void
avg_planes(float *restrict y, const float *restrict x, size_t planes, int H, int W, int OH, int OW,
           int K, int S)
{
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++) {
        const float *xp = x + plane * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float *win = xp + (size_t)i * S * W + (size_t)j * S;
                float sum = 0.0f;
                for (int a = 0; a < K; a++)
                    for (int b = 0; b < K; b++)
                        sum += win[(size_t)a * W + b];
                y[(plane * OH + i) * OW + j] = sum / div;
            }
    }
}

void avgpool_forward(float *y, const float *x, int n, const PoolShape *p)
{
    const size_t planes = (size_t)n * p->C;
    if (p->K == 2 && p->S == 2) /* LeNet-5's */
        avg_planes(y, x, planes, p->H, p->W, p->OH, p->OW, 2, 2);
    else
        avg_planes(y, x, planes, p->H, p->W, p->OH, p->OW, p->K, p->S);
}

/* Non-overlapping windows (S = K) give each dx element one term: a row of the
 * pool's quotients, then each of the K input rows takes it, element v from
 * quotient v / K (plain loops the compiler vectorises; a division per window
 * in the inner loop was most of the time). Overlapping windows add their
 * shares window by window. */
static inline __attribute__((always_inline)) void
avg_back_tiled(float *restrict dx, const float *restrict dy, size_t planes, int H, int W, int OH,
               int OW, int K)
{
    const float div = (float)(K * K);
    float q[1024];
    for (size_t plane = 0; plane < planes; plane++)
        for (int i = 0; i < OH; i++) {
            const float *dyr = dy + (plane * OH + i) * OW;
            for (int j0 = 0; j0 < OW; j0 += 1024) {
                const int nj = OW - j0 < 1024 ? OW - j0 : 1024;
                for (int j = 0; j < nj; j++)
                    q[j] = dyr[j0 + j] / div;
                for (int a = 0; a < K; a++) {
                    float *row = dx + (plane * H + (size_t)i * K + a) * W + (size_t)j0 * K;
                    for (int v = 0; v < nj * K; v++)
                        row[v] += q[v / K];
                }
            }
        }
}

void avgpool_backward(float *dx, const float *dy, int n, const PoolShape *p)
{
    const int K = p->K, S = p->S, H = p->H, W = p->W, OH = p->OH, OW = p->OW;
    const size_t planes = (size_t)n * p->C;
    if (K == 2 && S == 2) {
        avg_back_tiled(dx, dy, planes, H, W, OH, OW, 2);
        return;
    }
    if (K == S) {
        avg_back_tiled(dx, dy, planes, H, W, OH, OW, K);
        return;
    }
    const float div = (float)(K * K);
    for (size_t plane = 0; plane < planes; plane++) {
        float *dxp = dx + plane * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float g = dy[(plane * OH + i) * OW + j] / div;
                float *win = dxp + (size_t)i * S * W + (size_t)j * S;
                for (int a = 0; a < K; a++)
                    for (int b = 0; b < K; b++)
                        win[(size_t)a * W + b] += g;
            }
    }
}

void avgpool_forward_ref(double *y, const double *x, int n, const PoolShape *p)
{
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                double sum = 0.0;
                for (int a = 0; a < p->K; a++)
                    for (int b = 0; b < p->K; b++)
                        sum += x[(plane * p->H + (size_t)i * p->S + a) * p->W + (size_t)j * p->S +
                                 b];
                y[(plane * p->OH + i) * p->OW + j] = sum / (p->K * p->K);
            }
}

void avgpool_backward_ref(double *dx, const double *dy, int n, const PoolShape *p)
{
    for (size_t plane = 0; plane < (size_t)n * p->C; plane++)
        for (int i = 0; i < p->OH; i++)
            for (int j = 0; j < p->OW; j++) {
                const double g = dy[(plane * p->OH + i) * p->OW + j] / (p->K * p->K);
                for (int a = 0; a < p->K; a++)
                    for (int b = 0; b < p->K; b++)
                        dx[(plane * p->H + (size_t)i * p->S + a) * p->W + (size_t)j * p->S + b] +=
                            g;
            }
}
