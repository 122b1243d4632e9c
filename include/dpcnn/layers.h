/* The layer kernels of any sequential CNN (doc/models.md): one forward/backward
 * pair each, one source file each.
 *
 * Conventions (as in llm.c):
 *  - arguments are outputs first, then inputs, then sizes; inputs are const;
 *  - tensors are float32, NCHW, row-major; n is the number of samples;
 *  - backward passes ADD into every gradient they produce (dx, dw, db, dgamma,
 *    dbeta), so one zeroing per micro-batch serves the whole network; dx may be
 *    NULL where the caller has no use for the input gradient (the first layer);
 *  - each fast float kernel has a naive double-precision reference beside it
 *    (suffix _ref): the tests check the references against finite differences
 *    in double precision and the fast kernels against the references;
 *  - no kernel allocates: scratch comes from the caller, sized by a *_floats()
 *    function of the shape;
 *  - each output is computed by one fixed sequence of operations that depends
 *    only on the shape, never on the thread or the rank (so bits are
 *    reproducible); PyTorch's semantics (floor rule, tie rule, NaN passing).
 * doc/math.md derives every backward pass. */
#ifndef DPCNN_LAYERS_H
#define DPCNN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- Convolution (conv2d.c): any kernel, stride and zero padding ----
 * x [n,C,H,W], w [F,C,K,K], b [F] or NULL -> y [n,F,OH,OW],
 *   OH = (H + 2P - K) / S + 1 (floor), OW = (W + 2P - K) / S + 1
 *   y[s,f,i,j] = b[f] + sum_{c,p,q} w[f,c,p,q] x[s,c, i*S+p-P, j*S+q-P]
 * where x outside [0,H) x [0,W) is zero. */
typedef struct {
    int C, H, W; /* input */
    int F, K, S, P; /* filters, kernel side, stride, zero padding */
    int OH, OW;  /* output: conv_shape() fills them */
} ConvShape;
/* Fill OH, OW; 0, or -1 if the kernel does not fit (H + 2P < K, ...) or a size is
 * not positive (P may be 0). */
int conv_shape(ConvShape *c);
/* Scratch for conv2d_forward and conv2d_backward, of either engine (one
 * sample's unrolled input and its companions, conv2d.c). */
size_t conv2d_forward_floats(const ConvShape *c);
size_t conv2d_backward_floats(const ConvShape *c);
/* The native engine (gemm.h: one fused multiply-add per term, in the
 * definition's (c,p,q) order) and the OpenBLAS one (im2col + sgemm). */
void conv2d_forward(float *y, float *scratch, const float *x, const float *w, const float *b,
                    int n, const ConvShape *c);
void conv2d_forward_blas(float *y, float *scratch, const float *x, const float *w,
                         const float *b, int n, const ConvShape *c);
/* dw += ..., db += ... (db may be NULL), dx += ... (dx may be NULL). */
void conv2d_backward(float *dx, float *dw, float *db, float *scratch, const float *dy,
                     const float *x, const float *w, int n, const ConvShape *c);
/* conv2d_backward's weight gradient on AVX-512 with the filters (F <= 16) in
 * the lanes, stride 1, K = 3 or 5 (conv_back512.c): dwT[r][f] holds dw[f][r]
 * while a call's samples run (load, one dw_lanes per sample on its (padded)
 * Hx x Wx input planes, store); dyT has room for 16 * OH*OW floats. */
void dw_lanes_load(float *dwT, const float *dw, int F, int R);
void dw_lanes_store(float *dw, const float *dwT, int F, int R);
void dw_lanes(float *dwT, float *dyT, const float *dy, const float *x, int F, int C, int Hx, int Wx,
              int OH, int OW, int K);
/* dx += col2im(dcol) on AVX-512 for stride 1, no padding, W <= 16 and a dx
 * that holds no -0 (conv_back512.c): conv_col2im_add's bits. */
void col2im_rows(float *dx, const float *dcol, const ConvShape *c);
void conv2d_backward_blas(float *dx, float *dw, float *db, float *scratch, const float *dy,
                          const float *x, const float *w, int n, const ConvShape *c);
/* One sample unrolled: col[(c,p,q)][(i,j)] = x[c, i*S+p-P, j*S+q-P] (zero in the
 * padding), [C*K*K, OH*OW]; and its adjoint, dx += col2im(dcol). */
