/* Every layer, twice over:
 *  1. its double-precision reference backward equals central finite
 *     differences of its reference forward (the math is right);
 *  2. its fast float kernels equal the reference within float rounding,
 *     forward and backward, and backward adds into what was there. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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

/* ---------------- convolution ---------------- */

typedef struct {
    int n, C, H, W, F, K;
    double *x, *w, *b, *y, *dy;
} ConvCase;

static size_t conv_ysize(const ConvCase *c)
{
    return (size_t)c->n * c->F * (c->H - c->K + 1) * (c->W - c->K + 1);
}

static double conv_loss(void *ctx)
{
    ConvCase *c = ctx;
    conv2d_forward_ref(c->y, c->x, c->w, c->b, c->n, c->C, c->H, c->W, c->F, c->K);
    return dot(c->y, c->dy, conv_ysize(c));
}

static void conv_case(int n, int C, int H, int W, int F, int K, int want_dx)
{
    printf("conv2d n=%d C=%d H=%d W=%d F=%d K=%d\n", n, C, H, W, F, K);
    Rng rng;
    rng_init(&rng, 42, 99, (uint64_t)(C * 100 + F));
    ConvCase c = {n, C, H, W, F, K, 0, 0, 0, 0, 0};
    size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K, ny = conv_ysize(&c);
    c.x = malloc(sizeof(double) * nx);
    c.w = malloc(sizeof(double) * nw);
    c.b = malloc(sizeof(double) * F);
    c.y = malloc(sizeof(double) * ny);
    c.dy = malloc(sizeof(double) * ny);
    fill_uniform(c.x, nx, &rng, -1, 1);
    fill_uniform(c.w, nw, &rng, -0.5, 0.5);
    fill_uniform(c.b, F, &rng, -0.5, 0.5);
    fill_uniform(c.dy, ny, &rng, -1, 1);
    round_to_float(c.x, nx);
    round_to_float(c.w, nw);
    round_to_float(c.b, F);
    round_to_float(c.dy, ny);

    double *dx = calloc(nx, sizeof(double)), *dw = calloc(nw, sizeof(double)),
           *db = calloc(F, sizeof(double));
    conv2d_backward_ref(dx, dw, db, c.dy, c.x, c.w, n, C, H, W, F, K);
    check_fd("dx", c.x, nx, dx, conv_loss, &c, 200);
    check_fd("dw", c.w, nw, dw, conv_loss, &c, 200);
    check_fd("db", c.b, F, db, conv_loss, &c, 200);
    conv_loss(&c); /* leaves the reference y */

    /* Fast kernel on the same (float-exact) values. */
    float *xf = to_float(c.x, nx), *wf = to_float(c.w, nw), *bf = to_float(c.b, F),
          *dyf = to_float(c.dy, ny);
    float *yf = calloc(ny, sizeof(float));
    float *col = calloc(conv2d_col_floats(n, C, H, W, K), sizeof(float));
    float *tmp = calloc(conv2d_tmp_floats(n, C, H, W, F, K), sizeof(float));
    conv2d_forward(yf, col, xf, wf, bf, n, C, H, W, F, K);
    /* each output sums C*K*K products of magnitude <= 0.5: a few ulps of that */
    check_close("fast forward y", yf, c.y, ny, 1e-5, 1e-6);

    /* backward adds: start from known values and subtract them back out */
    float *dxf = malloc(sizeof(float) * nx), *dwf = malloc(sizeof(float) * nw),
          *dbf = malloc(sizeof(float) * F);
    for (size_t i = 0; i < nx; i++)
        dxf[i] = 0.25f;
    for (size_t i = 0; i < nw; i++)
        dwf[i] = 0.5f;
    for (int i = 0; i < F; i++)
        dbf[i] = -1.0f;
    conv2d_backward(want_dx ? dxf : NULL, dwf, dbf, tmp, dyf, col, wf, n, C, H, W, F, K);
    double *want = malloc(sizeof(double) * (nx > nw ? nx : nw));
    if (want_dx) {
        for (size_t i = 0; i < nx; i++)
            want[i] = dx[i] + 0.25;
        check_close("fast backward dx (added)", dxf, want, nx, 1e-5, 1e-6);
    } else {
        for (size_t i = 0; i < nx; i++)
            assert_true(dxf[i] == 0.25f);
    }
    for (size_t i = 0; i < nw; i++)
        want[i] = dw[i] + 0.5;
    /* dw sums n*OH*OW products: the tolerance grows with that count */
    check_close("fast backward dw (added)", dwf, want, nw, 1e-5, 1e-6);
    for (int i = 0; i < F; i++)
        want[i] = db[i] - 1.0;
    check_close("fast backward db (added)", dbf, want, F, 1e-5, 1e-6);

    free(want); free(dxf); free(dwf); free(dbf); free(col); free(tmp); free(yf);
    free(xf); free(wf); free(bf); free(dyf); free(dx); free(dw); free(db);
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.dy);
}

