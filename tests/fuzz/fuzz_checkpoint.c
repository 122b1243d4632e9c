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
#include "dpcnn/net.h"
#include "fuzz.h"

/* The checkpoint's own network (its model attribute, the tutorial's for
 * format 1 or a foreign file), built for a 1x28x28 input and 10 classes:
 * what dpcnn evaluate does with a file. */
static Net g_net;
static char g_dir[256];

static void remove_dir(void)
{
    char p[300];
    snprintf(p, sizeof p, "%s/roundtrip.h5", g_dir);
    unlink(p);
    rmdir(g_dir);
}

/* Where the round trip writes: a private directory in $TMPDIR. */
static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp ? tmp : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/dpcnn-fuzz-XXXXXX", tmp);
    FUZZ_CHECK(mkdtemp(g_dir) != NULL, "cannot create a directory in %s", tmp);
    atexit(remove_dir);
}

static ModelState state_alloc(const Net *net)
{
    ModelState ms;
    ms.params = calloc(3 * net->nparams + net->nbuffer_floats + 1, sizeof(float));
    ms.adam_m = ms.params + net->nparams;
    ms.adam_v = ms.adam_m + net->nparams;
    ms.buffers = ms.adam_v + net->nparams;
    ms.batches = calloc((size_t)net->nbatchnorm + 1, sizeof(int64_t));
    FUZZ_CHECK(ms.params && ms.batches, "out of memory");
    return ms;
}

static void state_free(ModelState *ms)
{
    free(ms->params);
    free(ms->batches);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_dir[0])
        setup();
    const char *path = fuzz_file(0, data, size);

    /* the network the file names: refused with a message, or built */
    static char model[NET_TEXT_MAX], normalize[256];
    fuzz_clear_error();
    int rm = checkpoint_model(path, model, normalize);
    fuzz_check_outcome(rm, "checkpoint_model", path);
    int built = 0;
    if (rm == 0) {
        fuzz_clear_error();
        int rb = net_parse(&g_net, model[0] ? model : net_builtin("tutorial"), path);
        if (rb == 0)
            rb = net_build(&g_net, (Shape){1, 28, 28, 0}, 10, path);
        if (rb < 0)
            FUZZ_CHECK(strlen(err_get()) > 0, "a network refused without a message");
        built = rb == 0;
    }
    if (!built) {
        ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
        FUZZ_CHECK(open == 0, "%zd HDF5 objects left open", open);
        fuzz_check_accepted(0);
        return 0;
    }

    ModelState ms = state_alloc(&g_net), ms2 = state_alloc(&g_net), w = state_alloc(&g_net);
    RunState *rs = calloc(2, sizeof(RunState));
    fuzz_clear_error();
    int rc = checkpoint_load(path, &g_net, &ms, &rs[0]);
    fuzz_check_outcome(rc, "checkpoint_load", path);
    if (rc == 0) {
        FUZZ_CHECK(memchr(rs[0].data_fingerprint, '\0', sizeof rs[0].data_fingerprint) != NULL,
                   "checkpoint_load left the data fingerprint unterminated");
        char again[300];
        snprintf(again, sizeof again, "%s/roundtrip.h5", g_dir);
        FUZZ_CHECK(checkpoint_save(again, &g_net, &ms, &rs[0]) == 0, "cannot save what loaded: %s",
                   err_get());
        FUZZ_CHECK(checkpoint_load(again, &g_net, &ms2, &rs[1]) == 0,
                   "what loaded, saved, does not load again: %s", err_get());
        FUZZ_CHECK(memcmp(ms.params, ms2.params,
                          (3 * g_net.nparams + g_net.nbuffer_floats) * sizeof(float)) == 0 &&
                       memcmp(&rs[0], &rs[1], sizeof rs[0]) == 0,
                   "a checkpoint does not load as it was saved");
    }

    int not_checkpoint = rc < 0 && strstr(err_get(), "not a dpcnn checkpoint") != NULL;

    fuzz_clear_error();
    int rw = weights_load(path, &g_net, w.params, w.buffers, w.batches);
    fuzz_check_outcome(rw, "weights_load", path);
    if (rc == 0 && rw == 0)
        FUZZ_CHECK(memcmp(ms.params, w.params, g_net.nparams * sizeof(float)) == 0,
                   "checkpoint_load and weights_load read different weights");
    state_free(&ms);
    state_free(&ms2);
    state_free(&w);
    free(rs);

    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 objects left open", open);
    /* a seed is a checkpoint, or a weights file that is not one */
    fuzz_check_accepted(rw == 0 && (rc == 0 || not_checkpoint));
    return 0;
}
