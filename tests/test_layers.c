/* Every layer, twice over:
 *  1. its double-precision reference backward equals central finite
 *     differences of its reference forward (the math is right);
 *  2. its fast float kernels equal the reference within float rounding,
 *     forward and backward, and backward adds into what was there (every
 *     gradient buffer starts non-zero).
 * Plus the rules that decide bits: PyTorch's floor, tie and NaN rules for the
 * pools, the fused ReLU + pool, the winners-only backward against the dense
 * route, and dropout's keyed masks. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dpcnn/isa.h"
#include "dpcnn/layers.h"
#include "testutil.h"

/* The loss every check differentiates: L = sum_i dy_i * y_i(inputs). */
static double dot(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static double *dalloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(double));
}

static float *falloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

/* Uniform in [lo, hi), rounded to float so both kernels see the same values. */
static double *drandom(size_t n, Rng *rng, double lo, double hi)
{
    double *a = dalloc(n);
    fill_uniform(a, n, rng, lo, hi);
    round_to_float(a, n);
    return a;
}

static float *ffilled(size_t n, float v)
{
    float *a = falloc(n);
    for (size_t i = 0; i < n; i++)
        a[i] = v;
    return a;
}

/* A fast backward started from `start` everywhere must end at start + ref. */
static void check_added(const char *what, const float *got, const double *ref, double start,
                        size_t n, double rtol, double atol)
{
    double *want = dalloc(n);
    for (size_t i = 0; i < n; i++)
        want[i] = ref[i] + start;
    check_close(what, got, want, n, rtol, atol);
    free(want);
}

static int same_float(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---------------- convolution ---------------- */

typedef struct {
    int n;
    ConvShape cs;
    double *x, *w, *b, *y, *dy; /* b NULL: no bias */
} ConvCase;

static size_t conv_ysize(const ConvCase *c)
{
    return (size_t)c->n * c->cs.F * c->cs.OH * c->cs.OW;
}

static double conv_loss(void *ctx)
{
    ConvCase *c = ctx;
    conv2d_forward_ref(c->y, c->x, c->w, c->b, c->n, &c->cs);
    return dot(c->y, c->dy, conv_ysize(c));
}

static void conv_case(int n, int C, int H, int W, int F, int K, int S, int P, int want_dx,
                      int bias)
{
    ConvCase c = {.n = n, .cs = {.C = C, .H = H, .W = W, .F = F, .K = K, .S = S, .P = P}};
    assert_int_equal(conv_shape(&c.cs), 0);
    printf("conv2d n=%d C=%d H=%d W=%d F=%d K=%d S=%d P=%d -> %dx%d%s%s\n", n, C, H, W, F, K, S,
           P, c.cs.OH, c.cs.OW, want_dx ? "" : ", no dx", bias ? "" : ", no bias");
    Rng rng;
    rng_init(&rng, 42, 99, (uint64_t)(C * 1000 + F * 100 + K * 10 + S + 7 * P));
    const size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K, ny = conv_ysize(&c);
    c.x = drandom(nx, &rng, -1, 1);
    c.w = drandom(nw, &rng, -0.5, 0.5);
    c.b = bias ? drandom(F, &rng, -0.5, 0.5) : NULL;
    c.y = dalloc(ny);
    c.dy = drandom(ny, &rng, -1, 1);

    double *dx = dalloc(nx), *dw = dalloc(nw), *db = dalloc(F);
    conv2d_backward_ref(dx, dw, bias ? db : NULL, c.dy, c.x, c.w, n, &c.cs);
    check_fd("dx", c.x, nx, dx, conv_loss, &c, 150);
    check_fd("dw", c.w, nw, dw, conv_loss, &c, 150);
    if (bias)
        check_fd("db", c.b, F, db, conv_loss, &c, 150);
    conv_loss(&c); /* leaves the reference y */

    /* Fast kernel on the same (float-exact) values. */
    float *xf = to_float(c.x, nx), *wf = to_float(c.w, nw), *bf = bias ? to_float(c.b, F) : NULL,
          *dyf = to_float(c.dy, ny), *yf = ffilled(ny, NAN); /* all overwritten */
    float *fwd_scratch = falloc(conv2d_forward_floats(&c.cs));
    float *bwd_scratch = falloc(conv2d_backward_floats(&c.cs));
    engine_current()->conv2d_forward(yf, fwd_scratch, xf, wf, bf, n, &c.cs);
    /* each output sums C*K*K products of magnitude <= 0.5: a few ulps of that */
    check_close("fast forward y", yf, c.y, ny, 1e-5, 1e-6);

    /* backward adds: start from known non-zero values */
    float *dxf = ffilled(nx, 0.25f), *dwf = ffilled(nw, 0.5f), *dbf = ffilled(F, -1.0f);
    engine_current()->conv2d_backward(want_dx ? dxf : NULL, dwf, bias ? dbf : NULL, bwd_scratch, dyf, xf, wf, n,
                    &c.cs);
    if (want_dx) {
        check_added("fast backward dx (added)", dxf, dx, 0.25, nx, 1e-5, 1e-6);
    } else {
        for (size_t i = 0; i < nx; i++)
            assert_true(dxf[i] == 0.25f);
    }
    /* dw sums n*OH*OW products: the tolerance is relative to the largest */
    check_added("fast backward dw (added)", dwf, dw, 0.5, nw, 1e-5, 1e-6);
    if (bias) {
        check_added("fast backward db (added)", dbf, db, -1.0, F, 1e-5, 1e-6);
    } else {
        for (int i = 0; i < F; i++)
            assert_true(dbf[i] == -1.0f);
    }

    free(dxf); free(dwf); free(dbf); free(fwd_scratch); free(bwd_scratch); free(yf);
    free(xf); free(wf); free(bf); free(dyf); free(dx); free(dw); free(db);
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.dy);
}

static void test_conv_tutorial_shapes(void **state)
{
    (void)state;
    conv_case(3, 1, 28, 28, 6, 5, 1, 0, 0, 1);
    conv_case(4, 6, 12, 12, 12, 5, 1, 0, 1, 1);
}

/* Stride 1, no padding: rows of 1..3, 4..8 and more than 8 floats take
 * different copy paths; K = 1 needs no unrolling at all. */
static void test_conv_stride1(void **state)
{
    (void)state;
    conv_case(2, 3, 9, 7, 4, 3, 1, 0, 1, 1);   /* K=3, odd sizes, OW 5 */
    conv_case(2, 2, 7, 7, 3, 5, 1, 0, 1, 1);   /* K=5, OW 3 */
    conv_case(2, 2, 6, 19, 3, 3, 1, 0, 1, 1);  /* OW 17: pieces of 8 and an overlapping one */
    conv_case(2, 2, 12, 16, 3, 7, 1, 0, 1, 1); /* OW 10, unrolled: two overlapping pieces */
    conv_case(2, 5, 6, 7, 3, 1, 1, 0, 1, 1);   /* K=1 (pointwise) */
    conv_case(2, 2, 9, 8, 3, 4, 1, 0, 1, 0);   /* K=4 (generic), no bias */
}

