/* The golden test, in the manner of llm.c's test against PyTorch.
 *
 * tests/golden/golden.h5 was written by tests/golden/gen_golden.py with
 * Debian's PyTorch: the tutorial network with PyTorch's own initial weights,
 * 100 real Fashion-MNIST training images, and what PyTorch computed from them:
 * the layer outputs, logits, loss, every gradient, the parameters after one
 * Adam step and the losses of ten steps. dpcnn must reproduce all of it
 * through its real training path (micro-batches, exact sums, Adam) within
 * float32 rounding; each check prints its largest difference and tolerance. */
#include "config.h"

#include <hdf5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "dpcnn/adam.h"
#include "dpcnn/dist.h"
#include "dpcnn/h5util.h"
#include "dpcnn/model.h"
#include "dpcnn/step.h"
#include "testutil.h"

#ifdef __SANITIZE_ADDRESS__
/* LeakSanitizer stops the world with ptrace and crashes on Open MPI's helper
 * threads ("Tracer caught signal 11"); MPI programs run with the address and
 * undefined-behaviour checks only. The tests without MPI keep leak checking. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }
#endif

#define N 100
#define NP MODEL_NUM_PARAMS

static struct {
    uint8_t x[N * MODEL_IMAGE_PIXELS], y[N];
    float init[NP], grad[NP], step1[NP];
    float logits[N * 10], loss, losses[10];
    int layer_samples;
    float *layers[6];
    double lr, beta1, beta2, eps;
} G;

static const char *const layer_names[6] = {"conv1_out", "pool1_out", "conv2_out",
                                           "pool2_out", "fc1_out",   "fc2_out"};
static const size_t layer_sizes[6] = {6 * 24 * 24, 6 * 12 * 12, 12 * 8 * 8,
                                      12 * 4 * 4,  120,         60};

static Dist *g_dist;

static void read_ds(hid_t f, const char *name, hid_t type, void *buf)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0 || H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        fprintf(stderr, "golden.h5: cannot read %s\n", name);
        exit(1);
    }
    H5Dclose(d);
}

static void read_params(hid_t f, const char *group, float *flat)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        char name[128];
        snprintf(name, sizeof name, "%s/%s", group, model_tensors[t].name);
        read_ds(f, name, H5T_NATIVE_FLOAT, flat + model_tensors[t].offset);
    }
}

static int load_golden(void **state)
{
    (void)state;
    const char *srcdir = getenv("srcdir");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/golden.h5", srcdir ? srcdir : ".");
    h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    read_ds(f, "x", H5T_NATIVE_UINT8, G.x);
    read_ds(f, "y", H5T_NATIVE_UINT8, G.y);
    read_ds(f, "logits", H5T_NATIVE_FLOAT, G.logits);
    read_ds(f, "loss", H5T_NATIVE_FLOAT, &G.loss);
    read_ds(f, "losses", H5T_NATIVE_FLOAT, G.losses);
    read_params(f, "init", G.init);
    read_params(f, "grad", G.grad);
    read_params(f, "step1", G.step1);
    long long ls;
    if (h5_read_attr_int64(f, "layer_samples", &ls) < 0 ||
        h5_read_attr_double(f, "lr", &G.lr) < 0 || h5_read_attr_double(f, "beta1", &G.beta1) < 0 ||
        h5_read_attr_double(f, "beta2", &G.beta2) < 0 || h5_read_attr_double(f, "eps", &G.eps) < 0)
        return -1;
    G.layer_samples = (int)ls;
    for (int i = 0; i < 6; i++) {
        char name[64];
        snprintf(name, sizeof name, "layers/%s", layer_names[i]);
        G.layers[i] = malloc(sizeof(float) * layer_sizes[i] * (size_t)ls);
        read_ds(f, name, H5T_NATIVE_FLOAT, G.layers[i]);
    }
    H5Fclose(f);
    return 0;
}

/* check_close wants a double reference */
static void check_vs(const char *what, const float *got, const float *want, size_t n, double rtol,
                     double atol)
{
    double *w = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        w[i] = want[i];
    check_close(what, got, w, n, rtol, atol);
    free(w);
}

