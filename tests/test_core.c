/* The pieces determinism rests on: the random generator, the initial
 * weights, the exact sums, and the schedule that deals samples to ranks. */
#include "config.h"

#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dpcnn/hash.h"
#include "dpcnn/isa.h"
#include "dpcnn/mathfn.h"
#include "dpcnn/model.h"
#include "dpcnn/net.h"
#include "dpcnn/rng.h"
#include "dpcnn/shard.h"
#include "dpcnn/xsum.h"
#include "testutil.h"

/* SplitMix64 from state 0 gives the reference implementation's first outputs. */
static void test_splitmix_reference(void **state)
{
    (void)state;
    Rng r = {0};
    assert_true(rng_next(&r) == UINT64_C(0xe220a8397b1dcdaf));
    assert_true(rng_next(&r) == UINT64_C(0x6e789e6aa1b965f4));
    assert_true(rng_next(&r) == UINT64_C(0x06c45d188009454f));
}

static void test_uniform_and_below(void **state)
{
    (void)state;
    Rng r;
    rng_init(&r, 1, 2, 3);
    double sum = 0;
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        float u = rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        counts[rng_below(&r, 7)]++;
    }
    printf("  mean of 70000 uniforms %.4f (0.5 +- 0.005)\n", sum / 70000);
    assert_true(fabs(sum / 70000 - 0.5) < 0.005);
    for (int k = 0; k < 7; k++)
        assert_true(counts[k] > 9500 && counts[k] < 10500);
}

static void test_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    uint32_t a[N], b[N], c[N];
    rng_permutation(a, N, 5, 1);
    rng_permutation(b, N, 5, 1);
    rng_permutation(c, N, 5, 2);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    char seen[N] = {0};
    for (int i = 0; i < N; i++) {
        assert_true(a[i] < N && !seen[a[i]]);
        seen[a[i]] = 1;
    }
}

/* PyTorch's bounds, and the same weights on any machine: the FNV-1a hash of
 * the seed-0 weights' bits is pinned (a changed generator must change it). */
static void test_model_init(void **state)
{
    (void)state;
    static Net net;
    assert_int_equal(net_load(&net, "tutorial", (Shape){1, 28, 28, 0}, 10), 0);
    assert_int_equal(net.nparams, 32998);
    const size_t NP = net.nparams;
    float *p = calloc(NP, sizeof(float)), *q = calloc(NP, sizeof(float));
    net_init(&net, p, NULL, NULL, 0);
    net_init(&net, q, NULL, NULL, 0);
    assert_memory_equal(p, q, sizeof(float) * NP);
    net_init(&net, q, NULL, NULL, 1);
    assert_true(memcmp(p, q, sizeof(float) * NP) != 0);
    size_t total = 0;
    for (int t = 0; t < net.ntensors; t++) {
        const TensorInfo *ti = &net.tensors[t];
        double bound = 1.0 / sqrt(ti->fan_in), lo = 1, hi = -1;
        for (size_t i = 0; i < ti->count; i++) {
            double v = p[ti->offset + i];
            assert_true(fabs(v) <= bound);
            lo = fmin(lo, v / bound);
            hi = fmax(hi, v / bound);
        }
        /* the draws fill the interval (all but the 6-element bias) */
        if (ti->count > 100)
            assert_true(lo < -0.9 && hi > 0.9);
        assert_int_equal(ti->offset, total);
        total += ti->count;
    }
    assert_int_equal(total, NP);
    /* the same bits as before networks were data: the tutorial's tensors are
     * drawn from the same streams, in the same order */
    const uint64_t h = fnv1a64(FNV1A64_INIT, p, sizeof(float) * NP);
    printf("  seed-0 weights hash %016llx\n", (unsigned long long)h);
    assert_true(h == UINT64_C(0xe41504ec249bf4da));
    free(p);
    free(q);
}

