#include "config.h"

#include <hdf5.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
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
#include "dpcnn/model.h"
#include "dpcnn/step.h"

static int write_tensors(hid_t loc, const float *flat)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        hsize_t dims[4];
        for (int d = 0; d < ti->ndim; d++)
            dims[d] = (hsize_t)ti->shape[d];
        hid_t s = H5Screate_simple(ti->ndim, dims, NULL);
        /* No creation times in the object headers: the same weights give the same file. */
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_obj_track_times(dcpl, 0);
        hid_t d = H5Dcreate2(loc, ti->name, H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Pclose(dcpl);
        herr_t r = d < 0 ? -1
                         : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                    flat + ti->offset);
        if (r < 0) /* before any other call clears HDF5's error stack */
            err_set("cannot write %s: %s", ti->name, h5_error_text());
        if (d >= 0)
            H5Dclose(d);
        H5Sclose(s);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Count root datasets that are not model tensors (a strict load refuses them). */
static herr_t find_unexpected(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0)
        return 0;
    int is_dataset = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (is_dataset && model_tensor_index(name) < 0) {
        snprintf((char *)data, 256, "%s", name);
        return 1;
    }
    return 0;
}

static int read_tensors(hid_t loc, const char *path, float *flat)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        int nd;
        hsize_t dims[8];
        if (h5_dataset_dims(loc, ti->name, &nd, dims) < 0)
            return err_set("%s: tensor %s is missing", path, ti->name);
        int same = nd == ti->ndim;
        for (int d = 0; same && d < nd; d++)
            same = dims[d] == (hsize_t)ti->shape[d];
        if (!same) {
            char got[128] = "", want[128] = "";
            for (int d = 0; d < nd && d < 8; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? "," : "",
                         (unsigned long long)dims[d]);
            for (int d = 0; d < ti->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? "," : "",
                         ti->shape[d]);
            return err_set("%s: tensor %s has shape [%s], expected [%s]", path, ti->name, got,
                           want);
        }
        hid_t d = H5Dopen2(loc, ti->name, H5P_DEFAULT);
        hid_t ty = d >= 0 ? H5Dget_type(d) : -1;
        /* At most 8 bytes: HDF5 sizes its conversion buffer by the file's type
         * and zeroes it, 4 GB for a damaged one (found by tests/fuzz). */
        int is_float = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT && H5Tget_size(ty) <= 8;
        if (ty >= 0)
            H5Tclose(ty);
        herr_t r = (d >= 0 && is_float)
                       ? H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 flat + ti->offset)
                       : -1;
        if (!is_float && d >= 0)
            err_set("%s: tensor %s is not floating point of 8 bytes or less", path, ti->name);
        else if (r < 0)
            err_set("%s: cannot read %s: %s", path, ti->name, h5_error_text());
        if (d >= 0)
            H5Dclose(d);
        if (r < 0)
            return -1;
    }
    return 0;
}

int weights_load(const char *path, float *params)
{
    h5_quiet();
    if (access(path, R_OK) < 0)
        return err_set("%s: cannot read: %s", path,
                       fs_exists(path) ? "permission denied" : "no such file");
    if (H5Fis_hdf5(path) <= 0)
        return err_set("%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return err_set("%s: cannot open: %s", path, h5_error_text());
    char extra[256] = "";
    int rc = read_tensors(f, path, params);
    if (rc == 0 && H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_unexpected, extra) > 0)
        rc = err_set("%s: unexpected tensor %s (not part of this network)", path, extra);
    H5Fclose(f);
    return rc;
}

/* ------------------------------------------------------------- checkpoints */

