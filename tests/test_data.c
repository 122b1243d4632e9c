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

/* The shape of the test files: Fashion-MNIST's. */
static char fashion[10][DATASET_NAME_MAX] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
static const DataShape SHAPE = {1, 28, 28, 3, 10, fashion};

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
        int shape[3];
        assert_int_equal(idx_read_images(path_of("img"), &got, &n, shape), 0);
        assert_int_equal(n, 5);
        assert_true(shape[0] == 1 && shape[1] == 28 && shape[2] == 28);
        assert_memory_equal(got, px, 5 * 784);
        assert_int_equal(idx_read_labels(path_of("lab"), &gl, &nl, 10), 0);
        assert_int_equal(nl, 5);
        assert_memory_equal(gl, lab, 5);
        free(got);
        free(gl);
        free(px);
    }
    /* any image size, and four dimensions: [N,C,H,W] */
    uint32_t d4[4] = {2, 3, 5, 7};
    uint8_t *px = pattern(2 * 3 * 5 * 7), *got;
    write_idx("img4", 1, 8, 4, d4, px, 2 * 3 * 5 * 7);
    size_t n;
    int shape[3];
    assert_int_equal(idx_read_images(path_of("img4"), &got, &n, shape), 0);
    assert_true(n == 2 && shape[0] == 3 && shape[1] == 5 && shape[2] == 7);
    assert_memory_equal(got, px, 2 * 3 * 5 * 7);
    free(got);
    free(px);
}