static void test_conv_stride_padding(void **state)
{
    (void)state;
    conv_case(2, 3, 9, 8, 4, 3, 2, 1, 1, 1);   /* stride 2, pad 1: 5x4 (floor) */
    conv_case(2, 2, 11, 10, 3, 5, 2, 2, 1, 1); /* stride 2, pad 2: 6x5 */
    conv_case(2, 1, 12, 12, 4, 5, 1, 2, 0, 1); /* LeNet-5's first: pad 2 keeps 12x12 */
    conv_case(2, 4, 7, 9, 3, 3, 1, 1, 1, 0);   /* "same" 3x3, no bias */
    conv_case(2, 2, 11, 11, 3, 3, 3, 1, 1, 1); /* stride 3: 4x4, floor drops a column */
    conv_case(2, 3, 7, 7, 2, 1, 2, 0, 1, 1);   /* K=1, stride 2 */
    conv_case(1, 2, 2, 3, 2, 3, 1, 1, 1, 1);   /* kernel larger than the plane, padding */
}

/* One input channel: dw from the window strips (conv2d.c), for each piece
 * size, with strides up to K, and the patches beyond */
static void test_conv_one_channel(void **state)
{
    (void)state;
    conv_case(2, 1, 9, 11, 3, 3, 2, 1, 1, 1);  /* K=3, stride 2, pad 1 */
    conv_case(2, 1, 10, 7, 2, 4, 1, 0, 1, 0);  /* K=4: exact copies, no bias */
    conv_case(2, 1, 13, 9, 3, 5, 3, 2, 1, 1);  /* K=5, stride 3, pad 2 */
    conv_case(2, 1, 7, 8, 2, 1, 2, 0, 1, 1);   /* stride above K: the patches */
}

static void test_conv_shape_rules(void **state)
{
    (void)state;
    ConvShape c = {.C = 1, .H = 28, .W = 28, .F = 6, .K = 5, .S = 1, .P = 0};
    assert_int_equal(conv_shape(&c), 0);
    assert_int_equal(c.OH, 24);
    assert_int_equal(c.OW, 24);
    c = (ConvShape){.C = 1, .H = 28, .W = 28, .F = 6, .K = 5, .S = 1, .P = 2};
    assert_int_equal(conv_shape(&c), 0);
    assert_int_equal(c.OH, 28);
    c = (ConvShape){.C = 3, .H = 10, .W = 9, .F = 2, .K = 3, .S = 2, .P = 1};
    assert_int_equal(conv_shape(&c), 0); /* (10+2-3)/2+1 = 5, (9+2-3)/2+1 = 5 */
    assert_int_equal(c.OH, 5);
    assert_int_equal(c.OW, 5);
    c = (ConvShape){.C = 1, .H = 4, .W = 28, .F = 6, .K = 5, .S = 1, .P = 0};
    assert_int_equal(conv_shape(&c), -1); /* does not fit */
    c = (ConvShape){.C = 1, .H = 28, .W = 28, .F = 6, .K = 5, .S = 0, .P = 0};
    assert_int_equal(conv_shape(&c), -1);
    c = (ConvShape){.C = 1, .H = 28, .W = 28, .F = 6, .K = 5, .S = 1, .P = -1};
    assert_int_equal(conv_shape(&c), -1);
    c = (ConvShape){.C = 0, .H = 28, .W = 28, .F = 6, .K = 5, .S = 1, .P = 0};
    assert_int_equal(conv_shape(&c), -1);
}

/* ---------------- max-pool ---------------- */

typedef struct {
    int n;
    PoolShape ps;
    double *x, *y, *dy;
} PoolCase;

static size_t pool_insize(const PoolCase *p)
{
    return (size_t)p->n * p->ps.C * p->ps.H * p->ps.W;
}

static size_t pool_outsize(const PoolCase *p)
{
    return (size_t)p->n * p->ps.C * p->ps.OH * p->ps.OW;
}

static double maxpool_loss(void *ctx)
{
    PoolCase *p = ctx;
    maxpool_forward_ref(p->y, p->x, p->n, &p->ps);
    return dot(p->y, p->dy, pool_outsize(p));
}

static double avgpool_loss(void *ctx)
{
    PoolCase *p = ctx;
    avgpool_forward_ref(p->y, p->x, p->n, &p->ps);
    return dot(p->y, p->dy, pool_outsize(p));
}

static PoolCase pool_make(int n, int C, int H, int W, int K, int S, int distinct)
{
    PoolCase p = {.n = n, .ps = {.C = C, .H = H, .W = W, .K = K, .S = S}};
    assert_int_equal(pool_shape(&p.ps), 0);
    Rng rng;
    rng_init(&rng, 7, 99, (uint64_t)(H * 100 + W * 10 + K + S));
    const size_t nx = pool_insize(&p), ny = pool_outsize(&p);
    p.x = dalloc(nx);
    if (distinct) /* values 1e-3 apart, so a 1e-6 step never changes a winner */
        for (size_t i = 0; i < nx; i++)
            p.x[i] = (double)((i * 7919) % nx) * 1e-3 - 0.5 * (double)nx * 1e-3;
    else
        fill_uniform(p.x, nx, &rng, -1, 1);
    round_to_float(p.x, nx);
    p.y = dalloc(ny);
    p.dy = drandom(ny, &rng, -1, 1);
    return p;
}

static void pool_free(PoolCase *p)
{
    free(p->x);
    free(p->y);
    free(p->dy);
}

static void maxpool_case(int n, int C, int H, int W, int K, int S)
{
    PoolCase p = pool_make(n, C, H, W, K, S, 1);
    printf("maxpool n=%d C=%d H=%d W=%d K=%d S=%d -> %dx%d\n", n, C, H, W, K, S, p.ps.OH,
           p.ps.OW);
    const size_t nx = pool_insize(&p), ny = pool_outsize(&p);
    double *dx = dalloc(nx);
    maxpool_backward_ref(dx, p.dy, p.x, n, &p.ps);
    check_fd("dx", p.x, nx, dx, maxpool_loss, &p, 1000);
    maxpool_loss(&p);

    float *xf = to_float(p.x, nx), *dyf = to_float(p.dy, ny), *yf = falloc(ny);
    int32_t *arg = calloc(ny, sizeof(int32_t));
    maxpool_forward(yf, arg, xf, n, &p.ps);
    check_close("fast forward y (exact)", yf, p.y, ny, 0, 0);
    /* the winner is an element of its window */
    for (size_t k = 0; k < ny; k++) {
        const int i = (int)(k % ((size_t)p.ps.OH * p.ps.OW)) / p.ps.OW;
        const int j = (int)(k % ((size_t)p.ps.OH * p.ps.OW)) % p.ps.OW;
        const int u = arg[k] / W, v = arg[k] % W;
        assert_true(u >= i * S && u < i * S + K && v >= j * S && v < j * S + K);
    }
    float *dxf = ffilled(nx, 0.5f);
    maxpool_backward(dxf, dyf, arg, n, &p.ps);
    if (S >= K) /* one term per input, plus the start: exact in float */
        check_added("fast backward dx (added, exact)", dxf, dx, 0.5, nx, 0, 0);
    else /* overlapping windows add several float terms */
        check_added("fast backward dx (added)", dxf, dx, 0.5, nx, 1e-6, 0);
    free(xf); free(dyf); free(yf); free(arg); free(dxf); free(dx);
    pool_free(&p);
}

