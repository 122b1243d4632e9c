#include "config.h"

#include <hdf5.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/h5util.h"
#include "dpcnn/hash.h"
#include "dpcnn/net.h"

/* ------------------------------------------------------------- tensors */

static int write_dataset(hid_t loc, const char *name, hid_t type, hid_t memtype, int ndim,
                         const int *shape, const void *data)
{
    hsize_t dims[4];
    for (int d = 0; d < ndim; d++)
        dims[d] = (hsize_t)shape[d];
    hid_t s = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    /* No creation times in the object headers: the same weights give the same file. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    hid_t d = H5Dcreate2(loc, name, type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    herr_t r = d < 0 ? -1 : H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (r < 0) /* before any other call clears HDF5's error stack */
        err_set("cannot write %s: %s", name, h5_error_text());
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(s);
    return r < 0 ? -1 : 0;
}

static int write_list(hid_t loc, const TensorInfo *list, int n, const float *flat)
{
    for (int t = 0; t < n; t++)
        if (write_dataset(loc, list[t].name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, list[t].ndim,
                          list[t].shape, flat + list[t].offset) < 0)
            return -1;
    return 0;
}

/* "3.num_batches_tracked": the name of batch-norm layer b's count */
static void batches_name(char *out, size_t n, const Net *net, int b)
{
    int seen = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const Layer *l = &net->layers[i];
        if (l->type != LAYER_BATCHNORM2D && l->type != LAYER_BATCHNORM1D)
            continue;
        if (seen++ == b) {
            snprintf(out, n, "%s.num_batches_tracked", l->name);
            return;
        }
    }
    snprintf(out, n, "?");
}

static int write_network(hid_t f, const Net *net, const float *params, const float *buffers,
                         const int64_t *batches)
{
    if (write_list(f, net->tensors, net->ntensors, params) < 0 ||
        write_list(f, net->buffers, net->nbuffers, buffers) < 0)
        return -1;
    for (int b = 0; b < net->nbatchnorm; b++) {
        char name[NET_NAME_MAX + 32];
        batches_name(name, sizeof name, net, b);
        if (write_dataset(f, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &batches[b]) < 0)
            return -1;
    }
    return 0;
}