/* The fixed-point sum gives the same bits for any grouping of the terms. */
static void test_xsum_order_free(void **state)
{
    (void)state;
    enum { TERMS = 12, LEN = 500 };
    Rng r;
    rng_init(&r, 9, 9, 9);
    float *v = malloc(sizeof(float) * TERMS * LEN);
    for (int i = 0; i < TERMS * LEN; i++) /* wide range of magnitudes and signs */
        v[i] = (rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)(rng_below(&r, 40)) - 30);
    int e = XSUM_ZERO;
    for (int k = 0; k < TERMS; k++) {
        int ek = xsum_exponent_f32(v + k * LEN, LEN);
        e = ek > e ? ek : e;
    }
    int shift = xsum_shift(e, TERMS);
    /* one accumulator in order; then "ranks" of 5, 4 and 3 terms summed apart */
    int64_t *all = calloc(LEN, sizeof(int64_t)), *part[3];
    for (int k = 0; k < TERMS; k++)
        xsum_add_f32(all, v + k * LEN, LEN, shift);
    int cut[4] = {0, 5, 9, 12};
    for (int g = 0; g < 3; g++) {
        part[g] = calloc(LEN, sizeof(int64_t));
        for (int k = cut[g + 1] - 1; k >= cut[g]; k--) /* reversed, for good measure */
            xsum_add_f32(part[g], v + k * LEN, LEN, shift);
    }
    float *a = malloc(sizeof(float) * LEN), *b = malloc(sizeof(float) * LEN);
    xsum_get_f32(a, all, LEN, shift);
    for (int i = 0; i < LEN; i++)
        part[2][i] += part[0][i] + part[1][i];
    xsum_get_f32(b, part[2], LEN, shift);
    assert_memory_equal(a, b, sizeof(float) * LEN);
    /* and it is the true sum within one float32 ulp of the result, plus the
     * grid's own rounding (half a grid step per term) */
    double worst = 0;
    for (int i = 0; i < LEN; i++) {
        long double exact = 0;
        for (int k = 0; k < TERMS; k++)
            exact += v[k * LEN + i];
        double bound = ldexp(fabs((double)exact), -23) + TERMS * ldexp(0.5, -shift);
        worst = fmax(worst, fabs((double)(a[i] - exact)) / bound);
    }
    printf("  fixed-point sum: worst error %.2f of the bound (1 ulp + grid rounding)\n", worst);
    assert_true(worst <= 1.0);
    free(v); free(all); free(a); free(b);
    for (int g = 0; g < 3; g++)
        free(part[g]);
}

/* The slots summed in one pass (xsum_sum_f32, reduce_exact's) are zeroing
 * and adding them one after another, bit for bit: 0 to 4 slots, a length
 * that crosses its chunks, slots further apart than their length. */
static void test_xsum_slots(void **state)
{
    (void)state;
    enum { N = 1300, STRIDE = 1337, SLOTS = 4 };
    Rng r;
    rng_init(&r, 9, 9, 10);
    float *v = malloc(sizeof(float) * STRIDE * SLOTS);
    for (int i = 0; i < STRIDE * SLOTS; i++)
        v[i] = (rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)(rng_below(&r, 40)) - 30);
    const int shift = xsum_shift(xsum_exponent_f32(v, STRIDE * SLOTS), SLOTS);
    int64_t *want = malloc(sizeof(int64_t) * N), *got = malloc(sizeof(int64_t) * N);
    const float *slot[SLOTS];
    for (int k = 0; k < SLOTS; k++)
        slot[k] = v + (size_t)k * STRIDE;
    for (int nslots = 0; nslots <= SLOTS; nslots++) {
        memset(want, 0, sizeof(int64_t) * N);
        for (int k = 0; k < nslots; k++)
            xsum_add_f32(want, v + (size_t)k * STRIDE, N, shift);
        for (int i = 0; i < N; i++)
            got[i] = 12345; /* written, not added to */
        xsum_sum_f32(got, slot, nslots, N, shift);
        assert_memory_equal(got, want, sizeof(int64_t) * N);
    }
    int nonzero = 0; /* and the sums are not all zero */
    for (int i = 0; i < N; i++)
        nonzero += want[i] != 0;
    assert_true(nonzero > N / 2);
    free(v);
    free(want);
    free(got);
}