static void test_maxpool(void **state)
{
    (void)state;
    maxpool_case(3, 4, 8, 6, 2, 2); /* the tutorial's kind */
    maxpool_case(2, 3, 7, 9, 2, 2); /* odd sizes: the floor rule drops the last row/column */
    maxpool_case(2, 3, 9, 7, 3, 2); /* overlapping windows */
    maxpool_case(2, 2, 9, 10, 3, 3);
    maxpool_case(2, 2, 6, 7, 2, 1); /* heavy overlap, generic path */
    maxpool_case(1, 2, 11, 11, 4, 3);
}

static void test_pool_shape_rules(void **state)
{
    (void)state;
    PoolShape p = {.C = 6, .H = 24, .W = 24, .K = 2, .S = 2};
    assert_int_equal(pool_shape(&p), 0);
    assert_int_equal(p.OH, 12);
    p = (PoolShape){.C = 1, .H = 7, .W = 8, .K = 3, .S = 2};
    assert_int_equal(pool_shape(&p), 0); /* floor((7-3)/2)+1 = 3, floor((8-3)/2)+1 = 3 */
    assert_int_equal(p.OH, 3);
    assert_int_equal(p.OW, 3);
    p = (PoolShape){.C = 1, .H = 2, .W = 8, .K = 3, .S = 2};
    assert_int_equal(pool_shape(&p), -1);
    p = (PoolShape){.C = 1, .H = 8, .W = 8, .K = 2, .S = 0};
    assert_int_equal(pool_shape(&p), -1);
}

/* Ties go to the first element in row-major order, as in PyTorch; a NaN wins,
 * and of two NaNs the later one (PyTorch's v > best || isnan(v) keeps taking
 * NaNs). The winner is recorded as its offset in the plane. */
static void test_maxpool_ties(void **state)
{
    (void)state;
    const float x[16] = {0, 0, 1, 2,   /* window 0: all zero -> winner 0 */
                         0, 0, 2, 2,   /* window 1: 2 at (0,3),(1,2),(1,3) -> 3 */
                         3, 1, NAN, 5, /* window 2: 3 at (2,0) and (3,1) -> 8 */
                         0, 3, 4, 4};  /* window 3: NaN at (2,2) -> 10 */
    PoolShape p = {.C = 1, .H = 4, .W = 4, .K = 2, .S = 2};
    assert_int_equal(pool_shape(&p), 0);
    float y[4];
    int32_t arg[4];
    maxpool_forward(y, arg, x, 1, &p);
    assert_int_equal(arg[0], 0);
    assert_int_equal(arg[1], 3);
    assert_int_equal(arg[2], 8);
    assert_int_equal(arg[3], 10);
    assert_true(isnan(y[3]));
    float dx[16] = {0}, dy[4] = {1, 2, 3, 4};
    maxpool_backward(dx, dy, arg, 1, &p);
    assert_true(dx[0] == 1 && dx[3] == 2 && dx[8] == 3 && dx[10] == 4);

    /* 3x3 windows, stride 2, on a 5x5 plane: four overlapping windows */
    const float z[25] = {1, 1, 1, 0, 0,
                         1, 1, 1, 0, 0,
                         7, 1, 7, NAN, 2,
                         -INFINITY, -INFINITY, -INFINITY, NAN, 9,
                         -INFINITY, -INFINITY, -INFINITY, 5, 9};
    PoolShape q = {.C = 1, .H = 5, .W = 5, .K = 3, .S = 2};
    assert_int_equal(pool_shape(&q), 0);
    assert_int_equal(q.OH, 2);
    float zy[4];
    int32_t za[4];
    maxpool_forward(zy, za, z, 1, &q);
    assert_int_equal(za[0], 10); /* rows 0-2, cols 0-2: the first 7, not the one at 12 */
    assert_int_equal(za[1], 13); /* rows 0-2, cols 2-4: the NaN beats the 7 before it */
    assert_true(isnan(zy[1]));
    assert_int_equal(za[2], 10); /* rows 2-4, cols 0-2: the same 7 wins a second window */
    assert_int_equal(za[3], 18); /* rows 2-4, cols 2-4: NaNs at 13 and 18: the later */
    assert_true(zy[0] == 7 && zy[2] == 7 && isnan(zy[3]));
    double zd[25], zyr[4];
    for (int i = 0; i < 25; i++)
        zd[i] = z[i];
    maxpool_forward_ref(zyr, zd, 1, &q);
    assert_true(zyr[0] == 7 && isnan(zyr[1]) && zyr[2] == 7 && isnan(zyr[3]));
    /* the input that wins two windows gets both gradients */
    float zdx[25] = {0}, zdy[4] = {1, 2, 4, 8};
    maxpool_backward(zdx, zdy, za, 1, &q);
    assert_true(zdx[10] == 5 && zdx[13] == 2 && zdx[18] == 8);
    double zdxr[25] = {0}, zdyr[4] = {1, 2, 4, 8};
    maxpool_backward_ref(zdxr, zdyr, zd, 1, &q);
    for (int i = 0; i < 25; i++)
        assert_true(zdxr[i] == zdx[i]);

    /* a window of -inf only: the first element, as PyTorch's start at -inf */
    const float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    PoolShape r = {.C = 1, .H = 2, .W = 2, .K = 2, .S = 2};
    assert_int_equal(pool_shape(&r), 0);
    float my;
    int32_t ma;
    maxpool_forward(&my, &ma, m, 1, &r);
    assert_int_equal(ma, 0);
    assert_true(isinf(my) && my < 0);
}

/* The fused ReLU + pool equals ReLU then pool, forward and backward, on data
 * full of the ties a ReLU makes (negative windows). The outputs differ at most
 * in the sign of a zero: pooling first keeps a window's largest -0.0 or
 * negative, which the ReLU turns into -0.0 or 0.0. */