void conv_im2col(float *col, const float *x, const ConvShape *c);
void conv_col2im_add(float *dx, const float *dcol, const ConvShape *c);
/* db[f] += the sums over positions k < NP of dy[s][f][k] (dy [n][F][NP]; with
 * y, only the terms where y[s][f][k] > 0), each sample's sum in k order from
 * +0, added in sample order: a convolution's bias gradient (conv2d.c), the
 * same bits on every path. */
void bias_sums(float *db, const float *dy, const float *y, int n, int F, int NP);
/* The transpose, colT[(i,j)][(c,p,q)] [(i1-i0)*OW, C*K*K] for output rows
 * i0 <= i < i1: one row per output position, its input patch (what
 * conv2d_backward multiplies by for dw). */
void conv_im2col_transposed(float *colT, const float *x, const ConvShape *c, int i0, int i1);
void conv2d_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        const ConvShape *c);
void conv2d_backward_ref(double *dx, double *dw, double *db, const double *dy, const double *x,
                         const double *w, int n, const ConvShape *c);

/* ---- Pools (maxpool.c, avgpool.c): kernel K, stride S, no padding ----
 * x [n,C,H,W] -> y [n,C,OH,OW], OH = (H - K) / S + 1 (floor), OW likewise. */
typedef struct {
    int C, H, W, K, S;
    int OH, OW; /* pool_shape() fills them */
} PoolShape;
int pool_shape(PoolShape *p);

/* Max: y = max over each window; arg [n,C,OH,OW] keeps where the winner is (its
 * offset in the input plane), the first in scan order on ties, a NaN winning, as
 * PyTorch (whose scan takes v when v > best || isnan(v), so of several NaNs the
 * last one wins). Backward: dx[winner] += dy. Overlapping windows (S < K) allowed.
 * pool_shape() also refuses planes whose offsets would not fit arg's int32. */
void maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p);
void maxpool_backward(float *dx, const float *dy, const int32_t *arg, int n, const PoolShape *p);
void maxpool_forward_ref(double *y, const double *x, int n, const PoolShape *p);
void maxpool_backward_ref(double *dx, const double *dy, const double *x, int n,
                          const PoolShape *p);

/* ReLU then max-pool, fused: y = maxpool(relu(x)) computed as relu(maxpool(x)) (max
 * commutes with the monotone ReLU); the winner is x's first largest element.
 * Backward: dx[winner] += dy where y > 0. Bitwise equal to relu_forward then
 * maxpool_forward (but for the sign of a zero output: pooling first can keep a
 * -0.0), and their backward passes into a zeroed dx (with overlapping windows
 * and a non-zero dx the same terms are added in another grouping). */
void relu_maxpool_forward(float *y, int32_t *arg, const float *x, int n, const PoolShape *p);
/* 2x2 windows, stride 2, on the AVX-512 or AVX2 path (not when isa_current()
 * is ISA_GENERIC): planes whose rows are ld floats apart and which are xp
 * floats apart, winners as offsets in a plane W wide, and with relu the ReLU
 * after; the same bits as the two above. */
void maxpool2_planes(float *y, int32_t *arg, const float *x, size_t planes, size_t xp, int ld,
                     int W, int OH, int OW, int relu);
void relu_maxpool_backward(float *dx, const float *dy, const float *y, const int32_t *arg, int n,
                           const PoolShape *p);

/* Average (count_include_pad is moot without padding):
 * y = (sum over the window, in scan order) / (K*K), a division as PyTorch.
 * Backward: dx[window] += dy / (K*K). */
void avgpool_forward(float *y, const float *x, int n, const PoolShape *p);
void avgpool_backward(float *dx, const float *dy, int n, const PoolShape *p);
/* ReLU, then the average pool, in one pass each way (the ReLU's output is
 * never stored): bitwise equal to relu_forward then avgpool_forward, and to
 * their backward passes into a zeroed dx through a zeroed gradient in
 * between. The backward pass writes all of dx (it needs no zeroing before),
 * masks by x > 0 (x the ReLU's input, which is y > 0 for its output) and
 * needs windows that do not overlap (S = K). */
