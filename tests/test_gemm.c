/* dpcnn's own matrix product and fused multiply-add: the same bits on every
 * path (plain C, AVX2, AVX-512), the right values (against a double
 * reference), every shape class (tails in both dimensions, strided and
 * transposed A, row offsets for B), and the software fma against the
 * hardware one on millions of operands, the hard cases included; and the
 * winners-only convolution backward and the max-pool, whose paths are
 * written apart, bit for bit on every path and every one of their shape
 * classes; the dense convolution's routes; the fused ReLU + average pool against the two layers; and Adam's update, whose vector paths take blocks with subnormal
 * and tiny values through double arithmetic, against the plain float one. */
#include "config.h"

#include <float.h>
#include <stdio.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dpcnn/adam.h"
#include "dpcnn/gemm.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"
#include "dpcnn/rng.h"
#include "dpcnn/transpose.h"

static float hw_fma(float a, float b, float c) __attribute__((target("fma")));
static float hw_fma(float a, float b, float c)
{
    return __builtin_fmaf(a, b, c); /* vfmadd231ss with the target attribute */
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Random operands of every kind: ordinary values, values whose product cancels
 * the addend, near-ties, subnormals, zeros of both signs, infinities, NaNs. */
static float operand(Rng *r, int kind)
{
    switch (kind) {
    case 0: return (rng_uniform(r) - 0.5f) * 8.0f;
    case 1: return bits_float((uint32_t)rng_next(r)); /* any bit pattern */
    case 2: return bits_float((uint32_t)rng_next(r) & 0x807fffffu); /* subnormals and zeros */
    default: return ldexpf(1.0f + rng_uniform(r), (int)rng_below(r, 40) - 20);
    }
}

static void test_fma_exact(void **state)
{
    (void)state;
    if (!isa_supported(ISA_AVX2)) {
        printf("  no hardware FMA here to compare with: skipped\n");
        skip();
    }
    Rng r;
    rng_init(&r, 1, 0, 0);
    long mismatches = 0, cases = 0;
    for (long i = 0; i < 4000000; i++) {
        const int kind = (int)(i % 4);
        float a = operand(&r, kind), b = operand(&r, kind), c;
        if (i % 3 == 0) /* c near -a*b: catastrophic cancellation and ties */
            c = -(float)((double)a * b) * (1.0f + (rng_uniform(&r) - 0.5f) * 1e-6f);
        else
            c = operand(&r, kind);
        const float want = hw_fma(a, b, c), got = fma_exact(a, b, c);
        cases++;
        if (memcmp(&want, &got, sizeof got) != 0 && !(isnan(want) && isnan(got)))
            if (mismatches++ < 5)
                printf("  fma(%a, %a, %a): hardware %a, software %a\n", a, b, c, want, got);
    }
    /* the classic double-rounding case: exactly between two floats after
     * rounding to double, not before */
    const float a = 1.0f + 0x1p-12f, b = 1.0f + 0x1p-12f, c = -0x1p-25f;
    assert_true(fma_exact(a, b, c) == hw_fma(a, b, c));
    printf("  %ld fused multiply-adds: software and hardware agree bit for bit (%ld differ)\n",
           cases, mismatches);
    assert_int_equal(mismatches, 0);
}

typedef void (*GemmFn)(int, int, int, const float *, ptrdiff_t, ptrdiff_t, const float *,
                       const ptrdiff_t *, ptrdiff_t, float *, ptrdiff_t, GemmStart);

/* start 0: from C; 1: from a start per row (C's old values must not count);
 * 2: from +0 */
static void one_shape(int M, int N, int K, int transposed, int offsets, int start)
{
    Rng r;
    rng_init(&r, 2, (uint64_t)M, (uint64_t)(N * 1000 + K));
    const ptrdiff_t lda = transposed ? M : K, ldb = N + 3, ldc = N + 5;
    const ptrdiff_t ams = transposed ? 1 : lda, aks = transposed ? lda : 1;
    float *A = malloc(sizeof(float) * (size_t)(M * K + 1));
    float *B = malloc(sizeof(float) * (size_t)((K + 2) * ldb));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc));
    ptrdiff_t *off = malloc(sizeof(ptrdiff_t) * (size_t)K);
    float *c0 = malloc(sizeof(float) * (size_t)M);
    for (int m = 0; m < M; m++)
        c0[m] = rng_uniform(&r) - 0.5f;
    const GemmStart st = {start == 0, start == 1 ? c0 : NULL};
    for (int i = 0; i < M * K; i++)
        A[i] = rng_uniform(&r) - 0.5f;
    for (ptrdiff_t i = 0; i < (K + 2) * ldb; i++)
        B[i] = rng_uniform(&r) - 0.5f;
    for (ptrdiff_t i = 0; i < M * ldc; i++)
        C0[i] = rng_uniform(&r) - 0.5f;
    for (int k = 0; k < K; k++) /* rows of B in a shuffled order, as a convolution reads them */
        off[k] = (ptrdiff_t)((k * 7 + 3) % (K + 2)) * ldb;
    const ptrdiff_t *boff = offsets ? off : NULL;
    static const GemmFn paths[3] = {gemm_generic, gemm_avx2, gemm_avx512};
    float *got[3];
    for (int p = 0; p < 3; p++) {
        got[p] = malloc(sizeof(float) * (size_t)(M * ldc));
        memcpy(got[p], C0, sizeof(float) * (size_t)(M * ldc));
        if (isa_supported((Isa)p))
            paths[p](M, N, K, A, ams, aks, B, boff, ldb, got[p], ldc, st);
    }
    double maxdiff = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double want = start == 0 ? C0[m * ldc + n] : start == 1 ? c0[m] : 0.0;
            for (int k = 0; k < K; k++)
                want += (double)A[m * ams + k * aks] * B[(boff ? boff[k] : k * ldb) + n];
            maxdiff = fmax(maxdiff, fabs(want - got[0][m * ldc + n]));
        }
    /* K float roundings of sums of terms below 1/4 each, at most */
    assert_true(maxdiff <= 1e-7 * (K + 1));
    for (int p = 1; p < 3; p++)
        if (isa_supported((Isa)p)) /* every element, the padding between rows too */
            assert_memory_equal(got[p], got[0], sizeof(float) * (size_t)(M * ldc));
    for (int p = 0; p < 3; p++)
        free(got[p]);
    free(A);
    free(B);
    free(C0);
    free(off);
    free(c0);
}

