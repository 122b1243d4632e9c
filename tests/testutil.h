/* Helpers shared by the cmocka tests: random fills, closeness checks that
 * print the largest difference next to the tolerance, and a central-difference
 * gradient checker in double precision. Include after cmocka.h. */
#ifndef DPCNN_TESTUTIL_H
#define DPCNN_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dpcnn/rng.h"

static inline void fill_uniform(double *a, size_t n, Rng *rng, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        a[i] = lo + (hi - lo) * rng_uniform(rng);
}

static inline float *to_float(const double *a, size_t n)
{
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        f[i] = (float)a[i];
    return f;
}

/* Values of a float array made exact in double, so both kernels see the same input. */
static inline void round_to_float(double *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = (float)a[i];
}

/* |got - want| <= atol + rtol * max|want| everywhere; prints the figures. */
static inline void check_close(const char *what, const float *got, const double *want,
                               size_t n, double rtol, double atol)
{
    double maxdiff = 0.0, maxref = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= maxdiff)) {
            maxdiff = d;
            worst = i;
        }
        if (fabs(want[i]) > maxref)
            maxref = fabs(want[i]);
    }
    double tol = atol + rtol * maxref;
    printf("  %-34s max |diff| %.3e  tolerance %.3e  (n=%zu)\n", what, maxdiff, tol, n);
    if (!(maxdiff <= tol))
        printf("  worst at %zu: got %.9g want %.9g\n", worst, (double)got[worst], want[worst]);
    assert_true(maxdiff <= tol);
}

/* Central differences of a scalar loss against an analytic gradient.
 * loss() reads the variables through ctx; var points at the ones to perturb.
 * Checks up to `samples` evenly spread indices (all when n is small). */
typedef double (*LossFn)(void *ctx);

static inline void check_fd(const char *what, double *var, size_t n, const double *analytic,
                            LossFn loss, void *ctx, size_t samples)
{
    const double h = 1e-6;
    double maxerr = 0.0;
    size_t stride = n > samples ? n / samples : 1;
    for (size_t i = 0; i < n; i += stride) {
        double keep = var[i];
        var[i] = keep + h;
        double lp = loss(ctx);
        var[i] = keep - h;
        double lm = loss(ctx);
        var[i] = keep;
        double fd = (lp - lm) / (2 * h);
        double err = fabs(fd - analytic[i]) / fmax(1.0, fabs(analytic[i]));
        if (err > maxerr)
            maxerr = err;
    }
    printf("  finite differences %-16s max rel err %.3e  tolerance 1e-6\n", what, maxerr);
    assert_true(maxerr < 1e-6);
}

#endif
