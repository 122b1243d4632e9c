/* Softmax cross-entropy over K classes.
 *
 * With m = max_k z_k (subtracted so exp never overflows):
 *   logsumexp(z) = m + log sum_k exp(z_k - m)
 *   loss_s = logsumexp(z_s) - z_s[y_s],    p_s = exp(z_s - logsumexp(z_s))
 *   d loss_s / d z_s[k] = p_s[k] - [k == y_s]
 * The per-row work is done in double: it costs nothing at K = 10 and makes
 * the loss sum independent of how rows are grouped. exp and log are dpcnn's
 * own (mathfn.h), so the loss does not depend on the C library. */
#include "config.h"

#include <math.h>

#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/layers.h"
#include "dpcnn/mathfn.h"

/* Rows go in blocks, so that each exp pass runs over a block's K values at
 * once (dpcnn_exp_n: eight at a time on AVX-512, the same bits): one by one,
 * the exps took 1.5% of a tutorial epoch. Labels are bytes, so K <= 256. */
enum { EXP_BLOCK = DATASET_MAX_CLASSES };

double softmax_xent_forward(float *probs, int *correct, const float *logits,
                            const uint8_t *labels, int n, int K)
{
    double loss = 0.0;
    int hits = 0;
    double arg[EXP_BLOCK], e[EXP_BLOCK], lse[EXP_BLOCK];
    if (K > EXP_BLOCK)
        DIE("softmax over %d classes: at most %d", K, EXP_BLOCK);
    const int rows = EXP_BLOCK / K;
    for (int s0 = 0; s0 < n; s0 += rows) {
        const int nr = n - s0 < rows ? n - s0 : rows;
        for (int r = 0; r < nr; r++) {
            const float *z = logits + (size_t)(s0 + r) * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (z[k] > z[best])
                    best = k;
            const double m = z[best];
            for (int k = 0; k < K; k++)
                arg[r * K + k] = (double)z[k] - m;
            lse[r] = m;
            hits += best == labels[s0 + r];
        }
        dpcnn_exp_n(e, arg, nr * K);
        for (int r = 0; r < nr; r++) {
            const float *z = logits + (size_t)(s0 + r) * K;
            double sum = 0.0;
            for (int k = 0; k < K; k++)
                sum += e[r * K + k];
            lse[r] += dpcnn_log(sum);
            for (int k = 0; k < K; k++)
                arg[r * K + k] = (double)z[k] - lse[r];
            loss += lse[r] - (double)z[labels[s0 + r]];
        }
        dpcnn_exp_n(e, arg, nr * K);
        for (int i = 0; i < nr * K; i++)
            probs[(size_t)s0 * K + i] = (float)e[i];
    }
    *correct += hits;
    return loss;
}

void softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *labels, int n,
                           int K, float scale)
{
    for (int s = 0; s < n; s++) {
        float *d = dlogits + (size_t)s * K;
        const float *p = probs + (size_t)s * K;
        for (int k = 0; k < K; k++)
            d[k] += scale * (p[k] - (k == labels[s] ? 1.0f : 0.0f));
    }
}

double softmax_xent_forward_ref(double *probs, const double *logits, const uint8_t *labels,
                                int n, int K)
{
    double loss = 0.0;
    for (int s = 0; s < n; s++) {
        const double *z = logits + (size_t)s * K;
        double m = z[0], sum = 0.0;
        for (int k = 1; k < K; k++)
            m = z[k] > m ? z[k] : m;
        for (int k = 0; k < K; k++)
            sum += exp(z[k] - m);
        const double lse = m + log(sum);
        for (int k = 0; k < K; k++)
            probs[(size_t)s * K + k] = exp(z[k] - lse);
        loss += lse - z[labels[s]];
    }
    return loss;
}

void softmax_xent_backward_ref(double *dlogits, const double *probs, const uint8_t *labels,
                               int n, int K, double scale)
{
    for (int s = 0; s < n; s++)
        for (int k = 0; k < K; k++)
            dlogits[(size_t)s * K + k] +=
                scale * (probs[(size_t)s * K + k] - (k == labels[s] ? 1.0 : 0.0));
}
