/* Batch normalisation, PyTorch's BatchNorm2d (L = H*W) and BatchNorm1d (L = 1),
 * on x [n,C,L]. For channel c, over its nL values:
 *   mean = sum x / nL,   var = sum (x - mean)^2 / nL,   invstd = 1 / sqrt(var + eps)
 *   xhat = (x - mean) invstd,   y = xhat gamma + beta
 * Training normalises by the batch's own mean and biased variance and leaves
 * the unbiased one, sum (x - mean)^2 / (nL - 1), for the running variance, as
 * torch.nn.functional.batch_norm does. The statistics are sums in double, over
 * the samples then the positions, one fixed order for a given shape; mean and
 * invstd are then rounded to float once, and the forward and backward passes
 * both use those rounded values. The element-wise work is float.
 *
 * Backward (doc/math.md derives it): the batch statistics depend on every x of
 * the channel, so with g = dy gamma
 *   dbeta  += sum dy,   dgamma += sum dy xhat,
 *   dx     += invstd (g - mean(g) - xhat mean(g xhat))
 *           = gamma invstd (dy - sum dy / nL - xhat (sum dy xhat) / nL)
 * For BatchNorm1d (L = 1) a channel's values sit C floats apart; the loops go
 * channel by channel all the same (up to eight side by side, see stats_block):
 * at these sizes the strided reads stay in cache, and the order of every sum
 * is the simple one. */
#include "config.h"

#include <math.h>

#include "dpcnn/layers.h"

/* x[s,c,l] of channel c, sample s */
#define AT(a, s, c, l) ((a)[((size_t)(s) * C + (c)) * (size_t)L + (l)])

/* Each channel's sums are chains of dependent double adds, one fixed order
 * (samples, then positions); one chain alone runs at the adder's latency.
 * So up to eight channels go side by side, each its own chain in its own
 * order (NC a literal in every caller): the same sums, the same bits, several
 * times faster. */
enum { BN_SIDE = 8 };

static inline __attribute__((always_inline)) void
stats_block(double *m, double *sq, const float *x, int n, int C, int L, int c0, int NC)
{
    double sum[BN_SIDE] = {0};
    for (int s = 0; s < n; s++)
        for (int l = 0; l < L; l++)
#pragma GCC unroll 8
            for (int k = 0; k < NC; k++)
                sum[k] += AT(x, s, c0 + k, l);
    const double count = (double)n * L;
#pragma GCC unroll 8
    for (int k = 0; k < NC; k++) {
        m[k] = sum[k] / count;
        sq[k] = 0.0;
    }
    /* two passes: the squares of the deviations, never E[x^2] - E[x]^2 */
    for (int s = 0; s < n; s++)
        for (int l = 0; l < L; l++)
#pragma GCC unroll 8
            for (int k = 0; k < NC; k++) {
                const double d = AT(x, s, c0 + k, l) - m[k];
                sq[k] += d * d;
            }
}

/* m and sq of channels c0 .. c0+nc-1 */
static void channel_stats(double *m, double *sq, const float *x, int n, int C, int L, int c0,
                          int nc)
{
    switch (nc) {
#define STATS_CASE(NC)                                                                           \
    case NC: stats_block(m, sq, x, n, C, L, c0, NC); break;
        STATS_CASE(1) STATS_CASE(2) STATS_CASE(3) STATS_CASE(4)
        STATS_CASE(5) STATS_CASE(6) STATS_CASE(7) STATS_CASE(8)
#undef STATS_CASE
    }
}

void batchnorm_forward_train(float *y, float *mean, float *invstd, float *var_unbiased,
                             const float *x, const float *gamma, const float *beta, int n, int C,
                             int L, double eps)
{
    const size_t count = (size_t)n * L;
    for (int c0 = 0; c0 < C; c0 += BN_SIDE) {
        const int nc = C - c0 < BN_SIDE ? C - c0 : BN_SIDE;
        double m[BN_SIDE], sq[BN_SIDE];
        channel_stats(m, sq, x, n, C, L, c0, nc);
        for (int k = 0; k < nc; k++) {
            const int c = c0 + k;
            const double var = sq[k] / (double)count;
            mean[c] = (float)m[k];
            invstd[c] = (float)(1.0 / sqrt(var + eps));
            var_unbiased[c] = (float)(count > 1 ? sq[k] / (double)(count - 1) : var);
        }
    }
    for (int c = 0; c < C; c++) {
        const float mf = mean[c], is = invstd[c], gm = gamma[c], bt = beta[c];
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++)
                AT(y, s, c, l) = (AT(x, s, c, l) - mf) * is * gm + bt;
    }
}

void batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, int n, int C,
                            int L, double eps)
{
    for (int c = 0; c < C; c++) {
        const float mf = running_mean[c], is = (float)(1.0 / sqrt((double)running_var[c] + eps));
        const float gm = gamma[c], bt = beta[c];
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++)
                AT(y, s, c, l) = (AT(x, s, c, l) - mf) * is * gm + bt;
    }
}

