/* Small HDF5 helpers: quiet error stacks turned into one line of text, string
 * attributes, and typed checks of datasets. Every function returns -1 with a
 * message (err_get) on failure. */
#ifndef DPCNN_H5UTIL_H
#define DPCNN_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>

/* Stop HDF5 printing its own error stacks; dpcnn reports errors itself. */
void h5_quiet(void);
/* The most specific message on HDF5's error stack ("" when empty). */
const char *h5_error_text(void);

int h5_write_attr_string(hid_t obj, const char *name, const char *value);
/* Reads into buf (NUL-terminated, truncated to n-1). */
int h5_read_attr_string(hid_t obj, const char *name, char *buf, size_t n);
int h5_write_attr_double(hid_t obj, const char *name, double value);
int h5_write_attr_int64(hid_t obj, const char *name, long long value);
int h5_read_attr_double(hid_t obj, const char *name, double *value);
int h5_read_attr_int64(hid_t obj, const char *name, long long *value);

/* Start a file that will become path: create it under a temporary name
 * (fs_temp_name, written to tmp) with HDF5's error printing off; -1 and a
 * message if it cannot be created. h5_close_commit finishes it. */
hid_t h5_create_temp(const char *path, char *tmp, size_t n);

/* Finish a file written under the temporary name tmp: close it; if writing
 * failed (rc < 0) or the close fails, remove it and report the error against
 * path, else flush it and rename it to path (fs_commit). */
int h5_close_commit(hid_t f, int rc, const char *tmp, const char *path);

/* Rank and dims of a dataset; -1 if it is not there. */
int h5_dataset_dims(hid_t file, const char *name, int *ndim, hsize_t dims[8]);

#endif
