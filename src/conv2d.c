/* Convolution as im2col + sgemm, one product per sample.
 *
 * Let P = OH*OW and R = C*K*K. Sample s's input unrolled (im2col) is
 *   col_s[(c,p,q), (i,j)] = x[s,c,i+p,j+q]               col_s is [R, P]
 * and its convolution is one product straight into NCHW (W [F,C,K,K] read as
 * [F,R], exactly PyTorch's weight layout):
 *   y_s [F,P] = W [F,R] . col_s [R,P] + b
 * Backward, with dy_s [F,P] the sample's slice of dy:
 *   dW += dy_s . col_s^T       db[f] += sum_p dy_s[f,p]
 *   dcol_s = W^T . dy_s, then dx[s,c,i+p,j+q] += dcol_s[(c,p,q),(i,j)] (col2im)
 * Products per sample measured as fast as one wide product over the batch
 * here, and they need no transposing copies and keep dcol_s in cache.
 * doc/math.md derives these. */
#include "config.h"

#include <cblas.h>
#include <string.h>

#include "dpcnn/layers.h"

size_t conv2d_col_floats(int n, int C, int H, int W, int K)
{
    return (size_t)n * C * K * K * (H - K + 1) * (W - K + 1);
}

size_t conv2d_tmp_floats(int n, int C, int H, int W, int F, int K)
{
    (void)n;
    (void)F;
    return (size_t)C * K * K * (H - K + 1) * (W - K + 1); /* one sample's dcol */
}

/* The unrolling moves OH rows of OW floats per (c,p,q,s): short rows (24 and
 * 8 floats here), so loop overhead would dominate. The helpers below are
 * always inlined and called with the width as a literal for the tutorial's
 * shapes, which lets the compiler unroll each row into a few vector moves. */
static inline __attribute__((always_inline)) void
copy_block(float *restrict dst, const float *restrict src, int OH, int W, int OW)
{
    /* with OW a literal this becomes a few inline vector moves per row */
    for (int i = 0; i < OH; i++)
        __builtin_memcpy(dst + i * OW, src + i * W, sizeof(float) * (size_t)OW);
}

static inline __attribute__((always_inline)) void
add_block(float *restrict dst, const float *restrict src, int OH, int W, int OW)
{
    for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++)
            dst[i * W + j] += src[i * OW + j];
}

/* col_s[(c,p,q), (i,j)] = x[s,c,i+p,j+q], for one sample. */
static void im2col(float *col, const float *x, int C, int H, int W, int K)
{
    const int OH = H - K + 1, OW = W - K + 1, P = OH * OW;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                const float *src = x + ((size_t)c * H + p) * W + q;
                float *dst = col + ((size_t)(c * K + p) * K + q) * P;
                if (OW == 24 && OH == 24)
                    copy_block(dst, src, 24, 28, 24);
                else if (OW == 8 && OH == 8)
                    copy_block(dst, src, 8, 12, 8);
                else
                    copy_block(dst, src, OH, W, OW);
            }
}

/* dx_s[c,i+p,j+q] += dcol_s[(c,p,q), (i,j)]: the adjoint of im2col. */
static void col2im_add(float *dx, const float *dcol, int C, int H, int W, int K)
{
    const int OH = H - K + 1, OW = W - K + 1, P = OH * OW;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                const float *src = dcol + ((size_t)(c * K + p) * K + q) * P;
                float *dst = dx + ((size_t)c * H + p) * W + q;
                if (OW == 8 && OH == 8)
                    add_block(dst, src, 8, 12, 8);
                else
                    add_block(dst, src, OH, W, OW);
            }
}

void conv2d_forward(float *y, float *col, const float *x, const float *w, const float *b,
                    int n, int C, int H, int W, int F, int K)
{
    const int P = (H - K + 1) * (W - K + 1), R = C * K * K;
    for (int s = 0; s < n; s++) {
        float *col_s = col + (size_t)s * R * P;
        float *y_s = y + (size_t)s * F * P;
        im2col(col_s, x + (size_t)s * C * H * W, C, H, W, K);
        /* start from the bias and accumulate (beta = 1): no separate pass to zero y */
        for (int f = 0; f < F; f++)
            for (int k = 0; k < P; k++)
                y_s[(size_t)f * P + k] = b[f];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, P, R, 1.0f, w, R, col_s, P,
                    1.0f, y_s, P);
    }
}

void conv2d_backward(float *dx, float *dw, float *db, float *tmp, const float *dy,
                     const float *col, const float *w, int n, int C, int H, int W, int F,
                     int K)
{
    const int P = (H - K + 1) * (W - K + 1), R = C * K * K;
    for (int s = 0; s < n; s++) {
        const float *dy_s = dy + (size_t)s * F * P;
        const float *col_s = col + (size_t)s * R * P;
        for (int f = 0; f < F; f++) {
            /* Eight running sums in a fixed pattern: vectorisable, and still one
             * fixed order of additions, so the result is reproducible. */
            const float *row = dy_s + (size_t)f * P;
            float lane[8] = {0};
            int k = 0;
            for (; k + 8 <= P; k += 8)
                for (int u = 0; u < 8; u++)
                    lane[u] += row[k + u];
            float acc = 0.0f;
            for (; k < P; k++)
                acc += row[k];
            for (int u = 0; u < 8; u++)
                acc += lane[u];
            db[f] += acc;
        }
        /* dW [F,R] += dy_s [F,P] . col_s^T [P,R] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, R, P, 1.0f, dy_s, P, col_s, P,
                    1.0f, dw, R);
        if (dx) {
            /* tmp = dcol_s [R,P] = W^T [R,F] . dy_s [F,P] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, P, F, 1.0f, w, R, dy_s, P,
                        0.0f, tmp, P);
            col2im_add(dx + (size_t)s * C * H * W, tmp, C, H, W, K);
        }
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
