#include "config.h"

#include <math.h>

#include "dpcnn/xsum.h"

/* NaN and Inf make v * 0 a NaN; the sum of those products is the test. */
int xsum_exponent_f32(const float *v, size_t n)
{
    float m = 0.0f, poison = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        m = a > m ? a : m;
        poison += v[i] * 0.0f;
    }
    if (poison != 0.0f || isnan(poison))
        return XSUM_NONFINITE;
    if (m == 0.0f)
        return XSUM_ZERO;
    int e;
    frexpf(m, &e); /* m = f 2^e, 0.5 <= f < 1, so every |v| <= m < 2^e */
    return e;
}

int xsum_exponent_f64(const double *v, size_t n)
{
    double m = 0.0, poison = 0.0;
    for (size_t i = 0; i < n; i++) {
        double a = fabs(v[i]);
        m = a > m ? a : m;
        poison += v[i] * 0.0;
    }
    if (poison != 0.0 || isnan(poison))
        return XSUM_NONFINITE;
    if (m == 0.0)
        return XSUM_ZERO;
    int e;
    frexp(m, &e);
    return e;
}

int xsum_shift(int e, long nterms)
{
    if (e == XSUM_ZERO)
        return 0;
    int lg = 0;
    while ((1L << lg) < nterms)
        lg++;
    /* |term| 2^shift < 2^(61 - lg): nterms of them stay below 2^61 */
    return 61 - lg - e;
}

void xsum_add_f32(int64_t *acc, const float *v, size_t n, int shift)
{
    /* v * 2^shift is exact in double (a float has 24 bits; no exponent in
     * play here leaves double's range), so the only rounding is llrint's. */
    const double scale = ldexp(1.0, shift);
    for (size_t i = 0; i < n; i++)
        acc[i] += llrint((double)v[i] * scale);
}

void xsum_add_f64(int64_t *acc, const double *v, size_t n, int shift)
{
    const double scale = ldexp(1.0, shift);
    for (size_t i = 0; i < n; i++)
        acc[i] += llrint(v[i] * scale);
}

void xsum_get_f32(float *out, const int64_t *acc, size_t n, int shift)
{
    const double scale = ldexp(1.0, -shift);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)acc[i] * scale);
}

double xsum_get_f64(int64_t acc, int shift)
{
    return (double)acc * ldexp(1.0, -shift);
}
