/* Convolution in dpcnn's own kernels (gemm.h), one sample at a time, any
 * kernel K, stride S and zero padding P; the shared pieces (the shape, im2col)
 * and the double references. conv2d_blas.c is the OpenBLAS engine.
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

#include <limits.h>
#include <stdint.h>
#include <immintrin.h>
#include <string.h>

#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"
#include "dpcnn/lanes.h"
#include "dpcnn/transpose.h"
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

/* The native engine's scratch, per sample (the OpenBLAS engine needs R*NP):
 *  stride 1: the row offsets (R), the zero-padded input (C x Hp x Wp) and the
 *    wide output (F x ((OH-1)*Wp + OW)), see conv2d_forward;
 *  any stride: im2col (R x NP), or its transpose, and the row offsets;
 *  backward also dcol (R x NP). Offsets are ptrdiff_t, two floats each. */
static size_t wide_floats(const ConvShape *c)
{
    const size_t Hp = (size_t)c->H + 2 * c->P, Wp = (size_t)c->W + 2 * c->P;
    return 2 * (size_t)c->C * c->K * c->K + (size_t)c->C * Hp * Wp +
           (size_t)c->F * ((size_t)(c->OH - 1) * Wp + c->OW) + 64;
}

size_t conv2d_forward_floats(const ConvShape *c)
{
    const size_t R = (size_t)c->C * c->K * c->K;
    const size_t col = 2 * R + R * c->OH * c->OW + 64; /* the offsets' room, then im2col */
    const size_t wide = wide_floats(c);
    return col > wide ? col : wide;
}

size_t conv2d_backward_floats(const ConvShape *c)
{
    /* col (or its transpose) and dcol side by side, and with padding the
     * zero-padded input plane */
    const size_t padded = c->P > 0 ? (size_t)c->C * (c->H + 2 * c->P) * (c->W + 2 * c->P) + 64 : 0;
    return 2 * ((size_t)c->C * c->K * c->K * c->OH * c->OW + 64) + padded;
}

/* ---- Stride 1, no padding: every window is inside the plane ----
 * The unrolling moves OH rows of OW floats per (c,p,q): short rows (24 and 8
 * floats in the tutorial network), where a call to memcpy or a loop per row
 * would cost more than the copy. So rows move in fixed 8-float pieces the
 * compiler turns into plain vector moves, and the helpers are always inlined
 * with the kernel side K a literal for the common K = 3 and K = 5. */
/* A piece of 8 or 4 floats, as one unaligned vector move where the target
 * has vectors that wide. */
typedef float Piece8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float Piece4 __attribute__((vector_size(16), aligned(4), may_alias));

static inline __attribute__((always_inline)) void copy_piece(float *dst, const float *src,
                                                              int piece)
{
    if (piece == 8)
        *(Piece8 *)(void *)dst = *(const Piece8 *)(const void *)src;
    else
        *(Piece4 *)(void *)dst = *(const Piece4 *)(const void *)src;
}

