/* Convolution as im2col + one sgemm per call.
 *
 * Let P = OH*OW and R = C*K*K. The unrolled input is
 *   col[(c,p,q), (s,i,j)] = x[s,c,i+p,j+q]          col is [R, n*P]
 * so the convolution of the whole micro-batch is one product
 *   Y[f, (s,i,j)] = sum_r W[f,r] col[r,(s,i,j)]     Y = W . col, [F, n*P]
 * (W [F,C,K,K] read as [F,R], exactly PyTorch's weight layout). One wide
 * product keeps OpenBLAS far more efficient than n narrow ones; the price is
 * a copy from Y's [F, n, P] order to NCHW [n, F, P], fused with the bias.
 *
 * Backward, with dY in the same [F, n*P] order:
 *   dW = dY . col^T       (sum over samples and pixels: the K dimension)
 *   db[f] = sum_(s,i,j) dY[f,(s,i,j)]
 *   dcol = W^T . dY, then dx[s,c,i+p,j+q] += dcol[(c,p,q),(s,i,j)] (col2im).
 * doc/math.md derives these. */
#include "config.h"

#include <cblas.h>
#include <string.h>

#include "dpcnn/layers.h"

size_t conv2d_col_floats(int n, int C, int H, int W, int K)
{
    return (size_t)C * K * K * n * (H - K + 1) * (W - K + 1);
}

size_t conv2d_tmp_floats(int n, int C, int H, int W, int F, int K)
{
    /* Backward needs dY [F, n*P] and dcol [R, n*P] at once; forward needs Y. */
    size_t np = (size_t)n * (H - K + 1) * (W - K + 1);
    return (size_t)F * np + (size_t)C * K * K * np;
}

/* The unrolling moves OH rows of OW floats per (c,p,q,s): short rows (24 and
 * 8 floats here), so loop overhead would dominate. The helpers below are
 * always inlined and called with the width as a literal for the tutorial's
 * shapes, which lets the compiler unroll each row into a few vector moves. */
static inline __attribute__((always_inline)) void
copy_block(float *restrict dst, const float *restrict src, int OH, int W, int OW)
{
    for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++)
            dst[i * OW + j] = src[i * W + j];
}

static inline __attribute__((always_inline)) void
add_block(float *restrict dst, const float *restrict src, int OH, int W, int OW)
{
    for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++)
            dst[i * W + j] += src[i * OW + j];
}

/* col[(c,p,q), (s,i,j)] = x[s,c,i+p,j+q] */
static void im2col(float *col, const float *x, int n, int C, int H, int W, int K)
{
    const int OH = H - K + 1, OW = W - K + 1, P = OH * OW;
    const size_t np = (size_t)n * P;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                float *row = col + ((size_t)(c * K + p) * K + q) * np;
                for (int s = 0; s < n; s++) {
                    const float *src = x + (((size_t)s * C + c) * H + p) * W + q;
                    float *dst = row + (size_t)s * P;
                    if (OW == 24 && OH == 24)
                        copy_block(dst, src, 24, 28, 24);
                    else if (OW == 8 && OH == 8)
                        copy_block(dst, src, 8, 12, 8);
                    else
                        copy_block(dst, src, OH, W, OW);
                }
            }
}

/* dx[s,c,i+p,j+q] += dcol[(c,p,q), (s,i,j)]: the adjoint of im2col. */
static void col2im_add(float *dx, const float *dcol, int n, int C, int H, int W, int K)
{
    const int OH = H - K + 1, OW = W - K + 1, P = OH * OW;
    const size_t np = (size_t)n * P;
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < K; p++)
                for (int q = 0; q < K; q++) {
                    const float *src = dcol + ((size_t)(c * K + p) * K + q) * np + (size_t)s * P;
                    float *dst = dx + (((size_t)s * C + c) * H + p) * W + q;
                    if (OW == 8 && OH == 8)
                        add_block(dst, src, 8, 12, 8);
                    else
                        add_block(dst, src, OH, W, OW);
                }
}

