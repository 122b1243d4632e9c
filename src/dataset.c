#include "config.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/h5util.h"
#include "dpcnn/hash.h"

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t");

const char *const dataset_fashion_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static const char *const split_names[2] = {"train", "test"};

/* ------------------------------------------------------------- digests */

#define FNV_PRIME UINT64_C(0x100000001b3)

/* h[i] = FNV-1a 64 over sample i's `pixels` bytes, then its label byte.
 * Four samples at a time: independent chains, so their multiplies overlap
 * (one chain alone waits on each multiply's latency). */
static void sample_hashes(uint64_t *h, const uint8_t *images, const uint8_t *labels, size_t n,
                          size_t pixels)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint8_t *p0 = images + i * pixels, *p1 = p0 + pixels, *p2 = p1 + pixels,
                      *p3 = p2 + pixels;
        uint64_t a = FNV1A64_INIT, b = a, c = a, d = a;
        for (size_t k = 0; k < pixels; k++) {
            a = (a ^ p0[k]) * FNV_PRIME;
            b = (b ^ p1[k]) * FNV_PRIME;
            c = (c ^ p2[k]) * FNV_PRIME;
            d = (d ^ p3[k]) * FNV_PRIME;
        }
        h[i] = (a ^ labels[i]) * FNV_PRIME;
        h[i + 1] = (b ^ labels[i + 1]) * FNV_PRIME;
        h[i + 2] = (c ^ labels[i + 2]) * FNV_PRIME;
        h[i + 3] = (d ^ labels[i + 3]) * FNV_PRIME;
    }
    for (; i < n; i++)
        h[i] = fnv1a64(fnv1a64(FNV1A64_INIT, images + i * pixels, pixels), labels + i, 1);
}

/* FNV-1a 64 over the sample hashes as 8 little-endian bytes each. */
static uint64_t fold_hashes(const uint64_t *h, size_t n)
{
    uint64_t d = FNV1A64_INIT;
    for (size_t i = 0; i < n; i++) {
        uint8_t le[8];
        for (int k = 0; k < 8; k++)
            le[k] = (uint8_t)(h[i] >> (8 * k));
        d = fnv1a64(d, le, 8);
    }
    return d;
}

void dataset_block_digests(uint64_t *out, const SplitData *data, size_t sample_bytes,
                           size_t block)
{
    uint64_t *h = XCALLOC(uint64_t, block);
    for (size_t b = 0; b * block < data->count; b++) {
        const size_t lo = b * block, n = data->count - lo < block ? data->count - lo : block;
        sample_hashes(h, data->images + lo * sample_bytes, data->labels + lo, n, sample_bytes);
        out[b] = fold_hashes(h, n);
    }
    free(h);
}

static uint64_t split_fingerprint(uint64_t h, size_t count, const DataShape *shape,
                                  const uint64_t *digests, size_t blocks)
{
    const uint64_t dims[4] = {count, (uint64_t)shape->channels, (uint64_t)shape->height,
                              (uint64_t)shape->width};
    for (int k = 0; k < 4; k++) {
        uint8_t le[8];
        for (int j = 0; j < 8; j++)
            le[j] = (uint8_t)(dims[k] >> (8 * j));
        h = fnv1a64(h, le, 8);
    }
    for (size_t b = 0; b < blocks; b++) {
        uint8_t le[8];
        for (int j = 0; j < 8; j++)
            le[j] = (uint8_t)(digests[b] >> (8 * j));
        h = fnv1a64(h, le, 8);
    }
    return h;
}

static size_t blocks_of(size_t count, size_t block)
{
    return (count + block - 1) / block;
}

void dataset_fingerprint(char out[32], const DataShape *shape, const SplitData *train,
                         const SplitData *test)
{
    uint64_t h = FNV1A64_INIT;
    const SplitData *s[2] = {train, test};
    for (int i = 0; i < 2; i++) {
        size_t nb = blocks_of(s[i]->count, DATASET_CHUNK);
        uint64_t *d = XCALLOC(uint64_t, nb);
        dataset_block_digests(d, s[i], data_sample_bytes(shape), DATASET_CHUNK);
        h = split_fingerprint(h, s[i]->count, shape, d, nb);
        free(d);
    }
    snprintf(out, 32, "%016" PRIx64, h);
}

