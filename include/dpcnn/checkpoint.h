/* Checkpoints: everything needed to continue a run to the very same bits, in
 * one HDF5 file laid out for PyTorch users too.
 *
 *   /conv1.weight ... /out.bias      float32, exactly the state_dict() keys and
 *                                    shapes: h5py + load_state_dict(strict=True)
 *   /optimizer/exp_avg/<key>         Adam's first moments, same names and shapes
 *   /optimizer/exp_avg_sq/<key>      Adam's second moments
 *   /optimizer attributes            step, lr, beta1, beta2, eps (torch.optim.Adam)
 *   root attributes                  format, format_version, dpcnn_version, the
 *                                    position (epochs_done, step_in_epoch, step),
 *                                    the run's definition (seed, batch_size, ...),
 *                                    the data fingerprint, the partial epoch's
 *                                    sums, and digest: a 64-bit FNV-1a hash of
 *                                    all of the above, checked on every load.
 *
 * Files are written under a temporary name, flushed, and renamed into place;
 * latest.h5 is a symbolic link replaced the same way, so it always names a
 * complete checkpoint. README.md shows how to load model and optimizer in PyTorch. */
#ifndef DPCNN_CHECKPOINT_H
#define DPCNN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define CHECKPOINT_FORMAT "dpcnn-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1

/* The run's definition (what must match to continue it) and its position. */
typedef struct {
    /* definition */
    uint64_t seed;
    int batch_size, micro_batch, shuffle, reduction, warmup;
    double lr, beta1, beta2, eps;
    size_t train_samples, test_samples; /* after --limit / --test-limit */
    char data_fingerprint[32];
    /* position (the total of epochs asked for is not stored: a checkpoint
     * depends only on where the run is, so runs that stop at different ends
     * agree on every file they share) */
    int epochs_done;       /* complete epochs */
    int64_t step_in_epoch; /* steps done in epoch epochs_done + 1 */
    int64_t step;          /* Adam's step count: all steps so far */
    double epoch_loss_sum; /* the partial epoch's sums, to finish its metrics line */
    int64_t epoch_correct;
} RunState;

/* Whole or absent: temporary name, fsync, rename. */
int checkpoint_save(const char *path, const float *params, const float *adam_m,
                    const float *adam_v, const RunState *rs);
/* Reads and verifies (format, shapes, digest); -1 with the reason otherwise. */
int checkpoint_load(const char *path, float *params, float *adam_m, float *adam_v,
                    RunState *rs);
/* What --resume ARG names: a directory means its latest.h5. file gets the
 * checkpoint to read, dir the directory the run goes on writing in. */
void checkpoint_resolve(const char *arg, char *file, char *dir, size_t n);

/* Point DIR/latest.h5 at name (a file in DIR), atomically. */
int checkpoint_set_latest(const char *dir, const char *name);
/* Keep the newest `keep` checkpoints in dir (epoch-*.h5 and step-*.h5 by their
 * step), never the one latest.h5 names; keep = 0 keeps all. */
int checkpoint_prune(const char *dir, int keep);

/* Remove what writers killed mid-write left behind (".NAME.h5.tmp.PID").
 * One run writes a directory at a time, so at start-up none is live. */
int checkpoint_clean_temps(const char *dir);

/* The model tensors alone (any dpcnn weights or checkpoint file, or one
 * written from PyTorch): strict, every key with its exact shape. */
int weights_load(const char *path, float *params);

#endif
