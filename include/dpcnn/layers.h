/* The layers: one forward/backward pair each, one source file each.
 *
 * Conventions (as in llm.c):
 *  - arguments are outputs first, then inputs, then sizes; inputs are const;
 *  - tensors are float32, NCHW, row-major; n is the number of samples;
 *  - backward passes ADD into every gradient they produce (dx, dw, db), so one
 *    zeroing per micro-batch serves the whole network;
 *  - each fast float kernel has a naive double-precision reference beside it
 *    (suffix _ref). The references are the ground truth: the tests check them
 *    against finite differences in double precision, and check the fast
 *    kernels against them. doc/math.md derives every backward pass. */
#ifndef DPCNN_LAYERS_H
#define DPCNN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- Convolution, stride 1, no padding (conv2d.c) ----
 * x [n,C,H,W], w [F,C,K,K], b [F] -> y [n,F,OH,OW], OH = H-K+1, OW = W-K+1
 *   y[n,f,i,j] = b[f] + sum_{c,p,q} w[f,c,p,q] x[n,c,i+p,j+q]
 * Computed as one matrix product per sample: the input is unrolled (im2col)
 * into col [n, C*K*K, OH*OW], then y_s [F, OH*OW] = W [F, C*K*K] . col_s.
 * conv2d_backward reads col back; its tmp is scratch of conv2d_tmp_floats(). */
size_t conv2d_col_floats(int n, int C, int H, int W, int K);
size_t conv2d_tmp_floats(int n, int C, int H, int W, int F, int K);
void conv2d_forward(float *y, float *col, const float *x, const float *w, const float *b,
                    int n, int C, int H, int W, int F, int K);
/* dw += dY . col^T, db += sum dY, dx += col2im(W^T . dY); dx may be NULL
 * (the first layer has no use for its input gradient). */
void conv2d_backward(float *dx, float *dw, float *db, float *tmp, const float *dy,
                     const float *col, const float *w, int n, int C, int H, int W,
                     int F, int K);
void conv2d_forward_ref(double *y, const double *x, const double *w, const double *b,
                        int n, int C, int H, int W, int F, int K);
void conv2d_backward_ref(double *dx, double *dw, double *db, const double *dy,
                         const double *x, const double *w, int n, int C, int H, int W,
                         int F, int K);

/* ---- Max-pool 2x2, stride 2 (maxpool.c) ----
 * x [n,C,H,W] -> y [n,C,H/2,W/2], y = max over each 2x2 window;
 * arg [n,C,H/2,W/2] keeps where the winner is (its offset in the plane), the first
 * in scan order on ties, as PyTorch does, so the gradient goes where PyTorch
 * sends it.  Backward: dx[winner] += dy. */
void maxpool2_forward(float *y, int32_t *arg, const float *x, int n, int C, int H, int W);
void maxpool2_backward(float *dx, const float *dy, const int32_t *arg, int n, int C, int H,
                       int W);
void maxpool2_forward_ref(double *y, const double *x, int n, int C, int H, int W);
void maxpool2_backward_ref(double *dx, const double *dy, const double *x, int n, int C,
                           int H, int W);

/* ---- ReLU then max-pool, fused (maxpool.c) ----
 * y = maxpool2(relu(x)), computed as relu(maxpool2(x)): max commutes with the
 * monotone ReLU, so one pass over x instead of two, and no relu(x) buffer.
 * The winner is x's first largest element, the one PyTorch's relu-then-pool
 * picks whenever its output is positive; when it is not, the gradient is
 * zero either way. Backward: dx[winner] += dy where y > 0. Bitwise equal to
 * relu_forward + maxpool2_forward and their backward passes (tested). */
void relu_maxpool2_forward(float *y, int32_t *arg, const float *x, int n, int C, int H, int W);
void relu_maxpool2_backward(float *dx, const float *dy, const float *y, const int32_t *arg,
                            int n, int C, int H, int W);

/* ---- Convolution -> ReLU -> max-pool, backward through all three (conv_pool.c) ----
 * For c = conv(x) [n,F,OH,OW] and y = maxpool2(relu(c)) with winners arg (as
 * relu_maxpool2_forward leaves them), dL/dc is dy at each window's winner
 * where y > 0 and zero elsewhere: at most one position in four. So the
 * convolution's gradients are sums over those winners only, in a fixed order:
 *   g = dy[s,f,k] at winner (i,j) = arg[s,f,k], for y[s,f,k] > 0:
 *   db[f] += g,   dw[f,c,p,q] += g x[s,c,i+p,j+q],   dx[s,c,i+p,j+q] += g w[f,c,p,q]
 * A quarter or less of the dense products' arithmetic, and no im2col buffer
 * kept from the forward pass. dx may be NULL. Equal, within float rounding, to
 * relu_maxpool2_backward followed by conv2d_backward (tested). */
void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n, int C, int H,
                        int W, int F, int K);

/* ---- ReLU (relu.c) ----  y = max(0, x), NaN kept;  dx += dy * [y > 0] */
void relu_forward(float *y, const float *x, size_t count);
void relu_backward(float *dx, const float *dy, const float *y, size_t count);
void relu_forward_ref(double *y, const double *x, size_t count);
void relu_backward_ref(double *dx, const double *dy, const double *y, size_t count);

/* ---- Linear (linear.c) ----
 * x [n,nin], w [nout,nin], b [nout] -> y [n,nout],  y = x . w^T + b
 * dw += dy^T . x,  db += sum_n dy,  dx += dy . w (dx may be NULL) */
void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int nin,
                    int nout);
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int n, int nin, int nout);
void linear_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        int nin, int nout);
void linear_backward_ref(double *dx, double *dw, double *db, const double *dy,
                         const double *x, const double *w, int n, int nin, int nout);

/* ---- Softmax cross-entropy (softmax_xent.c) ----
 * logits z [n,K], labels y [n] -> probs p [n,K] = softmax(z) row-wise;
 *   returns sum_n (logsumexp(z_n) - z_n[y_n]) (a sum: the caller divides),
 *   and counts rows whose first largest logit is the label into *correct.
 * Backward of scale * loss_sum: dz += scale * (p - onehot(y)). The trainer
 * passes scale = 1 / (global batch size): the batch mean, as PyTorch's
 * cross_entropy, however the batch is split across micro-batches and ranks. */
double softmax_xent_forward(float *probs, int *correct, const float *logits,
                            const uint8_t *labels, int n, int K);
void softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *labels, int n,
                           int K, float scale);
double softmax_xent_forward_ref(double *probs, const double *logits, const uint8_t *labels,
                                int n, int K);
void softmax_xent_backward_ref(double *dlogits, const double *probs, const uint8_t *labels,
                               int n, int K, double scale);

#endif