static void test_gemm_paths(void **state)
{
    (void)state;
    static const int Ms[] = {1, 5, 6, 7, 13, 120};
    /* up to four vectors of 16, each full or the masked tail, in one or more column blocks */
    static const int Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 57, 64, 100};
    static const int Ks[] = {0, 1, 2, 25, 150};
    int shapes = 0;
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof Ns[0]; j++)
            for (size_t k = 0; k < sizeof Ks / sizeof Ks[0]; k++) {
                for (int start = 0; start < 3; start++)
                    one_shape(Ms[i], Ns[j], Ks[k], (int)((i + j) % 2), (int)((j + k) % 2), start);
                shapes++;
            }
    printf("  %d shapes, each from C, from a start per row and from +0: plain C%s%s give the "
           "same bits, within rounding of double\n", shapes,
           isa_supported(ISA_AVX2) ? ", AVX2" : "", isa_supported(ISA_AVX512) ? ", AVX-512" : "");
}

/* The paths one at a time, for the tests that hold them to each other: path p
 * (in Isa order) is selected for what follows, as DPCNN_ISA would; 0 if this
 * CPU lacks it. use_default_path goes back to the best the CPU has. */
static int use_path(int p)
{
    static const char *const names[3] = {"generic", "avx2", "avx512"};
    if (!isa_supported((Isa)p))
        return 0;
    setenv("DPCNN_ISA", names[p], 1);
    assert_int_equal(isa_select_again(), 0);
    return 1;
}

static void use_default_path(void)
{
    unsetenv("DPCNN_ISA");
    assert_int_equal(isa_select_again(), 0);
}

/* conv_pool_backward on every path from the same inputs: dx, dw and db byte
 * for byte. The shapes reach each route of the kernels (conv_pool.c): filters
 * side by side with a group left over, the local dx copy and dx in place,
 * winners in more than one run, strides, one-row filters, overlapping pools. */
