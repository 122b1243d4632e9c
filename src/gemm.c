/* The matrix product's plain C path, the software fused multiply-add, and
 * the dispatch to the path isa_current() names (gemm.h has the contract). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"

/* fma(a, b, c) = RN(a*b + c) from double arithmetic. a*b is exact in double
 * (24 + 24 bits <= 53, and no float product leaves double's range), so only
 * the sum rounds. Rounding a*b + c to double and then to float could round
 * twice the wrong way at a float tie; rounding to double "to odd" first (keep
 * the last bit set if anything was lost) cannot, since double has more than
 * float's 24 + 2 bits (Boldo and Melquiond, "Emulation of FMA and correctly
 * rounded sums: proved algorithms using rounding to odd", IEEE TC 2008).
 * TwoSum gives the sum's exact error e, so s + e = a*b + c exactly. */
float fma_exact(float a, float b, float c)
{
    const double p = (double)a * (double)b, cd = c;
    double s = p + cd;
    if (!isfinite(s))
        return (float)s;
    const double bp = s - p;
    const double e = (p - (s - bp)) + (cd - bp);
    if (e != 0.0) {
        uint64_t bits;
        memcpy(&bits, &s, sizeof bits);
        if ((bits & 1) == 0) { /* even: step one ulp toward the exact value */
            bits += (e > 0.0) == (s > 0.0) ? 1 : (uint64_t)-1;
            memcpy(&s, &bits, sizeof s);
        }
    }
    return (float)s;
}

void gemm_generic(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                  const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                  GemmStart start)
{
    for (int m = 0; m < M; m++) {
        float *c = C + (ptrdiff_t)m * ldc;
        if (!start.from_c)
            for (int n = 0; n < N; n++)
                c[n] = start.c0 ? start.c0[m] : 0.0f;
        for (int k = 0; k < K; k++) {
            const float a = A[(ptrdiff_t)m * ams + (ptrdiff_t)k * aks];
            const float *b = B + (boff ? boff[k] : (ptrdiff_t)k * ldb);
            for (int n = 0; n < N; n++) /* each c[n] takes its terms in k order */
                c[n] = fma_exact(a, b[n], c[n]);
        }
    }
}

static void gemm(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
                 const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                 GemmStart start)
{
    switch (isa_current()) {
    case ISA_AVX512: gemm_avx512(M, N, K, A, ams, aks, B, boff, ldb, C, ldc, start); break;
    case ISA_AVX2: gemm_avx2(M, N, K, A, ams, aks, B, boff, ldb, C, ldc, start); break;
    default: gemm_generic(M, N, K, A, ams, aks, B, boff, ldb, C, ldc, start); break;
    }
}

void gemm_acc(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
              const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    if (M > 0 && N > 0 && K > 0)
        gemm(M, N, K, A, ams, aks, B, boff, ldb, C, ldc, (GemmStart){1, NULL});
}

/* K = 0 still writes the start */
void gemm_init(int M, int N, int K, const float *A, ptrdiff_t ams, ptrdiff_t aks,
               const float *B, const ptrdiff_t *boff, ptrdiff_t ldb, const float *c0, float *C,
               ptrdiff_t ldc)
{
    if (M > 0 && N > 0 && K >= 0)
        gemm(M, N, K, A, ams, aks, B, boff, ldb, C, ldc, (GemmStart){0, c0});
}
