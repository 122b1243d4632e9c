/* Seed corpora for the fuzz harnesses, written by the library itself so they
 * follow its formats: fuzz_seeds DIR makes
 *
 *   DIR/idx/          a 3-image file and its 3 labels, plain and gzipped
 *   DIR/dataset/      data files from dataset_write (5 + 3 and 1 + 1 samples)
 *   DIR/checkpoint/   a checkpoint from checkpoint_save, and a weights-only
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
#include "dpcnn/model.h"

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
    uint32_t dims[3] = {n, MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE};
    for (int d = 0; d < ndim; d++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    size_t bytes = ndim == 3 ? (size_t)n * MODEL_IMAGE_PIXELS : n;
    gzFile f = gzopen(path_of("idx", name), gz ? "wb9" : "wbT");
    if (!f || gzwrite(f, head, 4 + 4 * (unsigned)ndim) <= 0 ||
        gzwrite(f, payload, (unsigned)bytes) <= 0 || gzclose(f) != Z_OK)
        fail(name);
}

static void write_weights_latest(const char *path, const float *params)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        fail(path);
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0777);

    enum { NI = 8 };
    uint8_t *pixels = malloc(NI * MODEL_IMAGE_PIXELS), labels[NI];
    for (size_t i = 0; i < NI * MODEL_IMAGE_PIXELS; i++)
        pixels[i] = (uint8_t)(i * 37 + i / 97);
    for (int i = 0; i < NI; i++)
        labels[i] = (uint8_t)(i * 7 % MODEL_CLASSES);

    write_idx("images", 0, 3, 3, pixels);
    write_idx("images.gz", 1, 3, 3, pixels);
    write_idx("labels", 0, 1, 3, labels);
    write_idx("labels.gz", 1, 1, 3, labels);

    SplitData train = {pixels, labels, 5}, test = {pixels + 5 * MODEL_IMAGE_PIXELS, labels + 5, 3};
    if (dataset_write(path_of("dataset", "small.h5"), &train, &test, "fuzz seed") < 0)
        fail("small.h5");
    SplitData one = {pixels, labels, 1};
    if (dataset_write(path_of("dataset", "one.h5"), &one, &one, "fuzz seed") < 0)
        fail("one.h5");

    float *state = malloc(3 * MODEL_NUM_PARAMS * sizeof(float));
    float *params = state, *m = state + MODEL_NUM_PARAMS, *v = m + MODEL_NUM_PARAMS;
    model_init(params, 1);
    for (size_t i = 0; i < MODEL_NUM_PARAMS; i++) {
        m[i] = params[i] * 1e-3f;
        v[i] = params[i] * params[i] * 1e-6f;
    }
    RunState rs = {
        .seed = 1, .batch_size = 100, .micro_batch = 25, .shuffle = 1, .lr = 0.01,
        .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .train_samples = 5, .test_samples = 3,
        .epochs_done = 1, .step_in_epoch = 0, .step = 1, .epoch_loss_sum = 0.0,
        .epoch_correct = 0,
    };
    dataset_fingerprint(rs.data_fingerprint, &train, &test);
    if (checkpoint_save(path_of("checkpoint", "checkpoint.h5"), params, m, v, &rs) < 0)
        fail("checkpoint.h5");
    write_weights_latest(path_of("checkpoint", "weights-latest.h5"), params);
    free(state);
    free(pixels);
    return 0;
}
