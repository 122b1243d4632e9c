/* Fully connected layer, PyTorch's nn.Linear: w is [nout, nin], so
 *   y[s,o] = b[o] + sum_i x[s,i] w[o,i]          Y = X . W^T + b
 * and for a loss L with dY = dL/dY:
 *   dW[o,i] = sum_s dY[s,o] x[s,i]               dW = dY^T . X
 *   db[o]   = sum_s dY[s,o]                      (no bias: b and db NULL)
 *   dX[s,i] = sum_o dY[s,o] w[o,i]               dX = dY . W            */
#include "config.h"

#include <cblas.h>

#include "dpcnn/layers.h"

void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int nin,
                    int nout)
{
    /* start from the bias and accumulate (beta = 1); without one, beta = 0 */
    if (b)
        for (int s = 0; s < n; s++)
            for (int o = 0; o < nout; o++)
                y[(size_t)s * nout + o] = b[o];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nout, nin, 1.0f, x, nin, w, nin,
                b ? 1.0f : 0.0f, y, nout);
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int n, int nin, int nout)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, nin, n, 1.0f, dy, nout, x, nin, 1.0f, dw,
                nin);
    if (db)
        for (int s = 0; s < n; s++)
            for (int o = 0; o < nout; o++)
                db[o] += dy[(size_t)s * nout + o];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, nin, nout, 1.0f, dy, nout, w, nin,
                    1.0f, dx, nin);
}

void linear_forward_ref(double *y, const double *x, const double *w, const double *b, int n,
                        int nin, int nout)
{
    for (int s = 0; s < n; s++)
        for (int o = 0; o < nout; o++) {
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < nin; i++)
                acc += x[(size_t)s * nin + i] * w[(size_t)o * nin + i];
            y[(size_t)s * nout + o] = acc;
        }
}

void linear_backward_ref(double *dx, double *dw, double *db, const double *dy,
                         const double *x, const double *w, int n, int nin, int nout)
{
    for (int s = 0; s < n; s++)
        for (int o = 0; o < nout; o++) {
            const double g = dy[(size_t)s * nout + o];
            if (db)
                db[o] += g;
            for (int i = 0; i < nin; i++) {
                dw[(size_t)o * nin + i] += g * x[(size_t)s * nin + i];
                if (dx)
                    dx[(size_t)s * nin + i] += g * w[(size_t)o * nin + i];
            }
        }
}