static void relu_maxpool_case(int n, int C, int H, int W, int K, int S)
{
    PoolShape p = {.C = C, .H = H, .W = W, .K = K, .S = S};
    assert_int_equal(pool_shape(&p), 0);
    printf("relu + maxpool fused n=%d C=%d H=%d W=%d K=%d S=%d\n", n, C, H, W, K, S);
    const size_t nx = (size_t)n * C * H * W, ny = (size_t)n * C * p.OH * p.OW;
    Rng rng;
    rng_init(&rng, 17, 99, (uint64_t)(K * 10 + S));
    float *x = falloc(nx), *r = falloc(nx), *y1 = falloc(ny), *y2 = falloc(ny), *dy = falloc(ny);
    int32_t *a1 = calloc(ny, sizeof(int32_t)), *a2 = calloc(ny, sizeof(int32_t));
    for (size_t i = 0; i < nx; i++) /* a third negative, some exact ties */
        x[i] = (float)((int)rng_below(&rng, 9) - 3) * 0.25f;
    x[5] = NAN;
    x[nx / 2] = -0.0f;
    for (size_t i = 0; i < ny; i++)
        dy[i] = rng_uniform(&rng) - 0.5f;
    relu_forward(r, x, nx);
    maxpool_forward(y1, a1, r, n, &p);
    relu_maxpool_forward(y2, a2, x, n, &p);
    for (size_t i = 0; i < ny; i++)
        assert_true(same_float(y1[i], y2[i]) || (y1[i] == 0 && y2[i] == 0) ||
                    (isnan(y1[i]) && isnan(y2[i])));
    /* into a zeroed dx: the same bits */
    float *dr = falloc(nx), *dx1 = falloc(nx), *dx2 = falloc(nx);
    maxpool_backward(dr, dy, a1, n, &p);
    relu_backward(dx1, dr, r, nx);
    relu_maxpool_backward(dx2, dy, y2, a2, n, &p);
    assert_memory_equal(dx1, dx2, sizeof(float) * nx);
    /* adding to a non-zero dx */
    for (size_t i = 0; i < nx; i++)
        dx1[i] = dx2[i] = 0.125f;
    relu_backward(dx1, dr, r, nx);
    relu_maxpool_backward(dx2, dy, y2, a2, n, &p);
    if (S >= K) { /* one term per element: the same bits */
        assert_memory_equal(dx1, dx2, sizeof(float) * nx);
    } else { /* overlapping: the same terms, summed in another grouping */
        double *want = dalloc(nx);
        for (size_t i = 0; i < nx; i++)
            want[i] = dx1[i];
        check_close("fused dx vs relu then pool", dx2, want, nx, 1e-6, 0);
        free(want);
    }
    free(x); free(r); free(y1); free(y2); free(dy); free(a1); free(a2);
    free(dr); free(dx1); free(dx2);
}

static void test_relu_maxpool_fused(void **state)
{
    (void)state;
    relu_maxpool_case(3, 4, 8, 6, 2, 2);
    relu_maxpool_case(2, 3, 9, 7, 3, 2);
    relu_maxpool_case(2, 3, 9, 9, 3, 3);
}

/* ---------------- average pool ---------------- */

static void avgpool_case(int n, int C, int H, int W, int K, int S)
{
    PoolCase p = pool_make(n, C, H, W, K, S, 0);
    printf("avgpool n=%d C=%d H=%d W=%d K=%d S=%d -> %dx%d\n", n, C, H, W, K, S, p.ps.OH,
           p.ps.OW);
    const size_t nx = pool_insize(&p), ny = pool_outsize(&p);
    double *dx = dalloc(nx);
    avgpool_backward_ref(dx, p.dy, n, &p.ps);
    check_fd("dx", p.x, nx, dx, avgpool_loss, &p, 1000);
    avgpool_loss(&p);
    float *xf = to_float(p.x, nx), *dyf = to_float(p.dy, ny), *yf = falloc(ny);
    avgpool_forward(yf, xf, n, &p.ps);
    /* K*K float additions of values <= 1 and one division */
    check_close("fast forward y", yf, p.y, ny, 1e-6, 1e-7);
    float *dxf = ffilled(nx, -0.75f);
    avgpool_backward(dxf, dyf, n, &p.ps);
    check_added("fast backward dx (added)", dxf, dx, -0.75, nx, 1e-6, 1e-7);
    free(xf); free(dyf); free(yf); free(dxf); free(dx);
    pool_free(&p);
}

static void test_avgpool(void **state)
{
    (void)state;
    avgpool_case(3, 4, 8, 6, 2, 2);  /* LeNet-5's kind */
    avgpool_case(2, 3, 9, 7, 2, 2);  /* odd sizes: floor */
    avgpool_case(2, 3, 9, 7, 3, 2);  /* overlapping */
    avgpool_case(2, 2, 10, 9, 3, 3);

    /* PyTorch's arithmetic: the float sum in scan order, divided by K*K */
    const float x[9] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};
    PoolShape p = {.C = 1, .H = 3, .W = 3, .K = 3, .S = 3};
    assert_int_equal(pool_shape(&p), 0);
    float y, sum = 0.0f;
    for (int i = 0; i < 9; i++)
        sum += x[i];
    avgpool_forward(&y, x, 1, &p);
    assert_true(same_float(y, sum / 9.0f));
    float dx[9] = {0}, dy = 1.0f;
    avgpool_backward(dx, &dy, 1, &p);
    for (int i = 0; i < 9; i++)
        assert_true(same_float(dx[i], 1.0f / 9.0f));
}

/* ---------------- convolution -> ReLU -> max-pool, winners only ---------------- */

/* Backward through conv, ReLU and pool over the winners only equals the dense
 * route (relu_maxpool_backward, then conv2d_backward) within float rounding;
 * the dense route is itself checked against finite differences above. Both
 * start from the same non-zero gradients. */
