/* Convolution as im2col + sgemm, one product per sample, any kernel K, stride S
 * and zero padding P.
 *
 * Let NP = OH*OW and R = C*K*K. Sample s's input unrolled (im2col) is
 *   col_s[(c,p,q), (i,j)] = x[s,c, i*S+p-P, j*S+q-P]   (0 outside the plane)
 * a matrix [R, NP], and its convolution is one product straight into NCHW
 * (W [F,C,K,K] read as [F,R], exactly PyTorch's weight layout):
 *   y_s [F,NP] = W [F,R] . col_s [R,NP] + b
 * Backward, with dy_s [F,NP] the sample's slice of dy:
 *   dW += dy_s . col_s^T       db[f] += sum_k dy_s[f,k]
 *   dcol_s = W^T . dy_s, then dx[s,c, i*S+p-P, j*S+q-P] += dcol_s[(c,p,q),(i,j)]
 *   (col2im; positions in the padding are dropped: they are constants)
 * Nothing is kept from the forward pass: the backward pass rebuilds col_s in the
 * scratch, uses it for dW, then overwrites it with dcol_s. A 1x1 kernel with
 * stride 1 and no padding needs no unrolling at all (col_s is x_s itself).
 * Products per sample measured as fast as one wide product over the batch
 * here, and they need no transposing copies and keep dcol_s in cache.
 * doc/math.md derives these. */
#include "config.h"

#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/layers.h"

int conv_shape(ConvShape *c)
{
    if (c->C <= 0 || c->H <= 0 || c->W <= 0 || c->F <= 0 || c->K <= 0 || c->S <= 0 || c->P < 0)
        return -1;
    if ((int64_t)c->H + 2 * (int64_t)c->P < c->K || (int64_t)c->W + 2 * (int64_t)c->P < c->K)
        return -1;
    const int64_t OH = ((int64_t)c->H + 2 * c->P - c->K) / c->S + 1;
    const int64_t OW = ((int64_t)c->W + 2 * c->P - c->K) / c->S + 1;
    /* sgemm takes int sizes, and one sample's tensors are indexed with int */
    const int64_t R = (int64_t)c->C * c->K * c->K;
    if (R > INT_MAX || OH * OW > INT_MAX || R * OH * OW > INT_MAX ||
        (int64_t)c->F * OH * OW > INT_MAX || (int64_t)c->C * c->H * c->W > INT_MAX ||
        (int64_t)c->F * R > INT_MAX)
        return -1;
    c->OH = (int)OH;
    c->OW = (int)OW;
    return 0;
}

size_t conv2d_forward_floats(const ConvShape *c)
{
    return (size_t)c->C * c->K * c->K * c->OH * c->OW;
}

size_t conv2d_backward_floats(const ConvShape *c)
{
    return conv2d_forward_floats(c); /* col_s, then dcol_s in the same place */
}

static int is_pointwise(const ConvShape *c)
{
    return c->K == 1 && c->S == 1 && c->P == 0;
}

/* ---- Stride 1, no padding: every window is inside the plane ----
 * The unrolling moves OH rows of OW floats per (c,p,q): short rows (24 and 8
 * floats in the tutorial network), where a call to memcpy or a loop per row
 * would cost more than the copy. So rows move in fixed 8-float pieces the
 * compiler turns into plain vector moves, and the helpers are always inlined
 * with the kernel side K a literal for the common K = 3 and K = 5. */
static inline __attribute__((always_inline)) void copy_row(float *restrict dst,
                                                           const float *restrict src, int len)
{
    int j = 0;
    for (; j + 8 <= len; j += 8)
        __builtin_memcpy(dst + j, src + j, 8 * sizeof(float));
    if (j + 4 <= len) {
        __builtin_memcpy(dst + j, src + j, 4 * sizeof(float));
        j += 4;
    }
    /* the tail without a loop (GCC would make a loop a call to memmove) */
    if (j + 2 <= len) {
        __builtin_memcpy(dst + j, src + j, 2 * sizeof(float));
        j += 2;
    }
    if (j < len)
        dst[j] = src[j];
}

