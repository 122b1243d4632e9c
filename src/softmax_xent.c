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

#include "dpcnn/layers.h"
#include "dpcnn/mathfn.h"

double softmax_xent_forward(float *probs, int *correct, const float *logits,
                            const uint8_t *labels, int n, int K)
{
    double loss = 0.0;
    int hits = 0;
    for (int s = 0; s < n; s++) {
        const float *z = logits + (size_t)s * K;
        float *p = probs + (size_t)s * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[best])
                best = k;
        const double m = z[best];
        double sum = 0.0;
        for (int k = 0; k < K; k++)
            sum += dpcnn_exp((double)z[k] - m);
        const double lse = m + dpcnn_log(sum);
        for (int k = 0; k < K; k++)
            p[k] = (float)dpcnn_exp((double)z[k] - lse);
        loss += lse - (double)z[labels[s]];
        hits += best == labels[s];
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