static void conv_pool_case(int n, int C, int H, int W, int F, int K, int S, int P, int PK, int PS,
                           int want_dx, int bias)
{
    ConvShape cs = {.C = C, .H = H, .W = W, .F = F, .K = K, .S = S, .P = P};
    assert_int_equal(conv_shape(&cs), 0);
    PoolShape ps = {.C = F, .H = cs.OH, .W = cs.OW, .K = PK, .S = PS};
    assert_int_equal(pool_shape(&ps), 0);
    printf("conv_pool_backward n=%d C=%d H=%d W=%d F=%d K=%d S=%d P=%d, pool K=%d S=%d%s%s\n",
           n, C, H, W, F, K, S, P, PK, PS, want_dx ? "" : ", no dx", bias ? "" : ", no bias");
    const size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K;
    const size_t plane = (size_t)cs.OH * cs.OW, nc = (size_t)n * F * plane;
    const size_t ny = (size_t)n * F * ps.OH * ps.OW;
    Rng rng;
    rng_init(&rng, 23, 99, (uint64_t)(C * 100 + K * 10 + S + P));
    float *x = falloc(nx), *w = falloc(nw), *b = falloc(F);
    for (size_t i = 0; i < nx; i++)
        x[i] = rng_uniform(&rng) - 0.5f;
    for (size_t i = 0; i < nw; i++)
        w[i] = (rng_uniform(&rng) - 0.5f) * 0.5f;
    for (int i = 0; i < F; i++)
        b[i] = rng_uniform(&rng) - 0.5f;
    float *c = falloc(nc), *y = falloc(ny), *dy = falloc(ny);
    int32_t *arg = calloc(ny, sizeof(int32_t));
    float *fwd = falloc(conv2d_forward_floats(&cs)), *bwd = falloc(conv2d_backward_floats(&cs));
    engine_current()->conv2d_forward(c, fwd, x, w, bias ? b : NULL, n, &cs);
    relu_maxpool_forward(y, arg, c, n, &ps);
    size_t positive = 0, border = 0, repeated = 0;
    for (size_t i = 0; i < ny; i++) {
        dy[i] = rng_uniform(&rng) - 0.5f;
        if (!(y[i] > 0))
            continue;
        positive++;
        /* a winner whose conv window crosses the padded border */
        const int u0 = arg[i] / cs.OW * S - P, v0 = arg[i] % cs.OW * S - P;
        border += u0 < 0 || v0 < 0 || u0 + K > H || v0 + K > W;
        /* the same conv position winning the previous window too */
        repeated += i % ((size_t)ps.OH * ps.OW) != 0 && y[i - 1] > 0 && arg[i - 1] == arg[i];
    }
    printf("  %zu of %zu windows pass the ReLU; %zu winners cross the border, %zu repeat\n",
           positive, ny, border, repeated);
    assert_true(positive > 0 && positive < ny);
    if (P > 0)
        assert_true(border > 0);
    if (PS < PK)
        assert_true(repeated > 0);
    /* dense route */
    float *dc = falloc(nc), *dx1 = ffilled(nx, 0.25f), *dw1 = ffilled(nw, 0.5f),
          *db1 = ffilled(F, -1.0f);
    relu_maxpool_backward(dc, dy, y, arg, n, &ps);
    engine_current()->conv2d_backward(want_dx ? dx1 : NULL, dw1, bias ? db1 : NULL, bwd, dc, x, w, n, &cs);
    /* winners only */
    float *dx2 = ffilled(nx, 0.25f), *dw2 = ffilled(nw, 0.5f), *db2 = ffilled(F, -1.0f);
    engine_current()->conv_pool_backward(want_dx ? dx2 : NULL, dw2, bias ? db2 : NULL, dy, y, arg, x, w, n, &cs,
                       &ps);
    double *ref = dalloc(nx > nw ? nx : nw);
    for (size_t i = 0; i < nw; i++)
        ref[i] = dw1[i];
    check_close("dw (winners vs dense, added)", dw2, ref, nw, 1e-5, 1e-6);
    for (int i = 0; i < F; i++)
        ref[i] = db1[i];
    check_close("db (winners vs dense, added)", db2, ref, F, 1e-5, 1e-6);
    if (!bias)
        for (int i = 0; i < F; i++)
            assert_true(db2[i] == -1.0f);
    for (size_t i = 0; i < nx; i++)
        ref[i] = dx1[i];
    check_close(want_dx ? "dx (winners vs dense, added)" : "dx untouched", dx2, ref, nx, 1e-5,
                1e-6);
    free(ref); free(x); free(w); free(b); free(c); free(y); free(dy); free(arg); free(fwd);
    free(bwd); free(dc); free(dx1); free(dw1); free(db1); free(dx2); free(dw2); free(db2);
}

static void test_conv_pool_backward(void **state)
{
    (void)state;
    /* the tutorial's layers */
    conv_pool_case(3, 1, 28, 28, 6, 5, 1, 0, 2, 2, 0, 1);
    conv_pool_case(4, 6, 12, 12, 12, 5, 1, 0, 2, 2, 1, 1);
    conv_pool_case(2, 3, 11, 9, 4, 3, 1, 0, 2, 2, 1, 1);
    /* one input channel with dx, and with padding (the generic paths) */
    conv_pool_case(2, 1, 12, 12, 4, 5, 1, 0, 2, 2, 1, 1);
    conv_pool_case(2, 1, 12, 12, 4, 5, 1, 2, 2, 2, 0, 1);
    /* stride and padding, overlapping pools */
    conv_pool_case(2, 3, 13, 11, 4, 3, 2, 1, 3, 2, 1, 1);
    conv_pool_case(2, 2, 8, 7, 3, 3, 1, 1, 2, 1, 1, 1);
    conv_pool_case(2, 2, 11, 10, 3, 5, 2, 2, 2, 2, 1, 0);
    conv_pool_case(2, 2, 10, 10, 3, 7, 1, 3, 2, 1, 1, 1);
    conv_pool_case(2, 4, 9, 9, 3, 1, 1, 0, 3, 3, 1, 1);
    /* more than one run of gathered winners (33x33 windows) */
    conv_pool_case(1, 1, 36, 36, 2, 3, 1, 0, 2, 1, 1, 1);
    /* a filter larger than the local accumulator (170*5*5 > 4096 weights) */
    conv_pool_case(1, 170, 9, 9, 3, 5, 1, 0, 2, 2, 1, 1);
}

/* ---------------- ReLU ---------------- */

typedef struct {
    size_t n;
    double *x, *y, *dy;
} ReluCase;

static double relu_loss(void *ctx)
{
    ReluCase *r = ctx;
    relu_forward_ref(r->y, r->x, r->n);
    return dot(r->y, r->dy, r->n);
}

static void test_relu(void **state)
{
    (void)state;
    printf("relu\n");
    ReluCase r = {1000, 0, 0, 0};
    Rng rng;
    rng_init(&rng, 3, 99, 2);
    r.x = malloc(sizeof(double) * r.n);
    r.y = malloc(sizeof(double) * r.n);
    r.dy = malloc(sizeof(double) * r.n);
    fill_uniform(r.x, r.n, &rng, -1, 1);
    for (size_t i = 0; i < r.n; i++) /* keep away from the kink at 0 */
        if (fabs(r.x[i]) < 1e-3)
            r.x[i] = 0.5;
    fill_uniform(r.dy, r.n, &rng, -1, 1);
    round_to_float(r.x, r.n);
    round_to_float(r.dy, r.n);
    relu_forward_ref(r.y, r.x, r.n);
    double *dx = calloc(r.n, sizeof(double));
    relu_backward_ref(dx, r.dy, r.y, r.n);
    check_fd("dx", r.x, r.n, dx, relu_loss, &r, 1000);
    relu_loss(&r);
    float *xf = to_float(r.x, r.n), *dyf = to_float(r.dy, r.n), *yf = calloc(r.n, sizeof(float)),
          *dxf = ffilled(r.n, 0.5f);
    relu_forward(yf, xf, r.n);
    check_close("fast forward y (exact)", yf, r.y, r.n, 0, 0);
    relu_backward(dxf, dyf, yf, r.n);
    check_added("fast backward dx (added)", dxf, dx, 0.5, r.n, 1e-7, 0);
    /* a NaN passes forward (as in PyTorch) and stops the gradient */
    float nanin[3] = {NAN, -1.0f, 2.0f}, out[3], g[3] = {1, 1, 1}, dg[3] = {0, 0, 0};
    relu_forward(out, nanin, 3);
    assert_true(isnan(out[0]) && out[1] == 0.0f && out[2] == 2.0f);
    relu_backward(dg, g, out, 3);
    assert_true(dg[0] == 0.0f && dg[1] == 0.0f && dg[2] == 1.0f);
    free(xf); free(dyf); free(yf); free(dxf); free(dx); free(r.x); free(r.y); free(r.dy);
}

