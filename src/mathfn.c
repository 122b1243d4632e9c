/* exp and log for the softmax (mathfn.h).
 *
 * exp: x = n ln2 + r, n = round(x / ln2), |r| <= ln2 / 2, with ln2 split in a
 * high part that n multiplies exactly and a low part (Cody and Waite); e^r by
 * its Taylor series to r^13 (the next term is below 2e-16 relative) in Horner
 * form; then times 2^n, made from its bits.
 *
 * log: x = 2^e m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(f) with
 * f = (m - 1) / (m + 1), |f| < 0.1716, by its odd series to f^21; then
 * ln x = e ln2 + ln m. */
#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/isa.h"
#include "dpcnn/mathfn.h"

static const double LN2_HI = 6.93147180369123816490e-01; /* 32 bits: n * LN2_HI is exact */
static const double LN2_LO = 1.90821492927058770002e-10;
static const double INV_LN2 = 1.44269504088896338700e+00;

/* 2^n for -1022 <= n <= 1023, exactly */
static double pow2(int n)
{
    const uint64_t bits = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

double dpcnn_exp(double x)
{
    if (x != x)
        return x;
    if (x > 709.78)
        return HUGE_VAL;
    if (x < -745.2)
        return 0.0;
    /* round to nearest by the 1.5 * 2^52 shifter, as xsum.c does */
    const double shifter = 6755399441055744.0;
    const double t = x * INV_LN2 + shifter;
    const double nd = t - shifter;
    const int n = (int)nd;
    const double r = (x - nd * LN2_HI) - nd * LN2_LO;
    /* 1 + r + r^2/2! + ... + r^13/13! */
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* times 2^n, in two steps where 2^n alone is not a normal double */
    if (n < -1022)
        return p * pow2(n + 600) * pow2(-600);
    if (n > 1023)
        return p * pow2(n - 600) * pow2(600);
    return p * pow2(n);
}

/* dpcnn_exp on eight lanes, every operation the scalar one's in its order
 * (a multiplication and an addition stay two roundings: no fused
 * multiply-adds), the special cases chosen by masks after the fact. */
static __attribute__((target("avx512f,avx512dq"))) void exp_avx512(double *y, const double *x,
                                                                   int n)
{
    const __m512d shifter = _mm512_set1_pd(6755399441055744.0);
    static const double c[14] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0,
                                 1.0 / 3628800.0,    1.0 / 362880.0,    1.0 / 40320.0,
                                 1.0 / 5040.0,       1.0 / 720.0,       1.0 / 120.0,
                                 1.0 / 24.0,         1.0 / 6.0,         0.5,
                                 1.0,                1.0};
    const __m512i bias = _mm512_set1_epi64(1023);
    for (int i = 0; i < n; i += 8) {
        const __mmask8 m = n - i >= 8 ? 0xff : (__mmask8)((1u << (n - i)) - 1);
        const __m512d v = _mm512_maskz_loadu_pd(m, x + i);
        const __m512d t = _mm512_add_pd(_mm512_mul_pd(v, _mm512_set1_pd(INV_LN2)), shifter);
        const __m512d nd = _mm512_sub_pd(t, shifter);
        const __m512d r = _mm512_sub_pd(_mm512_sub_pd(v, _mm512_mul_pd(nd, _mm512_set1_pd(LN2_HI))),
                                        _mm512_mul_pd(nd, _mm512_set1_pd(LN2_LO)));
        __m512d p = _mm512_set1_pd(c[0]);
        for (int k = 1; k < 14; k++)
            p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(c[k]));
        /* n, then 2^n from its bits: alone where it is a normal double, else
         * in two steps of 2^(n -+ 600) and 2^(+-600), as the scalar code */
        const __m512i e = _mm512_cvtepi32_epi64(_mm512_cvttpd_epi32(nd));
        const __mmask8 low = _mm512_cmplt_epi64_mask(e, _mm512_set1_epi64(-1022));
        const __mmask8 high = _mm512_cmpgt_epi64_mask(e, _mm512_set1_epi64(1023));
        const __m512i step = _mm512_mask_blend_epi64(
            low, _mm512_mask_blend_epi64(high, _mm512_setzero_si512(), _mm512_set1_epi64(-600)),
            _mm512_set1_epi64(600));
        const __m512d first = _mm512_castsi512_pd(
            _mm512_slli_epi64(_mm512_add_epi64(_mm512_add_epi64(e, step), bias), 52));
        const __m512d second = _mm512_castsi512_pd(
            _mm512_slli_epi64(_mm512_sub_epi64(bias, step), 52)); /* 2^-step */
        __m512d out = _mm512_mul_pd(p, first);
        out = _mm512_mask_mul_pd(out, low | high, out, second);
        /* the scalar code's early returns, in reverse order of their tests */
        out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, _mm512_set1_pd(-745.2), _CMP_LT_OQ), out,
                                   _mm512_setzero_pd());
        out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, _mm512_set1_pd(709.78), _CMP_GT_OQ), out,
                                   _mm512_set1_pd(HUGE_VAL));
        out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q), out, v);
        _mm512_mask_storeu_pd(y + i, m, out);
    }
}

void dpcnn_exp_n(double *y, const double *x, int n)
{
    if (isa_current() == ISA_AVX512) {
        exp_avx512(y, x, n);
        return;
    }
    for (int i = 0; i < n; i++)
        y[i] = dpcnn_exp(x[i]);
}

double dpcnn_log(double x)
{
    if (!(x > 0.0)) /* NaN, zero, negative */
        return x == 0.0 ? -HUGE_VAL : NAN;
    if (x == HUGE_VAL)
        return x;
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff);
    if (e == 0) { /* subnormal: scale into the normal range first */
        x *= 18014398509481984.0; /* 2^54 */
        memcpy(&bits, &x, sizeof bits);
        e = (int)((bits >> 52) & 0x7ff) - 54;
    }
    e -= 1023;
    /* m in [1, 2), then into [sqrt(1/2), sqrt(2)) */
    uint64_t mb = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
    double m;
    memcpy(&m, &mb, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    const double f = (m - 1.0) / (m + 1.0), f2 = f * f;
    /* 2 (f + f^3/3 + ... + f^21/21) */
    double s = 1.0 / 21.0;
    s = s * f2 + 1.0 / 19.0;
    s = s * f2 + 1.0 / 17.0;
    s = s * f2 + 1.0 / 15.0;
    s = s * f2 + 1.0 / 13.0;
    s = s * f2 + 1.0 / 11.0;
    s = s * f2 + 1.0 / 9.0;
    s = s * f2 + 1.0 / 7.0;
    s = s * f2 + 1.0 / 5.0;
    s = s * f2 + 1.0 / 3.0;
    s = s * f2 + 1.0;
    const double lnm = 2.0 * f * s;
    return ((double)e * LN2_HI + lnm) + (double)e * LN2_LO;
}