static void test_conv1_shape(void **state)
{
    (void)state;
    conv_case(3, 1, 28, 28, 6, 5, 0);
}

static void test_conv2_shape(void **state)
{
    (void)state;
    conv_case(4, 6, 12, 12, 12, 5, 1);
}

static void test_conv_odd_shape(void **state)
{
    (void)state;
    conv_case(2, 3, 9, 7, 4, 3, 1);
}

/* ---------------- max-pool ---------------- */

typedef struct {
    int n, C, H, W;
    double *x, *y, *dy;
} PoolCase;

static double pool_loss(void *ctx)
{
    PoolCase *p = ctx;
    maxpool2_forward_ref(p->y, p->x, p->n, p->C, p->H, p->W);
    return dot(p->y, p->dy, (size_t)p->n * p->C * (p->H / 2) * (p->W / 2));
}

static void test_maxpool(void **state)
{
    (void)state;
    printf("maxpool2\n");
    PoolCase p = {3, 4, 8, 6, 0, 0, 0};
    size_t nx = (size_t)p.n * p.C * p.H * p.W, ny = nx / 4;
    Rng rng;
    rng_init(&rng, 7, 99, 1);
    p.x = malloc(sizeof(double) * nx);
    p.y = malloc(sizeof(double) * ny);
    p.dy = malloc(sizeof(double) * ny);
    /* distinct values at least 1e-3 apart, so a 1e-6 step never changes a winner */
    for (size_t i = 0; i < nx; i++)
        p.x[i] = (double)((i * 7919) % nx) * 1e-3 - 0.5 * nx * 1e-3;
    fill_uniform(p.dy, ny, &rng, -1, 1);
    round_to_float(p.x, nx);
    round_to_float(p.dy, ny);
    double *dx = calloc(nx, sizeof(double));
    maxpool2_backward_ref(dx, p.dy, p.x, p.n, p.C, p.H, p.W);
    check_fd("dx", p.x, nx, dx, pool_loss, &p, 1000);
    pool_loss(&p);

    float *xf = to_float(p.x, nx), *dyf = to_float(p.dy, ny), *yf = calloc(ny, sizeof(float));
    int32_t *arg = calloc(ny, sizeof(int32_t));
    maxpool2_forward(yf, arg, xf, p.n, p.C, p.H, p.W);
    check_close("fast forward y (exact)", yf, p.y, ny, 0, 0);
    float *dxf = calloc(nx, sizeof(float));
    maxpool2_backward(dxf, dyf, arg, p.n, p.C, p.H, p.W);
    check_close("fast backward dx (exact)", dxf, dx, nx, 0, 0);
    free(xf); free(dyf); free(yf); free(arg); free(dxf); free(dx);
    free(p.x); free(p.y); free(p.dy);
}

/* Ties go to the first element in row-major order, as in PyTorch; NaN wins.
 * The winner is recorded as its offset in the 4x4 plane. */
