/* Fuzz harness: the checkpoint readers, checkpoint_load (--resume) and
 * weights_load (--init, dpcnn evaluate).
 *
 * The input is the file, read by both. Each must refuse it with a message
 * naming it, or accept it. A checkpoint that loads has passed its digest, so
 * saving what was loaded and loading that again must give back the very same
 * bits; the weights of a file both readers accept must agree. Afterwards no
 * HDF5 object may be left open. */
#include "config.h"

#include <hdf5.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/model.h"
#include "fuzz.h"

#define N MODEL_NUM_PARAMS

static float *g_state; /* params, m, v as loaded; again as reloaded; weights */
static char g_dir[256];

static void remove_dir(void)
{
    char p[300];
    snprintf(p, sizeof p, "%s/roundtrip.h5", g_dir);
    unlink(p);
    rmdir(g_dir);
    free(g_state);
}

/* Where the round trip writes: a private directory in $TMPDIR. */
static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp ? tmp : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/dpcnn-fuzz-XXXXXX", tmp);
    FUZZ_CHECK(mkdtemp(g_dir) != NULL, "cannot create a directory in %s", tmp);
    g_state = malloc(7 * N * sizeof(float));
    FUZZ_CHECK(g_state != NULL, "out of memory");
    atexit(remove_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_state)
        setup();
    float *p = g_state, *m = p + N, *v = m + N, *p2 = v + N, *m2 = p2 + N, *v2 = m2 + N,
          *w = v2 + N;
    const char *path = fuzz_file(0, data, size);

    RunState rs;
    fuzz_clear_error();
    int rc = checkpoint_load(path, p, m, v, &rs);
    fuzz_check_outcome(rc, "checkpoint_load", path);
    if (rc == 0) {
        FUZZ_CHECK(memchr(rs.data_fingerprint, '\0', sizeof rs.data_fingerprint) != NULL,
                   "checkpoint_load left the data fingerprint unterminated");
        char again[300];
        snprintf(again, sizeof again, "%s/roundtrip.h5", g_dir);
        FUZZ_CHECK(checkpoint_save(again, p, m, v, &rs) == 0, "cannot save what loaded: %s",
                   err_get());
        RunState rs2;
        FUZZ_CHECK(checkpoint_load(again, p2, m2, v2, &rs2) == 0,
                   "what loaded, saved, does not load again: %s", err_get());
        FUZZ_CHECK(memcmp(p, p2, 3 * N * sizeof(float)) == 0 && memcmp(&rs, &rs2, sizeof rs) == 0,
                   "a checkpoint does not load as it was saved");
    }

    int not_checkpoint = rc < 0 && strstr(err_get(), "not a dpcnn checkpoint") != NULL;

    fuzz_clear_error();
    int rw = weights_load(path, w);
    fuzz_check_outcome(rw, "weights_load", path);
    if (rc == 0 && rw == 0)
        FUZZ_CHECK(memcmp(p, w, N * sizeof(float)) == 0,
                   "checkpoint_load and weights_load read different weights");

    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 objects left open", open);
    /* a seed is a checkpoint, or a weights file that is not one */
    fuzz_check_accepted(rw == 0 && (rc == 0 || not_checkpoint));
    return 0;
}