static inline __attribute__((always_inline)) void copy_row(float *restrict dst,
                                                           const float *restrict src, int len)
{
    int j = 0;
    for (; j + 8 <= len; j += 8)
        copy_piece(dst + j, src + j, 8);
    if (j + 4 <= len) {
        copy_piece(dst + j, src + j, 4);
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
            copy_piece(dst + (size_t)i * OW, src + (size_t)i * W, 8);
        copy_row(dst + (size_t)(OH - 1) * OW, src + (size_t)(OH - 1) * W, OW);
    } else if (OW > 8) {
        /* 8-float pieces, the last one ending at the row's end (overlapping).
         * Up to 16 floats, two pieces and no loop: GCC turned the loop of
         * overlapping pieces into a call to memmove per row (rows of 10: 4 us
         * a sample for LeNet-5's second layer unrolled, against 0.6 us). */
        for (int i = 0; i < OH; i++) {
            float *d = dst + (size_t)i * OW;
            const float *r = src + (size_t)i * W;
            if (OW <= 16) {
                copy_piece(d, r, 8);
            } else {
                for (int j = 0; j + 8 < OW; j += 8)
                    copy_piece(d + j, r + j, 8);
            }
            copy_piece(d + OW - 8, r + OW - 8, 8);
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
void conv_im2col(float *col, const float *x, const ConvShape *c)
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
void conv_col2im_add(float *dx, const float *dcol, const ConvShape *c)
{
    if (c->S == 1 && c->P == 0 && c->W <= 16 && isa_current() == ISA_AVX512) {
        col2im_rows(dx, dcol, c);
    } else if (c->S == 1 && c->P == 0) {
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

/* rows x len floats from src (rows sld apart) to dst (dld apart): the
 * padding's and the wide route's row copies, of 10 to 30 floats a row in the
 * built-in networks, where a call to memcpy per row cost more than its copy
 * (a tenth of LeNet-5's forward). On AVX-512, masked 16-float moves. */
static void __attribute__((target("avx512f"))) copy_rows_avx512(float *dst, ptrdiff_t dld,
                                                                const float *src, ptrdiff_t sld,
                                                                int rows, int len)
{
    for (int r = 0; r < rows; r++, dst += dld, src += sld)
        for (int j = 0; j < len; j += 16) {
            const __mmask16 k = lanes16(len - j);
            _mm512_mask_storeu_ps(dst + j, k, _mm512_maskz_loadu_ps(k, src + j));
        }
}

static void copy_rows(float *dst, ptrdiff_t dld, const float *src, ptrdiff_t sld, int rows,
                      int len)
{
    if (isa_current() == ISA_AVX512)
        copy_rows_avx512(dst, dld, src, sld, rows, len);
    else
        for (int r = 0; r < rows; r++)
            memcpy(dst + r * dld, src + r * sld, sizeof(float) * (size_t)len);
}

/* ---- The native engine ----
 *
 * Forward, stride 1: output (i,j) reads input (i+p, j+q) of the padded plane
 * (Hp x Wp, zeros around). Number the output positions by the padded width,
 * u = i*Wp + j: then term (c,p,q) of every output is the input element at
 * u + off(c,p,q), off = (c*Hp + p)*Wp + q, so row (c,p,q) of the product's B
 * is the padded input itself, starting at off: no unrolling, just the R row
 * offsets. The "wide" output has Wp - OW extra columns per row (they read
 * across the row's end) that are dropped; its last row stops at OW, so no read
 * goes past the input. y[f][u] = b[f] + sum over (c,p,q), in that order, of
 * w[f][c,p,q] x[u + off], as the definition and every other path.
 *
 * Any stride: im2col into the scratch, then the same product over it. */
typedef struct {
    const float *p; /* the output of filter 0, row 0 */
    int ld;         /* floats from one output row to the next */
    size_t plane;   /* and from one filter's plane to the next */
} ConvOut;

static ConvOut conv_forward_sample(float *y_s, float *scratch, const float *xs, const float *w,
                                   const float *b, const ConvShape *c)
{
    const int C = c->C, K = c->K, F = c->F, OH = c->OH, OW = c->OW, R = C * K * K;
    const int NP = OH * OW;
    ptrdiff_t *off = (ptrdiff_t *)(void *)scratch;
    float *work = scratch + 2 * (size_t)R;
    /* the wide route wastes (Wp - OW) / Wp of its columns: above 30%,
     * unrolling costs less than the waste. Measured per sample on AVX-512:
     * the tutorial's conv2 (33% waste) runs as fast either way, 2.4 us;
     * LeNet-5's conv2 (29%) takes 7.9 us unrolled and 5.4 wide. */
    const int Wp_ = c->W + 2 * c->P;
    if (c->S != 1 || 10 * (Wp_ - OW) > 3 * Wp_) {
        conv_im2col(work, xs, c);
        gemm_init(F, NP, R, w, R, 1, work, NULL, NP, b, y_s, NP);
        return (ConvOut){y_s, OW, (size_t)NP};
    }
    const int Hp = c->H + 2 * c->P, Wp = c->W + 2 * c->P;
    const float *in = xs;
    if (c->P > 0) { /* the zero-padded plane */
        float *pad = work;
        work += (size_t)C * Hp * Wp;
        memset(pad, 0, sizeof(float) * (size_t)C * Hp * Wp);
        for (int ch = 0; ch < C; ch++)
            copy_rows(pad + ((size_t)ch * Hp + c->P) * Wp + c->P, Wp,
                      xs + (size_t)ch * c->H * c->W, c->W, c->H, c->W);
        in = pad;
    }
    for (int ch = 0, r = 0; ch < C; ch++)
        for (int p = 0; p < K; p++)
            for (int q = 0; q < K; q++)
                off[r++] = ((ptrdiff_t)ch * Hp + p) * Wp + q;
    const int N = (OH - 1) * Wp + OW; /* wide positions */
    float *out = Wp == OW ? y_s : work;
    gemm_init(F, N, R, w, R, 1, in, off, 0, b, out, N);
    return (ConvOut){out, Wp, (size_t)N};
}

void conv2d_forward(float *y, float *scratch, const float *x, const float *w, const float *b,
                    int n, const ConvShape *c)
{
    const size_t in = (size_t)c->C * c->H * c->W, out = (size_t)c->F * c->OH * c->OW;
    for (int s = 0; s < n; s++) {
        float *y_s = y + (size_t)s * out;
        const ConvOut o = conv_forward_sample(y_s, scratch, x + (size_t)s * in, w, b, c);
        if (o.p != y_s) /* drop the wide columns */
            for (int f = 0; f < c->F; f++)
                copy_rows(y_s + (size_t)f * c->OH * c->OW, c->OW, o.p + f * o.plane, o.ld, c->OH,
                          c->OW);
    }
}

/* Convolution, ReLU and max-pool forward, sample by sample. On the AVX-512
 * and AVX2 paths with 2x2 windows of stride 2 the pool reads the convolution's output
 * where the product left it (the wide route's rows included, their extra
 * columns never read) while it is in L1; otherwise the output goes to cv
 * and is pooled there. The same bits either way. */
void conv_pool_forward(float *y, int32_t *arg, float *cv, float *scratch, const float *x,
                       const float *w, const float *b, int n, const ConvShape *c,
                       const PoolShape *p)
{
    const size_t in = (size_t)c->C * c->H * c->W, out = (size_t)c->F * c->OH * c->OW;
    const size_t pooled = (size_t)c->F * p->OH * p->OW;
    const int direct = p->K == 2 && p->S == 2 && isa_current() != ISA_GENERIC;
    if (!direct) {
        conv2d_forward(cv, scratch, x, w, b, n, c);
        relu_maxpool_forward(y, arg, cv, n, p);
        return;
    }
    for (int s = 0; s < n; s++) {
        const ConvOut o =
            conv_forward_sample(cv + (size_t)s * out, scratch, x + (size_t)s * in, w, b, c);
        maxpool2_planes(y + (size_t)s * pooled, arg + (size_t)s * pooled, o.p, (size_t)c->F,
                        o.plane, o.ld, c->OW, p->OH, p->OW, 1);
    }
}

void conv_pool_forward_blas(float *y, int32_t *arg, float *cv, float *scratch, const float *x,
                            const float *w, const float *b, int n, const ConvShape *c,
                            const PoolShape *p)
{
    conv2d_forward_blas(cv, scratch, x, w, b, n, c);
    relu_maxpool_forward(y, arg, cv, n, p);
}

/* colT[k][r] = col[r][k], packed straight from the input: for output
 * position k = (i,j), the R = C*K*K inputs its kernel sees, kernel row by
 * kernel row (K contiguous floats inside the plane, zeros in the padding), so
 * that a row of the product's B runs along the weights.
 *
 * Output rows i whose windows lie inside the plane vertically go kernel row
 * (c,p) by kernel row, then along j: a few instructions per K floats (patch
 * by patch, the loop control cost more than the copies). There a row of
 * K = 5 (or 3) floats moves as one fixed piece of 8 (or 4), a plain vector
 * load and store; the piece's extra floats land in the patch's next row,
 * written after it. A patch's last row, and a row that would read past the
 * end of the input, copy exactly K. The windows that cross the padding copy
 * element by element. */
static inline __attribute__((always_inline)) void
patches(float *restrict colT, const float *restrict xs, const ConvShape *c, int i0, int i1, int K,
        int piece)
{
    const int C = c->C, H = c->H, W = c->W, S = c->S, P = c->P, OW = c->OW;
    const int R = C * K * K;
    /* the j whose windows lie inside the plane horizontally: ja <= j < jb */
    const int ja = (P + S - 1) / S;
    int jb = (W - K + P) / S + 1;
    jb = jb > OW ? OW : jb < ja ? ja : jb;
    for (int i = i0; i < i1; i++) {
        const int u0 = i * S - P;
        const int rows_inside = u0 >= 0 && u0 + K <= H;
        for (int j = 0; j < OW; j++) {
            if (rows_inside && j == ja)
                j = jb; /* the inside ones below */
            if (j >= OW)
                break;
            float *dst = colT + ((size_t)(i - i0) * OW + j) * R;
            const int v0 = j * S - P;
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < K; p++, dst += K) {
                    const int u = u0 + p;
                    const float *row = xs + ((size_t)ch * H + u) * W;
                    for (int q = 0; q < K; q++) {
                        const int v = v0 + q;
                        dst[q] = u >= 0 && u < H && v >= 0 && v < W ? row[v] : 0.0f;
                    }
                }
        }
        if (!rows_inside || ja >= jb)
            continue;
        /* in blocks of 16 patches, which stay in L1 while their rows fill */
        for (int j0 = ja; j0 < jb; j0 += 16) {
            const int j1 = jb - j0 < 16 ? jb : j0 + 16;
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < K; p++) {
                    const float *src = xs + ((size_t)ch * H + u0 + p) * W + (size_t)(j0 * S - P);
                    float *dst = colT + ((size_t)(i - i0) * OW + j0) * R + (size_t)(ch * K + p) * K;
                    const int exact = !piece || (ch == C - 1 && p == K - 1) ||
                                      (ch == C - 1 && u0 + p == H - 1);
                    if (!exact)
                        for (int j = j0; j < j1; j++, src += S, dst += R)
                            copy_piece(dst, src, piece);
                    else
                        for (int j = j0; j < j1; j++, src += S, dst += R)
                            for (int q = 0; q < K; q++)
                                dst[q] = src[q];
                }
        }
    }
}

/* The same copies compiled for AVX2, where a piece of 8 floats is one load
 * and one store (half the stores, which were the cost); bits do not depend
 * on how floats are copied. */
static void __attribute__((target("avx2,tune=haswell")))
patches_avx2(float *colT, const float *xs, const ConvShape *c, int i0, int i1)
{
    if (c->K == 5)
        patches(colT, xs, c, i0, i1, 5, 8);
    else if (c->K == 3)
        patches(colT, xs, c, i0, i1, 3, 4);
    else
        patches(colT, xs, c, i0, i1, c->K, 0);
}

void conv_im2col_transposed(float *colT, const float *xs, const ConvShape *c, int i0, int i1)
{
    if (isa_current() != ISA_GENERIC)
        patches_avx2(colT, xs, c, i0, i1);
    else if (c->K == 5)
        patches(colT, xs, c, i0, i1, 5, 8);
    else if (c->K == 3)
        patches(colT, xs, c, i0, i1, 3, 4);
    else
        patches(colT, xs, c, i0, i1, c->K, 0);
}

/* One input channel (a network's first layer on grey images): the strips
 * G[j][u][q] = x[u][j*S + q], u < H, q < K, one per output column j. Window
 * (i,j) is then the K*K floats at G + (j*H + i*S)*K, contiguous, so dw's
 * product reads its B rows there through row offsets, with no patches: H*OW
 * copies of K floats, against OH*OW*K for the patches. A strip's rows of K
 * move as pieces of 8 (K = 5) or 4 (K = 3), the extra floats landing in the
 * strip's next row, written after it; a strip's last row, which would read
 * past the plane's end, copies exactly K. */
static inline __attribute__((always_inline)) void strips(float *restrict G,
                                                         const float *restrict xs,
                                                         const ConvShape *c, int K, int piece)
{
    const int H = c->H, W = c->W, S = c->S;
    for (int j = 0; j < c->OW; j++) {
        float *dst = G + (size_t)j * H * K;
        const float *src = xs + (size_t)j * S;
        for (int u = 0; u < H; u++, dst += K, src += W)
            if (piece && u < H - 1)
                copy_piece(dst, src, piece);
            else
                for (int q = 0; q < K; q++)
                    dst[q] = src[q];
    }
}

static void __attribute__((target("avx2,tune=haswell")))
strips_avx2(float *G, const float *xs, const ConvShape *c)
{
    if (c->K == 5)
        strips(G, xs, c, 5, 8);
    else if (c->K == 3)
        strips(G, xs, c, 3, 4);
    else
        strips(G, xs, c, c->K, 0);
}

static void window_strips(float *G, const float *xs, const ConvShape *c)
{
    if (isa_current() != ISA_GENERIC)
        strips_avx2(G, xs, c);
    else if (c->K == 5)
        strips(G, xs, c, 5, 8);
    else if (c->K == 3)
        strips(G, xs, c, 3, 4);
    else
        strips(G, xs, c, c->K, 0);
}

/* db[f] += sum over k of dy[f][k] (with y, the terms where y[f][k] > 0; a
 * term that does not pass adds +0, which changes no such sum: it starts at +0
 * and so is never -0, the one value x + 0 would change), each filter's sum in
 * k order from +0. Up to eight filters side by side (NF and masked literals:
 * the sums stay in registers), or each sum's chain of dependent adds sets
 * the pace (a fifth of lenet5's first backward convolution). The mask works
 * on the bits: a branch here is a coin flip, mispredicted half the time. */
static inline __attribute__((always_inline)) void
bias_block(float *db, const float *dy, const float *y, int NF, int NP, int masked)
{
    float acc[8] = {0};
    for (int k = 0; k < NP; k++)
#pragma GCC unroll 8
        for (int f = 0; f < NF; f++) {
            const size_t o = (size_t)f * NP + k;
            uint32_t bits;
            memcpy(&bits, &dy[o], sizeof bits);
            if (masked)
                bits &= -(uint32_t)(y[o] > 0.0f);
            float g;
            memcpy(&g, &bits, sizeof g);
            acc[f] += g;
        }
#pragma GCC unroll 8
    for (int f = 0; f < NF; f++)
        db[f] += acc[f];
}

/* one sample's filters, eight at a time */
static inline __attribute__((always_inline)) void
bias_sample(float *db, const float *dy, const float *y, int F, int NP, int masked)
{
    for (int f0 = 0; f0 < F; f0 += 8) {
        float *d = db + f0;
        const float *g = dy + (size_t)f0 * NP, *yf = masked ? y + (size_t)f0 * NP : NULL;
        switch (F - f0 < 8 ? F - f0 : 8) {
        case 1: bias_block(d, g, yf, 1, NP, masked); break;
        case 2: bias_block(d, g, yf, 2, NP, masked); break;
        case 3: bias_block(d, g, yf, 3, NP, masked); break;
        case 4: bias_block(d, g, yf, 4, NP, masked); break;
        case 5: bias_block(d, g, yf, 5, NP, masked); break;
        case 6: bias_block(d, g, yf, 6, NP, masked); break;
        case 7: bias_block(d, g, yf, 7, NP, masked); break;
        default: bias_block(d, g, yf, 8, NP, masked); break;
        }
    }
}

/* The same sums on AVX-512, the same bits as the plain loops sample after
 * sample: each sample's sums in k order from +0, added to db in sample
 * order. The lanes are 16 samples: their rows of 16 positions are
 * transposed in registers and summed a position at a time, so 16 chains of
 * dependent adds run side by side where one filter's chain set the pace
 * (LeNet-5's first layer: 784 adds of 4 cycles each, per sample). */
static void __attribute__((target("avx512f"))) bias_sums_avx512(float *db, const float *dy,
                                                                const float *y, int n, int F,
                                                                int NP)
{
    const size_t per = (size_t)F * NP;
    for (int s0 = 0; s0 < n; s0 += 16) {
        const int ns = n - s0 < 16 ? n - s0 : 16;
        for (int f = 0; f < F; f++) {
            const size_t base = (size_t)s0 * per + (size_t)f * NP;
            __m512 acc = _mm512_setzero_ps();
            for (int k0 = 0; k0 < NP; k0 += 16) {
                const int nk = NP - k0 < 16 ? NP - k0 : 16;
                const __mmask16 mk = lanes16(nk);
                __m512 r[16];
                for (int i = 0; i < 16; i++) {
                    const size_t at = base + i * per + k0;
                    __mmask16 m = i < ns ? mk : 0;
                    if (y)
                        m = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, y + at),
                                                    _mm512_setzero_ps(), _CMP_GT_OQ);
                    r[i] = _mm512_maskz_loadu_ps(m, dy + at);
                }
                transpose16(r);
                for (int k = 0; k < nk; k++)
                    acc = _mm512_add_ps(acc, r[k]);
            }
            float sums[16];
            _mm512_storeu_ps(sums, acc);
            for (int i = 0; i < ns; i++)
                db[f] += sums[i];
        }
    }
}

void bias_sums(float *db, const float *dy, const float *y, int n, int F, int NP)
{
    if (isa_current() == ISA_AVX512) {
        bias_sums_avx512(db, dy, y, n, F, NP);
        return;
    }
    const size_t per = (size_t)F * NP;
    for (int s = 0; s < n; s++)
        if (y)
            bias_sample(db, dy + (size_t)s * per, y + (size_t)s * per, F, NP, 1);
        else
            bias_sample(db, dy + (size_t)s * per, NULL, F, NP, 0);
}

/* dw's patches are made in bands of output rows of about this many floats
 * (16 KB: a third of L1, beside the product's other operands) */
enum { BAND_FLOATS = 4096 };

/* Backward, per sample, with col = im2col(x_s) [R][NP] and dy_s [F][NP]:
 *   db[f]     += sum_k dy_s[f][k]               (in k order)
 *   dW[f][r]  += sum_k dy_s[f][k] col[r][k]      (in k order: B = colT, rows k)
 *   dcol[r][k] = sum_f W[f][r] dy_s[f][k]        (in f order: A = W read transposed)
 *   dx_s      += col2im(dcol)                    (in (c,p,q) order) */
void conv2d_backward(float *dx, float *dw, float *db, float *scratch, const float *dy,
                     const float *x, const float *w, int n, const ConvShape *c)
{
    const int NP = c->OH * c->OW, R = c->C * c->K * c->K, F = c->F;
    const size_t in = (size_t)c->C * c->H * c->W, big = (size_t)R * NP + 64;
    float *colT = scratch, *work = scratch + big, *pad = work + big;
    /* with padding, the patches come from the zero-padded plane: all inside
     * (element-by-element copies at the border took half the time) */
    const int Hp = c->H + 2 * c->P, Wp = c->W + 2 * c->P;
    ConvShape cp = *c;
    cp.H = Hp;
    cp.W = Wp;
    cp.P = 0;
    const ConvShape *cs = c->P > 0 ? &cp : c; /* the shape of what xs points to below */
    if (c->P > 0)
        memset(pad, 0, sizeof(float) * (size_t)c->C * Hp * Wp);
    /* 12 to 16 filters on AVX-512: dw with the filters in the lanes, from the
     * input in place (conv_back512.c), its sums in colT's room across the samples */
    const int lanes = isa_current() == ISA_AVX512 && c->S == 1 && F >= 12 && F <= 16 &&
                      (c->K == 5 || c->K == 3) && (size_t)16 * ((size_t)R + NP) <= big;
    float *dwT = colT, *dyT = colT + (size_t)16 * R;
    if (db)
        bias_sums(db, dy, NULL, n, F, NP);
    if (lanes)
        dw_lanes_load(dwT, dw, F, R);
    /* one input channel: dw from the window strips (window_strips), in
     * colT's room, their row offsets after them */
    const size_t strip_floats = (size_t)Hp * c->K * c->OW;
    const int one_channel = !lanes && c->C == 1 && c->S <= c->K &&
                            strip_floats + 2 * (size_t)NP + 16 <= big;
    float *G = colT;
    ptrdiff_t *goff = (ptrdiff_t *)(void *)(colT + ((strip_floats + 15) & ~(size_t)15));
    if (one_channel)
        for (int i = 0; i < c->OH; i++)
            for (int j = 0; j < c->OW; j++)
                goff[i * c->OW + j] = ((ptrdiff_t)j * Hp + (ptrdiff_t)i * c->S) * c->K;
    /* The dx product reads dy's rows as its B. Rows of OH*OW floats start
     * anywhere in a cache line (LeNet-5's second layer: 100), so most of its
     * vector loads split across two; copied to 64-byte aligned rows of a
     * multiple of 16 floats at the end of colT's room, they do not (that
     * product: 3.7 -> 3.45 us a sample). Only what lives across samples stays
     * clear of it: the lanes' dwT, the strips' row offsets; the patches and
     * strips themselves are rebuilt sample by sample. */
    const int ldy = (NP + 15) & ~15;
    const float *busy = lanes ? colT + (size_t)16 * R
                        : one_channel ? (const float *)(const void *)(goff + NP)
                                      : colT;
    float *dyp = (float *)((uintptr_t)(colT + big - (size_t)F * ldy) & ~(uintptr_t)63);
    if (!dx || ldy == NP || dyp < busy)
        dyp = NULL;
    for (int s = 0; s < n; s++) {
        const float *dy_s = dy + (size_t)s * F * NP;
        const float *xs = x + (size_t)s * in;
        if (c->P > 0) {
            for (int ch = 0; ch < c->C; ch++)
                copy_rows(pad + ((size_t)ch * Hp + c->P) * Wp + c->P, Wp,
                          xs + (size_t)ch * c->H * c->W, c->W, c->H, c->W);
            xs = pad;
        }
        if (lanes) {
            dw_lanes(dwT, dyT, dy_s, xs, F, c->C, Hp, Wp, c->OH, c->OW, c->K);
        } else if (one_channel) {
            window_strips(G, xs, cs);
            gemm_acc(F, R, NP, dy_s, NP, 1, G, goff, 0, dw, R);
        } else {
            /* a band of output rows at a time, its patches still in L1 when
             * the product reads them; dw takes each sum's terms in k order
             * across the bands, as in one product */
            const int OW = c->OW;
            int band = BAND_FLOATS / (OW * R);
            band = band < 1 ? 1 : band;
            for (int i0 = 0; i0 < c->OH; i0 += band) {
                const int i1 = c->OH - i0 < band ? c->OH : i0 + band;
                conv_im2col_transposed(colT, xs, cs, i0, i1);
                gemm_acc(F, R, (i1 - i0) * OW, dy_s + (size_t)i0 * OW, NP, 1, colT, NULL, R, dw,
                         R);
            }
        }
        if (!dx)
            continue;
        if (dyp) {
            copy_rows(dyp, ldy, dy_s, NP, F, NP);
            gemm_init(R, NP, F, w, 1, R, dyp, NULL, ldy, NULL, work, NP);
        } else {
            gemm_init(R, NP, F, w, 1, R, dy_s, NULL, NP, NULL, work, NP);
        }
        conv_col2im_add(dx + (size_t)s * in, work, c);
    }
    if (lanes)
        dw_lanes_store(dw, dwT, F, R);
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
