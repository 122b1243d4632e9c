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

/* Build a file in memory (the core driver); h5_commit_image writes it to
 * path whole (temporary name, fsync, rename) if rc == 0, and closes it in
 * any case. -1 with a message on failure; nothing is then left on disk. */
hid_t h5_create_image(void);
int h5_commit_image(hid_t f, int rc, const char *path);

/* Rank and dims of a dataset; -1 if it is not there. */
int h5_dataset_dims(hid_t file, const char *name, int *ndim, hsize_t dims[8]);

#endif
