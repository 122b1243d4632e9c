#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/h5util.h"

void h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static _Thread_local char t_h5err[512];

/* The stack is walked from the innermost call outwards: the first entry is the
 * library's most specific complaint (e.g. "Fletcher32 checksum failed"). */
static herr_t take_first(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)data;
    if (n == 0)
        snprintf(t_h5err, sizeof t_h5err, "%s", e->desc ? e->desc : "");
    return 0;
}

/* The outermost message names the operation; the innermost the cause. */
static _Thread_local char t_h5outer[256];
static herr_t take_last(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)n;
    (void)data;
    snprintf(t_h5outer, sizeof t_h5outer, "%s", e->desc ? e->desc : "");
    return 0;
}

const char *h5_error_text(void)
{
    t_h5err[0] = t_h5outer[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, take_first, NULL);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, take_last, NULL);
    if (t_h5outer[0] && strcmp(t_h5outer, t_h5err) != 0) {
        size_t len = strlen(t_h5err);
        snprintf(t_h5err + len, sizeof t_h5err - len, " (%s)", t_h5outer);
    }
    H5Eclear2(H5E_DEFAULT);
    return t_h5err[0] ? t_h5err : "unknown HDF5 error";
}

static int write_attr(hid_t obj, const char *name, hid_t type, const void *value)
{
    if (H5Aexists(obj, name) > 0)
        H5Adelete(obj, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (a >= 0 && H5Awrite(a, type, value) >= 0) ? 0 : -1;
    if (rc < 0) /* before a successful call clears HDF5's error stack */
        err_set("cannot write attribute %s: %s", name, h5_error_text());
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return rc;
}

int h5_write_attr_string(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    int rc = write_attr(obj, name, t, value);
    H5Tclose(t);
    return rc;
}

int h5_write_attr_double(hid_t obj, const char *name, double value)
{
    return write_attr(obj, name, H5T_NATIVE_DOUBLE, &value);
}

int h5_write_attr_int64(hid_t obj, const char *name, long long value)
{
    return write_attr(obj, name, H5T_NATIVE_LLONG, &value);
}

/* H5Aread writes every element of the attribute: one that is not a single
 * value would overflow the caller's variable (found by tests/fuzz). */
static int check_single(hid_t a, const char *name)
{
    hid_t s = H5Aget_space(a);
    hssize_t n = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (s >= 0)
        H5Sclose(s);
    return n == 1 ? 0 : err_set("attribute %s is not a single value", name);
}

static int read_attr(hid_t obj, const char *name, hid_t memtype, void *value)
{
    if (H5Aexists(obj, name) <= 0)
        return err_set("attribute %s is missing", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return err_set("cannot read attribute %s: %s", name, h5_error_text());
    int rc = check_single(a, name);
    if (rc == 0 && H5Aread(a, memtype, value) < 0)
        rc = err_set("cannot read attribute %s: %s", name, h5_error_text());
    H5Aclose(a);
    return rc;
}

int h5_read_attr_double(hid_t obj, const char *name, double *value)
{
    return read_attr(obj, name, H5T_NATIVE_DOUBLE, value);
}

int h5_read_attr_int64(hid_t obj, const char *name, long long *value)
{
    return read_attr(obj, name, H5T_NATIVE_LLONG, value);
}

int h5_read_attr_string(hid_t obj, const char *name, char *buf, size_t n)
{
    if (H5Aexists(obj, name) <= 0)
        return err_set("attribute %s is missing", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return err_set("cannot open attribute %s: %s", name, h5_error_text());
    if (check_single(a, name) < 0) {
        H5Aclose(a);
        return -1;
    }
    hid_t ft = H5Aget_type(a);
    int rc = 0;
    if (H5Tget_class(ft) != H5T_STRING) {
        rc = err_set("attribute %s is not a string", name);
    } else if (H5Tis_variable_str(ft) > 0) {
        /* written by h5py: variable-length */
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        if (H5Aread(a, mt, &s) < 0) {
            rc = err_set("cannot read attribute %s: %s", name, h5_error_text());
        } else {
            snprintf(buf, n, "%s", s ? s : "");
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(ft);
        char tmp[4096];
        if (size >= sizeof tmp) {
            rc = err_set("attribute %s is too long", name);
        } else {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, size);
            if (H5Aread(a, mt, tmp) < 0)
                rc = err_set("cannot read attribute %s: %s", name, h5_error_text());
            tmp[size] = '\0';
            snprintf(buf, n, "%s", tmp);
            H5Tclose(mt);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int h5_dataset_dims(hid_t file, const char *name, int *ndim, hsize_t dims[8])
{
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return -1;
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t s = H5Dget_space(d);
    int r = H5Sget_simple_extent_ndims(s);
    if (r >= 0 && r <= 8)
        H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    if (r < 0 || r > 8)
        return -1;
    *ndim = r;
    return 0;
}

int h5_close_commit(hid_t f, int rc, const char *tmp, const char *path)
{
    if (H5Fclose(f) < 0 && rc == 0)
        rc = err_set("%s: cannot close: %s", tmp, h5_error_text());
    if (rc < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", err_get());
        unlink(tmp);
        return err_set("%s: %s", path, why);
    }
    return fs_commit(tmp, path);
}

hid_t h5_create_temp(const char *path, char *tmp, size_t n)
{
    h5_quiet();
    fs_temp_name(tmp, n, path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        err_set("%s: cannot create: %s", tmp, h5_error_text());
    return f;
}