static void conv_pool_paths_case(int n, int C, int H, int W, int F, int K, int S, int PK, int PS,
                                 int want_dx)
{
    ConvShape cs = {.C = C, .H = H, .W = W, .F = F, .K = K, .S = S, .P = 0};
    assert_int_equal(conv_shape(&cs), 0);
    PoolShape ps = {.C = F, .H = cs.OH, .W = cs.OW, .K = PK, .S = PS};
    assert_int_equal(pool_shape(&ps), 0);
    const size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K;
    const size_t nc = (size_t)n * F * cs.OH * cs.OW, ny = (size_t)n * F * ps.OH * ps.OW;
    Rng r;
    rng_init(&r, 5, (uint64_t)(C * 100 + K), (uint64_t)(H * 1000 + F));
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
    float *c = malloc(sizeof(float) * nc), *y = malloc(sizeof(float) * ny);
    float *dy = malloc(sizeof(float) * ny);
    int32_t *arg = malloc(sizeof(int32_t) * ny);
    for (size_t i = 0; i < nx; i++)
        x[i] = rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < nw; i++)
        w[i] = rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < nc; i++)
        c[i] = rng_uniform(&r) - 0.6f; /* about half the windows pass the ReLU */
    for (size_t i = 0; i < ny; i++) /* zeros of both signs among the gradients */
        dy[i] = i % 17 == 0 ? -0.0f : i % 13 == 0 ? 0.0f : rng_uniform(&r) - 0.5f;
    relu_maxpool_forward(y, arg, c, n, &ps);
    float *out[3];
    const size_t nout = nx + nw + (size_t)F;
    int paths = 0;
    for (int p = 0; p < 3; p++) {
        out[p] = malloc(sizeof(float) * nout);
        for (size_t i = 0; i < nout; i++)
            out[p][i] = 0.25f + (float)(i % 7) * 0.125f;
        if (!use_path(p))
            continue;
        conv_pool_backward(want_dx ? out[p] : NULL, out[p] + nx, out[p] + nx + nw, dy, y, arg, x,
                           w, n, &cs, &ps);
        if (p > 0)
            assert_memory_equal(out[p], out[0], sizeof(float) * nout);
        paths++;
    }
    /* the gradients moved: not a comparison of untouched buffers */
    int moved = 0;
    for (size_t i = 0; i < (size_t)F; i++)
        moved += out[0][nx + nw + i] != 0.25f + (float)((nx + nw + i) % 7) * 0.125f;
    assert_true(moved > 0);
    printf("  n=%d C=%d %dx%d F=%d K=%d S=%d pool %d/%d%s: %d paths agree\n", n, C, H, W, F, K, S,
           PK, PS, want_dx ? "" : ", no dx", paths);
    for (int p = 0; p < 3; p++)
        free(out[p]);
    free(x); free(w); free(c); free(y); free(dy); free(arg);
}

static void test_conv_pool_paths(void **state)
{
    (void)state;
    conv_pool_paths_case(3, 1, 28, 28, 6, 5, 1, 2, 2, 0);  /* the tutorial's first layer */
    conv_pool_paths_case(3, 6, 12, 12, 12, 5, 1, 2, 2, 1); /* and its second */
    conv_pool_paths_case(2, 1, 10, 10, 7, 3, 1, 2, 2, 1);  /* three side by side, one left */
    conv_pool_paths_case(2, 1, 9, 9, 9, 1, 1, 3, 3, 1);    /* one-row filters, eight at once */
    conv_pool_paths_case(2, 2, 20, 20, 5, 5, 1, 2, 2, 1);  /* dx in place (wider than 16) */
    conv_pool_paths_case(1, 1, 40, 40, 4, 3, 1, 2, 1, 1);  /* winners in several runs */
    conv_pool_paths_case(2, 3, 15, 15, 4, 3, 2, 2, 2, 1);  /* stride 2 */
    conv_pool_paths_case(2, 2, 14, 14, 3, 7, 1, 3, 2, 1);  /* K = 7, overlapping pools */
    conv_pool_paths_case(18, 1, 9, 9, 3, 3, 1, 2, 2, 0);  /* bias sums: 16 + 2 samples */
    use_default_path();
}

