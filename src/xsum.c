#include "config.h"

#include <math.h>
#include <string.h>

#include "dpcnn/xsum.h"

/* The magnitude's bits, as an unsigned integer, order like the magnitudes,
 * and Inf and NaN have the largest (all exponent bits set): one integer max,
 * which vectorises, finds both the largest |v| and any non-finite value. */
int xsum_exponent_f32(const float *v, size_t n)
{
    uint32_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], sizeof b);
        b &= UINT32_C(0x7fffffff);
        top = b > top ? b : top;
    }
    if (top >= UINT32_C(0x7f800000))
        return XSUM_NONFINITE;
    if (top == 0)
        return XSUM_ZERO;
    float m;
    memcpy(&m, &top, sizeof m);
    int e;
    frexpf(m, &e); /* m = f 2^e, 0.5 <= f < 1, so every |v| <= m < 2^e */
    return e;
}

int xsum_exponent_f64(const double *v, size_t n)
{
    uint64_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b;
        memcpy(&b, &v[i], sizeof b);
        b &= UINT64_C(0x7fffffffffffffff);
        top = b > top ? b : top;
    }
    if (top >= UINT64_C(0x7ff0000000000000))
        return XSUM_NONFINITE;
    if (top == 0)
        return XSUM_ZERO;
    double m;
    memcpy(&m, &top, sizeof m);
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