static int write_array(hid_t group, const char *name, const uint8_t *data, size_t count,
                       const DataShape *shape)
{
    /* images [N,H,W] or [N,C,H,W] in chunks of DATASET_CHUNK samples; labels [N] */
    int nd = 1;
    hsize_t dims[4] = {count}, chunk[4] = {count < DATASET_CHUNK ? count : DATASET_CHUNK};
    if (shape) {
        nd = shape->ndim;
        int k = 1;
        if (nd == 4)
            dims[k++] = (hsize_t)shape->channels;
        dims[k++] = (hsize_t)shape->height;
        dims[k++] = (hsize_t)shape->width;
        for (int d = 1; d < nd; d++)
            chunk[d] = dims[d];
    } else {
        chunk[0] = count < 10 * DATASET_CHUNK ? count : 10 * DATASET_CHUNK;
    }
    if (chunk[0] == 0)
        chunk[0] = 1;
    hid_t space = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, nd, chunk);
    H5Pset_obj_track_times(dcpl, 0); /* same data, same file bytes */
    /* checksummed, not compressed: inflating Fashion-MNIST's 55 MB took 170 ms
     * of every start (more than the rest of it); read from the page cache the
     * plain bytes cost a tenth of that, for a file 1.8x the size */
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(group, name, H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int rc = 0;
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = err_set("cannot write %s: %s", name, h5_error_text()); /* before closing */
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    return rc;
}

static int write_digests(hid_t group, const SplitData *data, size_t sample_bytes)
{
    const hsize_t nb = blocks_of(data->count, DATASET_CHUNK);
    uint64_t *dg = XCALLOC(uint64_t, nb ? nb : 1);
    dataset_block_digests(dg, data, sample_bytes, DATASET_CHUNK);
    hid_t space = H5Screate_simple(1, &nb, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    hid_t d = H5Dcreate2(group, "digests", H5T_STD_U64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int rc = 0;
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, dg) < 0)
        rc = err_set("cannot write digests: %s", h5_error_text());
    if (rc == 0)
        rc = h5_write_attr_int64(d, "block_samples", DATASET_CHUNK);
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    free(dg);
    return rc;
}

int dataset_write(const char *path, const DataShape *shape, const SplitData *train,
                  const SplitData *test, const char *source)
{
    hid_t f = h5_create_image();
    if (f < 0)
        return -1;
    int rc = 0;
    const SplitData *s[2] = {train, test};
    for (int i = 0; i < 2 && rc == 0; i++) {
        hid_t g = H5Gcreate2(f, split_names[i], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            rc = err_set("cannot create group /%s: %s", split_names[i], h5_error_text());
            break;
        }
        rc = write_array(g, "images", s[i]->images, s[i]->count, shape);
        if (rc == 0)
            rc = write_array(g, "labels", s[i]->labels, s[i]->count, NULL);
        if (rc == 0)
            rc = write_digests(g, s[i], data_sample_bytes(shape));
        H5Gclose(g);
    }
    char *names = XCALLOC(char, (size_t)shape->classes * (DATASET_NAME_MAX + 1) + 1);
    for (int k = 0; k < shape->classes; k++) {
        strcat(names, shape->class_names[k]);
        if (k + 1 < shape->classes)
            strcat(names, ",");
    }
    if (rc == 0)
        rc = h5_write_attr_string(f, "format", DATASET_FORMAT);
    if (rc == 0)
        rc = h5_write_attr_string(f, "class_names", names);
    if (rc == 0)
        rc = h5_write_attr_string(f, "source", source);
    free(names);
    return h5_commit_image(f, rc, path);
}

/* Check one array: unsigned 8-bit integers, [N] for labels, [N,H,W] or
 * [N,C,H,W] for images; dims gets the sizes. */