/* Everything the file says, in one canonical text, hashed with the tensors. */
static void describe(char *buf, size_t n, const RunState *rs)
{
    snprintf(buf, n,
             "seed=%" PRIu64 " batch_size=%d micro_batch=%d shuffle=%d reduction=%d warmup=%d "
             "lr=%.17g beta1=%.17g beta2=%.17g eps=%.17g train_samples=%zu test_samples=%zu "
             "data=%s epochs_done=%d step_in_epoch=%" PRId64 " step=%" PRId64
             " loss_sum=%.17g correct=%" PRId64,
             rs->seed, rs->batch_size, rs->micro_batch, rs->shuffle, rs->reduction, rs->warmup, rs->lr,
             rs->beta1, rs->beta2, rs->eps, rs->train_samples, rs->test_samples,
             rs->data_fingerprint, rs->epochs_done, rs->step_in_epoch, rs->step,
             rs->epoch_loss_sum, rs->epoch_correct);
}

static void digest(char out[32], const float *p, const float *m, const float *v,
                   const RunState *rs)
{
    char text[1024];
    describe(text, sizeof text, rs);
    uint64_t h = FNV1A64_INIT;
    h = fnv1a64(h, p, sizeof(float) * MODEL_NUM_PARAMS);
    h = fnv1a64(h, m, sizeof(float) * MODEL_NUM_PARAMS);
    h = fnv1a64(h, v, sizeof(float) * MODEL_NUM_PARAMS);
    h = fnv1a64(h, text, strlen(text));
    snprintf(out, 32, "%016" PRIx64, h);
}