/* One (c,p,q) block: OH rows of OW floats, W apart in x, contiguous in col. */
static inline __attribute__((always_inline)) void
copy_block(float *restrict dst, const float *restrict src, int OH, int W, int OW)
{
    if (OW >= 4 && OW <= 8) {
        /* Rows of 4 to 8 floats: one 8-float piece per row. Its end spills into
         * the next row's place in col (written right after) and reads at most
         * 8 - OW <= OW floats past the row's end, which is inside the next row
         * of the block (W >= OW). The last row is copied exactly. */
#pragma GCC unroll 8
        for (int i = 0; i + 1 < OH; i++)
            __builtin_memcpy(dst + (size_t)i * OW, src + (size_t)i * W, 8 * sizeof(float));
        copy_row(dst + (size_t)(OH - 1) * OW, src + (size_t)(OH - 1) * W, OW);
    } else if (OW > 8) {
        /* 8-float pieces, the last one ending at the row's end (overlapping) */
        for (int i = 0; i < OH; i++) {
            float *d = dst + (size_t)i * OW;
            const float *r = src + (size_t)i * W;
            for (int j = 0; j + 8 < OW; j += 8)
                __builtin_memcpy(d + j, r + j, 8 * sizeof(float));
            __builtin_memcpy(d + OW - 8, r + OW - 8, 8 * sizeof(float));
        }
    } else {
        for (int i = 0; i < OH; i++)
            copy_row(dst + (size_t)i * OW, src + (size_t)i * W, OW);
    }
}

static inline __attribute__((always_inline)) void
im2col_dense(float *restrict col, const float *restrict x, int C, int H, int W, int K, int OH,
             int OW)
{
    const size_t NP = (size_t)OH * OW;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++)
                copy_block(col + ((size_t)(c * K + p) * K + q) * NP,
                           x + ((size_t)c * H + p) * W + q, OH, W, OW);
}

static inline __attribute__((always_inline)) void
col2im_dense(float *restrict dx, const float *restrict dcol, int C, int H, int W, int K, int OH,
             int OW)
{
    const size_t NP = (size_t)OH * OW;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                const float *src = dcol + ((size_t)(c * K + p) * K + q) * NP;
                float *dst = dx + ((size_t)c * H + p) * W + q;
                for (int i = 0; i < OH; i++)
                    for (int j = 0; j < OW; j++)
                        dst[(size_t)i * W + j] += src[(size_t)i * OW + j];
            }
}

/* ---- Any stride and padding ----
 * For kernel column q, output column j reads input column j*S + q - P, which is
 * inside [0, W) exactly for j in [j0, j1); rows are checked one by one. */
static void valid_columns(int *j0, int *j1, int q, const ConvShape *c)
{
    const int lo = c->P - q; /* j*S >= P - q */
    int a = lo > 0 ? (lo + c->S - 1) / c->S : 0;
    const int hi = c->W + c->P - q; /* j*S < W + P - q */
    int b = hi > 0 ? (hi - 1) / c->S + 1 : 0;
    if (b > c->OW)
        b = c->OW;
    if (a > b)
        a = b;
    *j0 = a;
    *j1 = b;
}

