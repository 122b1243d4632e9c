#include "config.h"

#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/h5util.h"
#include "dpcnn/model.h"

static int write_tensors(hid_t loc, const float *flat)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        hsize_t dims[4];
        for (int d = 0; d < ti->ndim; d++)
            dims[d] = (hsize_t)ti->shape[d];
        hid_t s = H5Screate_simple(ti->ndim, dims, NULL);
        /* No creation times in the object headers: the same weights give the same file. */
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_obj_track_times(dcpl, 0);
        hid_t d = H5Dcreate2(loc, ti->name, H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Pclose(dcpl);
        herr_t r = d < 0 ? -1
                         : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                    flat + ti->offset);
        if (r < 0) /* before any other call clears HDF5's error stack */
            err_set("cannot write %s: %s", ti->name, h5_error_text());
        if (d >= 0)
            H5Dclose(d);
        H5Sclose(s);
        if (r < 0)
            return -1;
    }
    return 0;
}

int weights_save(const char *path, const float *params)
{
    h5_quiet();
    char tmp[4200];
    fs_temp_name(tmp, sizeof tmp, path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return err_set("%s: cannot create: %s", tmp, h5_error_text());
    int rc = write_tensors(f, params);
    if (rc == 0)
        rc = h5_write_attr_string(f, "dpcnn_version", PACKAGE_VERSION);
    if (H5Fclose(f) < 0 && rc == 0)
        rc = err_set("cannot close: %s", h5_error_text());
    if (rc < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", err_get());
        unlink(tmp);
        return err_set("%s: %s", path, why);
    }
    return fs_commit(tmp, path);
}

/* Count root datasets that are not model tensors (a strict load refuses them). */
static herr_t find_unexpected(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0)
        return 0;
    int is_dataset = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (is_dataset && model_tensor_index(name) < 0) {
        snprintf((char *)data, 256, "%s", name);
        return 1;
    }
    return 0;
}

static int read_tensors(hid_t loc, const char *path, float *flat)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        int nd;
        hsize_t dims[8];
        if (h5_dataset_dims(loc, ti->name, &nd, dims) < 0)
            return err_set("%s: tensor %s is missing", path, ti->name);
        int same = nd == ti->ndim;
        for (int d = 0; same && d < nd; d++)
            same = dims[d] == (hsize_t)ti->shape[d];
        if (!same) {
            char got[128] = "", want[128] = "";
            for (int d = 0; d < nd && d < 8; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? "," : "",
                         (unsigned long long)dims[d]);
            for (int d = 0; d < ti->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? "," : "",
                         ti->shape[d]);
            return err_set("%s: tensor %s has shape [%s], expected [%s]", path, ti->name, got,
                           want);
        }
        hid_t d = H5Dopen2(loc, ti->name, H5P_DEFAULT);
        hid_t ty = d >= 0 ? H5Dget_type(d) : -1;
        int is_float = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT;
        if (ty >= 0)
            H5Tclose(ty);
        herr_t r = (d >= 0 && is_float)
                       ? H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 flat + ti->offset)
                       : -1;
        if (!is_float && d >= 0)
            err_set("%s: tensor %s is not floating point", path, ti->name);
        else if (r < 0)
            err_set("%s: cannot read %s: %s", path, ti->name, h5_error_text());
        if (d >= 0)
            H5Dclose(d);
        if (r < 0)
            return -1;
    }
    return 0;
}

int weights_load(const char *path, float *params)
{
    h5_quiet();
    if (access(path, R_OK) < 0)
        return err_set("%s: cannot read: %s", path,
                       fs_exists(path) ? "permission denied" : "no such file");
    if (H5Fis_hdf5(path) <= 0)
        return err_set("%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return err_set("%s: cannot open: %s", path, h5_error_text());
    char extra[256] = "";
    int rc = read_tensors(f, path, params);
    if (rc == 0 && H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_unexpected, extra) > 0)
        rc = err_set("%s: unexpected tensor %s (not part of this network)", path, extra);
    H5Fclose(f);
    return rc;
}
