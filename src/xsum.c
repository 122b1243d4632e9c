#include "config.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dpcnn/isa.h"
#include "dpcnn/xsum.h"

/* The magnitude's bits, as an unsigned integer, order like the magnitudes,
 * and Inf and NaN have the largest (all exponent bits set): one integer max,
 * which vectorises, finds both the largest |v| and any non-finite value. */
/* The loops below are plain C that vectorises; the AVX-512 copies of them
 * (chosen by isa_current) do the same exact integer and double operations,
 * 16 or 8 at a time instead of SSE2's 4 or 2: the same results. They were a
 * twentieth of a one-thread training epoch. */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,fma")))

static inline __attribute__((always_inline)) uint32_t top_bits(const float *v, size_t n)
{
    uint32_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], sizeof b);
        b &= UINT32_C(0x7fffffff);
        top = b > top ? b : top;
    }
    return top;
}

static AVX512 uint32_t top_bits_avx512(const float *v, size_t n)
{
    return top_bits(v, n);
}

int xsum_exponent_f32(const float *v, size_t n)
{
    const uint32_t top = isa_current() == ISA_AVX512 ? top_bits_avx512(v, n) : top_bits(v, n);
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
    /* |term| 2^shift < 2^(50 - lg): nterms of them stay below 2^50 */
    return 50 - lg - e;
}

/* Rounding to an integer without a conversion instruction (SSE2 has none for
 * int64, so llrint would not vectorise): for |x| < 2^51, x + 1.5 * 2^52 lies
 * in [2^52, 2^53), where doubles are exactly the integers, so the addition
 * rounds x to the nearest integer (ties to even, as llrint) and the sum's bits
 * minus the constant's bits are that integer. The grid keeps every value, and
 * every sum of them, below 2^50. The reverse trick turns such an int64 back
 * into a double exactly. */
#define MAGIC 6755399441055744.0 /* 1.5 * 2^52 */