/* The 2x2 max-pool (and ReLU + max-pool) on every path from the same planes:
 * values and winners byte for byte, on widths and heights odd and even, wider
 * than one vector of windows, with the ties a ReLU makes, zeros of both
 * signs, infinities and NaNs. */
static void test_pool_paths(void **state)
{
    (void)state;
    Rng r;
    rng_init(&r, 6, 0, 0);
    int shapes = 0;
    static const int heights[] = {2, 7, 9}; /* rows of windows: 1, 3 (a pair and one), 4 */
    for (int h = 0; h < 3; h++)
        for (int W = 2; W <= 71; W += 3) {
            const int H = heights[h];
            PoolShape ps = {.C = 3, .H = H, .W = W, .K = 2, .S = 2};
            assert_int_equal(pool_shape(&ps), 0);
            const int n = 2;
            const size_t nx = (size_t)n * 3 * H * W, ny = (size_t)n * 3 * ps.OH * ps.OW;
            float *x = malloc(sizeof(float) * nx);
            for (size_t i = 0; i < nx; i++) {
                const uint32_t k = (uint32_t)rng_below(&r, 40);
                x[i] = k == 0 ? NAN : k == 1 ? -0.0f : k == 2 ? INFINITY : k == 3 ? -INFINITY
                       : (float)((int)rng_below(&r, 7) - 3) * 0.5f; /* ties */
            }
            float *y[2][3];
            int32_t *a[2][3];
            for (int relu = 0; relu < 2; relu++)
                for (int p = 0; p < 3; p++) {
                    y[relu][p] = malloc(sizeof(float) * ny);
                    a[relu][p] = malloc(sizeof(int32_t) * ny);
                    if (!use_path(p))
                        continue;
                    (relu ? relu_maxpool_forward : maxpool_forward)(y[relu][p], a[relu][p], x, n,
                                                                     &ps);
                    if (p == 0)
                        continue;
                    assert_memory_equal(y[relu][p], y[relu][0], sizeof(float) * ny);
                    assert_memory_equal(a[relu][p], a[relu][0], sizeof(int32_t) * ny);
                }
            for (int relu = 0; relu < 2; relu++)
                for (int p = 0; p < 3; p++) {
                    free(y[relu][p]);
                    free(a[relu][p]);
                }
            free(x);
            shapes++;
        }
    use_default_path();
    printf("  %d shapes, max-pool and ReLU + max-pool: every path gives the same values and "
           "winners\n", shapes);
}

/* A value for Adam's state or gradient, of every class the update meets: zeros
 * of both signs, subnormals, tiny normals, and the usual magnitudes. */
static float adam_value(Rng *r, int nonneg)
{
    const uint32_t k = (uint32_t)rng_below(r, 6), sign = nonneg ? 0 : (uint32_t)rng_below(r, 2);
    uint32_t bits;
    switch (k) {
    case 0: bits = 0; break;
    case 1: bits = 1 + (uint32_t)rng_below(r, (1u << 23) - 1); break;    /* subnormal */
    case 2: bits = (1 + (uint32_t)rng_below(r, 30)) << 23 | (uint32_t)rng_below(r, 1u << 23); break;
    case 3: bits = (uint32_t)(127 - 60 + rng_below(r, 10)) << 23 | (uint32_t)rng_below(r, 1u << 23); break;
    default: bits = (uint32_t)(127 - 20 + rng_below(r, 22)) << 23 | (uint32_t)rng_below(r, 1u << 23); break;
    }
    return bits_float(bits | sign << 31);
}

/* Adam on every path from the same state, a few steps and learning rates
 * (one so small that the steps themselves are subnormal): params, m and v
 * byte for byte. The blocks of 16 take turns: usual magnitudes only (the
 * float route of the vector paths); m's of every class with usual v's and
 * g's, a third of them 0 (m's chain in double); values of every class (all
 * in double). 7 elements are left over past the last block. */