void relu_avgpool_forward(float *y, const float *x, int n, const PoolShape *p);
void relu_avgpool_backward(float *dx, const float *dy, const float *x, int n, const PoolShape *p);
void avgpool_forward_ref(double *y, const double *x, int n, const PoolShape *p);
void avgpool_backward_ref(double *dx, const double *dy, int n, const PoolShape *p);

/* ---- Convolution -> ReLU -> max-pool forward (conv2d.c) ----
 * Convolution, ReLU and max-pool at once: y and arg as relu_maxpool_forward
 * of the convolution's output, which cv [n,F,OH,OW] has room for (an engine
 * may leave it unwritten). */
void conv_pool_forward(float *y, int32_t *arg, float *cv, float *scratch, const float *x,
                       const float *w, const float *b, int n, const ConvShape *c,
                       const PoolShape *p);
void conv_pool_forward_blas(float *y, int32_t *arg, float *cv, float *scratch, const float *x,
                            const float *w, const float *b, int n, const ConvShape *c,
                            const PoolShape *p);

/* ---- Convolution -> ReLU -> max-pool, backward through all three (conv_pool.c) ----
 * For conv output c = conv(x) [n,F,OH,OW] and y = maxpool(relu(c)) [n,F,PH,PW] with
 * winners arg (relu_maxpool_forward's, offsets in the conv output plane), dL/dc is
 * dy at each winner where y > 0 and zero elsewhere (summed where windows overlap).
 * The conv gradients are sums over those winners only, in a fixed order. dx may be
 * NULL, db may be NULL (no bias). Equal within float rounding to
 * relu_maxpool_backward followed by conv2d_backward (tested). */
void conv_pool_backward(float *dx, float *dw, float *db, const float *dy, const float *y,
                        const int32_t *arg, const float *x, const float *w, int n,
                        const ConvShape *c, const PoolShape *p);
/* The same sums with the product and the sum rounded apart (the OpenBLAS
 * engine's, as dpcnn computed them before it had its own kernels). */
void conv_pool_backward_blas(float *dx, float *dw, float *db, const float *dy, const float *y,
                             const int32_t *arg, const float *x, const float *w, int n,
                             const ConvShape *c, const PoolShape *p);

/* ---- ReLU (relu.c) ----  y = max(0, x), NaN kept;  dx += dy * [y > 0] */
void relu_forward(float *y, const float *x, size_t count);
void relu_backward(float *dx, const float *dy, const float *y, size_t count);
void relu_forward_ref(double *y, const double *x, size_t count);
void relu_backward_ref(double *dx, const double *dy, const double *y, size_t count);

/* ---- Linear (linear.c) ----
 * x [n,nin], w [nout,nin], b [nout] or NULL -> y [n,nout],  y = x . w^T + b
 * dw += dy^T . x,  db += sum_n dy (db may be NULL),  dx += dy . w (dx may be NULL) */
size_t linear_scratch_floats(int n, int nin, int nout);
void linear_forward(float *y, float *scratch, const float *x, const float *w, const float *b,
                    int n, int nin, int nout);
void linear_forward_blas(float *y, float *scratch, const float *x, const float *w,
                         const float *b, int n, int nin, int nout);
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int n, int nin, int nout);
void linear_backward_blas(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, int n, int nin, int nout);
void linear_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        int nin, int nout);
void linear_backward_ref(double *dx, double *dw, double *db, const double *dy, const double *x,
                         const double *w, int n, int nin, int nout);

/* ---- Batch normalisation (batchnorm.c): BatchNorm2d (L = H*W) and BatchNorm1d (L = 1) ----
 * x [n,C,L]. Per channel c, over the n*L values x[s,c,l]:
 *   mean = sum x / (nL),  var = sum (x - mean)^2 / (nL) (biased),  invstd = 1 / sqrt(var + eps)
 *   y = (x - mean) * invstd * gamma[c] + beta[c]
 * Training: batchnorm_forward_train normalises by the batch's own statistics and
 * leaves mean[C], invstd[C] (for the backward pass) and var_unbiased[C] = var * nL /
 * (nL - 1) (for the running statistics; var itself when nL == 1). Statistics are
 * accumulated in double, in a fixed order.
 * Evaluation: batchnorm_forward_eval uses running mean and variance instead.
 * Backward (training), with xhat = (x - mean) * invstd, g = dy * gamma:
 *   dgamma += sum dy * xhat,  dbeta += sum dy,
 *   dx += invstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the n*L values)
 * Running statistics, once per micro-batch (doc/models.md):
 *   running = (1 - momentum) * running + momentum * stat, in double, rounded to float;
 *   cumulative (momentum=None): factor 1 / batches, batches counting this one. */