/* The slots summed straight to floats (xsum_sum_get_f32, the exact sum's
 * where ranks share memory) are xsum_sum_f32 then xsum_get_f32, bit for bit,
 * on every path this CPU has: 0 to 4 slots, each in its own allocation, a
 * length that is no multiple of a vector or a chunk. */
static void test_xsum_sum_get(void **state)
{
    (void)state;
    enum { N = 1300, SLOTS = 4 };
    Rng r;
    rng_init(&r, 9, 9, 11);
    float *slot[SLOTS];
    for (int k = 0; k < SLOTS; k++) {
        slot[k] = malloc(sizeof(float) * N);
        for (int i = 0; i < N; i++)
            slot[k][i] = (rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)(rng_below(&r, 40)) - 30);
    }
    slot[1][7] = ldexpf(0.99f, 3); /* the largest term, at the grid's top */
    int e = XSUM_ZERO;
    for (int k = 0; k < SLOTS; k++) {
        int ek = xsum_exponent_f32(slot[k], N);
        e = ek > e ? ek : e;
    }
    const int shift = xsum_shift(e, SLOTS);
    /* the reference: the slots summed (test_xsum_slots holds that to adding
     * them in turn), then turned back */
    float *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    int64_t *acc = malloc(sizeof(int64_t) * N);
    static const char *const names[3] = {"generic", "avx2", "avx512"};
    for (int nslots = 0; nslots <= SLOTS; nslots++) {
        xsum_sum_f32(acc, (const float *const *)slot, nslots, N, shift);
        xsum_get_f32(want, acc, N, shift);
        for (int p = 0; p < 3; p++) {
            if (!isa_supported((Isa)p))
                continue;
            setenv("DPCNN_ISA", names[p], 1);
            assert_int_equal(isa_select_again(), 0);
            memset(got, 0xff, sizeof(float) * N);
            xsum_sum_get_f32(got, (const float *const *)slot, nslots, N, shift);
            assert_memory_equal(got, want, sizeof(float) * N);
        }
        unsetenv("DPCNN_ISA");
        assert_int_equal(isa_select_again(), 0);
    }
    int nonzero = 0; /* and the sums are not all zero */
    for (int i = 0; i < N; i++)
        nonzero += want[i] != 0.0f;
    assert_true(nonzero > N / 2);
    for (int k = 0; k < SLOTS; k++)
        free(slot[k]);
    free(want);
    free(got);
    free(acc);
}

static void test_xsum_special(void **state)
{
    (void)state;
    float z[3] = {0, -0.0f, 0};
    assert_int_equal(xsum_exponent_f32(z, 3), XSUM_ZERO);
    float f[3] = {1, NAN, 2};
    assert_int_equal(xsum_exponent_f32(f, 3), XSUM_NONFINITE);
    f[1] = INFINITY;
    assert_int_equal(xsum_exponent_f32(f, 3), XSUM_NONFINITE);
    f[1] = -3.0f; /* max |v| = 3 < 2^2 */
    assert_int_equal(xsum_exponent_f32(f, 3), 2);
    double d[2] = {0.5, -0.25};
    assert_int_equal(xsum_exponent_f64(d, 2), 0);
    /* the grid never overflows: the largest terms, many of them */
    int e = 5, n = 1000;
    int shift = xsum_shift(e, n);
    int64_t acc = 0;
    float big = ldexpf(1.0f, e) * 0.99999994f;
    for (int k = 0; k < n; k++)
        xsum_add_f32(&acc, &big, 1, shift);
    assert_true(acc > 0);
    float out;
    xsum_get_f32(&out, &acc, 1, shift);
    assert_true(fabs(out - 1000.0 * big) <= 1000.0 * big * 1e-7);
}

