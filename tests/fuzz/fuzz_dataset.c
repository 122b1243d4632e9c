/* Fuzz harness: the HDF5 data file, as every rank loads it: dataset_open, then
 * dataset_read of every sample of both splits in one call (the block of a
 * world of one rank).
 *
 * The input is the file. dataset_open must refuse it with a message naming it,
 * or accept it with two non-empty splits; each dataset_read must fail with a
 * message or deliver samples whose labels all name one of the file's classes. Afterwards no HDF5
 * object may be left open: HDF5 keeps files open across calls, and a leaked
 * handle would also make the next input read stale metadata. A split declaring
 * more than FUZZ_MAX_SAMPLES samples (a few bytes of header can claim billions)
 * is read at its first and last FUZZ_MAX_SAMPLES / 2 samples instead. */
#include "config.h"

#include <hdf5.h>

#include "dpcnn/dataset.h"
#include "fuzz.h"

#define FUZZ_MAX_SAMPLES 4096

static int check_read(const Dataset *ds, int split, size_t start, size_t count)
{
    uint8_t *images = malloc(count * ds->sample_bytes), *labels = malloc(count);
    FUZZ_CHECK(images && labels, "out of memory");
    fuzz_clear_error();
    int rc = dataset_read(ds, split, start, count, images, labels);
    fuzz_check_outcome(rc, "dataset_read", ds->path);
    if (rc == 0)
        for (size_t i = 0; i < count; i++)
            FUZZ_CHECK(labels[i] < ds->shape.classes,
                       "dataset_read passed label %d of sample %zu", labels[i], start + i);
    free(images);
    free(labels);
    return rc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    Dataset ds;
    fuzz_clear_error();
    int rc = dataset_open(&ds, path);
    fuzz_check_outcome(rc, "dataset_open", path);
    int accepted = rc == 0;
    if (rc == 0) {
        for (int split = SPLIT_TRAIN; split <= SPLIT_TEST; split++) {
            size_t n = ds.count[split], half = FUZZ_MAX_SAMPLES / 2;
            if (ds.sample_bytes > (1u << 20)) /* a huge claimed sample: a few of them */
                n = n < 2 ? n : 2, half = 1;
            FUZZ_CHECK(n > 0, "dataset_open accepted an empty split %d", split);
            if (n <= FUZZ_MAX_SAMPLES)
                accepted &= check_read(&ds, split, 0, n);
            else
                accepted &= check_read(&ds, split, 0, half) & check_read(&ds, split, n - half, half);
        }
        dataset_close(&ds);
    }
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 objects left open", open);
    fuzz_check_accepted(accepted);
    return 0;
}
