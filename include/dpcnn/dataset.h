/* The data file: one HDF5 file holding an image classification data set.
 *
 *   /train/images  uint8 [N,H,W] or [N,C,H,W]    /train/labels  uint8 [N]
 *   /train/digests uint64 [ceil(N/B)] one digest per block of B samples
 *   /test/...      the same for the M test samples
 *
 * chunked (DATASET_CHUNK images per chunk) and Fletcher-32 checksummed, so
 * a damaged chunk is an error, never silently wrong pixels (not compressed:
 * inflating cost more than the rest of the start-up; a file compressed by
 * other means reads the same). Fletcher-32 covers chunk data only, not the index that finds
 * the chunks: a damaged index makes HDF5 return the fill value (black images)
 * without a word. So the file proves its content: every block of B samples
 * (attribute block_samples of the digests, DATASET_CHUNK from dpcnn-prepare)
 * has a digest, and every reader verifies each block it reads:
 *   h_i   = FNV-1a 64 over sample i's pixel bytes, then its label byte
 *   block = FNV-1a 64 over the h_i of the block's samples, 8 bytes each,
 *           little-endian, in order
 * The data's fingerprint (what a checkpoint records) is FNV-1a 64 over, per
 * split, the sample count and shape and the block digests: a change to any
 * pixel or label changes it. Root attributes: format, class_names (the class
 * names, comma-separated: their number is the number of classes), source.
 * The data layer owns the sample shape; the network gets it from here. */
#ifndef DPCNN_DATASET_H
#define DPCNN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_CHUNK 1000
#define DATASET_FORMAT "dpcnn-data-2"
#define DATASET_MAX_CLASSES 256 /* labels are uint8 */
#define DATASET_NAME_MAX 64     /* a class name */

enum { SPLIT_TRAIN = 0, SPLIT_TEST = 1 };

/* A sample's shape as stored ([N,H,W] is one channel) and the classes. */
typedef struct {
    int channels, height, width;
    int ndim; /* 3: [N,H,W], 4: [N,C,H,W] */
    int classes;
    char (*class_names)[DATASET_NAME_MAX];
} DataShape;

static inline size_t data_sample_bytes(const DataShape *s)
{
    return (size_t)s->channels * (size_t)s->height * (size_t)s->width;
}

typedef struct Dataset {
    char *path;
    int64_t file;                    /* hid_t */
    int64_t images[2], labels[2];    /* hid_t, by split */
    size_t count[2];
    DataShape shape;
    size_t sample_bytes;             /* C*H*W */
    uint64_t *digests[2];            /* by split: one per block */
    size_t block[2];                 /* samples per digest block */
    char fingerprint[32];
} Dataset;

/* Opens read-only and validates names, types, shapes, matching counts, the
 * classes, the digests and that every chunk is stored. Blocks are verified
 * against their digests, and labels checked, as they are read. */
int dataset_open(Dataset *ds, const char *path);
/* images [count, C*H*W], labels [count] from samples start .. start+count-1. */
int dataset_read(const Dataset *ds, int split, size_t start, size_t count, uint8_t *images,
                 uint8_t *labels);
void dataset_close(Dataset *ds);

typedef struct {
    const uint8_t *images, *labels;
    size_t count;
} SplitData;

/* Fashion-MNIST's ten class names, for dpcnn-prepare's default. */
extern const char *const dataset_fashion_names[10];

/* Writes the file whole (dpcnn-prepare validates before; the tests write bad
 * files on purpose, so nothing here judges the contents). */
int dataset_write(const char *path, const DataShape *shape, const SplitData *train,
                  const SplitData *test, const char *source);
/* The fingerprint of the data as dataset_open derives it from the digests. */
void dataset_fingerprint(char out[32], const DataShape *shape, const SplitData *train,
                         const SplitData *test);
/* The digests of data's blocks of `block` samples: out[ceil(count/block)]. */
void dataset_block_digests(uint64_t *out, const SplitData *data, size_t sample_bytes,
                           size_t block);

#endif