static void test_maxpool_ties(void **state)
{
    (void)state;
    const float x[16] = {0, 0, 1, 2,  /* window 0: all zero -> winner 0 */
                         0, 0, 2, 2,  /* window 1: 2 at (0,1),(1,0),(1,1) -> 1 */
                         3, 1, NAN, 5, /* window 2: 3 at (0,0) and (1,1) -> 0 */
                         0, 3, 4, 4}; /* window 3: NaN at (0,0) -> 0 */
    float y[4];
    int32_t arg[4];
    maxpool2_forward(y, arg, x, 1, 1, 4, 4);
    assert_int_equal(arg[0], 0);  /* window (0,0): first of four zeros */
    assert_int_equal(arg[1], 3);  /* window (0,1): first of three 2s, at row 0 col 3 */
    assert_int_equal(arg[2], 8);  /* window (1,0): first 3, at row 2 col 0 */
    assert_int_equal(arg[3], 10); /* window (1,1): the NaN at row 2 col 2 */
    assert_true(isnan(y[3]));
    float dx[16] = {0}, dy[4] = {1, 2, 3, 4};
    maxpool2_backward(dx, dy, arg, 1, 1, 4, 4);
    assert_true(dx[0] == 1 && dx[3] == 2 && dx[8] == 3 && dx[10] == 4);
}

/* The fused ReLU + pool equals ReLU then pool, bit for bit, forward and
 * backward, on data full of the ties a ReLU makes (negative windows). */
static void test_relu_maxpool_fused(void **state)
{
    (void)state;
    const int n = 3, C = 4, H = 8, W = 6;
    const size_t nx = (size_t)n * C * H * W, ny = nx / 4;
    Rng rng;
    rng_init(&rng, 17, 99, 5);
    float *x = malloc(sizeof(float) * nx), *r = malloc(sizeof(float) * nx);
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    float *dy = malloc(sizeof(float) * ny);
    int32_t *a1 = malloc(sizeof(int32_t) * ny), *a2 = malloc(sizeof(int32_t) * ny);
    for (size_t i = 0; i < nx; i++) /* a third negative, some exact ties */
        x[i] = (float)((int)rng_below(&rng, 9) - 3) * 0.25f;
    x[5] = NAN;
    for (size_t i = 0; i < ny; i++)
        dy[i] = rng_uniform(&rng) - 0.5f;
    relu_forward(r, x, nx);
    maxpool2_forward(y1, a1, r, n, C, H, W);
    relu_maxpool2_forward(y2, a2, x, n, C, H, W);
    for (size_t i = 0; i < ny; i++)
        assert_true(memcmp(&y1[i], &y2[i], sizeof(float)) == 0 || (y1[i] == 0 && y2[i] == 0) ||
                    (isnan(y1[i]) && isnan(y2[i])));
    float *dr = calloc(nx, sizeof(float)), *dx1 = calloc(nx, sizeof(float)),
          *dx2 = calloc(nx, sizeof(float));
    maxpool2_backward(dr, dy, a1, n, C, H, W);
    relu_backward(dx1, dr, r, nx);
    relu_maxpool2_backward(dx2, dy, y2, a2, n, C, H, W);
    assert_memory_equal(dx1, dx2, sizeof(float) * nx);
    free(x); free(r); free(y1); free(y2); free(dy); free(a1); free(a2);
    free(dr); free(dx1); free(dx2);
}

/* Backward through conv, ReLU and pool over the winners only equals the dense
 * route (relu_maxpool2_backward, then conv2d_backward) within float rounding;
 * the dense route is itself checked against finite differences above. */