/* Every position of the epoch is trained on by exactly one rank, in micro-
 * batches whose boundaries do not depend on the rank count. */
static void test_schedule_partition(void **state)
{
    (void)state;
    const size_t ns[] = {1, 7, 100, 101, 999, 1000};
    const int bs[] = {1, 3, 100, 64};
    const int ms[] = {1, 10, 25, 100};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof bs / sizeof bs[0]; b++)
            for (size_t c = 0; c < sizeof ms / sizeof ms[0]; c++)
                for (int P = 1; P <= 5; P++) {
                    Schedule s = {ns[a], bs[b], ms[c], P};
                    char *hit = calloc(s.n, 1);
                    size_t total = 0;
                    for (int r = 0; r < P; r++) {
                        Exchange x;
                        exchange_init(&x, &s, r, 784);
                        assert_int_equal(x.count, sched_rank_samples(&s, r));
                        for (size_t k = 0; k < x.count; k++) {
                            assert_true(x.positions[k] < s.n);
                            assert_int_equal(hit[x.positions[k]], 0);
                            hit[x.positions[k]] = 1;
                            if (k)
                                assert_true(x.positions[k] > x.positions[k - 1]);
                        }
                        total += x.count;
                        exchange_free(&x);
                    }
                    assert_int_equal(total, s.n);
                    free(hit);
                    /* micro-batch sizes of a step are the same at every P */
                    Schedule one = s;
                    one.ranks = 1;
                    for (size_t st = 0; st < sched_steps(&s); st++) {
                        assert_int_equal(sched_micro_count(&s, st), sched_micro_count(&one, st));
                        int sum = 0;
                        for (int j = 0; j < sched_micro_count(&s, st); j++)
                            sum += sched_micro_size(&s, st, j);
                        assert_int_equal(sum, sched_step_size(&s, st));
                    }
                }
}

static void test_parts(void **state)
{
    (void)state;
    for (size_t n = 1; n < 50; n++)
        for (int P = 1; P <= 7; P++) {
            assert_int_equal(part_first(n, P, 0), 0);
            assert_int_equal(part_first(n, P, P), n);
            for (size_t i = 0; i < n; i++) {
                int r = part_owner(n, P, i);
                assert_true(part_first(n, P, r) <= i && i < part_first(n, P, r + 1));
            }
        }
}

/* dpcnn's own exp and log: within 2 ulp of the C library's over the range
 * the softmax uses and beyond, and the special values. */
static void test_exp_log(void **state)
{
    (void)state;
    Rng r;
    rng_init(&r, 5, 0, 0);
    double worst_e = 0, worst_l = 0;
    for (int i = 0; i < 200000; i++) {
        const double x = (rng_uniform(&r) - 0.75) * 80.0 + (i % 7 == 0 ? -600.0 : 0.0);
        const double e = dpcnn_exp(x), want = exp(x);
        worst_e = fmax(worst_e, fabs(e - want) / (nextafter(want, INFINITY) - want));
        const double y = ldexp(1.0 + rng_uniform(&r), (int)rng_below(&r, 200) - 100);
        const double l = dpcnn_log(y), lw = log(y);
        if (lw != 0.0)
            worst_l = fmax(worst_l, fabs(l - lw) / fabs(nextafter(lw, INFINITY) - lw));
    }
    printf("  exp: worst %.2f ulp, log: worst %.2f ulp from the C library\n", worst_e, worst_l);
    assert_true(worst_e <= 2.0);
    assert_true(worst_l <= 2.0);
    assert_true(dpcnn_exp(0.0) == 1.0 && dpcnn_log(1.0) == 0.0);
    assert_true(dpcnn_exp(-800.0) == 0.0 && isinf(dpcnn_exp(710.0)));
    assert_true(isnan(dpcnn_exp(NAN)) && isnan(dpcnn_log(-1.0)) && isinf(dpcnn_log(0.0)));
    assert_true(fabs(dpcnn_log(4.9e-320) - log(4.9e-320)) < 1e-12); /* subnormal */
}