static void test_adam_paths(void **state)
{
    (void)state;
    enum { N = 16 * 256 + 7 };
    Rng r;
    rng_init(&r, 7, 0, 0);
    static float p0[N], m0[N], v0[N], g[N], p[3][N], m[3][N], v[3][N];
    for (size_t i = 0; i < N; i++) {
        const int kind = (int)(i / 16) % 3, usual_vg = kind < 2;
        p0[i] = (rng_uniform(&r) - 0.5f) * 0.2f;
        m0[i] = kind == 0 ? (rng_uniform(&r) - 0.5f) * 1e-2f : adam_value(&r, 0);
        v0[i] = usual_vg ? rng_uniform(&r) * 1e-4f : adam_value(&r, 1);
        g[i] = !usual_vg ? adam_value(&r, 0)
               : kind == 1 && i % 3 == 0 ? 0.0f : (rng_uniform(&r) - 0.5f) * 1e-1f;
    }
    const double lrs[3] = {0.01, 1e-3, 1e-37};
    int paths = 0, subnormal = 0;
    for (int q = 0; q < 3; q++) {
        if (!use_path(q))
            continue;
        memcpy(p[q], p0, sizeof p0);
        memcpy(m[q], m0, sizeof m0);
        memcpy(v[q], v0, sizeof v0);
        for (int l = 0; l < 3; l++)
            for (int64_t step = 1; step <= 3; step++) {
                const AdamConfig ac = {lrs[l], 0.9, 0.999, 1e-8};
                adam_step(p[q], m[q], v[q], g, N, &ac, step + 1000 * l);
            }
        if (q > 0) {
            assert_memory_equal(p[q], p[0], sizeof p0);
            assert_memory_equal(m[q], m[0], sizeof m0);
            assert_memory_equal(v[q], v[0], sizeof v0);
        }
        paths++;
    }
    for (size_t i = 0; i < N; i++)
        subnormal += m[0][i] != 0 && fabsf(m[0][i]) < FLT_MIN;
    assert_true(subnormal > 100); /* the rounding to subnormals was compared */
    assert_true(memcmp(p[0], p0, sizeof p0) != 0);
    use_default_path();
    printf("  Adam, %d elements with zeros, subnormals and tiny values (%d subnormal m's at the "
           "end): %d paths agree\n", N, subnormal, paths);
}

/* ReLU + average pool, fused, on every path against relu_forward then
 * avgpool_forward (and their backward passes through a zeroed gradient) on
 * the plain C path: byte for byte, on 2x2 windows with rows of 1 to 35
 * windows (more than one vector's worth, with tails; odd widths leave a
 * column out) and on 3x3 ones, with zeros of both signs, NaNs and negatives;
 * dx starts as garbage, so the backward pass is seen to write all of it (the
 * two layers' run into a zeroed dx). */
