/* Convolution as im2col + OpenBLAS's sgemm, one product per sample: the
 * second engine (--kernels openblas), today's path before dpcnn had its own
 * kernels. Its bits depend on OpenBLAS's kernel for the CPU (README).
 *
 * Let NP = OH*OW and R = C*K*K. Sample s's input unrolled (im2col) is
 *   col_s[(c,p,q), (i,j)] = x[s,c, i*S+p-P, j*S+q-P]   (0 outside the plane)
 * a matrix [R, NP], and its convolution is one product straight into NCHW
 * (W [F,C,K,K] read as [F,R], exactly PyTorch's weight layout):
 *   y_s [F,NP] = W [F,R] . col_s [R,NP] + b
 * Backward, with dy_s [F,NP] the sample's slice of dy:
 *   dW += dy_s . col_s^T       db[f] += sum_k dy_s[f,k]
 *   dcol_s = W^T . dy_s, then dx[s,c, i*S+p-P, j*S+q-P] += dcol_s[(c,p,q),(i,j)]
 * The backward pass rebuilds col_s in the scratch, uses it for dW, then
 * overwrites it with dcol_s. A 1x1 kernel with stride 1 and no padding needs
 * no unrolling at all (col_s is x_s itself). doc/math.md derives these. */
#include "config.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/layers.h"

static int is_pointwise(const ConvShape *c)
{
    return c->K == 1 && c->S == 1 && c->P == 0;
}

void conv2d_forward_blas(float *y, float *scratch, const float *x, const float *w, const float *b,
                    int n, const ConvShape *c)
{
    const int NP = c->OH * c->OW, R = c->C * c->K * c->K, F = c->F;
    const size_t in = (size_t)c->C * c->H * c->W;
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * in, *col = xs;
        float *y_s = y + (size_t)s * F * NP;
        if (!is_pointwise(c)) {
            conv_im2col(scratch, xs, c);
            col = scratch;
        }
        /* start from the bias and accumulate (beta = 1): no separate pass to zero y */
        if (b)
            for (int f = 0; f < F; f++)
                for (int k = 0; k < NP; k++)
                    y_s[(size_t)f * NP + k] = b[f];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, NP, R, 1.0f, w, R, col, NP,
                    b ? 1.0f : 0.0f, y_s, NP);
    }
}

void conv2d_backward_blas(float *dx, float *dw, float *db, float *scratch, const float *dy,
                     const float *x, const float *w, int n, const ConvShape *c)
{
    const int NP = c->OH * c->OW, R = c->C * c->K * c->K, F = c->F;
    const size_t in = (size_t)c->C * c->H * c->W;
    for (int s = 0; s < n; s++) {
        const float *dy_s = dy + (size_t)s * F * NP;
        const float *xs = x + (size_t)s * in, *col = xs;
        if (db)
            for (int f = 0; f < F; f++) {
                /* Eight running sums in a fixed pattern: vectorisable, and still one
                 * fixed order of additions, so the result is reproducible. */
                const float *row = dy_s + (size_t)f * NP;
                float lane[8] = {0};
                int k = 0;
                for (; k + 8 <= NP; k += 8)
                    for (int u = 0; u < 8; u++)
                        lane[u] += row[k + u];
                float acc = 0.0f;
                for (; k < NP; k++)
                    acc += row[k];
                for (int u = 0; u < 8; u++)
                    acc += lane[u];
                db[f] += acc;
            }
        if (!is_pointwise(c)) {
            conv_im2col(scratch, xs, c);
            col = scratch;
        }
        /* dW [F,R] += dy_s [F,NP] . col_s^T [NP,R] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, R, NP, 1.0f, dy_s, NP, col, NP,
                    1.0f, dw, R);
        if (!dx)
            continue;
        float *dxs = dx + (size_t)s * in;
        if (is_pointwise(c)) {
            /* dcol_s is dx_s's own shape: add W^T . dy_s straight in */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, NP, F, 1.0f, w, R, dy_s, NP,
                        1.0f, dxs, NP);
        } else {
            /* scratch = dcol_s [R,NP] = W^T [R,F] . dy_s [F,NP]; col_s is spent */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, NP, F, 1.0f, w, R, dy_s, NP,
                        0.0f, scratch, NP);
            conv_col2im_add(dxs, scratch, c);
        }
    }
}

