/* The readers: IDX files (plain and gzipped) and the HDF5 data file. Good
 * files round-trip; each kind of bad file is refused with its own message. */
#include "config.h"

#include <hdf5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/h5util.h"
#include "dpcnn/idx.h"
#include "dpcnn/model.h"
#include "testutil.h"

static char dir[256];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/dpcnn-test-data-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* An IDX file: header (magic, ndim, dims) then `payload` bytes of data. */
static void write_idx(const char *name, int gz, uint8_t type, int ndim, const uint32_t *dims,
                      const uint8_t *payload, size_t n)
{
    uint8_t head[4 + 4 * 4] = {0, 0, type, (uint8_t)ndim};
    for (int d = 0; d < ndim; d++) {
        head[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        head[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        head[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        head[7 + 4 * d] = (uint8_t)dims[d];
    }
    gzFile f = gzopen(path_of(name), gz ? "wb" : "wbT");
    assert_non_null(f);
    gzwrite(f, head, 4 + 4 * ndim);
    if (n)
        gzwrite(f, payload, (unsigned)n);
    gzclose(f);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 37 + 11);
    return p;
}

static void expect_error(int rc, const char *needle)
{
    printf("  refused: %s\n", err_get());
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err_get(), needle));
}

static void test_idx_valid(void **state)
{
    (void)state;
    for (int gz = 0; gz < 2; gz++) {
        uint32_t dims[3] = {5, 28, 28};
        uint8_t *px = pattern(5 * 784);
        uint8_t lab[5] = {0, 9, 3, 3, 1};
        write_idx("img", gz, 8, 3, dims, px, 5 * 784);
        write_idx("lab", gz, 8, 1, dims, lab, 5);
        uint8_t *got, *gl;
        size_t n, nl;
        assert_int_equal(idx_read_images(path_of("img"), &got, &n), 0);
        assert_int_equal(n, 5);
        assert_memory_equal(got, px, 5 * 784);
        assert_int_equal(idx_read_labels(path_of("lab"), &gl, &nl, 10), 0);
        assert_int_equal(nl, 5);
        assert_memory_equal(gl, lab, 5);
        free(got);
        free(gl);
        free(px);
    }
}

static void test_idx_bad(void **state)
{
    (void)state;
    uint8_t *px = pattern(3 * 784), *out;
    size_t n;
    uint32_t dims[3] = {3, 28, 28};

    write_idx("trunc", 1, 8, 3, dims, px, 3 * 784 - 100);
    expect_error(idx_read_images(path_of("trunc"), &out, &n), "truncated");

    write_idx("trunc_plain", 0, 8, 3, dims, px, 2 * 784);
    expect_error(idx_read_images(path_of("trunc_plain"), &out, &n), "truncated");

    write_idx("long", 0, 8, 3, dims, px, 3 * 784);
    {
        FILE *f = fopen(path_of("long"), "ab");
        fputc(7, f);
        fclose(f);
    }
    expect_error(idx_read_images(path_of("long"), &out, &n), "continues past");

    write_idx("type", 0, 0x0d, 3, dims, px, 3 * 784); /* float elements */
    expect_error(idx_read_images(path_of("type"), &out, &n), "element type 0x0d");

    FILE *f = fopen(path_of("magic"), "wb");
    fputs("PK\x03\x04 this is a zip file", f);
    fclose(f);
    expect_error(idx_read_images(path_of("magic"), &out, &n), "not an IDX file");

    write_idx("ndim", 0, 8, 1, dims, px, 3);
    expect_error(idx_read_images(path_of("ndim"), &out, &n), "1 dimensions, expected 3");

    uint32_t small[3] = {3, 27, 28};
    write_idx("side", 0, 8, 3, small, px, 3 * 27 * 28);
    expect_error(idx_read_images(path_of("side"), &out, &n), "27x28, expected 28x28");

    uint8_t bad[4] = {1, 2, 10, 3};
    uint32_t nl[1] = {4};
    write_idx("labels", 0, 8, 1, nl, bad, 4);
    expect_error(idx_read_labels(path_of("labels"), &out, &n, 10), "label 10 of item 2");

    expect_error(idx_read_labels(path_of("absent"), &out, &n, 10), "cannot open");

    /* gzip with its stream cut mid-way */
    write_idx("gzcut", 1, 8, 3, dims, px, 3 * 784);
    {
        FILE *g = fopen(path_of("gzcut"), "r+b");
        fseek(g, 0, SEEK_END);
        long len = ftell(g);
        fclose(g);
        assert_int_equal(truncate(path_of("gzcut"), len / 2), 0);
    }
    expect_error(idx_read_images(path_of("gzcut"), &out, &n), "truncated");
    free(px);
}

/* A small data file: 30 train, 12 test samples. */
static void write_small(const char *name, uint8_t bad_label)
{
    uint8_t *img = pattern(42 * 784), lab[42];
    for (int i = 0; i < 42; i++)
        lab[i] = (uint8_t)(i % 10);
    lab[33] = bad_label ? bad_label : lab[33];
    SplitData train = {img, lab, 30}, test = {img + 30 * 784, lab + 30, 12};
    assert_int_equal(dataset_write(path_of(name), &train, &test, "test"), 0);
    free(img);
}