static inline int64_t bits_of(double x)
{
    int64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline double from_bits(int64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* v * 2^shift is exact in double (a float has 24 bits; no exponent in play
 * here leaves double's range), so the only rounding is the one above. */
static inline __attribute__((always_inline)) void add_f32(int64_t *restrict acc,
                                                          const float *restrict v, size_t n,
                                                          double scale)
{
    const int64_t mbits = bits_of(MAGIC);
    for (size_t i = 0; i < n; i++)
        acc[i] += bits_of((double)v[i] * scale + MAGIC) - mbits;
}

static AVX512 void add_f32_avx512(int64_t *acc, const float *v, size_t n, double scale)
{
    add_f32(acc, v, n, scale);
}

void xsum_add_f32(int64_t *acc, const float *v, size_t n, int shift)
{
    const double scale = ldexp(1.0, shift);
    if (isa_current() == ISA_AVX512)
        add_f32_avx512(acc, v, n, scale);
    else
        add_f32(acc, v, n, scale);
}

/* The slots' sums in one pass, chunk by chunk: a chunk zeroed and then
 * added into by every slot while its int64 stay in L1. Integers add in any
 * order, so this is bit for bit zeroing acc and adding the slots one after
 * another, with a third of the memory traffic (acc was read and written once
 * per slot, from L2 for a network's worth). */
enum { SUM_CHUNK = 512 };

static inline __attribute__((always_inline)) void
sum_chunk(int64_t *acc, const float *const *slot, int nslots, size_t i0, size_t len, double up)
{
    memset(acc, 0, sizeof(int64_t) * len);
    for (int k = 0; k < nslots; k++)
        add_f32(acc, slot[k] + i0, len, up);
}

static inline __attribute__((always_inline)) void sum_f32(int64_t *acc, const float *const *slot,
                                                          int nslots, size_t n, double up)
{
    for (size_t i0 = 0; i0 < n; i0 += SUM_CHUNK)
        sum_chunk(acc + i0, slot, nslots, i0, n - i0 < SUM_CHUNK ? n - i0 : SUM_CHUNK, up);
}

static AVX512 void sum_f32_avx512(int64_t *acc, const float *const *slot, int nslots, size_t n,
                                  double up)
{
    sum_f32(acc, slot, nslots, n, up);
}

void xsum_sum_f32(int64_t *acc, const float *const *slot, int nslots, size_t n, int shift)
{
    const double up = ldexp(1.0, shift);
    if (isa_current() == ISA_AVX512)
        sum_f32_avx512(acc, slot, nslots, n, up);
    else
        sum_f32(acc, slot, nslots, n, up);
}

void xsum_add_f64(int64_t *acc, const double *v, size_t n, int shift)
{
    const double scale = ldexp(1.0, shift);
    const int64_t mbits = bits_of(MAGIC);
    for (size_t i = 0; i < n; i++)
        acc[i] += bits_of(v[i] * scale + MAGIC) - mbits;
}

static inline __attribute__((always_inline)) void get_f32(float *restrict out,
                                                          const int64_t *restrict acc, size_t n,
                                                          double scale)
{
    const int64_t mbits = bits_of(MAGIC);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((from_bits(acc[i] + mbits) - MAGIC) * scale);
}

static AVX512 void get_f32_avx512(float *out, const int64_t *acc, size_t n, double scale)
{
    get_f32(out, acc, n, scale);
}

void xsum_get_f32(float *out, const int64_t *acc, size_t n, int shift)
{
    const double scale = ldexp(1.0, -shift);
    if (isa_current() == ISA_AVX512)
        get_f32_avx512(out, acc, n, scale);
    else
        get_f32(out, acc, n, scale);
}

double xsum_get_f64(int64_t acc, int shift)
{
    return (from_bits(acc + bits_of(MAGIC)) - MAGIC) * ldexp(1.0, -shift);
}

/* The slots' sums to floats: sum_f32's chunks, each turned back to floats
 * (get_f32) while it is in L1, the integers never leaving registers on
 * AVX-512 (below). No array of integers is written or read again. */
static inline __attribute__((always_inline)) void
sum_get_f32(float *out, const float *const *slot, int nslots, size_t n, double up, double down)
{
    int64_t acc[SUM_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += SUM_CHUNK) {
        const size_t len = n - i0 < SUM_CHUNK ? n - i0 : SUM_CHUNK;
        sum_chunk(acc, slot, nslots, i0, len, up);
        get_f32(out + i0, acc, len, down);
    }
}

/* Bit for bit the same in fewer operations: v * 2^shift + MAGIC as one
 * fused multiply-add (the product is exact, so the addition's is the one
 * rounding either way), and MAGIC's bits taken off once per sum instead of
 * once per term (integers: mod 2^64 the order is free, and the true sum
 * fits), where turning the sum back would add them again: nslots - 1 of
 * them, in one subtraction. */
static AVX512 void sum_get_f32_avx512(float *out, const float *const *slot, int nslots, size_t n,
                                      double up, double down)
{
    const __m512d u = _mm512_set1_pd(up), d = _mm512_set1_pd(down);
    const __m512d magic = _mm512_set1_pd(MAGIC);
    const __m512i extra = _mm512_set1_epi64(
        (int64_t)((uint64_t)bits_of(MAGIC) * (uint64_t)(int64_t)(nslots - 1)));
    for (size_t i = 0; i < n; i += 8) {
        const __mmask8 m = n - i >= 8 ? 0xff : (__mmask8)((1u << (n - i)) - 1);
        __m512i acc = _mm512_setzero_si512();
        for (int k = 0; k < nslots; k++) {
            const __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, slot[k] + i));
            acc = _mm512_add_epi64(acc, _mm512_castpd_si512(_mm512_fmadd_pd(x, u, magic)));
        }
        const __m512i sum = _mm512_sub_epi64(acc, extra); /* + MAGIC's bits */
        const __m512d back = _mm512_sub_pd(_mm512_castsi512_pd(sum), magic);
        _mm256_mask_storeu_ps(out + i, m, _mm512_cvtpd_ps(_mm512_mul_pd(back, d)));
    }
}

/* The plain loops compiled for AVX2 (four doubles at a time, not SSE2's two):
 * the same operations, the same bits. */
static __attribute__((target("avx2"))) void sum_get_f32_avx2(float *out,
                                                             const float *const *slot,
                                                             int nslots, size_t n, double up,
                                                             double down)
{
    sum_get_f32(out, slot, nslots, n, up, down);
}

void xsum_sum_get_f32(float *out, const float *const *slot, int nslots, size_t n, int shift)
{
    const double up = ldexp(1.0, shift), down = ldexp(1.0, -shift);
    if (isa_current() == ISA_AVX512)
        sum_get_f32_avx512(out, slot, nslots, n, up, down);
    else if (isa_current() == ISA_AVX2)
        sum_get_f32_avx2(out, slot, nslots, n, up, down);
    else
        sum_get_f32(out, slot, nslots, n, up, down);
}