/* Forward pass, layer by layer, against PyTorch's activations. */
static void test_forward(void **state)
{
    (void)state;
    Workspace *ws = workspace_create(N);
    int correct = 0;
    double loss = model_forward(ws, G.init, G.x, G.y, N, &correct) / N;
    const float *mine[6] = {ws->c1, ws->p1, ws->c2, ws->p2, ws->f1, ws->f2};
    for (int i = 0; i < 6; i++)
        check_vs(layer_names[i], mine[i], G.layers[i], layer_sizes[i] * (size_t)G.layer_samples,
                 1e-5, 1e-6);
    check_vs("logits", ws->logits, G.logits, N * 10, 1e-5, 1e-6);
    printf("  loss %.9f  PyTorch %.9f  |diff| %.2e  tolerance 1e-6\n", loss, G.loss,
           fabs(loss - G.loss));
    assert_true(fabs(loss - G.loss) < 1e-6);
    workspace_free(ws);
}

/* The gradient through the trainer's path: 4 micro-batches of 25, summed exactly. */
static void gradient(float *grads, double *loss, const float *params, int micro, int threads)
{
    int nmicro = N / micro;
    int sizes[100];
    for (int k = 0; k < nmicro; k++)
        sizes[k] = micro;
    Stepper *st = stepper_create(micro, nmicro, threads, 1, REDUCE_EXACT);
    StepSums sums = {0, 0, 0, -1, 0};
    const uint8_t *img[N];
    for (int i = 0; i < N; i++)
        img[i] = G.x + (size_t)i * MODEL_IMAGE_PIXELS;
    assert_int_equal(stepper_gradient(st, g_dist, grads, &sums, params, img, G.y, sizes, nmicro,
                                      nmicro, N),
                     0);
    *loss = sums.loss_sum / N;
    stepper_free(st);
}

/* Largest |g| per tensor: the scale of that tensor's float rounding. */
static void check_grads(const char *label, const float *got)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        char what[96];
        snprintf(what, sizeof what, "%s %s", label, ti->name);
        check_vs(what, got + ti->offset, G.grad + ti->offset, ti->count, 2e-5, 1e-9);
    }
}

static void test_gradients(void **state)
{
    (void)state;
    float *g = malloc(sizeof(float) * NP);
    double loss;
    gradient(g, &loss, G.init, 25, 1);
    printf("  loss %.9f  PyTorch %.9f  |diff| %.2e  tolerance 1e-6\n", loss, G.loss,
           fabs(loss - G.loss));
    assert_true(fabs(loss - G.loss) < 1e-6);
    check_grads("grad", g);
    free(g);
}

/* The micro-batch split and the thread count must not change a bit. */
static void test_gradient_threads_bitwise(void **state)
{
    (void)state;
    float *a = malloc(sizeof(float) * NP), *b = malloc(sizeof(float) * NP);
    double la, lb;
    gradient(a, &la, G.init, 25, 1);
    gradient(b, &lb, G.init, 25, 2);
    assert_memory_equal(a, b, sizeof(float) * NP);
    assert_true(la == lb);
    gradient(b, &lb, G.init, 10, 3);
    /* another micro-batch size is another (equally valid) rounding */
    double maxd = 0;
    for (size_t i = 0; i < NP; i++)
        maxd = fmax(maxd, fabs(a[i] - b[i]));
    printf("  micro-batch 25 vs 10: max |diff| %.2e (rounding only)\n", maxd);
    assert_true(maxd < 1e-5);
    free(a);
    free(b);
}