static void im2col_any(float *restrict col, const float *restrict x, const ConvShape *c)
{
    const int K = c->K, S = c->S, OH = c->OH, OW = c->OW;
    const size_t NP = (size_t)OH * OW;
    for (int ch = 0; ch < c->C; ch++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                float *dst = col + ((size_t)(ch * K + p) * K + q) * NP;
                int j0, j1;
                valid_columns(&j0, &j1, q, c);
                for (int i = 0; i < OH; i++, dst += OW) {
                    const int ii = i * S + p - c->P;
                    if (ii < 0 || ii >= c->H) {
                        memset(dst, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    /* input column of output column j: j*S + q - P, >= 0 from j0 on */
                    const float *row = x + ((size_t)ch * c->H + ii) * c->W;
                    for (int j = 0; j < j0; j++)
                        dst[j] = 0.0f;
                    if (S == 1)
                        copy_row(dst + j0, row + (j0 + q - c->P), j1 - j0);
                    else
                        for (int j = j0; j < j1; j++)
                            dst[j] = row[j * S + q - c->P];
                    for (int j = j1; j < OW; j++)
                        dst[j] = 0.0f;
                }
            }
}

static void col2im_any(float *restrict dx, const float *restrict dcol, const ConvShape *c)
{
    const int K = c->K, S = c->S, OH = c->OH, OW = c->OW;
    const size_t NP = (size_t)OH * OW;
    for (int ch = 0; ch < c->C; ch++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++) {
                const float *src = dcol + ((size_t)(ch * K + p) * K + q) * NP;
                int j0, j1;
                valid_columns(&j0, &j1, q, c);
                for (int i = 0; i < OH; i++, src += OW) {
                    const int ii = i * S + p - c->P;
                    if (ii < 0 || ii >= c->H)
                        continue;
                    float *row = dx + ((size_t)ch * c->H + ii) * c->W;
                    for (int j = j0; j < j1; j++)
                        row[j * S + q - c->P] += src[j];
                }
            }
}

/* col_s for one sample, by shape class. */
static void im2col(float *col, const float *x, const ConvShape *c)
{
    if (c->S == 1 && c->P == 0) {
        if (c->K == 5)
            im2col_dense(col, x, c->C, c->H, c->W, 5, c->OH, c->OW);
        else if (c->K == 3)
            im2col_dense(col, x, c->C, c->H, c->W, 3, c->OH, c->OW);
        else
            im2col_dense(col, x, c->C, c->H, c->W, c->K, c->OH, c->OW);
    } else {
        im2col_any(col, x, c);
    }
}

/* dx_s += col2im(dcol_s): the adjoint of im2col. */
static void col2im_add(float *dx, const float *dcol, const ConvShape *c)
{
    if (c->S == 1 && c->P == 0) {
        if (c->K == 5)
            col2im_dense(dx, dcol, c->C, c->H, c->W, 5, c->OH, c->OW);
        else if (c->K == 3)
            col2im_dense(dx, dcol, c->C, c->H, c->W, 3, c->OH, c->OW);
        else
            col2im_dense(dx, dcol, c->C, c->H, c->W, c->K, c->OH, c->OW);
    } else {
        col2im_any(dx, dcol, c);
    }
}

void conv2d_forward(float *y, float *scratch, const float *x, const float *w, const float *b,
                    int n, const ConvShape *c)
{
    const int NP = c->OH * c->OW, R = c->C * c->K * c->K, F = c->F;
    const size_t in = (size_t)c->C * c->H * c->W;
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * in, *col = xs;
        float *y_s = y + (size_t)s * F * NP;
        if (!is_pointwise(c)) {
            im2col(scratch, xs, c);
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

void conv2d_backward(float *dx, float *dw, float *db, float *scratch, const float *dy,
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
            im2col(scratch, xs, c);
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
            col2im_add(dxs, scratch, c);
        }
    }
}

/* The references loop over the definition; input positions in the padding are
 * zero, so their terms are skipped. */
void conv2d_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        const ConvShape *c)
{
    const int C = c->C, H = c->H, W = c->W, F = c->F, K = c->K;
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++)
            for (int i = 0; i < c->OH; i++)
                for (int j = 0; j < c->OW; j++) {
                    double acc = b ? b[f] : 0.0;
                    for (int ch = 0; ch < C; ch++)
                        for (int p = 0; p < K; p++)
                            for (int q = 0; q < K; q++) {
                                const int u = i * c->S + p - c->P, v = j * c->S + q - c->P;
                                if (u < 0 || u >= H || v < 0 || v >= W)
                                    continue;
                                acc += w[((size_t)(f * C + ch) * K + p) * K + q] *
                                       x[(((size_t)s * C + ch) * H + u) * W + v];
                            }
                    y[(((size_t)s * F + f) * c->OH + i) * c->OW + j] = acc;
                }
}

void conv2d_backward_ref(double *dx, double *dw, double *db, const double *dy, const double *x,
                         const double *w, int n, const ConvShape *c)
{
    const int C = c->C, H = c->H, W = c->W, F = c->F, K = c->K;
    for (int s = 0; s < n; s++)
        for (int f = 0; f < F; f++)
            for (int i = 0; i < c->OH; i++)
                for (int j = 0; j < c->OW; j++) {
                    /* y[s,f,i,j] depends on b[f], on w[f,c,p,q] through
                     * x[s,c,u,v], and on x[s,c,u,v] through w[f,c,p,q]. */
                    const double g = dy[(((size_t)s * F + f) * c->OH + i) * c->OW + j];
                    if (db)
                        db[f] += g;
                    for (int ch = 0; ch < C; ch++)
                        for (int p = 0; p < K; p++)
                            for (int q = 0; q < K; q++) {
                                const int u = i * c->S + p - c->P, v = j * c->S + q - c->P;
                                if (u < 0 || u >= H || v < 0 || v >= W)
                                    continue;
                                const size_t xi = (((size_t)s * C + ch) * H + u) * W + v;
                                const size_t wi = ((size_t)(f * C + ch) * K + p) * K + q;
                                dw[wi] += g * x[xi];
                                if (dx)
                                    dx[xi] += g * w[wi];
                            }
                }
}
