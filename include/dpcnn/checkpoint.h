/* Checkpoints: everything needed to continue a run to the very same bits, in
 * one HDF5 file laid out for PyTorch users too.
 *
 *   /<state_dict key>                every tensor of the network under its
 *                                    state_dict() key and shape (conv1.weight,
 *                                    3.running_mean, 3.num_batches_tracked ...):
 *                                    h5py + load_state_dict(strict=True)
 *   /optimizer/exp_avg/<key>         Adam's first moments, for the parameters
 *   /optimizer/exp_avg_sq/<key>      Adam's second moments
 *   /optimizer attributes            step, lr, beta1, beta2, eps (torch.optim.Adam)
 *   root attributes                  format, format_version, dpcnn_version, and
 *                                    every field of the run's definition and
 *                                    position (run_fields in checkpoint.c: seed,
 *                                    batch_size, ..., model, the description as
 *                                    print(model) shows it), and digest: a 64-bit
 *                                    FNV-1a hash of all of the above, checked
 *                                    wherever a checkpoint is read.
 *
 * Files are built in memory and written whole (temporary name, fsync,
 * rename); latest.h5 is a symbolic link replaced the same way, so it always
 * names a complete checkpoint. README.md shows how to load model and
 * optimizer in PyTorch. Format 1 (the tutorial network only, before networks
 * were data) still loads. */
#ifndef DPCNN_CHECKPOINT_H
#define DPCNN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "dpcnn/net.h"

#define CHECKPOINT_FORMAT "dpcnn-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 3 /* 3: the kernels engine; 2: the network and normalisation */

/* The run's definition (what must match to continue it) and its position.
 * Every field is listed once, in run_fields (checkpoint.c), which drives the
 * attributes, the digest's text and the comparison on resume. */
typedef struct {
    /* definition */
    uint64_t seed;
    int batch_size, micro_batch, shuffle, reduction, warmup;
    double lr, beta1, beta2, eps;
    size_t train_samples, test_samples; /* after --limit / --test-limit */
    char data_fingerprint[32];
    char normalize[256];                /* "none" or "mean,std,..." as given */
    char model[NET_TEXT_MAX];           /* the canonical description */
    char kernels[16];                   /* "native" or "openblas" (--kernels): the engines
                                         * round differently; "" where a format-2 file
                                         * did not say, which matches either */
    /* position (the total of epochs asked for is not stored: a checkpoint
     * depends only on where the run is, so runs that stop at different ends
     * agree on every file they share) */
    int epochs_done;       /* complete epochs */
    int64_t step_in_epoch; /* steps done in epoch epochs_done + 1 */
    int64_t step;          /* Adam's step count: all steps so far */
    double epoch_loss_sum; /* the partial epoch's sums, to finish its metrics line */
    int64_t epoch_correct;
} RunState;

/* What is trained: parameters and Adam's moments (net->nparams floats each),
 * batch norm's running statistics (net->nbuffer_floats) and batch counts
 * (net->nbatchnorm). */
typedef struct {
    float *params, *adam_m, *adam_v;
    float *buffers;
    int64_t *batches;
} ModelState;

/* Whole or absent. */
int checkpoint_save(const char *path, const Net *net, const ModelState *ms, const RunState *rs);
/* Reads and verifies (format, the network, shapes, digest, finite values);
 * -1 with the reason otherwise. net must be the checkpoint's network. */
int checkpoint_load(const char *path, const Net *net, ModelState *ms, RunState *rs);
/* The network a weights or checkpoint file was made with, and its input
 * normalisation: the description (the tutorial's for a checkpoint of format
 * 1) and "none" or MEAN,STD...; both "" for a foreign file (tensors only, e.g.
 * a PyTorch state_dict written with h5py). model and normalize hold
 * NET_TEXT_MAX and 256 bytes. */
int checkpoint_model(const char *path, char *model, char *normalize);
/* A run's definition field that differs between a and b (the model, the
 * seed ...), as "--seed 0 vs 7"; NULL if they agree. Batch size and learning
 * rate are left out when override is set. */
const char *checkpoint_differs(const RunState *a, const RunState *b, int override);

/* How many epochs the checkpoint at path has done (its epochs_done attribute,
 * read without verifying the file whole): how a sweep tells a finished run. */
int checkpoint_epochs_done(const char *path, int *epochs_done);

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

/* The network's tensors alone (a dpcnn checkpoint, verified whole, or a
 * foreign weights file): strict, every key with its exact shape, all finite.
 * A checkpoint of another network is refused. Without running statistics in
 * a foreign file (a network without batch norm), buffers keep their values. */
int weights_load(const char *path, const Net *net, float *params, float *buffers,
                 int64_t *batches);

#endif