/* ---------------- linear ---------------- */

typedef struct {
    int n, I, O;
    double *x, *w, *b, *y, *dy; /* b NULL: no bias */
} LinCase;

static double lin_loss(void *ctx)
{
    LinCase *l = ctx;
    linear_forward_ref(l->y, l->x, l->w, l->b, l->n, l->I, l->O);
    return dot(l->y, l->dy, (size_t)l->n * l->O);
}

static void lin_case(int n, int I, int O, int bias)
{
    printf("linear n=%d I=%d O=%d%s\n", n, I, O, bias ? "" : ", no bias");
    LinCase l = {n, I, O, 0, 0, 0, 0, 0};
    size_t nx = (size_t)n * I, nw = (size_t)O * I, ny = (size_t)n * O;
    Rng rng;
    rng_init(&rng, 5, 99, (uint64_t)I);
    l.x = drandom(nx, &rng, -1, 1);
    l.w = drandom(nw, &rng, -0.2, 0.2);
    l.b = bias ? drandom(O, &rng, -0.2, 0.2) : NULL;
    l.y = dalloc(ny);
    l.dy = drandom(ny, &rng, -1, 1);
    double *dx = dalloc(nx), *dw = dalloc(nw), *db = dalloc(O);
    linear_backward_ref(dx, dw, bias ? db : NULL, l.dy, l.x, l.w, n, I, O);
    check_fd("dx", l.x, nx, dx, lin_loss, &l, 200);
    check_fd("dw", l.w, nw, dw, lin_loss, &l, 200);
    if (bias)
        check_fd("db", l.b, O, db, lin_loss, &l, 200);
    lin_loss(&l);

    float *xf = to_float(l.x, nx), *wf = to_float(l.w, nw), *bf = bias ? to_float(l.b, O) : NULL,
          *dyf = to_float(l.dy, ny), *yf = ffilled(ny, 123.0f);
    float *lin_scratch = falloc(linear_scratch_floats(n, I, O));
    engine_current()->linear_forward(yf, lin_scratch, xf, wf, bf, n, I, O);
    free(lin_scratch);
    check_close("fast forward y", yf, l.y, ny, 1e-5, 1e-6);
    float *dxf = ffilled(nx, -0.5f), *dwf = ffilled(nw, 1.0f), *dbf = ffilled(O, 0.25f);
    engine_current()->linear_backward(dxf, dwf, bias ? dbf : NULL, dyf, xf, wf, n, I, O);
    check_added("fast backward dx (added)", dxf, dx, -0.5, nx, 1e-5, 1e-6);
    check_added("fast backward dw (added)", dwf, dw, 1.0, nw, 1e-5, 1e-6);
    check_added(bias ? "fast backward db (added)" : "db untouched", dbf, db, 0.25, O, 1e-5,
                1e-6);
    free(xf); free(wf); free(bf); free(dyf); free(yf); free(dxf); free(dwf); free(dbf);
    free(dx); free(dw); free(db); free(l.x); free(l.w); free(l.b); free(l.y); free(l.dy);
}

static void test_linear(void **state)
{
    (void)state;
    lin_case(5, 192, 120, 1);
    lin_case(3, 60, 10, 1);
    lin_case(4, 33, 7, 0);
}

/* ---------------- batch normalisation ---------------- */

typedef struct {
    int n, C, L;
    double eps;
    double *x, *gamma, *beta, *y, *dy;
} BnCase;

static double bn_loss(void *ctx)
{
    BnCase *b = ctx;
    batchnorm_forward_train_ref(b->y, b->x, b->gamma, b->beta, b->n, b->C, b->L, b->eps);
    return dot(b->y, b->dy, (size_t)b->n * b->C * b->L);
}