static int check_array(const Dataset *ds, hid_t d, const char *name, int images, int *nd,
                       hsize_t dims[8])
{
    hid_t t = H5Dget_type(d);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 &&
             H5Tget_sign(t) == H5T_SGN_NONE;
    H5Tclose(t);
    if (!ok)
        return err_set("%s: %s is not uint8", ds->path, name);
    hid_t s = H5Dget_space(d);
    *nd = H5Sget_simple_extent_ndims(s);
    for (int k = 0; k < 8; k++)
        dims[k] = 0;
    if (*nd > 0 && *nd <= 8)
        H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    if (images && *nd != 3 && *nd != 4)
        return err_set("%s: %s has %d dimensions, expected [N,H,W] or [N,C,H,W]", ds->path, name,
                       *nd);
    if (!images && *nd != 1)
        return err_set("%s: %s has %d dimensions, expected [N]", ds->path, name, *nd);
    for (int k = 1; k < *nd; k++)
        if (dims[k] == 0 || dims[k] > 65536)
            return err_set("%s: %s has a side of %llu", ds->path, name,
                           (unsigned long long)dims[k]);
    if (dims[0] == 0)
        return err_set("%s: %s is empty", ds->path, name);
    return 0;
}

/* class_names: comma-separated, one per class. */
static int read_classes(Dataset *ds)
{
    char *names = XCALLOC(char, 65536);
    int rc = h5_read_attr_string(ds->file, "class_names", names, 65536);
    if (rc < 0) {
        rc = err_set("%s: %s (the names of the classes, comma-separated)", ds->path, err_get());
        free(names);
        return rc;
    }
    int k = 1;
    for (const char *c = names; *c; c++)
        k += *c == ',';
    if (k < 2 || k > DATASET_MAX_CLASSES) {
        free(names);
        return err_set("%s: class_names names %d classes; 2 to %d are possible", ds->path, k,
                       DATASET_MAX_CLASSES);
    }
    ds->shape.classes = k;
    ds->shape.class_names = xcalloc((size_t)k, DATASET_NAME_MAX);
    const char *c = names;
    for (int j = 0; j < k; j++) {
        size_t len = strcspn(c, ",");
        snprintf(ds->shape.class_names[j], DATASET_NAME_MAX, "%.*s", (int)len, c);
        c += len + (c[len] == ',');
    }
    free(names);
    return 0;
}

/* Every chunk of the dataset is stored. HDF5 reads a chunk that its index
 * does not know as the fill value, without an error: after damage to the
 * index, a thousand black images. */
static int check_stored(const Dataset *ds, hid_t d, const char *name)
{
    hid_t space = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    hsize_t dims[8] = {0}, chunk[8] = {0}, have = 0;
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED;
    int rc = 0;
    if (nd > 0 && nd <= 8 && chunked) {
        H5Sget_simple_extent_dims(space, dims, NULL);
        H5Pget_chunk(dcpl, nd, chunk);
        hsize_t want = 1;
        for (int k = 0; k < nd; k++)
            want *= chunk[k] ? (dims[k] + chunk[k] - 1) / chunk[k] : 0;
        if (H5Dget_num_chunks(d, space, &have) < 0)
            rc = err_set("%s: cannot list the chunks of %s: %s (the file is damaged)", ds->path,
                         name, h5_error_text());
        else if (have != want)
            rc = err_set("%s: %s has %llu of its %llu chunks: its chunk index is damaged "
                         "(make the file again with dpcnn-prepare)",
                         ds->path, name, (unsigned long long)have, (unsigned long long)want);
    } else if (nd > 0 && nd <= 8) {
        /* contiguous (h5py's default): stored whole, or not at all */
        H5D_space_status_t st;
        if (H5Dget_space_status(d, &st) < 0 || st != H5D_SPACE_STATUS_ALLOCATED)
            rc = err_set("%s: %s was never written", ds->path, name);
    }
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

/* /split/digests: uint64, one per block of block_samples samples. */
static int read_digests(Dataset *ds, int i)
{
    char name[32];
    snprintf(name, sizeof name, "/%s/digests", split_names[i]);
    if (H5Lexists(ds->file, split_names[i], H5P_DEFAULT) <= 0 ||
        H5Lexists(ds->file, name, H5P_DEFAULT) <= 0) {
        char format[64] = "";
        h5_read_attr_string(ds->file, "format", format, sizeof format);
        return err_set("%s: %s is missing: %s (make the file again with dpcnn-prepare, or "
                       "add the digests as the README shows)",
                       ds->path, name,
                       strcmp(format, "dpcnn-mnist-1") == 0
                           ? "the file was made by an older dpcnn-prepare"
                           : "without digests damage to the file cannot be detected");
    }
    hid_t d = H5Dopen2(ds->file, name, H5P_DEFAULT);
    if (d < 0)
        return err_set("%s: cannot open %s: %s", ds->path, name, h5_error_text());
    long long block = 0;
    int rc = h5_read_attr_int64(d, "block_samples", &block);
    if (rc < 0 || block < 1 || block > (1LL << 30))
        rc = err_set("%s: %s: attribute block_samples is missing or not a positive number",
                     ds->path, name);
    hid_t t = H5Dget_type(d);
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 8;
    if (t >= 0)
        H5Tclose(t);
    int nd;
    hsize_t dims[8];
    const size_t want = rc == 0 ? blocks_of(ds->count[i], (size_t)block) : 0;
    if (rc == 0 && (!ok || h5_dataset_dims(ds->file, name, &nd, dims) < 0 || nd != 1 ||
                    dims[0] != want))
        rc = err_set("%s: %s should be uint64 [%zu], one per block of %lld samples", ds->path,
                     name, want, block);
    if (rc == 0) {
        ds->block[i] = (size_t)block;
        ds->digests[i] = XCALLOC(uint64_t, want);
        if (check_stored(ds, d, name) < 0)
            rc = -1;
        else if (H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->digests[i]) < 0)
            rc = err_set("%s: cannot read %s: %s", ds->path, name, h5_error_text());
    }
    H5Dclose(d);
    return rc;
}