static void conv_pool_case(int n, int C, int H, int W, int F, int K, int want_dx)
{
    printf("conv_pool_backward n=%d C=%d H=%d W=%d F=%d K=%d\n", n, C, H, W, F, K);
    const int OH = H - K + 1, OW = W - K + 1;
    const size_t nx = (size_t)n * C * H * W, nw = (size_t)F * C * K * K;
    const size_t nc = (size_t)n * F * OH * OW, ny = nc / 4;
    Rng rng;
    rng_init(&rng, 23, 99, (uint64_t)C);
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * F);
    for (size_t i = 0; i < nx; i++)
        x[i] = rng_uniform(&rng) - 0.4f;
    for (size_t i = 0; i < nw; i++)
        w[i] = (rng_uniform(&rng) - 0.5f) * 0.5f;
    for (int i = 0; i < F; i++)
        b[i] = rng_uniform(&rng) - 0.5f;
    float *c = malloc(sizeof(float) * nc), *y = malloc(sizeof(float) * ny), *dy = malloc(sizeof(float) * ny);
    int32_t *arg = malloc(sizeof(int32_t) * ny);
    float *col = malloc(sizeof(float) * conv2d_col_floats(n, C, H, W, K));
    float *tmp = malloc(sizeof(float) * conv2d_tmp_floats(n, C, H, W, F, K));
    conv2d_forward(c, col, x, w, b, n, C, H, W, F, K);
    relu_maxpool2_forward(y, arg, c, n, F, OH, OW);
    size_t positive = 0;
    for (size_t i = 0; i < ny; i++) {
        dy[i] = rng_uniform(&rng) - 0.5f;
        positive += y[i] > 0;
    }
    /* dense route */
    float *dc = calloc(nc, sizeof(float)), *dx1 = calloc(nx, sizeof(float)),
          *dw1 = calloc(nw, sizeof(float)), *db1 = calloc(F, sizeof(float));
    relu_maxpool2_backward(dc, dy, y, arg, n, F, OH, OW);
    conv2d_backward(want_dx ? dx1 : NULL, dw1, db1, tmp, dc, col, w, n, C, H, W, F, K);
    /* winners only */
    float *dx2 = calloc(nx, sizeof(float)), *dw2 = calloc(nw, sizeof(float)),
          *db2 = calloc(F, sizeof(float));
    conv_pool_backward(want_dx ? dx2 : NULL, dw2, db2, dy, y, arg, x, w, n, C, H, W, F, K);
    printf("  %zu of %zu windows pass the ReLU\n", positive, ny);
    assert_true(positive > ny / 4 && positive < ny);
    double *ref = malloc(sizeof(double) * (nx > nw ? nx : nw));
    for (size_t i = 0; i < nw; i++)
        ref[i] = dw1[i];
    check_close("dw (winners vs dense)", dw2, ref, nw, 1e-5, 1e-6);
    for (int i = 0; i < F; i++)
        ref[i] = db1[i];
    check_close("db (winners vs dense)", db2, ref, F, 1e-5, 1e-6);
    if (want_dx) {
        for (size_t i = 0; i < nx; i++)
            ref[i] = dx1[i];
        check_close("dx (winners vs dense)", dx2, ref, nx, 1e-5, 1e-6);
    }
    free(ref); free(x); free(w); free(b); free(c); free(y); free(dy); free(arg); free(col);
    free(tmp); free(dc); free(dx1); free(dw1); free(db1); free(dx2); free(dw2); free(db2);
}

static void test_conv_pool_backward(void **state)
{
    (void)state;
    conv_pool_case(3, 1, 28, 28, 6, 5, 0);
    conv_pool_case(4, 6, 12, 12, 12, 5, 1);
    conv_pool_case(2, 3, 11, 9, 4, 3, 1);
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
          *dxf = calloc(r.n, sizeof(float));
    relu_forward(yf, xf, r.n);
    check_close("fast forward y (exact)", yf, r.y, r.n, 0, 0);
    relu_backward(dxf, dyf, yf, r.n);
    check_close("fast backward dx (exact)", dxf, dx, r.n, 0, 0);
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
    double *x, *w, *b, *y, *dy;
} LinCase;

static double lin_loss(void *ctx)
{
    LinCase *l = ctx;
    linear_forward_ref(l->y, l->x, l->w, l->b, l->n, l->I, l->O);
    return dot(l->y, l->dy, (size_t)l->n * l->O);
}

