/* The data file: one HDF5 file holding an MNIST-format data set.
 *
 *   /train/images  uint8 [N,28,28]    /train/labels  uint8 [N]
 *   /train/digests uint64 [ceil(N/B)] one digest per block of B samples
 *   /test/...      the same for the M test samples
 *
 * chunked (DATASET_CHUNK images per chunk), deflate-compressed and
 * Fletcher-32 checksummed, so a damaged chunk is an error, never silently
 * wrong pixels. Fletcher-32 covers chunk data only, not the index that finds
 * the chunks: a damaged index makes HDF5 return the fill value (black images)
 * without a word. So the file proves its content: every block of B samples
 * (attribute block_samples of the digests, DATASET_CHUNK from dpcnn-prepare)
 * has a digest, and every reader verifies each block it reads:
 *   h_i   = FNV-1a 64 over sample i's pixel bytes, then its label byte
 *   block = FNV-1a 64 over the h_i of the block's samples, 8 bytes each,
 *           little-endian, in order
 * The data's fingerprint (what a checkpoint records) is FNV-1a 64 over, per
 * split, the sample count and shape and the block digests: a change to any
 * pixel or label changes it. Root attributes: format, class_names, source. */
#ifndef DPCNN_DATASET_H
#define DPCNN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_CHUNK 1000
#define DATASET_FORMAT "dpcnn-data-2"

enum { SPLIT_TRAIN = 0, SPLIT_TEST = 1 };

typedef struct Dataset {
    char *path;
    int64_t file;                    /* hid_t */
    int64_t images[2], labels[2];    /* hid_t, by split */
    size_t count[2];
    uint64_t *digests[2];            /* by split: one per block */
    size_t block[2];                 /* samples per digest block */
    char fingerprint[32];
} Dataset;

/* Opens read-only and validates names, types, shapes, matching counts, the
 * digests and that every chunk is stored. Blocks are verified against their
 * digests, and labels checked, as they are read. */
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
/* The fingerprint of the data as dataset_open derives it from the digests. */
void dataset_fingerprint(char out[32], const SplitData *train, const SplitData *test);
/* The digests of data's blocks of `block` samples: out[ceil(count/block)]. */
void dataset_block_digests(uint64_t *out, const SplitData *data, size_t block);

#endif