/* How the arrays are stored, checked before any is read: Fletcher-32 on
 * every chunk (what makes a damaged chunk an error), and no chunk larger than
 * its array. HDF5 1.10 trusts both: it reads an unfiltered chunk stored shorter
 * than the chunk past its end, and crashes in H5Dread on a chunk shape larger
 * than the array (both found by tests/fuzz). */
static int check_storage(const Dataset *ds, int split)
{
    for (int which = 0; which < 2; which++) {
        const char *name = which ? "labels" : "images";
        const int nd = which ? 1 : ds->shape.ndim;
        hsize_t most[4] = {ds->count[split], 0, 0, 0}, chunk[4];
        if (!which) { /* the image's sides, as stored */
            int k = 1;
            if (nd == 4)
                most[k++] = (hsize_t)ds->shape.channels;
            most[k++] = (hsize_t)ds->shape.height;
            most[k++] = (hsize_t)ds->shape.width;
        }
        hid_t dcpl = H5Dget_create_plist(which ? ds->labels[split] : ds->images[split]);
        unsigned flags;
        int summed = dcpl >= 0 && H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags,
                                                       NULL, NULL, 0, NULL, NULL) >= 0;
        int fits = summed && H5Pget_chunk(dcpl, 4, chunk) == nd;
        for (int k = 0; fits && k < nd; k++)
            fits = chunk[k] >= 1 && chunk[k] <= most[k];
        if (dcpl >= 0)
            H5Pclose(dcpl);
        if (!summed)
            return err_set("%s: /%s/%s has no Fletcher-32 checksums (make the file with "
                           "dpcnn-prepare)",
                           ds->path, split_names[split], name);
        if (!fits)
            return err_set("%s: /%s/%s is stored in chunks larger than itself (damaged?)",
                           ds->path, split_names[split], name);
    }
    return 0;
}