void conv2d_forward(float *y, float *col, float *tmp, const float *x, const float *w,
                    const float *b, int n, int C, int H, int W, int F, int K)
{
    const int P = (H - K + 1) * (W - K + 1), R = C * K * K;
    const int np = n * P;
    im2col(col, x, n, C, H, W, K);
    /* tmp = Y [F, n*P] = W [F,R] . col [R, n*P] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, np, R, 1.0f, w, R, col, np,
                0.0f, tmp, np);
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++) {
            const float *src = tmp + (size_t)f * np + (size_t)s * P;
            float *dst = y + ((size_t)s * F + f) * P;
            const float bf = b[f];
            for (int k = 0; k < P; k++)
                dst[k] = src[k] + bf;
        }
}

void conv2d_backward(float *dx, float *dw, float *db, float *tmp, const float *dy,
                     const float *col, const float *w, int n, int C, int H, int W, int F,
                     int K)
{
    const int P = (H - K + 1) * (W - K + 1), R = C * K * K;
    const int np = n * P;
    float *dY = tmp;                   /* [F, n*P] */
    float *dcol = tmp + (size_t)F * np; /* [R, n*P] */
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++)
            memcpy(dY + (size_t)f * np + (size_t)s * P, dy + ((size_t)s * F + f) * P,
                   sizeof(float) * P);
    for (int f = 0; f < F; f++) {
        /* Eight running sums in a fixed pattern: vectorisable, and still one
         * fixed order of additions, so the result is reproducible. */
        const float *row = dY + (size_t)f * np;
        float lane[8] = {0};
        int k = 0;
        for (; k + 8 <= np; k += 8)
            for (int u = 0; u < 8; u++)
                lane[u] += row[k + u];
        float acc = 0.0f;
        for (; k < np; k++)
            acc += row[k];
        for (int u = 0; u < 8; u++)
            acc += lane[u];
        db[f] += acc;
    }
    /* dW [F,R] += dY [F,n*P] . col^T [n*P,R] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, R, np, 1.0f, dY, np, col, np,
                1.0f, dw, R);
    if (dx) {
        /* dcol [R, n*P] = W^T [R,F] . dY [F, n*P] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, np, F, 1.0f, w, R, dY, np,
                    0.0f, dcol, np);
        col2im_add(dx, dcol, n, C, H, W, K);
    }
}

void conv2d_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        int C, int H, int W, int F, int K)
{
    const int OH = H - K + 1, OW = W - K + 1;
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    double acc = b[f];
                    for (int c = 0; c < C; c++)
                        for (int p = 0; p < K; p++)
                            for (int q = 0; q < K; q++)
                                acc += w[((f * C + c) * K + p) * K + q] *
                                       x[(((size_t)s * C + c) * H + i + p) * W + j + q];
                    y[(((size_t)s * F + f) * OH + i) * OW + j] = acc;
                }
}

void conv2d_backward_ref(double *dx, double *dw, double *db, const double *dy,
                         const double *x, const double *w, int n, int C, int H, int W, int F,
                         int K)
{
    const int OH = H - K + 1, OW = W - K + 1;
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    /* y[s,f,i,j] depends on b[f], on w[f,c,p,q] through
                     * x[s,c,i+p,j+q], and on x through w. */
                    const double g = dy[(((size_t)s * F + f) * OH + i) * OW + j];
                    db[f] += g;
                    for (int c = 0; c < C; c++)
                        for (int p = 0; p < K; p++)
                            for (int q = 0; q < K; q++) {
                                const size_t xi = (((size_t)s * C + c) * H + i + p) * W + j + q;
                                const size_t wi = (size_t)((f * C + c) * K + p) * K + q;
                                dw[wi] += g * x[xi];
                                if (dx)
                                    dx[xi] += g * w[wi];
                            }
                }
}