/* dpcnn_exp_n is dpcnn_exp bit for bit on every path: random arguments over
 * the whole range, the ends of each of its cases (2^n made in two steps below
 * n = -1022 and above 1023, the cut-offs at -745.2 and 709.78), subnormal
 * results, zeros, infinities and a NaN's payload; lengths that are no
 * multiple of a vector. */
static void test_exp_n(void **state)
{
    (void)state;
    enum { N = 4003 };
    double *x = malloc(sizeof(double) * N), *want = malloc(sizeof(double) * N);
    double *got = malloc(sizeof(double) * N);
    Rng r;
    rng_init(&r, 5, 1, 0);
    const double edges[] = {0.0, -0.0, 1e-300, -1e-300, 709.78, -745.2, 709.0, 710.0, -708.39,
                            -708.4, -709.09, -709.1, -744.4, -745.1, -745.3, 0.5, -0.5,
                            INFINITY, -INFINITY, 1e308, -1e308};
    const int ne = (int)(sizeof edges / sizeof edges[0]);
    for (int i = 0; i < N; i++) {
        if (i < 4 * ne) {
            const double e = edges[i % ne];
            x[i] = i / ne == 0 ? e : i / ne == 1 ? nextafter(e, INFINITY)
                               : i / ne == 2 ? nextafter(e, -INFINITY) : e * 0.999999;
        } else {
            x[i] = (rng_uniform(&r) - 0.5) * (i % 3 == 0 ? 1600.0 : 40.0);
        }
    }
    const uint64_t nan_bits = UINT64_C(0x7ff8000000012345);
    memcpy(&x[N - 1], &nan_bits, sizeof nan_bits);
    for (int i = 0; i < N; i++)
        want[i] = dpcnn_exp(x[i]);
    static const char *const names[3] = {"generic", "avx2", "avx512"};
    int paths = 0;
    for (int p = 0; p < 3; p++) {
        if (!isa_supported((Isa)p))
            continue;
        setenv("DPCNN_ISA", names[p], 1);
        assert_int_equal(isa_select_again(), 0);
        for (int len = N; len >= N - 7; len -= 7) {
            memset(got, 0, sizeof(double) * N);
            dpcnn_exp_n(got, x, len);
            assert_memory_equal(got, want, sizeof(double) * (size_t)len);
            assert_true(len == N || got[len] == 0.0); /* nothing past the end */
        }
        paths++;
    }
    unsetenv("DPCNN_ISA");
    assert_int_equal(isa_select_again(), 0);
    int subnormal = 0, zero = 0, inf = 0;
    for (int i = 0; i < N; i++) {
        subnormal += want[i] > 0.0 && want[i] < DBL_MIN;
        zero += want[i] == 0.0;
        inf += isinf(want[i]);
    }
    assert_true(subnormal > 0 && zero > 0 && inf > 0);
    printf("  exp over %d arguments: %d paths give the scalar bits (%d subnormal results)\n", N,
           paths, subnormal);
    free(x);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splitmix_reference), cmocka_unit_test(test_uniform_and_below),
        cmocka_unit_test(test_permutation),        cmocka_unit_test(test_model_init),
        cmocka_unit_test(test_xsum_order_free),
        cmocka_unit_test(test_xsum_slots),
        cmocka_unit_test(test_xsum_sum_get),    cmocka_unit_test(test_xsum_special),
        cmocka_unit_test(test_schedule_partition), cmocka_unit_test(test_parts),
        cmocka_unit_test(test_exp_log),
        cmocka_unit_test(test_exp_n),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