int dataset_open(Dataset *ds, const char *path)
{
    h5_quiet();
    memset(ds, 0, sizeof *ds);
    ds->file = ds->images[0] = ds->images[1] = ds->labels[0] = ds->labels[1] = -1;
    ds->path = xstrdup(path);
    if (fs_check_input(path, "the data file") < 0) {
        if (!fs_exists(path))
            err_set("%s; run `make data`, or pass --data FILE", err_get());
        goto fail;
    }
    if (H5Fis_hdf5(path) <= 0) {
        err_set("%s: not an HDF5 file (make one with dpcnn-prepare)", path);
        goto fail;
    }
    ds->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ds->file < 0) {
        err_set("%s: cannot open: %s", path, h5_error_text());
        goto fail;
    }
    for (int i = 0; i < 2; i++) {
        char in[32], ln[32];
        snprintf(in, sizeof in, "/%s/images", split_names[i]);
        snprintf(ln, sizeof ln, "/%s/labels", split_names[i]);
        if (H5Lexists(ds->file, split_names[i], H5P_DEFAULT) <= 0 ||
            H5Lexists(ds->file, in, H5P_DEFAULT) <= 0 ||
            H5Lexists(ds->file, ln, H5P_DEFAULT) <= 0) {
            err_set("%s: %s or %s is missing (not a dpcnn data file?)", path, in, ln);
            goto fail;
        }
        ds->images[i] = H5Dopen2(ds->file, in, H5P_DEFAULT);
        ds->labels[i] = H5Dopen2(ds->file, ln, H5P_DEFAULT);
        if (ds->images[i] < 0 || ds->labels[i] < 0) {
            err_set("%s: cannot open %s: %s", path, in, h5_error_text());
            goto fail;
        }
        int nd, ndl;
        hsize_t dims[8], ldims[8];
        if (check_array(ds, ds->images[i], in, 1, &nd, dims) < 0 ||
            check_array(ds, ds->labels[i], ln, 0, &ndl, ldims) < 0)
            goto fail;
        const size_t ni = dims[0], nl = ldims[0];
        if (ni != nl) {
            err_set("%s: %s holds %zu images but %s holds %zu labels", path, in, ni, ln, nl);
            goto fail;
        }
        DataShape sh = {nd == 4 ? (int)dims[1] : 1, (int)dims[nd - 2], (int)dims[nd - 1], nd, 0,
                        NULL};
        if (i == 1 && (sh.channels != ds->shape.channels || sh.height != ds->shape.height ||
                       sh.width != ds->shape.width)) {
            err_set("%s: the test images are %dx%dx%d, the training images %dx%dx%d", path,
                    sh.channels, sh.height, sh.width, ds->shape.channels, ds->shape.height,
                    ds->shape.width);
            goto fail;
        }
        if ((size_t)sh.channels * sh.height * sh.width > ((size_t)1 << 26)) {
            err_set("%s: samples of %dx%dx%d are larger than dpcnn takes", path, sh.channels,
                    sh.height, sh.width);
            goto fail;
        }
        ds->shape = sh;
        ds->count[i] = ni;
    }
    ds->sample_bytes = data_sample_bytes(&ds->shape);
    if (read_classes(ds) < 0)
        goto fail;
    for (int i = 0; i < 2; i++)
        if (check_storage(ds, i) < 0)
            goto fail;
    for (int i = 0; i < 2; i++) {
        char in[32], ln[32];
        snprintf(in, sizeof in, "/%s/images", split_names[i]);
        snprintf(ln, sizeof ln, "/%s/labels", split_names[i]);
        if (check_stored(ds, ds->images[i], in) < 0 || check_stored(ds, ds->labels[i], ln) < 0 ||
            read_digests(ds, i) < 0)
            goto fail;
    }
    uint64_t h = FNV1A64_INIT;
    for (int i = 0; i < 2; i++)
        h = split_fingerprint(h, ds->count[i], &ds->shape, ds->digests[i],
                              blocks_of(ds->count[i], ds->block[i]));
    snprintf(ds->fingerprint, sizeof ds->fingerprint, "%016" PRIx64, h);
    return 0;
fail:;
    char *why = xstrdup(err_get());
    dataset_close(ds);
    err_set("%s", why);
    free(why);
    return -1;
}

