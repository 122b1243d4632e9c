/* Fully connected layer on OpenBLAS's sgemm: the second engine
 * (--kernels openblas). linear.c has the math and the native engine. */
#include "config.h"

#include <cblas.h>

#include "dpcnn/layers.h"

void linear_forward_blas(float *y, float *scratch, const float *x, const float *w, const float *b, int n, int nin,
                    int nout)
{
    (void)scratch;
    /* start from the bias and accumulate (beta = 1); without one, beta = 0 */
    if (b)
        for (int s = 0; s < n; s++)
            for (int o = 0; o < nout; o++)
                y[(size_t)s * nout + o] = b[o];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nout, nin, 1.0f, x, nin, w, nin,
                b ? 1.0f : 0.0f, y, nout);
}

void linear_backward_blas(float *dx, float *dw, float *db, const float *dy, const float *x,
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