static void lin_case(int n, int I, int O)
{
    printf("linear n=%d I=%d O=%d\n", n, I, O);
    LinCase l = {n, I, O, 0, 0, 0, 0, 0};
    size_t nx = (size_t)n * I, nw = (size_t)O * I, ny = (size_t)n * O;
    Rng rng;
    rng_init(&rng, 5, 99, (uint64_t)I);
    l.x = malloc(sizeof(double) * nx);
    l.w = malloc(sizeof(double) * nw);
    l.b = malloc(sizeof(double) * O);
    l.y = malloc(sizeof(double) * ny);
    l.dy = malloc(sizeof(double) * ny);
    fill_uniform(l.x, nx, &rng, -1, 1);
    fill_uniform(l.w, nw, &rng, -0.2, 0.2);
    fill_uniform(l.b, O, &rng, -0.2, 0.2);
    fill_uniform(l.dy, ny, &rng, -1, 1);
    round_to_float(l.x, nx);
    round_to_float(l.w, nw);
    round_to_float(l.b, O);
    round_to_float(l.dy, ny);
    double *dx = calloc(nx, sizeof(double)), *dw = calloc(nw, sizeof(double)),
           *db = calloc(O, sizeof(double));
    linear_backward_ref(dx, dw, db, l.dy, l.x, l.w, n, I, O);
    check_fd("dx", l.x, nx, dx, lin_loss, &l, 200);
    check_fd("dw", l.w, nw, dw, lin_loss, &l, 200);
    check_fd("db", l.b, O, db, lin_loss, &l, 200);
    lin_loss(&l);

    float *xf = to_float(l.x, nx), *wf = to_float(l.w, nw), *bf = to_float(l.b, O),
          *dyf = to_float(l.dy, ny), *yf = calloc(ny, sizeof(float));
    linear_forward(yf, xf, wf, bf, n, I, O);
    check_close("fast forward y", yf, l.y, ny, 1e-5, 1e-6);
    float *dxf = calloc(nx, sizeof(float)), *dwf = calloc(nw, sizeof(float)),
          *dbf = calloc(O, sizeof(float));
    for (size_t i = 0; i < nw; i++)
        dwf[i] = 1.0f;
    linear_backward(dxf, dwf, dbf, dyf, xf, wf, n, I, O);
    check_close("fast backward dx", dxf, dx, nx, 1e-5, 1e-6);
    for (size_t i = 0; i < nw; i++)
        dw[i] += 1.0;
    check_close("fast backward dw (added)", dwf, dw, nw, 1e-5, 1e-6);
    check_close("fast backward db", dbf, db, O, 1e-5, 1e-6);
    free(xf); free(wf); free(bf); free(dyf); free(yf); free(dxf); free(dwf); free(dbf);
    free(dx); free(dw); free(db); free(l.x); free(l.w); free(l.b); free(l.y); free(l.dy);
}

static void test_linear(void **state)
{
    (void)state;
    lin_case(5, 192, 120);
    lin_case(3, 60, 10);
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

    float *zf = to_float(x.z, nz), *pf = calloc(nz, sizeof(float)), *dzf = calloc(nz, sizeof(float));
    int correct = 0;
    double lf = softmax_xent_forward(pf, &correct, zf, labels, x.n, x.K) / x.n;
    printf("  loss fast %.12f ref %.12f\n", lf, loss);
    assert_true(fabs(lf - loss) < 1e-12 * fmax(1.0, fabs(loss)));
    xent_loss(&x);
    check_close("fast probs", pf, x.p, nz, 1e-6, 1e-7);
    softmax_xent_backward(dzf, pf, labels, x.n, x.K, 1.0f / x.n);
    check_close("fast backward dz", dzf, dz, nz, 1e-6, 1e-7);
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
        cmocka_unit_test(test_conv1_shape),  cmocka_unit_test(test_conv2_shape),
        cmocka_unit_test(test_conv_odd_shape), cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_maxpool_ties), cmocka_unit_test(test_relu_maxpool_fused),
        cmocka_unit_test(test_conv_pool_backward),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_linear),       cmocka_unit_test(test_softmax_xent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