static void test_idx_bad(void **state)
{
    (void)state;
    uint8_t *px = pattern(3 * 784), *out;
    size_t n;
    int shape[3];
    uint32_t dims[3] = {3, 28, 28};

    write_idx("trunc", 1, 8, 3, dims, px, 3 * 784 - 100);
    expect_error(idx_read_images(path_of("trunc"), &out, &n, shape), "truncated");

    write_idx("trunc_plain", 0, 8, 3, dims, px, 2 * 784);
    expect_error(idx_read_images(path_of("trunc_plain"), &out, &n, shape), "truncated");

    write_idx("long", 0, 8, 3, dims, px, 3 * 784);
    {
        FILE *f = fopen(path_of("long"), "ab");
        fputc(7, f);
        fclose(f);
    }
    expect_error(idx_read_images(path_of("long"), &out, &n, shape), "continues past");

    write_idx("type", 0, 0x0d, 3, dims, px, 3 * 784); /* float elements */
    expect_error(idx_read_images(path_of("type"), &out, &n, shape), "element type 0x0d");

    FILE *f = fopen(path_of("magic"), "wb");
    fputs("PK\x03\x04 this is a zip file", f);
    fclose(f);
    expect_error(idx_read_images(path_of("magic"), &out, &n, shape), "not an IDX file");

    write_idx("ndim", 0, 8, 1, dims, px, 3);
    expect_error(idx_read_images(path_of("ndim"), &out, &n, shape), "1 dimensions, expected 3 or 4");

    uint32_t empty[3] = {3, 0, 28};
    write_idx("side", 0, 8, 3, empty, px, 0);
    expect_error(idx_read_images(path_of("side"), &out, &n, shape), "are empty or larger");

    uint8_t bad[4] = {1, 2, 10, 3};
    uint32_t nl[1] = {4};
    write_idx("labels", 0, 8, 1, nl, bad, 4);
    expect_error(idx_read_labels(path_of("labels"), &out, &n, 10), "label 10 of item 2");

    expect_error(idx_read_labels(path_of("absent"), &out, &n, 10), "no such file");

    /* gzip with its stream cut mid-way */
    write_idx("gzcut", 1, 8, 3, dims, px, 3 * 784);
    {
        FILE *g = fopen(path_of("gzcut"), "r+b");
        fseek(g, 0, SEEK_END);
        long len = ftell(g);
        fclose(g);
        assert_int_equal(truncate(path_of("gzcut"), len / 2), 0);
    }
    expect_error(idx_read_images(path_of("gzcut"), &out, &n, shape), "truncated");
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
    assert_int_equal(dataset_write(path_of(name), &SHAPE, &train, &test, "test"), 0);
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
        hsize_t dims[3] = {4, side ? side : 28, 28};
        hid_t s = H5Screate_simple(side ? 3 : 2, dims, NULL); /* side 0: [4,28] */
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
    assert_int_equal(h5_write_attr_string(f, "class_names", "a,b,c,d,e,f,g,h,i,j"), 0);
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

    write_raw("shape.h5", 0, 4, 0, 0);
    expect_error(dataset_open(&ds, path_of("shape.h5")), "2 dimensions, expected [N,H,W] or [N,C,H,W]");

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

enum { NT = 2500 };

/* Flip bytes inside one stored chunk: Fletcher-32 must catch it. */
static void test_h5_corrupt_chunk(void **state)
{
    (void)state;
    uint8_t *img = pattern(NT * 784), lab[NT];
    memset(lab, 1, sizeof lab);
    SplitData train = {img, lab, NT}, test = {img, lab, 10};
    assert_int_equal(dataset_write(path_of("c.h5"), &SHAPE, &train, &test, "test"), 0);
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


/* A data file of NT train samples (3 blocks) and 10 test samples. */

static uint8_t *write_blocks(const char *name, uint8_t *lab)
{
    uint8_t *img = pattern(NT * 784);
    for (int i = 0; i < NT; i++)
        lab[i] = (uint8_t)((i * 7) % 10);
    SplitData train = {img, lab, NT}, test = {img, lab, 10};
    assert_int_equal(dataset_write(path_of(name), &SHAPE, &train, &test, "test"), 0);
    return img;
}

/* Change one stored label in place, as an h5py edit would: the chunk's
 * checksum is rewritten with it, only the digest can tell. */
static void relabel(const char *name, size_t index, uint8_t label)
{
    hid_t f = H5Fopen(path_of(name), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/labels", H5P_DEFAULT);
    hid_t fs = H5Dget_space(d);
    hsize_t off = index, one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &one, NULL);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &label) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_h5_digests(void **state)
{
    (void)state;
    uint8_t lab[NT];
    uint8_t *img = write_blocks("d.h5", lab);
    uint8_t *buf = malloc(NT * 784), lb[NT];
    Dataset ds;
    assert_int_equal(dataset_open(&ds, path_of("d.h5")), 0);
    char fp[32];
    snprintf(fp, sizeof fp, "%s", ds.fingerprint);
    /* ranges that cut blocks anywhere verify and read back exactly */
    const size_t ranges[][2] = {{0, NT}, {999, 2}, {1500, 1000}, {2499, 1}, {0, 1}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        assert_int_equal(dataset_read(&ds, SPLIT_TRAIN, ranges[r][0], ranges[r][1], buf, lb), 0);
        assert_memory_equal(buf, img + ranges[r][0] * 784, ranges[r][1] * 784);
        assert_memory_equal(lb, lab + ranges[r][0], ranges[r][1]);
    }
    dataset_close(&ds);

    /* one label changed in place: its block is refused, the others still read */
    relabel("d.h5", 1234, (uint8_t)((lab[1234] + 1) % 10));
    assert_int_equal(dataset_open(&ds, path_of("d.h5")), 0);
    assert_string_equal(ds.fingerprint, fp); /* the digests were not touched */
    expect_error(dataset_read(&ds, SPLIT_TRAIN, 1200, 10, buf, lb),
                 "samples 1000..1999 do not match their digest");
    assert_int_equal(dataset_read(&ds, SPLIT_TRAIN, 0, 1000, buf, lb), 0);
    assert_int_equal(dataset_read(&ds, SPLIT_TRAIN, 2000, 500, buf, lb), 0);
    dataset_close(&ds);

    /* the same change made properly (a new file) changes the fingerprint */
    lab[1234] = (uint8_t)((lab[1234] + 1) % 10);
    SplitData train = {img, lab, NT}, test = {img, lab, 10};
    assert_int_equal(dataset_write(path_of("d2.h5"), &SHAPE, &train, &test, "test"), 0);
    assert_int_equal(dataset_open(&ds, path_of("d2.h5")), 0);
    assert_string_not_equal(ds.fingerprint, fp);
    char fp2[32];
    dataset_fingerprint(fp2, &SHAPE, &train, &test);
    assert_string_equal(ds.fingerprint, fp2);
    dataset_close(&ds);

    /* no digests: refused at open */
    hid_t f = H5Fopen(path_of("d2.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(H5Ldelete(f, "/test/digests", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_error(dataset_open(&ds, path_of("d2.h5")), "/test/digests is missing");
    free(buf);
    free(img);
}

/* A chunk the index does not know reads as zeros: refused at open. */
static void test_h5_missing_chunk(void **state)
{
    (void)state;
    uint8_t lab[NT];
    uint8_t *img = write_blocks("m.h5", lab);
    hid_t f = H5Fopen(path_of("m.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(H5Ldelete(f, "/train/images", H5P_DEFAULT) >= 0);
    hsize_t dims[3] = {NT, 28, 28}, chunk[3] = {DATASET_CHUNK, 28, 28};
    hid_t s = H5Screate_simple(3, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    H5Pset_fletcher32(dcpl); /* checksummed as the rest: only the chunk is missing */
    hid_t d = H5Dcreate2(f, "/train/images", H5T_STD_U8LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    for (hsize_t c = 0; c < 3; c += 2) { /* chunks 0 and 2; 1 is never written */
        hsize_t off[3] = {c * DATASET_CHUNK, 0, 0};
        hsize_t cnt[3] = {c == 2 ? NT - 2 * DATASET_CHUNK : DATASET_CHUNK, 28, 28};
        hid_t ms = H5Screate_simple(3, cnt, NULL);
        H5Sselect_hyperslab(s, H5S_SELECT_SET, off, NULL, cnt, NULL);
        assert_true(H5Dwrite(d, H5T_NATIVE_UINT8, ms, s, H5P_DEFAULT, img + off[0] * 784) >= 0);
        H5Sclose(ms);
    }
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Fclose(f);
    Dataset ds;
    expect_error(dataset_open(&ds, path_of("m.h5")), "has 2 of its 3 chunks");
    free(img);
}

/* Flip bytes of the file's metadata (everything but chunk data) one at a
 * time: each damaged file must be refused, or read back exactly the data
 * that was written. Never different data without an error. */
static void test_h5_metadata_flips(void **state)
{
    (void)state;
    uint8_t lab[NT];
    uint8_t *img = write_blocks("f.h5", lab);
    FILE *fp = fopen(path_of("f.h5"), "rb");
    fseek(fp, 0, SEEK_END);
    const long size = ftell(fp);
    uint8_t *orig = malloc((size_t)size);
    fseek(fp, 0, SEEK_SET);
    assert_int_equal(fread(orig, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    /* where the chunk data lie: those bytes are Fletcher-32's to guard */
    uint8_t *is_data = calloc((size_t)size, 1);
    hid_t f = H5Fopen(path_of("f.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    const char *names[] = {"/train/images", "/train/labels", "/train/digests", "/test/images",
                           "/test/labels", "/test/digests"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        hid_t d = H5Dopen2(f, names[k], H5P_DEFAULT);
        hsize_t n = 0;
        hid_t sp = H5Dget_space(d);
        if (H5Dget_num_chunks(d, sp, &n) >= 0)
            for (hsize_t c = 0; c < n; c++) {
                haddr_t addr;
                hsize_t bytes;
                if (H5Dget_chunk_info(d, sp, c, NULL, NULL, &addr, &bytes) >= 0)
                    memset(is_data + addr, 1, bytes);
            }
        haddr_t at = H5Dget_offset(d); /* contiguous (the digests) */
        if (at != HADDR_UNDEF)
            memset(is_data + at, 1, H5Dget_storage_size(d));
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    long meta = 0;
    for (long i = 0; i < size; i++)
        meta += !is_data[i];
    uint8_t *buf = malloc(NT * 784), lb[NT], tbuf[10 * 784], tlb[10];
    Rng rng;
    rng_init(&rng, 8, 0, 0);
    int refused = 0, same = 0;
    const int cases = 400;
    for (int c = 0; c < cases; c++) {
        long at;
        do
            at = (long)rng_below(&rng, (uint64_t)size);
        while (is_data[at]);
        uint8_t *copy = malloc((size_t)size);
        memcpy(copy, orig, (size_t)size);
        copy[at] ^= (uint8_t)(1u << rng_below(&rng, 8));
        fp = fopen(path_of("flip.h5"), "wb");
        fwrite(copy, 1, (size_t)size, fp);
        fclose(fp);
        free(copy);
        Dataset ds;
        int rc = dataset_open(&ds, path_of("flip.h5"));
        if (rc == 0) {
            rc = dataset_read(&ds, SPLIT_TRAIN, 0, NT, buf, lb);
            if (rc == 0)
                rc = dataset_read(&ds, SPLIT_TEST, 0, 10, tbuf, tlb);
            dataset_close(&ds);
        }
        if (rc < 0) {
            assert_true(strlen(err_get()) > 0);
            refused++;
            continue;
        }
        if (memcmp(buf, img, NT * 784) != 0 || memcmp(lb, lab, NT) != 0 ||
            memcmp(tbuf, img, 10 * 784) != 0 || memcmp(tlb, lab, 10) != 0)
            fail_msg("a flip of byte %ld gave different data without an error", at);
        same++;
    }
    printf("  %d flips in %ld bytes of metadata: %d refused, %d read the original data\n", cases,
           meta, refused, same);
    free(buf);
    free(is_data);
    free(orig);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_valid), cmocka_unit_test(test_idx_bad),
        cmocka_unit_test(test_h5_valid),  cmocka_unit_test(test_h5_bad),
        cmocka_unit_test(test_h5_corrupt_chunk), cmocka_unit_test(test_h5_digests),
        cmocka_unit_test(test_h5_missing_chunk), cmocka_unit_test(test_h5_metadata_flips),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
