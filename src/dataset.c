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
#include "dpcnn/model.h"

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t");

const char *const dataset_class_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static const char *const split_names[2] = {"train", "test"};

void dataset_fingerprint(char out[32], const SplitData *train, const SplitData *test)
{
    uint64_t h = FNV1A64_INIT;
    const SplitData *s[2] = {train, test};
    for (int i = 0; i < 2; i++) {
        uint64_t n = s[i]->count;
        h = fnv1a64(h, &n, sizeof n);
        h = fnv1a64(h, s[i]->images, s[i]->count * MODEL_IMAGE_PIXELS);
        h = fnv1a64(h, s[i]->labels, s[i]->count);
    }
    snprintf(out, 32, "%016" PRIx64, h);
}

static int write_array(hid_t group, const char *name, const uint8_t *data, size_t count,
                       int is_images)
{
    int nd = is_images ? 3 : 1;
    hsize_t dims[3] = {count, MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE};
    hsize_t chunk[3] = {count < DATASET_CHUNK ? count : DATASET_CHUNK, MODEL_IMAGE_SIDE,
                        MODEL_IMAGE_SIDE};
    if (!is_images)
        chunk[0] = count < 10 * DATASET_CHUNK ? count : 10 * DATASET_CHUNK;
    hid_t space = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, nd, chunk);
    H5Pset_obj_track_times(dcpl, 0); /* same data, same file bytes */
    H5Pset_fletcher32(dcpl);
    H5Pset_deflate(dcpl, 4);
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

int dataset_write(const char *path, const SplitData *train, const SplitData *test,
                  const char *source)
{
    char tmp[4200];
    hid_t f = h5_create_temp(path, tmp, sizeof tmp);
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
        rc = write_array(g, "images", s[i]->images, s[i]->count, 1);
        if (rc == 0)
            rc = write_array(g, "labels", s[i]->labels, s[i]->count, 0);
        H5Gclose(g);
    }
    char fp[32];
    dataset_fingerprint(fp, train, test);
    char names[256] = "";
    for (int k = 0; k < 10; k++) {
        strcat(names, dataset_class_names[k]);
        if (k < 9)
            strcat(names, ",");
    }
    if (rc == 0)
        rc = h5_write_attr_string(f, "format", DATASET_FORMAT);
    if (rc == 0)
        rc = h5_write_attr_string(f, "class_names", names);
    if (rc == 0)
        rc = h5_write_attr_string(f, "source", source);
    if (rc == 0)
        rc = h5_write_attr_string(f, "fingerprint", fp);
    return h5_close_commit(f, rc, tmp, path);
}

/* Check one array: unsigned 8-bit integers with the expected rank and sides. */
static int check_array(const Dataset *ds, hid_t d, const char *name, int want_nd, size_t *count)
{
    hid_t t = H5Dget_type(d);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 &&
             H5Tget_sign(t) == H5T_SGN_NONE;
    H5Tclose(t);
    if (!ok)
        return err_set("%s: %s is not uint8", ds->path, name);
    hid_t s = H5Dget_space(d);
    hsize_t dims[8] = {0};
    int nd = H5Sget_simple_extent_ndims(s);
    if (nd > 0 && nd <= 8)
        H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    if (nd != want_nd)
        return err_set("%s: %s has %d dimensions, expected %s", ds->path, name, nd,
                       want_nd == 3 ? "[N,28,28]" : "[N]");
    if (want_nd == 3 && (dims[1] != MODEL_IMAGE_SIDE || dims[2] != MODEL_IMAGE_SIDE))
        return err_set("%s: %s is [%llu,%llu,%llu], expected [N,28,28]", ds->path, name,
                       (unsigned long long)dims[0], (unsigned long long)dims[1],
                       (unsigned long long)dims[2]);
    if (dims[0] == 0)
        return err_set("%s: %s is empty", ds->path, name);
    *count = dims[0];
    return 0;
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
        int nd = which ? 1 : 3;
        hsize_t most[3] = {ds->count[split], MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE}, chunk[3];
        hid_t dcpl = H5Dget_create_plist(which ? ds->labels[split] : ds->images[split]);
        unsigned flags;
        int summed = dcpl >= 0 && H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags,
                                                       NULL, NULL, 0, NULL, NULL) >= 0;
        int fits = summed && H5Pget_chunk(dcpl, 3, chunk) == nd;
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
    if (access(path, R_OK) < 0) {
        err_set("%s: cannot read the data file (%s)%s", path,
                fs_exists(path) ? "permission denied" : "no such file",
                fs_exists(path) ? "" : "; run `make data`, or pass --data FILE");
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
        size_t ni, nl;
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
        if (check_array(ds, ds->images[i], in, 3, &ni) < 0 ||
            check_array(ds, ds->labels[i], ln, 1, &nl) < 0)
            goto fail;
        if (ni != nl) {
            err_set("%s: %s holds %zu images but %s holds %zu labels", path, in, ni, ln, nl);
            goto fail;
        }
        ds->count[i] = ni;
    }
    for (int i = 0; i < 2; i++)
        if (check_storage(ds, i) < 0)
            goto fail;
    if (h5_read_attr_string(ds->file, "fingerprint", ds->fingerprint, sizeof ds->fingerprint) < 0)
        snprintf(ds->fingerprint, sizeof ds->fingerprint, "unknown");
    return 0;
fail:;
    char why[1024];
    snprintf(why, sizeof why, "%s", err_get());
    dataset_close(ds);
    return err_set("%s", why);
}

int dataset_read(const Dataset *ds, int split, size_t start, size_t count, uint8_t *images,
                 uint8_t *labels)
{
    if (count == 0)
        return 0;
    if (start + count > ds->count[split])
        return err_set("%s: samples %zu..%zu of /%s are past its end (%zu)", ds->path, start,
                       start + count - 1, split_names[split], ds->count[split]);
    for (int which = 0; which < 2; which++) {
        hid_t d = which ? ds->labels[split] : ds->images[split];
        int nd = which ? 1 : 3;
        hsize_t off[3] = {start, 0, 0}, cnt[3] = {count, MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE};
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
    for (size_t i = 0; i < count; i++)
        if (labels[i] >= MODEL_CLASSES)
            return err_set("%s: /%s/labels: sample %zu has label %d, outside 0..%d", ds->path,
                           split_names[split], start + i, labels[i], MODEL_CLASSES - 1);
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
    }
    if (ds->file >= 0)
        H5Fclose(ds->file);
    ds->file = -1;
    free(ds->path);
    ds->path = NULL;
}