static void bn_case(int n, int C, int L)
{
    printf("batchnorm n=%d C=%d L=%d (%s)\n", n, C, L, L == 1 ? "BatchNorm1d" : "BatchNorm2d");
    BnCase b = {n, C, L, 1e-5, 0, 0, 0, 0, 0};
    const size_t nx = (size_t)n * C * L, count = (size_t)n * L;
    Rng rng;
    rng_init(&rng, 31, 99, (uint64_t)(n * 100 + L));
    /* each channel off-centre and with its own spread */
    b.x = dalloc(nx);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++)
            for (int l = 0; l < L; l++)
                b.x[((size_t)s * C + c) * L + l] =
                    (float)(0.5 * c - 1.0 + (0.5 + 0.3 * c) * (2 * rng_uniform(&rng) - 1));
    b.gamma = drandom(C, &rng, 0.5, 1.5);
    b.beta = drandom(C, &rng, -0.5, 0.5);
    b.y = dalloc(nx);
    b.dy = drandom(nx, &rng, -1, 1);

    /* the reference backward, through the batch statistics */
    double *dx = dalloc(nx), *dgamma = dalloc(C), *dbeta = dalloc(C);
    batchnorm_backward_ref(dx, dgamma, dbeta, b.dy, b.x, b.gamma, n, C, L, b.eps);
    check_fd("dx", b.x, nx, dx, bn_loss, &b, 300);
    check_fd("dgamma", b.gamma, C, dgamma, bn_loss, &b, 100);
    check_fd("dbeta", b.beta, C, dbeta, bn_loss, &b, 100);
    bn_loss(&b);

    /* the statistics, straight from the definition */
    double *m = dalloc(C), *var = dalloc(C), *is = dalloc(C), *vu = dalloc(C);
    for (int c = 0; c < C; c++) {
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++)
                m[c] += b.x[((size_t)s * C + c) * L + l] / (double)count;
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++) {
                const double d = b.x[((size_t)s * C + c) * L + l] - m[c];
                var[c] += d * d / (double)count;
            }
        is[c] = 1.0 / sqrt(var[c] + b.eps);
        vu[c] = var[c] * (double)count / (double)(count - 1);
    }

    float *xf = to_float(b.x, nx), *gf = to_float(b.gamma, C), *bf = to_float(b.beta, C),
          *dyf = to_float(b.dy, nx), *yf = falloc(nx);
    float *mean = falloc(C), *invstd = falloc(C), *varu = falloc(C);
    batchnorm_forward_train(yf, mean, invstd, varu, xf, gf, bf, n, C, L, b.eps);
    check_close("mean", mean, m, C, 1e-7, 1e-7);
    check_close("invstd", invstd, is, C, 1e-7, 0);
    check_close("unbiased variance", varu, vu, C, 1e-7, 0);
    /* |y| up to a few: a few ulps of the largest */
    check_close("fast forward y (training)", yf, b.y, nx, 1e-6, 1e-6);

    float *dxf = ffilled(nx, 0.25f), *dgf = ffilled(C, -0.5f), *dbf = ffilled(C, 1.0f);
    batchnorm_backward(dxf, dgf, dbf, dyf, xf, mean, invstd, gf, n, C, L);
    check_added("fast backward dx (added)", dxf, dx, 0.25, nx, 1e-5, 1e-6);
    check_added("fast backward dgamma (added)", dgf, dgamma, -0.5, C, 1e-6, 1e-6);
    check_added("fast backward dbeta (added)", dbf, dbeta, 1.0, C, 1e-6, 1e-6);

    /* evaluation: the running statistics instead of the batch's */
    float *rm = falloc(C), *rv = falloc(C);
    for (int c = 0; c < C; c++) {
        rm[c] = (float)(0.3 * c - 0.2);
        rv[c] = (float)(0.5 + 0.25 * c);
    }
    double *ye = dalloc(nx);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++)
            for (int l = 0; l < L; l++) {
                const size_t k = ((size_t)s * C + c) * L + l;
                ye[k] = (b.x[k] - rm[c]) / sqrt((double)rv[c] + b.eps) * b.gamma[c] + b.beta[c];
            }
    batchnorm_forward_eval(yf, xf, gf, bf, rm, rv, n, C, L, b.eps);
    check_close("fast forward y (evaluation)", yf, ye, nx, 1e-6, 1e-6);

    /* running statistics from PyTorch's start (0, 1): momentum 0.1, then the
     * cumulative average (momentum=None) over two micro-batches */
    for (int c = 0; c < C; c++) {
        rm[c] = 0.0f;
        rv[c] = 1.0f;
    }
    batchnorm_update_running(rm, rv, mean, varu, C, 0.1);
    double *want = dalloc(C);
    for (int c = 0; c < C; c++)
        want[c] = 0.1 * m[c];
    check_close("running mean (momentum 0.1)", rm, want, C, 1e-7, 1e-8);
    for (int c = 0; c < C; c++)
        want[c] = 0.9 + 0.1 * vu[c];
    check_close("running var (momentum 0.1, unbiased)", rv, want, C, 1e-7, 0);
    float *mean2 = falloc(C), *varu2 = falloc(C);
    for (int c = 0; c < C; c++) {
        mean2[c] = (float)(0.5 * c);
        varu2[c] = (float)(2.0 + c);
    }
    batchnorm_update_running(rm, rv, mean, varu, C, 1.0); /* batches = 1 */
    batchnorm_update_running(rm, rv, mean2, varu2, C, 0.5); /* batches = 2 */
    for (int c = 0; c < C; c++)
        want[c] = ((double)mean[c] + mean2[c]) / 2;
    check_close("running mean (cumulative, 2 batches)", rm, want, C, 1e-7, 1e-8);
    for (int c = 0; c < C; c++)
        want[c] = ((double)varu[c] + varu2[c]) / 2;
    check_close("running var (cumulative, 2 batches)", rv, want, C, 1e-7, 0);

    free(want); free(mean2); free(varu2); free(rm); free(rv); free(ye);
    free(dxf); free(dgf); free(dbf); free(mean); free(invstd); free(varu);
    free(xf); free(gf); free(bf); free(dyf); free(yf);
    free(m); free(var); free(is); free(vu); free(dx); free(dgamma); free(dbeta);
    free(b.x); free(b.gamma); free(b.beta); free(b.y); free(b.dy);
}

static void test_batchnorm(void **state)
{
    (void)state;
    bn_case(3, 4, 15); /* BatchNorm2d on 5x3 maps */
    bn_case(6, 5, 1);  /* BatchNorm1d */
    bn_case(2, 3, 64); /* 2d, 8x8 maps */

    /* one value per channel: variance 0, the output is beta, the "unbiased"
     * variance is the biased one (0) rather than a division by zero */
    float x[2] = {3.0f, -2.0f}, g[2] = {2.0f, 2.0f}, be[2] = {0.5f, -0.5f}, y[2];
    float m[2], is[2], vu[2];
    batchnorm_forward_train(y, m, is, vu, x, g, be, 1, 2, 1, 1e-5);
    assert_true(m[0] == 3.0f && m[1] == -2.0f && vu[0] == 0.0f && vu[1] == 0.0f);
    assert_true(y[0] == 0.5f && y[1] == -0.5f);
}

/* ---------------- dropout ---------------- */