static int is_tensor_name(const Net *net, const char *name)
{
    if (net_tensor_index(net, name) >= 0 || net_buffer_index(net, name) >= 0)
        return 1;
    for (int b = 0; b < net->nbatchnorm; b++) {
        char n[NET_NAME_MAX + 32];
        batches_name(n, sizeof n, net, b);
        if (strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

typedef struct {
    const Net *net;
    char name[256];
} Unexpected;

/* Find a root dataset that is not one of the network's (a strict load refuses it). */
static herr_t find_unexpected(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    Unexpected *u = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0)
        return 0;
    int is_dataset = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (is_dataset && !is_tensor_name(u->net, name)) {
        snprintf(u->name, sizeof u->name, "%s", name);
        return 1;
    }
    return 0;
}

/* One dataset, strictly: present, with this shape (ndim 0: a scalar), of this class. */
static int read_dataset(hid_t loc, const char *path, const char *name, H5T_class_t cls,
                        hid_t memtype, int ndim, const int *shape, void *out)
{
    int nd;
    hsize_t dims[8];
    if (h5_dataset_dims(loc, name, &nd, dims) < 0)
        return err_set("%s: tensor %s is missing", path, name);
    int same = nd == ndim;
    for (int d = 0; same && d < nd; d++)
        same = dims[d] == (hsize_t)shape[d];
    if (!same) {
        char got[128] = "", want[128] = "";
        for (int d = 0; d < nd && d < 8; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? "," : "",
                     (unsigned long long)dims[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? "," : "",
                     shape[d]);
        return err_set("%s: tensor %s has shape [%s], expected [%s]", path, name, got, want);
    }
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t ty = d >= 0 ? H5Dget_type(d) : -1;
    /* At most 8 bytes: HDF5 sizes its conversion buffer by the file's type
     * and zeroes it, 4 GB for a damaged one (found by tests/fuzz). */
    int right = ty >= 0 && H5Tget_class(ty) == cls && H5Tget_size(ty) <= 8;
    if (ty >= 0)
        H5Tclose(ty);
    herr_t r = (d >= 0 && right) ? H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) : -1;
    if (!right && d >= 0)
        err_set("%s: tensor %s is not %s of 8 bytes or less", path, name,
                cls == H5T_FLOAT ? "floating point" : "an integer");
    else if (r < 0)
        err_set("%s: cannot read %s: %s", path, name, h5_error_text());
    if (d >= 0)
        H5Dclose(d);
    return r < 0 ? -1 : 0;
}

static int read_list(hid_t loc, const char *path, const TensorInfo *list, int n, float *flat)
{
    for (int t = 0; t < n; t++)
        if (read_dataset(loc, path, list[t].name, H5T_FLOAT, H5T_NATIVE_FLOAT, list[t].ndim,
                         list[t].shape, flat + list[t].offset) < 0)
            return -1;
    return 0;
}

/* The network's tensors from the root: parameters, and the running
 * statistics and batch counts when with_buffers (a foreign file of a network
 * without batch norm has none to give). */
static int read_network(hid_t f, const char *path, const Net *net, float *params, float *buffers,
                        int64_t *batches, int with_buffers)
{
    if (read_list(f, path, net->tensors, net->ntensors, params) < 0)
        return -1;
    if (!with_buffers)
        return 0;
    if (read_list(f, path, net->buffers, net->nbuffers, buffers) < 0)
        return -1;
    for (int b = 0; b < net->nbatchnorm; b++) {
        char name[NET_NAME_MAX + 32];
        batches_name(name, sizeof name, net, b);
        if (read_dataset(f, path, name, H5T_INTEGER, H5T_NATIVE_INT64, 0, NULL, &batches[b]) < 0)
            return -1;
    }
    return 0;
}

/* Non-finite weights are refused: evaluating or training from them gives
 * numbers that mean nothing (a NaN weight makes every logit NaN). */
static int check_finite_list(const TensorInfo *list, int n, const float *flat, const char *path)
{
    for (int t = 0; t < n; t++)
        for (size_t i = 0; i < list[t].count; i++)
            if (!isfinite(flat[list[t].offset + i]))
                return err_set("%s: tensor %s holds a non-finite value (%g at element %zu)", path,
                               list[t].name, (double)flat[list[t].offset + i], i);
    return 0;
}

static int check_finite(const Net *net, const float *params, const float *buffers,
                        const char *path)
{
    if (check_finite_list(net->tensors, net->ntensors, params, path) < 0)
        return -1;
    return buffers ? check_finite_list(net->buffers, net->nbuffers, buffers, path) : 0;
}

/* A file claims to be a dpcnn checkpoint if it carries any of dpcnn's
 * marks. Such a file is read whole and its digest checked, whatever the
 * caller wants of it: deleting the digest must not turn a damaged
 * checkpoint into a "foreign" file that is taken on trust. */
static int claims_dpcnn(hid_t f)
{
    static const char *const marks[] = {"format", "format_version", "digest", "dpcnn_version",
                                        "model"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        if (H5Aexists(f, marks[i]) > 0)
            return 1;
    return H5Lexists(f, "optimizer", H5P_DEFAULT) > 0;
}

static hid_t open_input(const char *path, const char *what)
{
    h5_quiet();
    if (fs_check_input(path, what) < 0)
        return -1;
    if (H5Fis_hdf5(path) <= 0) {
        err_set("%s: not an HDF5 file (damaged or truncated?)", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        err_set("%s: cannot open (damaged or truncated?): %s", path, h5_error_text());
    return f;
}

int checkpoint_model(const char *path, char *model, char *normalize)
{
    hid_t f = open_input(path, "the weights file");
    if (f < 0)
        return -1;
    int rc = 0;
    model[0] = normalize[0] = '\0';
    if (H5Aexists(f, "model") > 0) {
        if (h5_read_attr_string(f, "model", model, NET_TEXT_MAX) < 0 ||
            h5_read_attr_string(f, "normalize", normalize, 256) < 0)
            rc = err_set("%s: not a complete dpcnn checkpoint: %s", path, err_get());
    } else if (claims_dpcnn(f)) { /* format 1: the tutorial, before networks were data */
        snprintf(model, NET_TEXT_MAX, "%s", net_builtin("tutorial"));
        snprintf(normalize, 256, "none");
    }
    H5Fclose(f);
    return rc;
}

/* The first line where two descriptions differ, for messages. */
static void first_difference(char *out, size_t n, const char *a, const char *b)
{
    while (*a && *b) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || strncmp(a, b, la) != 0) {
            snprintf(out, n, "'%.*s' where this run has '%.*s'", (int)la, a, (int)lb, b);
            return;
        }
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
    snprintf(out, n, "%s layers than this run", *a ? "more" : "fewer");
}

int weights_load(const char *path, const Net *net, float *params, float *buffers,
                 int64_t *batches)
{
    hid_t f = open_input(path, "the weights file");
    if (f < 0)
        return -1;
    if (claims_dpcnn(f)) {
        H5Fclose(f);
        float *m = XCALLOC(float, 2 * net->nparams);
        RunState *rs = XCALLOC(RunState, 1);
        ModelState ms = {params, m, m + net->nparams, buffers, batches};
        int rc = checkpoint_load(path, net, &ms, rs);
        free(rs);
        free(m);
        return rc;
    }
    /* A foreign file, e.g. a PyTorch state_dict written with h5py: the
     * tensors, strictly, and nothing else at the root. */
    Unexpected u = {net, ""};
    const int with_buffers = net->nbatchnorm > 0;
    int rc = read_network(f, path, net, params, buffers, batches, with_buffers);
    if (rc == 0 && H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_unexpected, &u) > 0)
        rc = err_set("%s: unexpected tensor %s (not part of this network)", path, u.name);
    H5Fclose(f);
    return rc == 0 ? check_finite(net, params, with_buffers ? buffers : NULL, path) : rc;
}

/* ------------------------------------------------------- the run's fields */

typedef enum { F_U64, F_INT, F_I64, F_SIZE, F_DBL, F_STR } FieldType;

/* Every field of RunState, once: its attribute, its key in the digest's text,
 * whether it defines the run (and must match on resume) and the option that
 * sets it, and the format that introduced it. The order is the digest's. */
typedef struct {
    const char *attr, *key;
    FieldType type;
    size_t offset, size;
    int definition;
    const char *flag;
    int since;
} RunField;

#define FIELD(attr, key, type, member, def, flag, since)                                        \
    {attr, key, type, offsetof(RunState, member), sizeof(((RunState *)0)->member), def, flag, since}
static const RunField run_fields[] = {
    FIELD("seed", "seed", F_U64, seed, 1, "--seed", 1),
    FIELD("batch_size", "batch_size", F_INT, batch_size, 1, "--batch-size", 1),
    FIELD("micro_batch", "micro_batch", F_INT, micro_batch, 1, "--micro-batch", 1),
    FIELD("shuffle", "shuffle", F_INT, shuffle, 1, "shuffle (--no-shuffle)", 1),
    FIELD("reduction", "reduction", F_INT, reduction, 1, "--reduction", 1),
    FIELD("warmup", "warmup", F_INT, warmup, 1, "--warmup", 1),
    FIELD("lr", "lr", F_DBL, lr, 1, "--lr", 1),
    FIELD("beta1", "beta1", F_DBL, beta1, 1, "beta1", 1),
    FIELD("beta2", "beta2", F_DBL, beta2, 1, "beta2", 1),
    FIELD("eps", "eps", F_DBL, eps, 1, "eps", 1),
    FIELD("train_samples", "train_samples", F_SIZE, train_samples, 1, "--limit", 1),
    FIELD("test_samples", "test_samples", F_SIZE, test_samples, 1, "--test-limit", 1),
    FIELD("data_fingerprint", "data", F_STR, data_fingerprint, 1, "--data", 1),
    FIELD("epochs_done", "epochs_done", F_INT, epochs_done, 0, NULL, 1),
    FIELD("step_in_epoch", "step_in_epoch", F_I64, step_in_epoch, 0, NULL, 1),
    FIELD("step", "step", F_I64, step, 0, NULL, 1),
    FIELD("epoch_loss_sum", "loss_sum", F_DBL, epoch_loss_sum, 0, NULL, 1),
    FIELD("epoch_correct", "correct", F_I64, epoch_correct, 0, NULL, 1),
    FIELD("normalize", "normalize", F_STR, normalize, 1, "--normalize", 2),
    FIELD("model", "model", F_STR, model, 1, "--model", 2),
    FIELD("kernels", "kernels", F_STR, kernels, 1, "--kernels", 3),
};
#undef FIELD
#define NFIELDS (sizeof run_fields / sizeof run_fields[0])

static void *field_at(RunState *rs, const RunField *f)
{
    return (char *)rs + f->offset;
}

static const void *field_of(const RunState *rs, const RunField *f)
{
    return (const char *)rs + f->offset;
}

/* The field's value as text: how the digest sees it, and messages. */
static void field_text(char *buf, size_t n, const RunState *rs, const RunField *f)
{
    const void *p = field_of(rs, f);
    switch (f->type) {
    case F_U64: snprintf(buf, n, "%" PRIu64, *(const uint64_t *)p); break;
    case F_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case F_I64: snprintf(buf, n, "%" PRId64, *(const int64_t *)p); break;
    case F_SIZE: snprintf(buf, n, "%zu", *(const size_t *)p); break;
    case F_DBL: snprintf(buf, n, "%.17g", *(const double *)p); break;
    case F_STR: snprintf(buf, n, "%s", (const char *)p); break;
    }
}

static int field_equal(const RunState *a, const RunState *b, const RunField *f)
{
    if (f->type == F_STR)
        return strcmp(field_of(a, f), field_of(b, f)) == 0;
    if (f->type == F_DBL)
        return *(const double *)field_of(a, f) == *(const double *)field_of(b, f);
    return memcmp(field_of(a, f), field_of(b, f), f->size) == 0;
}

const char *checkpoint_differs(const RunState *a, const RunState *b, int override)
{
    static _Thread_local char why[1024];
    for (size_t i = 0; i < NFIELDS; i++) {
        const RunField *f = &run_fields[i];
        if (!f->definition || field_equal(a, b, f))
            continue;
        /* a field an older format did not record (left empty) matches any value */
        if (f->type == F_STR && (!*(const char *)field_of(a, f) || !*(const char *)field_of(b, f)))
            continue;
        if (override && (strcmp(f->attr, "batch_size") == 0 || strcmp(f->attr, "lr") == 0))
            continue;
        if (strcmp(f->attr, "model") == 0) {
            char d[512];
            first_difference(d, sizeof d, a->model, b->model);
            snprintf(why, sizeof why, "another network (--model): it has %s", d);
        } else {
            char x[128], y[128];
            field_text(x, sizeof x, a, f);
            field_text(y, sizeof y, b, f);
            snprintf(why, sizeof why, "%s %s, this run asks for %s", f->flag, x, y);
        }
        return why;
    }
    return NULL;
}

/* Everything the file says, in one canonical text, hashed with the tensors.
 * A format-1 checkpoint's text has the fields of format 1 only. */
static char *describe(const RunState *rs, int version)
{
    size_t cap = NET_TEXT_MAX + 4096, at = 0;
    char *buf = XCALLOC(char, cap);
    for (size_t i = 0; i < NFIELDS; i++) {
        const RunField *f = &run_fields[i];
        if (f->since > version)
            continue;
        char v[NET_TEXT_MAX + 1];
        field_text(v, sizeof v, rs, f);
        at += (size_t)snprintf(buf + at, cap - at, "%s%s=%s", at ? " " : "", f->key, v);
        if (at >= cap)
            break;
    }
    return buf;
}

static void digest(char out[32], const Net *net, const ModelState *ms, const RunState *rs,
                   int version)
{
    char *text = describe(rs, version);
    uint64_t h = FNV1A64_INIT;
    h = fnv1a64(h, ms->params, sizeof(float) * net->nparams);
    h = fnv1a64(h, ms->adam_m, sizeof(float) * net->nparams);
    h = fnv1a64(h, ms->adam_v, sizeof(float) * net->nparams);
    if (version >= 2) {
        h = fnv1a64(h, ms->buffers, sizeof(float) * net->nbuffer_floats);
        for (int b = 0; b < net->nbatchnorm; b++) {
            uint8_t le[8];
            for (int k = 0; k < 8; k++)
                le[k] = (uint8_t)((uint64_t)ms->batches[b] >> (8 * k));
            h = fnv1a64(h, le, 8);
        }
    }
    h = fnv1a64(h, text, strlen(text));
    free(text);
    snprintf(out, 32, "%016" PRIx64, h);
}

static int write_fields(hid_t f, const RunState *rs)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const RunField *fd = &run_fields[i];
        const void *p = field_of(rs, fd);
        int rc;
        switch (fd->type) {
        case F_U64: rc = h5_write_attr_int64(f, fd->attr, (long long)*(const uint64_t *)p); break;
        case F_INT: rc = h5_write_attr_int64(f, fd->attr, *(const int *)p); break;
        case F_I64: rc = h5_write_attr_int64(f, fd->attr, *(const int64_t *)p); break;
        case F_SIZE: rc = h5_write_attr_int64(f, fd->attr, (long long)*(const size_t *)p); break;
        case F_DBL: rc = h5_write_attr_double(f, fd->attr, *(const double *)p); break;
        default: rc = h5_write_attr_string(f, fd->attr, p); break;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int read_fields(hid_t f, const char *path, RunState *rs, int version)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const RunField *fd = &run_fields[i];
        if (fd->since > version)
            continue;
        void *p = field_at(rs, fd);
        long long v = 0;
        int rc = 0;
        switch (fd->type) {
        case F_DBL: rc = h5_read_attr_double(f, fd->attr, p); break;
        case F_STR: rc = h5_read_attr_string(f, fd->attr, p, fd->size); break;
        default:
            rc = h5_read_attr_int64(f, fd->attr, &v);
            if (fd->type == F_U64)
                *(uint64_t *)p = (uint64_t)v;
            else if (fd->type == F_INT)
                *(int *)p = (int)v;
            else if (fd->type == F_I64)
                *(int64_t *)p = v;
            else
                *(size_t *)p = (size_t)v;
            break;
        }
        if (rc < 0)
            return err_set("%s: not a complete dpcnn checkpoint: %s", path, err_get());
    }
    return 0;
}

/* ------------------------------------------------------------ checkpoints */

static int write_optimizer(hid_t f, const Net *net, const ModelState *ms, const RunState *rs)
{
    hid_t opt = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g1 = opt < 0 ? -1 : H5Gcreate2(opt, "exp_avg", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g2 = opt < 0 ? -1 : H5Gcreate2(opt, "exp_avg_sq", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (opt < 0 || g1 < 0 || g2 < 0) ? err_set("cannot create /optimizer: %s", h5_error_text()) : 0;
    if (rc == 0)
        rc = write_list(g1, net->tensors, net->ntensors, ms->adam_m);
    if (rc == 0)
        rc = write_list(g2, net->tensors, net->ntensors, ms->adam_v);
    if (rc == 0)
        rc = h5_write_attr_string(opt, "type", "Adam") | h5_write_attr_int64(opt, "step", rs->step) |
             h5_write_attr_double(opt, "lr", rs->lr) | h5_write_attr_double(opt, "beta1", rs->beta1) |
             h5_write_attr_double(opt, "beta2", rs->beta2) | h5_write_attr_double(opt, "eps", rs->eps) |
             h5_write_attr_double(opt, "weight_decay", 0.0);
    if (g1 >= 0)
        H5Gclose(g1);
    if (g2 >= 0)
        H5Gclose(g2);
    if (opt >= 0)
        H5Gclose(opt);
    return rc;
}

int checkpoint_save(const char *path, const Net *net, const ModelState *ms, const RunState *rs)
{
    hid_t f = h5_create_image();
    if (f < 0)
        return -1;
    char dg[32];
    digest(dg, net, ms, rs, CHECKPOINT_FORMAT_VERSION);
    int rc = write_network(f, net, ms->params, ms->buffers, ms->batches);
    if (rc == 0)
        rc = write_optimizer(f, net, ms, rs);
    if (rc == 0)
        rc = h5_write_attr_string(f, "format", CHECKPOINT_FORMAT) |
             h5_write_attr_int64(f, "format_version", CHECKPOINT_FORMAT_VERSION) |
             h5_write_attr_string(f, "dpcnn_version", PACKAGE_VERSION);
    if (rc == 0)
        rc = write_fields(f, rs);
    if (rc == 0)
        rc = h5_write_attr_string(f, "digest", dg);
    return h5_commit_image(f, rc, path);
}

int checkpoint_load(const char *path, const Net *net, ModelState *ms, RunState *rs)
{
    hid_t f = open_input(path, "the checkpoint");
    if (f < 0)
        return -1;
    int rc = 0;
    char format[64] = "", stored[64] = "";
    memset(rs, 0, sizeof *rs);
    long long version = 0;
    if (h5_read_attr_string(f, "format", format, sizeof format) < 0 ||
        strcmp(format, CHECKPOINT_FORMAT) != 0) {
        rc = err_set("%s: not a dpcnn checkpoint (no format attribute '%s'; a weights file "
                     "starts a new run with --init)",
                     path, CHECKPOINT_FORMAT);
        goto out;
    }
    if (h5_read_attr_int64(f, "format_version", &version) < 0) {
        rc = err_set("%s: not a complete dpcnn checkpoint: %s", path, err_get());
        goto out;
    }
    if (version > CHECKPOINT_FORMAT_VERSION || version < 1) {
        rc = err_set("%s: checkpoint format %lld is %s than this dpcnn understands (%d)", path,
                     version, version < 1 ? "older" : "newer", CHECKPOINT_FORMAT_VERSION);
        goto out;
    }
    if ((rc = read_fields(f, path, rs, (int)version)) < 0)
        goto out;
    if (version < 2) { /* before networks were data: the tutorial network, no normalisation */
        Net *tut = XCALLOC(Net, 1);
        int ok = net_parse(tut, net_builtin("tutorial"), "tutorial") == 0 &&
                 net_build(tut, net->input, net->classes, "tutorial") == 0;
        snprintf(rs->model, sizeof rs->model, "%s", ok ? tut->text : "");
        free(tut);
        snprintf(rs->normalize, sizeof rs->normalize, "none");
    }
    if (strcmp(rs->model, net->text) != 0) {
        char d[512];
        first_difference(d, sizeof d, rs->model, net->text);
        rc = err_set("%s holds another network: it has %s", path, d);
        goto out;
    }
    if ((rc = read_network(f, path, net, ms->params, ms->buffers, ms->batches, version >= 2)) < 0)
        goto out;
    hid_t opt = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    if (opt < 0) {
        rc = err_set("%s: /optimizer is missing: not a complete checkpoint", path);
        goto out;
    }
    hid_t g1 = H5Gopen2(opt, "exp_avg", H5P_DEFAULT), g2 = H5Gopen2(opt, "exp_avg_sq", H5P_DEFAULT);
    if (g1 < 0 || g2 < 0)
        rc = err_set("%s: /optimizer/exp_avg or exp_avg_sq is missing", path);
    if (rc == 0)
        rc = read_list(g1, path, net->tensors, net->ntensors, ms->adam_m);
    if (rc == 0)
        rc = read_list(g2, path, net->tensors, net->ntensors, ms->adam_v);
    if (g1 >= 0)
        H5Gclose(g1);
    if (g2 >= 0)
        H5Gclose(g2);
    H5Gclose(opt);
    if (rc < 0)
        goto out;
    if (h5_read_attr_string(f, "digest", stored, sizeof stored) < 0) {
        rc = err_set("%s: not a complete dpcnn checkpoint: %s", path, err_get());
        goto out;
    }
    char dg[32];
    digest(dg, net, ms, rs, (int)version);
    if (strcmp(dg, stored) != 0)
        rc = err_set("%s: damaged: its contents do not match its digest (%s stored, %s computed)",
                     path, stored, dg);
    else
        rc = check_finite(net, ms->params, ms->buffers, path);
out:
    H5Fclose(f);
    return rc;
}

int checkpoint_epochs_done(const char *path, int *epochs_done)
{
    hid_t f = open_input(path, "the checkpoint");
    if (f < 0)
        return -1;
    long long v = 0;
    int rc = h5_read_attr_int64(f, "epochs_done", &v);
    H5Fclose(f);
    if (rc < 0)
        return err_set("%s: not a complete dpcnn checkpoint: %s", path, err_get());
    *epochs_done = (int)v;
    return 0;
}

void checkpoint_resolve(const char *arg, char *file, char *dir, size_t n)
{
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(dir, n, "%s", arg);
        snprintf(file, n, "%s/latest.h5", arg);
        return;
    }
    snprintf(file, n, "%s", arg);
    snprintf(dir, n, "%s", arg);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, n, ".");
}

int checkpoint_set_latest(const char *dir, const char *name)
{
    char link[4200], tmp[4300];
    snprintf(link, sizeof link, "%s/latest.h5", dir);
    snprintf(tmp, sizeof tmp, "%s/.latest.h5.tmp.%ld", dir, (long)getpid());
    unlink(tmp);
    /* relative, so the directory can be moved or mounted elsewhere */
    if (symlink(name, tmp) < 0)
        return err_set("%s: cannot create a link: %s", tmp, strerror(errno));
    if (rename(tmp, link) < 0) {
        int e = errno;
        unlink(tmp);
        return err_set("%s: cannot replace: %s", link, strerror(e));
    }
    return fs_sync_path(dir);
}

/* The step a checkpoint file was written at, or -1 if it cannot be read. */
static long long file_step(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return -1;
    long long s = -1;
    if (h5_read_attr_int64(f, "step", &s) < 0)
        s = -1;
    H5Fclose(f);
    return s;
}

typedef struct {
    char name[256];
    long long step;
} Entry;

static int by_step_desc(const void *a, const void *b)
{
    const Entry *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : strcmp(y->name, x->name);
}

int checkpoint_clean_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set("%s: cannot list: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] == '.' && strstr(de->d_name, ".h5.tmp.")) {
            char path[4500];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    closedir(d);
    return 0;
}

int checkpoint_prune(const char *dir, int keep)
{
    if (keep <= 0)
        return 0;
    h5_quiet();
    char latest[4200], target[256] = "";
    snprintf(latest, sizeof latest, "%s/latest.h5", dir);
    ssize_t n = readlink(latest, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return err_set("%s: cannot list: %s", dir, strerror(errno));
    Entry *e = NULL;
    size_t count = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        int ours = (strncmp(de->d_name, "epoch-", 6) == 0 || strncmp(de->d_name, "step-", 5) == 0) &&
                   len > 3 && strcmp(de->d_name + len - 3, ".h5") == 0 && len < sizeof e->name;
        if (!ours)
            continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 32;
            Entry *grown = realloc(e, cap * sizeof *e);
            if (!grown) {
                closedir(d);
                free(e);
                return err_set("out of memory listing %s", dir);
            }
            e = grown;
        }
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        snprintf(e[count].name, sizeof e[count].name, "%s", de->d_name);
        e[count].step = file_step(path);
        count++;
    }
    closedir(d);
    qsort(e, count, sizeof *e, by_step_desc);
    int kept = 0;
    for (size_t i = 0; i < count; i++) {
        if (e[i].step < 0 || strcmp(e[i].name, target) == 0) {
            kept += e[i].step >= 0;
            continue;
        }
        if (kept < keep) {
            kept++;
            continue;
        }
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
        unlink(path);
    }
    free(e);
    return 0;
}