/* sum dy and sum dy xhat of channels c0 .. c0+NC-1, side by side */
static inline __attribute__((always_inline)) void
grad_block(double *sdy, double *sdyx, const float *dy, const float *x, const float *mean,
           const float *invstd, int n, int C, int L, int c0, int NC)
{
    double a[BN_SIDE] = {0}, b[BN_SIDE] = {0};
    for (int s = 0; s < n; s++)
        for (int l = 0; l < L; l++)
#pragma GCC unroll 8
            for (int k = 0; k < NC; k++) {
                const double g = AT(dy, s, c0 + k, l);
                a[k] += g;
                b[k] += g * (((double)AT(x, s, c0 + k, l) - mean[c0 + k]) * invstd[c0 + k]);
            }
#pragma GCC unroll 8
    for (int k = 0; k < NC; k++) {
        sdy[k] = a[k];
        sdyx[k] = b[k];
    }
}

void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *invstd, const float *gamma, int n, int C,
                        int L)
{
    const size_t count = (size_t)n * L;
    for (int c0 = 0; c0 < C; c0 += BN_SIDE) {
        const int nc = C - c0 < BN_SIDE ? C - c0 : BN_SIDE;
        double sdy[BN_SIDE], sdyx[BN_SIDE]; /* sum dy, sum dy xhat */
        switch (nc) {
#define GRAD_CASE(NC)                                                                            \
    case NC: grad_block(sdy, sdyx, dy, x, mean, invstd, n, C, L, c0, NC); break;
            GRAD_CASE(1) GRAD_CASE(2) GRAD_CASE(3) GRAD_CASE(4)
            GRAD_CASE(5) GRAD_CASE(6) GRAD_CASE(7) GRAD_CASE(8)
#undef GRAD_CASE
        }
        for (int k = 0; k < nc; k++) {
            const int c = c0 + k;
            const float mf = mean[c], is = invstd[c];
            dbeta[c] += (float)sdy[k];
            dgamma[c] += (float)sdyx[k];
            if (!dx)
                continue;
            const float a = (float)((double)gamma[c] * is);
            const float mdy = (float)(sdy[k] / (double)count), mdyx = (float)(sdyx[k] / (double)count);
            for (int s = 0; s < n; s++)
                for (int l = 0; l < L; l++) {
                    const float xhat = (AT(x, s, c, l) - mf) * is;
                    AT(dx, s, c, l) += a * (AT(dy, s, c, l) - mdy - xhat * mdyx);
                }
        }
    }
}

void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *var_unbiased, int C, double factor)
{
    for (int c = 0; c < C; c++) {
        running_mean[c] = (float)((1.0 - factor) * running_mean[c] + factor * mean[c]);
        running_var[c] = (float)((1.0 - factor) * running_var[c] + factor * var_unbiased[c]);
    }
}

/* The references: the definition in double, statistics recomputed from x. */
static void stats_ref(double *m, double *invstd, const double *x, int n, int C, int L, int c,
                      double eps)
{
    const double count = (double)n * L;
    double sum = 0.0, sq = 0.0;
    for (int s = 0; s < n; s++)
        for (int l = 0; l < L; l++)
            sum += AT(x, s, c, l);
    *m = sum / count;
    for (int s = 0; s < n; s++)
        for (int l = 0; l < L; l++)
            sq += (AT(x, s, c, l) - *m) * (AT(x, s, c, l) - *m);
    *invstd = 1.0 / sqrt(sq / count + eps);
}

void batchnorm_forward_train_ref(double *y, const double *x, const double *gamma,
                                 const double *beta, int n, int C, int L, double eps)
{
    for (int c = 0; c < C; c++) {
        double m, is;
        stats_ref(&m, &is, x, n, C, L, c, eps);
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++)
                AT(y, s, c, l) = (AT(x, s, c, l) - m) * is * gamma[c] + beta[c];
    }
}

void batchnorm_backward_ref(double *dx, double *dgamma, double *dbeta, const double *dy,
                            const double *x, const double *gamma, int n, int C, int L, double eps)
{
    const double count = (double)n * L;
    for (int c = 0; c < C; c++) {
        double m, is, sdy = 0.0, sdyx = 0.0;
        stats_ref(&m, &is, x, n, C, L, c, eps);
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++) {
                sdy += AT(dy, s, c, l);
                sdyx += AT(dy, s, c, l) * (AT(x, s, c, l) - m) * is;
            }
        dbeta[c] += sdy;
        dgamma[c] += sdyx;
        if (dx)
            for (int s = 0; s < n; s++)
                for (int l = 0; l < L; l++) {
                    const double xhat = (AT(x, s, c, l) - m) * is;
                    AT(dx, s, c, l) +=
                        gamma[c] * is * (AT(dy, s, c, l) - sdy / count - xhat * sdyx / count);
                }
    }
}