void batchnorm_forward_train(float *y, float *mean, float *invstd, float *var_unbiased,
                             const float *x, const float *gamma, const float *beta, int n, int C,
                             int L, double eps);
void batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, int n, int C,
                            int L, double eps);
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *invstd, const float *gamma, int n, int C,
                        int L);
void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *var_unbiased, int C, double factor);
void batchnorm_forward_train_ref(double *y, const double *x, const double *gamma,
                                 const double *beta, int n, int C, int L, double eps);
void batchnorm_backward_ref(double *dx, double *dgamma, double *dbeta, const double *dy,
                            const double *x, const double *gamma, int n, int C, int L, double eps);

/* ---- Dropout (dropout.c) ----
 * A sample's `count` activations: keep element k if the k-th draw u of the sample's
 * keyed stream (doc/models.md) is >= p, and scale kept ones by 1 / (1 - p) (a float).
 * y = x * (kept ? scale : 0), PyTorch's x * noise (a dropped NaN stays NaN).
 * mask [n,count] records the decision for the backward pass: dx += dy * mask * scale.
 * Sample s of the call sits at epoch position first_position + s; step is the
 * global step (from 1) being trained; layer is the dropout layer's index in the list. */
void dropout_forward(float *y, uint8_t *mask, const float *x, int n, size_t count, double p,
                     uint64_t seed, int layer, int64_t step, uint64_t first_position);
void dropout_backward(float *dx, const float *dy, const uint8_t *mask, int n, size_t count,
                      double p);

/* ---- The two engines ----
 * The convolutions and linear layers, whose arithmetic is most of the work,
 * run in one of two engines: dpcnn's own kernels (native, the default: the
 * same bits on every x86-64 CPU, gemm.h and isa.h) or OpenBLAS's sgemm
 * (openblas: as fast or faster for very wide layers; its bits depend on the
 * OpenBLAS kernel the CPU gets). Every other layer is plain C, the same in
 * both. */
typedef struct {
    const char *name;
    void (*conv2d_forward)(float *y, float *scratch, const float *x, const float *w,
                           const float *b, int n, const ConvShape *c);
    void (*conv2d_backward)(float *dx, float *dw, float *db, float *scratch, const float *dy,
                            const float *x, const float *w, int n, const ConvShape *c);
    void (*conv_pool_forward)(float *y, int32_t *arg, float *cv, float *scratch, const float *x,
                              const float *w, const float *b, int n, const ConvShape *c,
                              const PoolShape *p);
    void (*conv_pool_backward)(float *dx, float *dw, float *db, const float *dy, const float *y,
                               const int32_t *arg, const float *x, const float *w, int n,
                               const ConvShape *c, const PoolShape *p);
    void (*linear_forward)(float *y, float *scratch, const float *x, const float *w,
                           const float *b, int n, int nin, int nout);
    void (*linear_backward)(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int n, int nin, int nout);
} Engine;

extern const Engine engine_native, engine_openblas;
/* --kernels NAME: native or openblas; -1 with a message for another name. */
int engine_select(const char *name);
const Engine *engine_current(void);

/* ---- Softmax cross-entropy (softmax_xent.c) ---- (unchanged)
 * logits z [n,K], labels y [n] -> probs p [n,K] = softmax(z) row-wise;
 *   returns sum_n (logsumexp(z_n) - z_n[y_n]) (a sum: the caller divides),
 *   and counts rows whose first largest logit is the label into *correct.
 * Backward of scale * loss_sum: dz += scale * (p - onehot(y)). */
double softmax_xent_forward(float *probs, int *correct, const float *logits,
                            const uint8_t *labels, int n, int K);
void softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *labels, int n,
                           int K, float scale);
double softmax_xent_forward_ref(double *probs, const double *logits, const uint8_t *labels,
                                int n, int K);
void softmax_xent_backward_ref(double *dlogits, const double *probs, const uint8_t *labels,
                               int n, int K, double scale);

#endif
