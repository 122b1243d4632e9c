/* exp and log in double, computed by dpcnn itself: the loss and the
 * probabilities must not depend on the C library (glibc picks different
 * exp and log code by CPU, and other libraries round otherwise). Only +, -,
 * * and / in a fixed order, so every x86-64 CPU gives the same bits; within
 * about 2 ulp of the true value. */
#ifndef DPCNN_MATHFN_H
#define DPCNN_MATHFN_H

/* e^x; 0 below -745, +inf above 709.78, NaN for NaN. */
double dpcnn_exp(double x);
/* y[i] = dpcnn_exp(x[i]) for i < n, bit for bit (eight at a time on AVX-512) */
void dpcnn_exp_n(double *y, const double *x, int n);
/* ln x for x > 0 (normal); NaN for x <= 0 or NaN, +inf for +inf. */
double dpcnn_log(double x);

#endif