static void test_h5_valid(void **state)
{
    (void)state;
    write_small("ok.h5", 0);
    Dataset ds;
    assert_int_equal(dataset_open(&ds, path_of("ok.h5")), 0);
    assert_int_equal(ds.count[SPLIT_TRAIN], 30);
    assert_int_equal(ds.count[SPLIT_TEST], 12);
    uint8_t img[5 * 784], lab[5];
    assert_int_equal(dataset_read(&ds, SPLIT_TEST, 7, 5, img, lab), 0);
    uint8_t *want = pattern(42 * 784);
    assert_memory_equal(img, want + 37 * 784, 5 * 784);
    for (int i = 0; i < 5; i++)
        assert_int_equal(lab[i], (37 + i) % 10);
    assert_int_equal(strlen(ds.fingerprint), 16);
    expect_error(dataset_read(&ds, SPLIT_TRAIN, 28, 5, img, lab), "past its end");
    dataset_close(&ds);
    free(want);
    /* no temporary file left next to it */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q tmp", dir);
    assert_int_not_equal(system(cmd), 0);
}

/* Write a file by hand with one thing wrong. */
static void write_raw(const char *name, hsize_t side, hsize_t nlabels, int float_images,
                      int skip_test)
{
    hid_t f = H5Fcreate(path_of(name), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *groups[2] = {"train", "test"};
    uint8_t zeros[4 * 28 * 28] = {0};
    for (int g = 0; g < 2 - skip_test; g++) {
        hid_t grp = H5Gcreate2(f, groups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t dims[3] = {4, side, 28};
        hid_t s = H5Screate_simple(3, dims, NULL);
        hid_t d = H5Dcreate2(grp, "images", float_images ? H5T_IEEE_F32LE : H5T_STD_U8LE, s,
                             H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dclose(d);
        H5Sclose(s);
        hsize_t ld = nlabels;
        s = H5Screate_simple(1, &ld, NULL);
        d = H5Dcreate2(grp, "labels", H5T_STD_U8LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
        H5Dclose(d);
        H5Sclose(s);
        H5Gclose(grp);
    }
    H5Fclose(f);
}

static void test_h5_bad(void **state)
{
    (void)state;
    Dataset ds;
    h5_quiet();
    expect_error(dataset_open(&ds, path_of("none.h5")), "no such file");

    FILE *f = fopen(path_of("text.h5"), "w");
    fputs("not hdf5\n", f);
    fclose(f);
    expect_error(dataset_open(&ds, path_of("text.h5")), "not an HDF5 file");

    write_raw("shape.h5", 27, 4, 0, 0);
    expect_error(dataset_open(&ds, path_of("shape.h5")), "expected [N,28,28]");

    write_raw("type.h5", 28, 4, 1, 0);
    expect_error(dataset_open(&ds, path_of("type.h5")), "is not uint8");

    write_raw("count.h5", 28, 3, 0, 0);
    expect_error(dataset_open(&ds, path_of("count.h5")), "4 images but");

    write_raw("unsummed.h5", 28, 4, 0, 0); /* right in all but the checksums */
    expect_error(dataset_open(&ds, path_of("unsummed.h5")),
                 "/train/images has no Fletcher-32 checksums");

    write_raw("missing.h5", 28, 4, 0, 1);
    expect_error(dataset_open(&ds, path_of("missing.h5")), "/test/images or /test/labels is missing");

    write_small("label.h5", 12); /* test sample 3 has label 12 */
    assert_int_equal(dataset_open(&ds, path_of("label.h5")), 0);
    uint8_t img[12 * 784], lab[12];
    expect_error(dataset_read(&ds, SPLIT_TEST, 0, 12, img, lab), "sample 3 has label 12");
    dataset_close(&ds);
}

/* Flip bytes inside one stored chunk: Fletcher-32 must catch it. */
static void test_h5_corrupt_chunk(void **state)
{
    (void)state;
    enum { NT = 2500 };
    uint8_t *img = pattern(NT * 784), lab[NT];
    memset(lab, 1, sizeof lab);
    SplitData train = {img, lab, NT}, test = {img, lab, 10};
    assert_int_equal(dataset_write(path_of("c.h5"), &train, &test, "test"), 0);
    hid_t f = H5Fopen(path_of("c.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/images", H5P_DEFAULT);
    hsize_t off[3] = {DATASET_CHUNK, 0, 0}; /* the second chunk */
    haddr_t addr;
    hsize_t size;
    unsigned mask;
    assert_true(H5Dget_chunk_info_by_coord(d, off, &mask, &addr, &size) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    FILE *fp = fopen(path_of("c.h5"), "r+b");
    fseek(fp, (long)(addr + size / 2), SEEK_SET);
    for (int i = 0; i < 8; i++)
        fputc(0x5a ^ i, fp);
    fclose(fp);

    Dataset ds;
    assert_int_equal(dataset_open(&ds, path_of("c.h5")), 0);
    uint8_t *buf = malloc(NT * 784), *lb = malloc(NT);
    /* the first chunk is intact and reads back */
    assert_int_equal(dataset_read(&ds, SPLIT_TRAIN, 0, DATASET_CHUNK, buf, lb), 0);
    assert_memory_equal(buf, img, DATASET_CHUNK * 784);
    expect_error(dataset_read(&ds, SPLIT_TRAIN, DATASET_CHUNK, 10, buf, lb), "samples 1000..1009");
    dataset_close(&ds);
    free(buf);
    free(lb);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_valid), cmocka_unit_test(test_idx_bad),
        cmocka_unit_test(test_h5_valid),  cmocka_unit_test(test_h5_bad),
        cmocka_unit_test(test_h5_corrupt_chunk),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
