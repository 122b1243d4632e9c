/* The training run: configuration and the one entry point main() calls. */
#ifndef DPCNN_TRAIN_H
#define DPCNN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "dpcnn/dist.h"

typedef struct {
    /* what is trained: these change the result, bit for bit */
    int epochs;          /* total epochs of the run (a resumed run counts from its start) */
    int batch_size;      /* global batch, over all ranks */
    int micro_batch;     /* the unit of work and of exact summation */
    double lr, beta1, beta2, eps;
    int warmup;          /* steps of linear learning-rate warm-up (0 = none) */
    uint64_t seed;
    int shuffle;
    int reduction;       /* REDUCE_EXACT (same bits at any rank count) or REDUCE_FLOAT */
    size_t limit;        /* use the first `limit` training samples (0 = all) */
    size_t test_limit;   /* ... and test samples */
    const char *model;       /* a built-in network's name or a description file */
    const char *normalize;   /* "none" or MEAN,STD per channel */
    const char *data_path;
    const char *init_path;   /* start from these weights instead of the seed's */
    const char *resume_path; /* continue the run saved here (a checkpoint or its directory) */
    int override_hparams;    /* let a resumed run change --batch-size and --lr */
    /* how it runs: these never change a bit of the result */
    const char *checkpoint_dir;
    int checkpoint_every;      /* how often, in the unit below */
    int checkpoint_every_steps; /* 1: checkpoint_every counts steps; 0: epochs */
    int keep;                  /* keep the newest N checkpoints (0 = all) */
    int threads;         /* worker threads per rank (0 = one per core of this rank) */
    const char *kernels; /* "native" or "openblas" (layers.h) */
    int check_every;     /* compare replicas every this many steps (0 = at checkpoints only) */
    int quiet;           /* no progress on stdout */
    int launched;        /* started by mpirun or srun: no live line even on a terminal */
    int log_every;       /* progress line every N steps when stdout is not a terminal */
    int metrics_every;   /* a per-step record in metrics.jsonl every N steps (0 = none) */
    double hang_timeout; /* end the job after this many seconds without progress (0 = never) */
    int print_model;     /* print the network and exit */
    int input_c, input_h, input_w; /* --input-shape for --print-model (0: from the data) */
} TrainConfig;

/* Seconds without progress after which a rank ends the job (--hang-timeout):
 * well above the longest pause of a healthy run (doc/scaling.md measures them:
 * a few seconds for a checkpoint of a 26M-parameter network), well below the
 * 300 s it was. */
#define TRAIN_DEFAULT_HANG_TIMEOUT 60.0

void train_config_defaults(TrainConfig *cfg);

/* --print-model: the network's table and canonical description, without MPI;
 * returns the exit status. */
int train_print_model(const TrainConfig *cfg);

/* Runs the whole training on every rank of d; returns the exit status. */
int train_run(const TrainConfig *cfg, Dist *d);

#endif
