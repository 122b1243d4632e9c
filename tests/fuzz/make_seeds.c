/* Seed corpora for the fuzz harnesses, written by the library itself so they
 * follow its formats: fuzz_seeds DIR makes
 *
 *   DIR/idx/          a 3-image file and its 3 labels, plain and gzipped
 *   DIR/dataset/      data files from dataset_write (5 + 3 and 1 + 1 samples)
 *   DIR/net/          network descriptions: the built-ins as written and as
 *                     printed (canonical), and a 3x32x32 one with names
 *   DIR/checkpoint/   checkpoints from checkpoint_save (tutorial, bn), a weights-only
 *                     file in HDF5's newest layout (as PyTorch users write one)
 *
 * make fuzz starts from them; make check replays them, so every harness's
 * success path is checked too. */
#include "config.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/net.h"

/* Fashion-MNIST's shapes: 28 x 28 single-channel images, ten classes. */
enum { SIDE = 28, PIXELS = SIDE * SIDE, CLASSES = 10 };

static const char *g_dir;

static const char *path_of(const char *sub, const char *name)
{
    static char p[4200];
    snprintf(p, sizeof p, "%s/%s", g_dir, sub);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/%s/%s", g_dir, sub, name);
    return p;
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, err_get());
    exit(1);
}

static void write_idx(const char *name, int gz, int ndim, uint32_t n, const uint8_t *payload)
{
    uint8_t head[16] = {0, 0, 0x08, (uint8_t)ndim};
    uint32_t dims[3] = {n, SIDE, SIDE};
    for (int d = 0; d < ndim; d++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    size_t bytes = ndim == 3 ? (size_t)n * PIXELS : n;
    gzFile f = gzopen(path_of("idx", name), gz ? "wb9" : "wbT");
    if (!f || gzwrite(f, head, 4 + 4 * (unsigned)ndim) <= 0 ||
        gzwrite(f, payload, (unsigned)bytes) <= 0 || gzclose(f) != Z_OK)
        fail(name);
}

static void write_weights_latest(const char *path, const Net *net, const float *params)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        fail(path);
    for (int t = 0; t < net->ntensors; t++) {
        const TensorInfo *ti = &net->tensors[t];
        hsize_t dims[4];
        for (int d = 0; d < ti->ndim; d++)
            dims[d] = (hsize_t)ti->shape[d];
        hid_t s = H5Screate_simple(ti->ndim, dims, NULL);
        hid_t d = H5Dcreate2(f, ti->name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT);
        if (d < 0 ||
            H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, params + ti->offset) < 0)
            fail(ti->name);
        H5Dclose(d);
        H5Sclose(s);
    }
    if (H5Fclose(f) < 0)
        fail(path);
}

static void write_text(const char *sub, const char *name, const char *text)
{
    FILE *f = fopen(path_of(sub, name), "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seeds: cannot write %s\n", name);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0777);

    enum { NI = 8 };
    uint8_t *pixels = malloc(NI * PIXELS), labels[NI];
    for (size_t i = 0; i < NI * PIXELS; i++)
        pixels[i] = (uint8_t)(i * 37 + i / 97);
    for (int i = 0; i < NI; i++)
        labels[i] = (uint8_t)(i * 7 % CLASSES);

    write_idx("images", 0, 3, 3, pixels);
    write_idx("images.gz", 1, 3, 3, pixels);
    write_idx("labels", 0, 1, 3, labels);
    write_idx("labels.gz", 1, 1, 3, labels);

    char names[CLASSES][DATASET_NAME_MAX];
    for (int k = 0; k < CLASSES; k++)
        snprintf(names[k], DATASET_NAME_MAX, "%s", dataset_fashion_names[k]);
    DataShape shape = {.channels = 1, .height = SIDE, .width = SIDE, .ndim = 3,
                       .classes = CLASSES, .class_names = names};
    SplitData train = {pixels, labels, 5}, test = {pixels + 5 * PIXELS, labels + 5, 3};
    if (dataset_write(path_of("dataset", "small.h5"), &shape, &train, &test, "fuzz seed") < 0)
        fail("small.h5");
    SplitData one = {pixels, labels, 1};
    if (dataset_write(path_of("dataset", "one.h5"), &shape, &one, &one, "fuzz seed") < 0)
        fail("one.h5");

    /* a checkpoint of the tutorial network and one with batch norm's buffers */
    static const char *const models[2] = {"tutorial", "bn"};
    for (int k = 0; k < 2; k++) {
        static Net net;
        if (net_load(&net, models[k], (Shape){1, SIDE, SIDE, 0}, CLASSES) < 0)
            fail(models[k]);
        float *state = malloc((3 * net.nparams + net.nbuffer_floats + 1) * sizeof(float));
        int64_t *batches = calloc((size_t)net.nbatchnorm + 1, sizeof(int64_t));
        if (!state || !batches)
            fail("out of memory");
        ModelState ms = {state, state + net.nparams, state + 2 * net.nparams,
                         state + 3 * net.nparams, batches};
        net_init(&net, ms.params, ms.buffers, ms.batches, 1);
        for (size_t i = 0; i < net.nparams; i++) {
            ms.adam_m[i] = ms.params[i] * 1e-3f;
            ms.adam_v[i] = ms.params[i] * ms.params[i] * 1e-6f;
        }
        for (int b = 0; b < net.nbatchnorm; b++)
            ms.batches[b] = 1;
        RunState rs = {
            .seed = 1, .batch_size = 100, .micro_batch = 25, .shuffle = 1, .lr = 0.01,
            .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .train_samples = 5, .test_samples = 3,
            .epochs_done = 1, .step_in_epoch = 0, .step = 1, .epoch_loss_sum = 0.0,
            .epoch_correct = 0,
        };
        snprintf(rs.normalize, sizeof rs.normalize, "none");
        snprintf(rs.model, sizeof rs.model, "%s", net.text);
        dataset_fingerprint(rs.data_fingerprint, &shape, &train, &test);
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%s.h5", models[k]);
        if (checkpoint_save(path_of("checkpoint", name), &net, &ms, &rs) < 0)
            fail(name);
        char text_name[64];
        snprintf(text_name, sizeof text_name, "%s.txt", models[k]);
        write_text("net", text_name, net_builtin(models[k]));
        snprintf(text_name, sizeof text_name, "%s-canonical.txt", models[k]);
        write_text("net", text_name, net.text);
        if (k == 0)
            write_weights_latest(path_of("checkpoint", "weights-latest.h5"), &net, ms.params);
        free(state);
        free(batches);
    }
    write_text("net", "lenet5.txt", net_builtin("lenet5"));
    write_text("net", "cifar.txt",
               "# for 3x32x32 inputs\n"
               "(c1): Conv2d(3, 8, kernel_size=3, stride=1, padding=1)\n"
               "(bn1): BatchNorm2d(8)\nReLU(inplace=True)\nAvgPool2d(2)\n"
               "(c2): Conv2d(8, 16, 3, stride=2)\nReLU()\nMaxPool2d(kernel_size=3, stride=2)\n"
               "Flatten()\nDropout(p=0.25)\n(fc): Linear(in_features=144, out_features=10)\n");
    free(pixels);
    return 0;
}