static int write_state(hid_t f, const float *m, const float *v, const RunState *rs)
{
    hid_t opt = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g1 = opt < 0 ? -1 : H5Gcreate2(opt, "exp_avg", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g2 = opt < 0 ? -1 : H5Gcreate2(opt, "exp_avg_sq", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (opt < 0 || g1 < 0 || g2 < 0) ? err_set("cannot create /optimizer: %s", h5_error_text()) : 0;
    if (rc == 0)
        rc = write_tensors(g1, m);
    if (rc == 0)
        rc = write_tensors(g2, v);
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
    if (rc < 0)
        return -1;
    const struct {
        const char *name;
        long long value;
    } ints[] = {
        {"format_version", CHECKPOINT_FORMAT_VERSION},
        {"seed", (long long)rs->seed},
        {"batch_size", rs->batch_size},
        {"micro_batch", rs->micro_batch},
        {"shuffle", rs->shuffle},
        {"reduction", rs->reduction},
        {"warmup", rs->warmup},
        {"train_samples", (long long)rs->train_samples},
        {"test_samples", (long long)rs->test_samples},
        {"epochs_done", rs->epochs_done},
        {"step_in_epoch", rs->step_in_epoch},
        {"step", rs->step},
        {"epoch_correct", rs->epoch_correct},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (h5_write_attr_int64(f, ints[i].name, ints[i].value) < 0)
            return -1;
    return h5_write_attr_string(f, "format", CHECKPOINT_FORMAT) |
           h5_write_attr_string(f, "dpcnn_version", PACKAGE_VERSION) |
           h5_write_attr_string(f, "data_fingerprint", rs->data_fingerprint) |
           h5_write_attr_double(f, "lr", rs->lr) | h5_write_attr_double(f, "beta1", rs->beta1) |
           h5_write_attr_double(f, "beta2", rs->beta2) | h5_write_attr_double(f, "eps", rs->eps) |
           h5_write_attr_double(f, "epoch_loss_sum", rs->epoch_loss_sum);
}

int checkpoint_save(const char *path, const float *params, const float *adam_m,
                    const float *adam_v, const RunState *rs)
{
    char tmp[4200];
    hid_t f = h5_create_temp(path, tmp, sizeof tmp);
    if (f < 0)
        return -1;
    char dg[32];
    digest(dg, params, adam_m, adam_v, rs);
    int rc = write_tensors(f, params);
    if (rc == 0)
        rc = write_state(f, adam_m, adam_v, rs);
    if (rc == 0)
        rc = h5_write_attr_string(f, "digest", dg);
    return h5_close_commit(f, rc, tmp, path);
}

/* The reason err_get() holds, as an incomplete checkpoint's. Copied first:
 * err_set writes the very buffer err_get() returns. */
static int incomplete(const char *path)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", err_get());
    return err_set("%s: not a complete dpcnn checkpoint: %s", path, why);
}

static int read_ll(hid_t f, const char *path, const char *name, long long *v)
{
    if (h5_read_attr_int64(f, name, v) < 0)
        return incomplete(path);
    return 0;
}

int checkpoint_load(const char *path, float *params, float *adam_m, float *adam_v,
                    RunState *rs)
{
    h5_quiet();
    if (access(path, R_OK) < 0)
        return err_set("%s: cannot read: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        return err_set("%s: not an HDF5 file (damaged or truncated?)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return err_set("%s: cannot open (damaged or truncated?): %s", path, h5_error_text());
    int rc = 0;
    char format[64] = "", stored[64] = "";
    memset(rs, 0, sizeof *rs);
    if (h5_read_attr_string(f, "format", format, sizeof format) < 0 ||
        strcmp(format, CHECKPOINT_FORMAT) != 0) {
        rc = err_set("%s: not a dpcnn checkpoint (no format attribute '%s'; a weights file "
                     "starts a new run with --init)",
                     path, CHECKPOINT_FORMAT);
        goto out;
    }
    long long v;
    if ((rc = read_ll(f, path, "format_version", &v)) < 0)
        goto out;
    if (v > CHECKPOINT_FORMAT_VERSION) {
        rc = err_set("%s: checkpoint format %lld is newer than this dpcnn understands (%d)", path,
                     v, CHECKPOINT_FORMAT_VERSION);
        goto out;
    }
    if ((rc = read_tensors(f, path, params)) < 0)
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
        rc = read_tensors(g1, path, adam_m);
    if (rc == 0)
        rc = read_tensors(g2, path, adam_v);
    if (g1 >= 0)
        H5Gclose(g1);
    if (g2 >= 0)
        H5Gclose(g2);
    H5Gclose(opt);
    if (rc < 0)
        goto out;
    struct {
        const char *name;
        long long *into;
    } ints[] = {
        {"seed", NULL}, {"batch_size", NULL}, {"micro_batch", NULL}, {"shuffle", NULL},
        {"reduction", NULL}, {"train_samples", NULL}, {"test_samples", NULL},
        {"epochs_done", NULL}, {"step_in_epoch", NULL}, {"step", NULL}, {"epoch_correct", NULL},
        {"warmup", NULL},
    };
    long long val[sizeof ints / sizeof ints[0]];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((rc = read_ll(f, path, ints[i].name, &val[i])) < 0)
            goto out;
    rs->seed = (uint64_t)val[0];
    rs->batch_size = (int)val[1];
    rs->micro_batch = (int)val[2];
    rs->shuffle = (int)val[3];
    rs->reduction = (int)val[4];
    rs->train_samples = (size_t)val[5];
    rs->test_samples = (size_t)val[6];
    rs->epochs_done = (int)val[7];
    rs->step_in_epoch = val[8];
    rs->step = val[9];
    rs->epoch_correct = val[10];
    rs->warmup = (int)val[11];
    if (h5_read_attr_double(f, "lr", &rs->lr) < 0 || h5_read_attr_double(f, "beta1", &rs->beta1) < 0 ||
        h5_read_attr_double(f, "beta2", &rs->beta2) < 0 || h5_read_attr_double(f, "eps", &rs->eps) < 0 ||
        h5_read_attr_double(f, "epoch_loss_sum", &rs->epoch_loss_sum) < 0 ||
        h5_read_attr_string(f, "data_fingerprint", rs->data_fingerprint,
                            sizeof rs->data_fingerprint) < 0 ||
        h5_read_attr_string(f, "digest", stored, sizeof stored) < 0) {
        rc = incomplete(path);
        goto out;
    }
    char dg[32];
    digest(dg, params, adam_m, adam_v, rs);
    if (strcmp(dg, stored) != 0)
        rc = err_set("%s: damaged: its contents do not match its digest (%s stored, %s computed)",
                     path, stored, dg);
out:
    H5Fclose(f);
    return rc;
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