/* Adam alone, fed PyTorch's own gradients: the same float arithmetic. */
static void test_adam_alone(void **state)
{
    (void)state;
    float *p = malloc(sizeof(float) * NP), *m = calloc(NP, sizeof(float)),
          *v = calloc(NP, sizeof(float));
    memcpy(p, G.init, sizeof(float) * NP);
    AdamConfig ac = {G.lr, G.beta1, G.beta2, G.eps};
    adam_step(p, m, v, G.grad, NP, &ac, 1);
    /* a few ulps of values ~0.1-1 (FMA or not is the only freedom) */
    check_vs("adam(PyTorch grads) params", p, G.step1, NP, 0, 2e-7);
    free(p);
    free(m);
    free(v);
}

/* One full step: our gradient, our Adam. Adam's first step is nearly
 * lr * sign(g), so a gradient within rounding of zero may flip an update by
 * up to 2 lr: the tolerance follows the gradient's own, element by element. */
static void test_step1(void **state)
{
    (void)state;
    float *g = malloc(sizeof(float) * NP), *p = malloc(sizeof(float) * NP),
          *m = calloc(NP, sizeof(float)), *v = calloc(NP, sizeof(float));
    double loss;
    gradient(g, &loss, G.init, 25, 1);
    memcpy(p, G.init, sizeof(float) * NP);
    AdamConfig ac = {G.lr, G.beta1, G.beta2, G.eps};
    adam_step(p, m, v, g, NP, &ac, 1);
    double worst = 0, worst_tol = 1, maxdiff = 0;
    int bad = 0;
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        double gmax = 0;
        for (size_t i = 0; i < ti->count; i++)
            gmax = fmax(gmax, fabs(G.grad[ti->offset + i]));
        const double dg = 2e-5 * gmax + 1e-9; /* the gradient tolerance above */
        for (size_t i = ti->offset; i < ti->offset + ti->count; i++) {
            double tol = 2e-7 + fmin(2 * G.lr, 2 * G.lr * dg / (fabs(G.grad[i]) + G.eps));
            double d = fabs((double)p[i] - G.step1[i]);
            if (d > tol)
                bad++;
            maxdiff = fmax(maxdiff, d);
            if (d / tol > worst / worst_tol) {
                worst = d;
                worst_tol = tol;
            }
        }
    }
    printf("  params after one step: max |diff| %.3e; closest to its bound: |diff| %.3e, "
           "tolerance %.3e; %d outside\n",
           maxdiff, worst, worst_tol, bad);
    assert_int_equal(bad, 0);
    free(g);
    free(p);
    free(m);
    free(v);
}

/* Ten steps on the same batch, as llm.c's test does. */
static void test_ten_steps(void **state)
{
    (void)state;
    float *g = malloc(sizeof(float) * NP), *p = malloc(sizeof(float) * NP),
          *m = calloc(NP, sizeof(float)), *v = calloc(NP, sizeof(float));
    memcpy(p, G.init, sizeof(float) * NP);
    AdamConfig ac = {G.lr, G.beta1, G.beta2, G.eps};
    double worst = 0;
    for (int s = 0; s < 10; s++) {
        double loss;
        gradient(g, &loss, p, 25, 2);
        double d = fabs(loss - G.losses[s]);
        /* rounding compounds through the steps: a few float32 ulps more per step */
        double tol = 1e-6 * (s + 1) * fabs(G.losses[s]);
        printf("  step %2d  loss %.7f  PyTorch %.7f  |diff| %.2e  tolerance %.2e\n", s, loss,
               G.losses[s], d, tol);
        assert_true(d <= tol);
        worst = fmax(worst, d);
        adam_step(p, m, v, g, NP, &ac, s + 1);
    }
    printf("  largest loss difference over ten steps: %.2e\n", worst);
    free(g);
    free(p);
    free(m);
    free(v);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    g_dist = dist_self();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),   cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradient_threads_bitwise), cmocka_unit_test(test_adam_alone),
        cmocka_unit_test(test_step1),     cmocka_unit_test(test_ten_steps),
    };
    int rc = cmocka_run_group_tests(tests, load_golden, NULL);
    dist_finalize(g_dist);
    MPI_Finalize();
    return rc;
}