static void test_relu_avgpool_paths(void **state)
{
    (void)state;
    Rng r;
    rng_init(&r, 8, 0, 0);
    int shapes = 0;
    for (int K = 2; K <= 3; K++)
        for (int W = K; W <= 71; W += K == 2 ? 5 : 7) {
            const int H = K == 2 ? 5 + W % 4 : 7;
            PoolShape ps = {.C = 2, .H = H, .W = W, .K = K, .S = K};
            assert_int_equal(pool_shape(&ps), 0);
            const int n = 2;
            const size_t nx = (size_t)n * 2 * H * W, ny = (size_t)n * 2 * ps.OH * ps.OW;
            float *x = malloc(sizeof(float) * nx), *dy = malloc(sizeof(float) * ny);
            float *relu = malloc(sizeof(float) * nx), *tmp = malloc(sizeof(float) * nx);
            float *y[3], *dx[3];
            for (size_t i = 0; i < nx; i++) {
                const uint32_t k = (uint32_t)rng_below(&r, 30);
                x[i] = k == 0 ? NAN : k == 1 ? -0.0f : k == 2 ? 0.0f : rng_uniform(&r) - 0.5f;
            }
            for (size_t i = 0; i < ny; i++)
                dy[i] = i % 11 == 0 ? -0.0f : rng_uniform(&r) - 0.5f;
            for (int p = 0; p < 3; p++) {
                y[p] = malloc(sizeof(float) * ny);
                dx[p] = malloc(sizeof(float) * nx);
                for (size_t i = 0; i < nx; i++)
                    dx[p][i] = i % 3 ? NAN : -0.0f - (float)i;
            }
            /* the reference: the two layers apart, plain C */
            use_path(ISA_GENERIC);
            float *want_y = malloc(sizeof(float) * ny), *want_dx = malloc(sizeof(float) * nx);
            relu_forward(relu, x, nx);
            avgpool_forward(want_y, relu, n, &ps);
            memset(tmp, 0, sizeof(float) * nx);
            avgpool_backward(tmp, dy, n, &ps);
            memset(want_dx, 0, sizeof(float) * nx);
            relu_backward(want_dx, tmp, relu, nx);
            for (int p = 0; p < 3; p++) {
                if (!use_path(p))
                    continue;
                relu_avgpool_forward(y[p], x, n, &ps);
                relu_avgpool_backward(dx[p], dy, x, n, &ps);
                assert_memory_equal(y[p], want_y, sizeof(float) * ny);
                assert_memory_equal(dx[p], want_dx, sizeof(float) * nx);
            }
            for (int p = 0; p < 3; p++) {
                free(y[p]);
                free(dx[p]);
            }
            free(x); free(dy); free(relu); free(tmp); free(want_y); free(want_dx);
            shapes++;
        }
    use_default_path();
    printf("  %d shapes, ReLU + average pool: every path gives the two layers' bits\n", shapes);
}

/* conv2d_forward and conv2d_backward (the dense route) on every path from
 * the same inputs: y, dx, dw and db byte for byte, dw and dx starting from
 * what a micro-batch left (+0 for dx, as the trainer's). The shapes reach
 * each route: the wide forward against im2col on either side of its bound,
 * dw with the filters in the lanes (12 to 16 filters, K = 5 and 3, with
 * padding) and through the product, and col2im on rows up to 16 wide and
 * wider. */
static void conv_paths_case(int n, int C, int H, int W, int F, int K, int P, int want_dx)
{
    ConvShape cs = {.C = C, .H = H, .W = W, .F = F, .K = K, .S = 1, .P = P};
    assert_int_equal(conv_shape(&cs), 0);
    const size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K;
    const size_t ny = (size_t)n * F * cs.OH * cs.OW;
    Rng r;
    rng_init(&r, 9, (uint64_t)(C * 100 + K), (uint64_t)(H * 1000 + F));
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
    float *b = malloc(sizeof(float) * F), *dy = malloc(sizeof(float) * ny);
    const size_t nscratch = conv2d_backward_floats(&cs) > conv2d_forward_floats(&cs)
                                ? conv2d_backward_floats(&cs) : conv2d_forward_floats(&cs);
    float *scratch = malloc(sizeof(float) * nscratch);
    for (size_t i = 0; i < nx; i++)
        x[i] = i % 19 == 0 ? -0.0f : rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < nw; i++)
        w[i] = rng_uniform(&r) - 0.5f;
    for (int i = 0; i < F; i++)
        b[i] = rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < ny; i++) /* zeros among the gradients, as a ReLU leaves */
        dy[i] = i % 7 == 0 ? 0.0f : rng_uniform(&r) - 0.5f;
    float *out[3];
    const size_t nout = ny + nx + nw + (size_t)F;
    int paths = 0;
    for (int p = 0; p < 3; p++) {
        out[p] = malloc(sizeof(float) * nout);
        memset(out[p], 0, sizeof(float) * (ny + nx));
        for (size_t i = ny + nx; i < nout; i++)
            out[p][i] = 0.25f + (float)(i % 7) * 0.125f;
        if (!use_path(p))
            continue;
        conv2d_forward(out[p], scratch, x, w, b, n, &cs);
        conv2d_backward(want_dx ? out[p] + ny : NULL, out[p] + ny + nx, out[p] + ny + nx + nw,
                        scratch, dy, x, w, n, &cs);
        if (p > 0)
            assert_memory_equal(out[p], out[0], sizeof(float) * nout);
        paths++;
    }
    int moved = 0; /* the weight gradient moved: not a comparison of untouched buffers */
    for (size_t i = 0; i < nw; i++)
        moved += out[0][ny + nx + i] != 0.25f + (float)((ny + nx + i) % 7) * 0.125f;
    assert_true(moved > 0);
    printf("  n=%d C=%d %dx%d F=%d K=%d P=%d%s: %d paths agree\n", n, C, H, W, F, K, P,
           want_dx ? "" : ", no dx", paths);
    for (int p = 0; p < 3; p++)
        free(out[p]);
    free(x); free(w); free(b); free(dy); free(scratch);
}