static void test_dropout(void **state)
{
    (void)state;
    printf("dropout\n");
    const int n = 4;
    const size_t count = 25000, total = (size_t)n * count;
    const uint64_t seed = 1234, first = 640;
    const int layer = 7;
    const int64_t step = 12;
    float *x = falloc(total), *y = falloc(total), *y2 = falloc(total);
    uint8_t *mask = malloc(total), *mask2 = malloc(total);
    Rng rng;
    rng_init(&rng, 41, 99, 0);
    for (size_t i = 0; i < total; i++)
        x[i] = rng_uniform(&rng) + 0.5f; /* never zero */

    const double ps[3] = {0.1, 0.3, 0.5};
    for (int t = 0; t < 3; t++) {
        const double p = ps[t];
        const float scale = (float)(1.0 / (1.0 - p));
        dropout_forward(y, mask, x, n, count, p, seed, layer, step, first);
        size_t kept = 0;
        for (size_t i = 0; i < total; i++) {
            assert_true(mask[i] == 0 || mask[i] == 1);
            kept += mask[i];
            assert_true(same_float(y[i], mask[i] ? x[i] * scale : 0.0f));
        }
        /* the kept fraction: 1 - p within 5 standard deviations (about 0.007) */
        const double frac = (double)kept / (double)total;
        const double sd = sqrt(p * (1 - p) / (double)total);
        printf("  p=%.1f kept %.5f (1-p = %.1f, tolerance %.5f)\n", p, frac, 1 - p, 5 * sd);
        assert_true(fabs(frac - (1 - p)) <= 5 * sd);
    }

    /* the stream is (seed, 3 + 256 * layer, step * 2^32 + position), draw k for element k */
    const double p = 0.5;
    dropout_forward(y, mask, x, n, count, p, seed, layer, step, first);
    for (int s = 0; s < n; s++) {
        Rng r;
        rng_init(&r, seed, RNG_STREAM_DROPOUT + 256 * (uint64_t)layer,
                 ((uint64_t)step << 32) + first + (uint64_t)s);
        for (size_t k = 0; k < count; k++)
            assert_int_equal(mask[(size_t)s * count + k], rng_uniform(&r) >= 0.5f);
    }
    /* the same key, the same mask; one sample at a time, the same masks */
    dropout_forward(y2, mask2, x, n, count, p, seed, layer, step, first);
    assert_memory_equal(mask, mask2, total);
    assert_memory_equal(y, y2, sizeof(float) * total);
    for (int s = 0; s < n; s++)
        dropout_forward(y2 + (size_t)s * count, mask2 + (size_t)s * count, x + (size_t)s * count,
                        1, count, p, seed, layer, step, first + (uint64_t)s);
    assert_memory_equal(mask, mask2, total);
    /* another step, position, layer or seed: another mask (about half differ) */
    for (int v = 0; v < 4; v++) {
        dropout_forward(y2, mask2, x, n, count, p, seed + (v == 3), layer + (v == 2),
                        step + (v == 0), first + (v == 1));
        size_t differ = 0;
        for (size_t i = 0; i < total; i++)
            differ += mask[i] != mask2[i];
        printf("  other %s: %.4f of the mask differs\n",
               (const char *[]){"step", "position", "layer", "seed"}[v],
               (double)differ / (double)total);
        assert_true(differ > total * 2 / 5 && differ < total * 3 / 5);
    }

    /* backward adds dy * mask * scale */
    float *dy = falloc(total), *dx = ffilled(total, 0.25f);
    for (size_t i = 0; i < total; i++)
        dy[i] = rng_uniform(&rng) - 0.5f;
    dropout_backward(dx, dy, mask, n, count, p);
    for (size_t i = 0; i < total; i++)
        assert_true(same_float(dx[i], 0.25f + dy[i] * (mask[i] ? 2.0f : 0.0f)));

    /* p = 0 keeps everything unchanged; p = 1 drops everything */
    dropout_forward(y, mask, x, n, count, 0.0, seed, layer, step, first);
    assert_memory_equal(y, x, sizeof(float) * total);
    for (size_t i = 0; i < total; i++)
        assert_int_equal(mask[i], 1);
    dropout_forward(y, mask, x, n, count, 1.0, seed, layer, step, first);
    for (size_t i = 0; i < total; i++)
        assert_true(mask[i] == 0 && y[i] == 0.0f);
    for (size_t i = 0; i < total; i++)
        dx[i] = 0.25f;
    dropout_backward(dx, dy, mask, n, count, 1.0);
    for (size_t i = 0; i < total; i++)
        assert_true(dx[i] == 0.25f);
    free(x); free(y); free(y2); free(mask); free(mask2); free(dy); free(dx);
}

/* ---------------- softmax cross-entropy ---------------- */

typedef struct {
    int n, K;
    double *z, *p;
    const uint8_t *labels;
} XentCase;

static double xent_loss(void *ctx)
{
    XentCase *x = ctx;
    return softmax_xent_forward_ref(x->p, x->z, x->labels, x->n, x->K) / x->n;
}

static void test_softmax_xent(void **state)
{
    (void)state;
    printf("softmax cross-entropy\n");
    const uint8_t labels[6] = {0, 9, 3, 3, 7, 1};
    XentCase x = {6, 10, 0, 0, labels};
    size_t nz = 60;
    Rng rng;
    rng_init(&rng, 11, 99, 3);
    x.z = malloc(sizeof(double) * nz);
    x.p = malloc(sizeof(double) * nz);
    fill_uniform(x.z, nz, &rng, -4, 4);
    x.z[10] = 80.0; /* row 1 (label 9): a huge wrong logit; exp must stay finite */
    x.z[0] = 10.0;  /* row 0 (label 0): surely correct */
    round_to_float(x.z, nz);
    double loss = xent_loss(&x);
    double *dz = calloc(nz, sizeof(double));
    softmax_xent_backward_ref(dz, x.p, labels, x.n, x.K, 1.0 / x.n);
    check_fd("dz", x.z, nz, dz, xent_loss, &x, 1000);

    float *zf = to_float(x.z, nz), *pf = calloc(nz, sizeof(float)), *dzf = ffilled(nz, 0.5f);
    int correct = 0;
    double lf = softmax_xent_forward(pf, &correct, zf, labels, x.n, x.K) / x.n;
    printf("  loss fast %.12f ref %.12f\n", lf, loss);
    assert_true(fabs(lf - loss) < 1e-12 * fmax(1.0, fabs(loss)));
    xent_loss(&x);
    check_close("fast probs", pf, x.p, nz, 1e-6, 1e-7);
    softmax_xent_backward(dzf, pf, labels, x.n, x.K, 1.0f / x.n);
    check_added("fast backward dz (added)", dzf, dz, 0.5, nz, 1e-6, 1e-7);
    int want = 0;
    for (int s = 0; s < x.n; s++) {
        int best = 0;
        for (int k = 1; k < x.K; k++)
            if (x.z[s * x.K + k] > x.z[s * x.K + best])
                best = k;
        want += best == labels[s];
    }
    assert_int_equal(correct, want);
    assert_true(want >= 1);
    assert_true(loss > 80.0 / x.n); /* row 1 alone contributes about 84 */
    free(zf); free(pf); free(dzf); free(dz); free(x.z); free(x.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_tutorial_shapes),
        cmocka_unit_test(test_conv_stride1),
        cmocka_unit_test(test_conv_stride_padding),
        cmocka_unit_test(test_conv_one_channel),
        cmocka_unit_test(test_conv_shape_rules),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_pool_shape_rules),
        cmocka_unit_test(test_maxpool_ties),
        cmocka_unit_test(test_relu_maxpool_fused),
        cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_conv_pool_backward),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_softmax_xent),
    };
    /* the convolutions and linear layers in both engines (layers.h), the
     * native one on every kernel path this CPU has (isa.h): each against the
     * double references */
    int rc = 0;
    static const char *const runs[][2] = {
        {"native", "avx512"}, {"native", "avx2"}, {"native", "generic"}, {"openblas", ""}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        if (runs[r][1][0]) {
            setenv("DPCNN_ISA", runs[r][1], 1);
            if (isa_select_again() < 0) {
                printf("==== the %s path: not on this CPU\n", runs[r][1]);
                continue;
            }
        }
        engine_select(runs[r][0]);
        char name[64];
        snprintf(name, sizeof name, "%s %s", runs[r][0], runs[r][1]);
        printf("==== the %s engine%s%s\n", runs[r][0], runs[r][1][0] ? ", path " : "", runs[r][1]);
        rc |= _cmocka_run_group_tests(name, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    }
    return rc;
}