/* Samples start .. start+count-1 of a split, as stored (no checks). */
static int read_raw(const Dataset *ds, int split, size_t start, size_t count, uint8_t *images,
                    uint8_t *labels)
{
    for (int which = 0; which < 2; which++) {
        hid_t d = which ? ds->labels[split] : ds->images[split];
        const int nd = which ? 1 : ds->shape.ndim;
        hsize_t off[4] = {start, 0, 0, 0}, cnt[4] = {count, 0, 0, 0};
        if (!which) {
            int k = 1;
            if (nd == 4)
                cnt[k++] = (hsize_t)ds->shape.channels;
            cnt[k++] = (hsize_t)ds->shape.height;
            cnt[k++] = (hsize_t)ds->shape.width;
        }
        hid_t fs = H5Dget_space(d);
        hid_t ms = H5Screate_simple(nd, cnt, NULL);
        herr_t r = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
        if (r >= 0)
            r = H5Dread(d, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, which ? labels : images);
        if (r < 0) /* before any other call clears HDF5's error stack */
            err_set("%s: reading /%s/%s samples %zu..%zu failed: %s; the file may be damaged "
                    "(make it again with dpcnn-prepare)",
                    ds->path, split_names[split], which ? "labels" : "images", start,
                    start + count - 1, h5_error_text());
        H5Sclose(ms);
        H5Sclose(fs);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Check every block that [start, start+count) touches against its digest.
 * The part of an edge block outside the range is read from the file into
 * scratch; the rest is hashed where it lies. */
static int verify(const Dataset *ds, int split, size_t start, size_t count,
                  const uint8_t *images, const uint8_t *labels)
{
    const size_t B = ds->block[split], N = ds->count[split], end = start + count;
    const size_t P = ds->sample_bytes;
    uint64_t *h = XCALLOC(uint64_t, B);
    uint8_t *img = NULL, *lab = NULL;
    int rc = 0;
    for (size_t b = start / B; b * B < end && rc == 0; b++) {
        const size_t lo = b * B, hi = lo + B < N ? lo + B : N;
        const size_t a = lo > start ? lo : start, z = hi < end ? hi : end;
        sample_hashes(h + (a - lo), images + (a - start) * P, labels + (a - start), z - a, P);
        const size_t edge[2][2] = {{lo, a}, {z, hi}}; /* outside the range */
        for (int e = 0; e < 2 && rc == 0; e++) {
            const size_t f = edge[e][0], n = edge[e][1] - f;
            if (n == 0)
                continue;
            if (!img) {
                img = XCALLOC(uint8_t, B * P);
                lab = XCALLOC(uint8_t, B);
            }
            rc = read_raw(ds, split, f, n, img, lab);
            if (rc == 0)
                sample_hashes(h + (f - lo), img, lab, n, P);
        }
        if (rc == 0 && fold_hashes(h, hi - lo) != ds->digests[split][b])
            rc = err_set("%s: /%s samples %zu..%zu do not match their digest: the file is "
                         "damaged or was edited (make it again with dpcnn-prepare)",
                         ds->path, split_names[split], lo, hi - 1);
    }
    free(h);
    free(img);
    free(lab);
    return rc;
}

int dataset_read(const Dataset *ds, int split, size_t start, size_t count, uint8_t *images,
                 uint8_t *labels)
{
    if (count == 0)
        return 0;
    if (start + count > ds->count[split])
        return err_set("%s: samples %zu..%zu of /%s are past its end (%zu)", ds->path, start,
                       start + count - 1, split_names[split], ds->count[split]);
    if (read_raw(ds, split, start, count, images, labels) < 0 ||
        verify(ds, split, start, count, images, labels) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (labels[i] >= ds->shape.classes)
            return err_set("%s: /%s/labels: sample %zu has label %d, outside 0..%d (the file "
                           "names %d classes)",
                           ds->path, split_names[split], start + i, labels[i],
                           ds->shape.classes - 1, ds->shape.classes);
    return 0;
}

void dataset_close(Dataset *ds)
{
    for (int i = 0; i < 2; i++) {
        if (ds->images[i] >= 0)
            H5Dclose(ds->images[i]);
        if (ds->labels[i] >= 0)
            H5Dclose(ds->labels[i]);
        ds->images[i] = ds->labels[i] = -1;
        free(ds->digests[i]);
        ds->digests[i] = NULL;
    }
    if (ds->file >= 0)
        H5Fclose(ds->file);
    ds->file = -1;
    free(ds->shape.class_names);
    ds->shape.class_names = NULL;
    free(ds->path);
    ds->path = NULL;
}
