#include "config.h"

#include <stdio.h>
#include <stdlib.h>
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
/* HDF5's own I/O messages run over several lines ("file write failed: time
 * = ..., filename = ..., errno = 28, error message = 'No space left on
 * device', ..."): keep the system's message, on one line. */
static void tidy(char *out, size_t n, const char *desc)
{
    const char *m = strstr(desc, "error message = '");
    if (m) {
        m += strlen("error message = '");
        const char *end = strchr(m, '\'');
        snprintf(out, n, "%.*s", end ? (int)(end - m) : (int)strlen(m), m);
    } else {
        snprintf(out, n, "%s", desc);
    }
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static herr_t take_first(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)data;
    if (n == 0)
        tidy(t_h5err, sizeof t_h5err, e->desc ? e->desc : "");
    return 0;
}

/* The outermost message names the operation; the innermost the cause. */
static _Thread_local char t_h5outer[256];
static herr_t take_last(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)n;
    (void)data;
    tidy(t_h5outer, sizeof t_h5outer, e->desc ? e->desc : "");
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

/* One value, not an array: H5Aread writes every element, and an edited
 * file with a [10] attribute would overrun the caller's one value. */
static int single_value(hid_t a)
{
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0)
        H5Sclose(sp);
    return n == 1;
}

static int read_attr(hid_t obj, const char *name, hid_t memtype, void *value)
{
    if (H5Aexists(obj, name) <= 0)
        return err_set("attribute %s is missing", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a >= 0 && !single_value(a)) {
        H5Aclose(a);
        return err_set("attribute %s is not a single value", name);
    }
    int rc = (a >= 0 && H5Aread(a, memtype, value) >= 0) ? 0 : -1;
    if (rc < 0)
        err_set("cannot read attribute %s: %s", name, h5_error_text());
    if (a >= 0)
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
    hid_t ft = H5Aget_type(a);
    int rc = 0;
    if (!single_value(a)) {
        rc = err_set("attribute %s is not a single string", name);
    } else if (H5Tget_class(ft) != H5T_STRING) {
        rc = err_set("attribute %s is not a string", name);
    } else if (H5Tis_variable_str(ft) > 0) {
        /* written by h5py: variable-length */
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft)); /* h5py writes UTF-8: ASCII will not convert */
        if (H5Aread(a, mt, &s) < 0) {
            rc = err_set("cannot read attribute %s: %s", name, h5_error_text());
        } else {
            if (s && strlen(s) >= n)
                rc = err_set("attribute %s is longer than %zu bytes", name, n - 1);
            else
                snprintf(buf, n, "%s", s ? s : "");
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(ft);
        if (size == 0 || size > ((size_t)1 << 24)) {
            rc = err_set("attribute %s has a string size of %zu bytes", name, size);
        } else {
            char *tmp = XCALLOC(char, size + 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, size);
            H5Tset_cset(mt, H5Tget_cset(ft));
            if (H5Aread(a, mt, tmp) < 0)
                rc = err_set("cannot read attribute %s: %s", name, h5_error_text());
            tmp[size] = '\0';
            if (rc == 0 && strlen(tmp) >= n)
                rc = err_set("attribute %s is longer than %zu bytes", name, n - 1);
            else
                snprintf(buf, n, "%s", tmp);
            H5Tclose(mt);
            free(tmp);
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

/* Files dpcnn writes are built in memory (HDF5's core driver, no backing
 * store) and written out by plain POSIX calls. A write error (a full disk,
 * a failing device) then happens in dpcnn's own write(), never inside HDF5:
 * HDF5 cannot close a file it failed to flush, and left it open to crash at
 * library shutdown. The file reaches the disk in one write, by temporary
 * name, fsync and rename (fs_write_atomic). */
hid_t h5_create_image(void)
{
    h5_quiet();
    static _Atomic unsigned long serial;
    char name[64];
    /* the name is only HDF5's label for the open file: make it unique */
    snprintf(name, sizeof name, "dpcnn-image-%lu", (unsigned long)++serial);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = -1;
    if (fapl >= 0 && H5Pset_fapl_core(fapl, (size_t)1 << 16, 0) >= 0 &&
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0)
        f = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0)
        err_set("cannot create an HDF5 file in memory: %s", h5_error_text());
    if (fapl >= 0)
        H5Pclose(fapl);
    return f;
}

int h5_commit_image(hid_t f, int rc, const char *path)
{
    void *buf = NULL;
    ssize_t size = -1;
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0)
        size = H5Fget_file_image(f, NULL, 0);
    if (size > 0) {
        buf = malloc((size_t)size);
        if (!buf || H5Fget_file_image(f, buf, (size_t)size) != size)
            size = -1;
    }
    if (rc == 0 && size <= 0)
        rc = err_set("cannot build the file image: %s", h5_error_text());
    H5Fclose(f); /* in memory: nothing can fail to reach a disk */
    if (rc == 0)
        rc = fs_write_atomic(path, buf, (size_t)size);
    else
        rc = err_set("%s: %s", path, err_get());
    free(buf);
    return rc;
}