static void test_conv_paths(void **state)
{
    (void)state;
    conv_paths_case(3, 1, 28, 28, 6, 5, 2, 0);  /* LeNet-5's first layer */
    conv_paths_case(3, 6, 14, 14, 16, 5, 0, 1); /* and its second: lanes, col2im in rows */
    conv_paths_case(2, 3, 9, 9, 12, 3, 0, 1);   /* 12 filters, K = 3 */
    conv_paths_case(2, 2, 11, 11, 13, 5, 1, 1); /* dw in lanes with padding */
    conv_paths_case(2, 2, 20, 20, 14, 5, 0, 1); /* rows wider than 16 */
    conv_paths_case(2, 4, 12, 12, 12, 5, 0, 1); /* the tutorial's second: unrolled forward */
    conv_paths_case(2, 2, 10, 10, 17, 3, 0, 1); /* more filters than lanes */
    conv_paths_case(18, 1, 9, 9, 6, 3, 1, 0);   /* the bias sums over 16 + 2 samples */
    use_default_path();
}

/* transpose_f32 on every path: each element where it belongs, bit for bit
 * (a NaN's payload and -0 included), and nothing written outside the
 * transposed block (the destination's gaps keep a marker). Shapes below,
 * at and across the 16 x 16 blocks, and the linear layers' own. */
static void test_transpose_paths(void **state)
{
    (void)state;
    static const int shapes[][2] = {{1, 1}, {3, 5}, {16, 16}, {17, 33}, {25, 192}, {120, 25},
                                    {25, 400}, {84, 25}, {40, 7}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    int checked = 0;
    for (int t = 0; t < nshapes; t++) {
        const int rows = shapes[t][0], cols = shapes[t][1];
        const int lds = cols + 3, ldd = rows + 5; /* gaps on both sides */
        float *src = malloc(sizeof(float) * (size_t)rows * lds);
        float *dst = malloc(sizeof(float) * (size_t)cols * ldd);
        for (int i = 0; i < rows * lds; i++) {
            uint32_t u = 0x3f800000u + (uint32_t)i * 2654435761u % 0x7fffffu;
            memcpy(&src[i], &u, sizeof u);
        }
        const uint32_t nan_bits = 0x7fc12345u;
        memcpy(&src[0], &nan_bits, sizeof nan_bits);
        src[1] = -0.0f; /* (lds > 1) */
        for (int p = 0; p < 3; p++) {
            if (!use_path(p))
                continue;
            for (int i = 0; i < cols * ldd; i++)
                dst[i] = 1234.5f;
            transpose_f32(dst, ldd, src, lds, rows, cols);
            for (int c = 0; c < cols; c++)
                for (int r = 0; r < ldd; r++) {
                    const float *got = &dst[c * ldd + r];
                    if (r < rows)
                        assert_memory_equal(got, &src[r * lds + c], sizeof(float));
                    else
                        assert_true(*got == 1234.5f);
                }
            checked++;
        }
        free(src);
        free(dst);
    }
    use_default_path();
    printf("  %d shapes x paths transposed exactly\n", checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fma_exact),
        cmocka_unit_test(test_gemm_paths),
        cmocka_unit_test(test_conv_pool_paths),
        cmocka_unit_test(test_conv_paths),
        cmocka_unit_test(test_pool_paths),
        cmocka_unit_test(test_adam_paths),
        cmocka_unit_test(test_relu_avgpool_paths),
        cmocka_unit_test(test_transpose_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
