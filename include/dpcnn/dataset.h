/* The data file: one HDF5 file holding an MNIST-format data set.
 *
 *   /train/images  uint8 [N,28,28]    /train/labels  uint8 [N]
 *   /test/images   uint8 [M,28,28]    /test/labels   uint8 [M]
 *
 * chunked (DATASET_CHUNK images per chunk), deflate-compressed and
 * Fletcher-32 checksummed, so a damaged chunk is an error, never silently
 * wrong pixels. Root attributes: format, class_names, source, fingerprint
 * (a 64-bit FNV-1a hash of the counts and bytes of all four arrays, in hex). */
#ifndef DPCNN_DATASET_H
#define DPCNN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_CHUNK 1000
#define DATASET_FORMAT "dpcnn-mnist-1"

enum { SPLIT_TRAIN = 0, SPLIT_TEST = 1 };

typedef struct Dataset {
    char *path;
    int64_t file;                    /* hid_t */
    int64_t images[2], labels[2];    /* hid_t, by split */
    size_t count[2];
    char fingerprint[32];
} Dataset;

/* Opens read-only and validates names, types, shapes and matching counts.
 * Labels are checked as they are read. */
int dataset_open(Dataset *ds, const char *path);
/* images [count,28,28], labels [count] from samples start .. start+count-1. */
int dataset_read(const Dataset *ds, int split, size_t start, size_t count, uint8_t *images,
                 uint8_t *labels);
void dataset_close(Dataset *ds);

typedef struct {
    const uint8_t *images, *labels;
    size_t count;
} SplitData;

extern const char *const dataset_class_names[10];

/* Writes the file atomically (temporary name, flush, rename). Does not judge
 * the contents: dpcnn-prepare validates before, the tests write bad files on purpose. */
int dataset_write(const char *path, const SplitData *train, const SplitData *test,
                  const char *source);
/* The fingerprint of the data as dataset_write records it. */
void dataset_fingerprint(char out[32], const SplitData *train, const SplitData *test);

#endif
