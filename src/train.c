/* The training run: data, the epoch loop, checkpoints, resume, preemption.
 *
 * Ranks split every global batch by micro-batches and combine gradients
 * exactly (step.c), so every rank applies the same Adam step to the same
 * gradient and the run's bits do not depend on the number of ranks or
 * threads. The whole state of a run at a step boundary (weights, Adam's
 * moments and step, the position in the epoch and the epoch's partial sums)
 * goes into a checkpoint, and the epoch's order comes from (seed, epoch)
 * alone, so a resumed run, on any rank count, continues to the same bits.
 * doc/determinism.md explains the design and what it costs. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/adam.h"
#include "dpcnn/checkpoint.h"
#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/fault.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/hash.h"
#include "dpcnn/layers.h"
#include "dpcnn/model.h"
#include "dpcnn/net.h"
#include "dpcnn/rng.h"
#include "dpcnn/runlog.h"
#include "dpcnn/runtime.h"
#include "dpcnn/shard.h"
#include "dpcnn/step.h"
#include "dpcnn/stop.h"
#include "dpcnn/train.h"
#include "dpcnn/watchdog.h"


void train_config_defaults(TrainConfig *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = 1;
    cfg->batch_size = 100;
    cfg->micro_batch = 25;
    cfg->lr = 0.01;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->seed = 0;
    cfg->shuffle = 1;
    cfg->reduction = REDUCE_EXACT;
    cfg->checkpoint_dir = "checkpoints";
    cfg->checkpoint_every = 1;
    cfg->check_every = 100;
    cfg->log_every = 100;
    cfg->hang_timeout = TRAIN_DEFAULT_HANG_TIMEOUT;
    cfg->model = "tutorial";
    cfg->kernels = "native";
    cfg->normalize = "none";
}

typedef struct {
    TrainConfig cfg;
    Dist *dist;
    int rank, size, threads;
    Dataset data;
    Schedule sched;
    size_t n_test;
    Block train_block, test_block;
    size_t test_chunks, test_chunks_total;
    Exchange xch;
    uint32_t *perm;
    Net net;
    InputTransform input;
    /* params | Adam m | Adam v | running statistics, contiguous: one hash, one
     * broadcast; and batch norm's batch counts */
    float *state;
    size_t state_floats;
    int64_t *batches;
    ModelState ms;
    float *grads;
    int *rank_micros; /* per rank: its micro-batches in the current step */
    Stepper *stepper;
    RunState rs; /* the run's definition and position: what a checkpoint holds */
    RunLog log;
    int lock_fd;          /* rank 0: the checkpoint directory's lock */
    int stepped;          /* this process has run a step (the start-up line is due) */
    double shard_seconds; /* exchange time of the current epoch */
    int64_t samples_run;  /* samples of the current epoch trained by this process */
} Trainer;

/* ---------------------------------------------------------------- set-up */

static int open_data(Trainer *t)
{
    const TrainConfig *c = &t->cfg;
    int rc = dataset_open(&t->data, c->data_path);
    if (dist_agree(t->dist, rc, NULL) < 0)
        return -1;
    /* The network and the input transform, from the data's shape: every rank
     * can check them, and all refuse a bad description together. */
    const DataShape *ds = &t->data.shape;
    Shape in = {ds->channels, ds->height, ds->width, 0};
    rc = net_load(&t->net, c->model, in, ds->classes);
    if (rc == 0)
        rc = input_transform_parse(&t->input, c->normalize, ds->channels, t->rs.normalize,
                                   sizeof t->rs.normalize);
    if (dist_agree(t->dist, rc, NULL) < 0)
        return -1;
    size_t n = t->data.count[SPLIT_TRAIN], nt = t->data.count[SPLIT_TEST];
    if (c->limit && c->limit < n)
        n = c->limit;
    if (c->test_limit && c->test_limit < nt)
        nt = c->test_limit;
    t->sched = (Schedule){n, c->batch_size, c->micro_batch, t->size};
    t->n_test = nt;

    /* This rank's block of the training set, and its chunks of the test set. */
    Block *b = &t->train_block;
    b->first = part_first(n, t->size, t->rank);
    b->count = part_first(n, t->size, t->rank + 1) - b->first;
    b->images = XCALLOC(uint8_t, b->count * t->data.sample_bytes);
    b->labels = XCALLOC(uint8_t, b->count);
    rc = dataset_read(&t->data, SPLIT_TRAIN, b->first, b->count, b->images, b->labels);

    int rc2 = shard_read_test(&t->test_block, &t->test_chunks, &t->test_chunks_total, &t->data,
                              nt, (size_t)c->micro_batch, t->rank, t->size);
    return dist_agree(t->dist, rc < 0 ? rc : rc2, NULL);
}

static void alloc_state(Trainer *t)
{
    const Net *net = &t->net;
    const size_t P = net->nparams;
    t->state_floats = 3 * P + net->nbuffer_floats;
    t->state = XCALLOC(float, t->state_floats);
    t->batches = XCALLOC(int64_t, (size_t)(net->nbatchnorm > 0 ? net->nbatchnorm : 1));
    t->ms = (ModelState){t->state, t->state + P, t->state + 2 * P, t->state + 3 * P, t->batches};
    t->grads = XCALLOC(float, P);
    t->perm = XCALLOC(uint32_t, t->sched.n);
    t->rank_micros = XCALLOC(int, (size_t)t->size);
    int most = 0; /* the most micro-batches of one step, over all ranks */
    for (size_t st = 0; st < sched_steps(&t->sched) && st < 2; st++)
        most = sched_micro_count(&t->sched, st) > most ? sched_micro_count(&t->sched, st) : most;
    t->stepper = stepper_create(net, &t->input, t->cfg.micro_batch,
                                sched_max_rank_micros(&t->sched), most, t->threads,
                                t->test_chunks, t->cfg.reduction);
    stepper_share(t->stepper, t->dist); /* where the ranks share a node */
    exchange_init(&t->xch, &t->sched, t->rank, t->data.sample_bytes);
}

static void free_trainer(Trainer *t)
{
    exchange_free(&t->xch);
    stepper_free(t->stepper);
    free(t->state);
    free(t->batches);
    free(t->rank_micros);
    free(t->grads);
    free(t->perm);
    free(t->train_block.images);
    free(t->train_block.labels);
    free(t->test_block.images);
    free(t->test_block.labels);
    if (t->data.path)
        dataset_close(&t->data);
    runlog_close(&t->log);
    fs_unlock_dir(t->lock_fd);
}

/* The run's definition, from the command line, the data and the network
 * (the normalisation's canonical form is already in rs, from open_data). */
static void define_run(Trainer *t)
{
    RunState *rs = &t->rs;
    char normalize[sizeof rs->normalize];
    snprintf(normalize, sizeof normalize, "%s", rs->normalize);
    memset(rs, 0, sizeof *rs);
    rs->seed = t->cfg.seed;
    rs->batch_size = t->cfg.batch_size;
    rs->micro_batch = t->cfg.micro_batch;
    rs->shuffle = t->cfg.shuffle;
    rs->reduction = t->cfg.reduction;
    rs->warmup = t->cfg.warmup;
    rs->lr = t->cfg.lr;
    rs->beta1 = t->cfg.beta1;
    rs->beta2 = t->cfg.beta2;
    rs->eps = t->cfg.eps;
    rs->train_samples = t->sched.n;
    rs->test_samples = t->n_test;
    snprintf(rs->data_fingerprint, sizeof rs->data_fingerprint, "%s", t->data.fingerprint);
    snprintf(rs->normalize, sizeof rs->normalize, "%s", normalize);
    snprintf(rs->model, sizeof rs->model, "%s", t->net.text);
    snprintf(rs->kernels, sizeof rs->kernels, "%s", t->cfg.kernels);
}

/* A checkpoint continues this run only if it was this run: same data, same
 * network, same seed, same cut into micro-batches... Batch size and learning
 * rate may change with --override-hparams (the run is then, knowingly,
 * another one). */
static int check_same_run(const RunState *ck, const RunState *now, const char *path,
                          int override)
{
    if (strcmp(ck->data_fingerprint, now->data_fingerprint) != 0 ||
        ck->train_samples != now->train_samples || ck->test_samples != now->test_samples)
        return err_set("%s was made from other data (fingerprint %s, %zu train and %zu test "
                       "samples); this run has %s, %zu and %zu: check --data, --limit and "
                       "--test-limit",
                       path, ck->data_fingerprint, ck->train_samples, ck->test_samples,
                       now->data_fingerprint, now->train_samples, now->test_samples);
    const char *why = checkpoint_differs(ck, now, override);
    if (!why)
        return 0;
    if (strncmp(why, "--batch-size", 12) == 0 || strncmp(why, "--lr", 4) == 0)
        return err_set("%s was made with %s; add --override-hparams to continue it with the new "
                       "value anyway",
                       path, why);
    return err_set("%s was made with %s: a resumed run must be the same run", path, why);
}

/* Rank 0 reads the checkpoint, every rank receives it. */
/* Rank 0's weights, moments, running statistics and batch counts to every rank. */
static void broadcast_state(Trainer *t)
{
    dist_bcast(t->dist, t->state, sizeof(float) * t->state_floats, 0);
    dist_bcast(t->dist, t->batches, sizeof(int64_t) * (size_t)t->net.nbatchnorm, 0);
}

static int resume(Trainer *t)
{
    char path[4200], dir[4200];
    checkpoint_resolve(t->cfg.resume_path, path, dir, sizeof path);
    RunState *ck = XCALLOC(RunState, 1);
    int rc = 0;
    if (t->rank == 0) {
        rc = checkpoint_load(path, &t->net, &t->ms, ck);
        if (rc == 0)
            rc = check_same_run(ck, &t->rs, path, t->cfg.override_hparams);
        if (rc == 0 && ck->step_in_epoch > 0 && ck->batch_size != t->rs.batch_size)
            rc = err_set("%s stopped inside an epoch; the batch size can change only at an "
                         "epoch boundary (resume from an epoch-NNNN.h5)",
                         path);
    }
    if (dist_agree(t->dist, rc, "--resume") < 0) {
        free(ck);
        return -1;
    }
    broadcast_state(t);
    dist_bcast(t->dist, ck, sizeof *ck, 0);
    /* the position and the sums come from the checkpoint, the definition from
     * this run (the same, or changed on purpose) */
    t->rs.epochs_done = ck->epochs_done;
    t->rs.step_in_epoch = ck->step_in_epoch;
    t->rs.step = ck->step;
    t->rs.epoch_loss_sum = ck->epoch_loss_sum;
    t->rs.epoch_correct = ck->epoch_correct;
    if (!t->cfg.quiet)
        msg_info("resuming %s: %d epoch%s done, %" PRId64 " steps into epoch %d (step %" PRId64
                 ")",
                 path, ck->epochs_done, ck->epochs_done == 1 ? "" : "s", ck->step_in_epoch,
                 ck->epochs_done + 1, ck->step);
    free(ck);
    return 0;
}

/* ----------------------------------------------------------- checkpoints */

static uint64_t state_hash(const Trainer *t)
{
    /* params, m, v and the running statistics, the batch counts, the step count */
    uint64_t h = fnv1a64(FNV1A64_INIT, t->state, sizeof(float) * t->state_floats);
    h = fnv1a64(h, t->batches, sizeof(int64_t) * (size_t)t->net.nbatchnorm);
    return fnv1a64(h, &t->rs.step, sizeof t->rs.step);
}

/* Every rank compares its replica with every other; a mismatch stops the job. */
static int check_replicas(Trainer *t, const char *when)
{
    uint64_t mine = state_hash(t);
    uint64_t *all = XCALLOC(uint64_t, (size_t)t->size);
    dist_allgather_u64(t->dist, mine, all);
    int bad = -1;
    for (int r = 0; r < t->size && bad < 0; r++)
        if (all[r] != all[0])
            bad = r;
    if (bad >= 0) {
        char list[512] = "";
        for (int r = 0; r < t->size; r++)
            if (all[r] != all[0])
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d",
                         list[0] ? "," : "", r);
        msg_job_error("replicas have drifted apart %s (step %" PRId64 "): the parameters or "
                      "optimizer state of rank(s) %s differ from rank 0's; stopping",
                      when, t->rs.step, list);
    }
    free(all);
    return bad >= 0 ? -1 : 0;
}

/* Rank 0 writes name in the checkpoint directory, points latest.h5 at it and
 * prunes; every rank learns the outcome. Replicas are compared first. */
static int save_checkpoint(Trainer *t, const char *name)
{
    watchdog_beat("writing the checkpoint after step", t->rs.step);
    if (check_replicas(t, "before a checkpoint") < 0)
        return -1;
    int rc = 0;
    if (t->rank == 0) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", t->cfg.checkpoint_dir, name);
        if (fault_due("killwrite", t->rs.step, 0)) {
            /* die with the temporary file half written, as a node failure would */
            char tmp[4500];
            fs_temp_name(tmp, sizeof tmp, path);
            FILE *f = fopen(tmp, "w");
            if (f) {
                fputs("\211HDF\r\n\032\n half a checkpoint", f);
                fflush(f);
            }
            raise(SIGKILL);
        }
        rc = checkpoint_save(path, &t->net, &t->ms, &t->rs);
        if (rc == 0)
            rc = checkpoint_set_latest(t->cfg.checkpoint_dir, name);
        if (rc == 0)
            rc = checkpoint_prune(t->cfg.checkpoint_dir, t->cfg.keep);
    }
    return dist_agree(t->dist, rc, "writing a checkpoint");
}

static int save_epoch_checkpoint(Trainer *t)
{
    char name[64];
    snprintf(name, sizeof name, "epoch-%04d.h5", t->rs.epochs_done);
    return save_checkpoint(t, name);
}

static int save_step_checkpoint(Trainer *t)
{
    char name[64];
    snprintf(name, sizeof name, "step-%08" PRId64 ".h5", t->rs.step);
    return save_checkpoint(t, name);
}

static int prepare_outputs(Trainer *t, int resumed)
{
    int rc = 0;
    if (t->rank == 0) {
        rc = fs_make_dir(t->cfg.checkpoint_dir);
        if (rc == 0) /* before anything in it is touched */
            rc = fs_lock_dir(t->cfg.checkpoint_dir, &t->lock_fd);
        if (rc == 0)
            rc = checkpoint_clean_temps(t->cfg.checkpoint_dir);
        if (rc == 0)
            rc = runlog_open(&t->log, t->cfg.checkpoint_dir, t->rs.epochs_done,
                             resumed ? t->rs.step : -1, t->cfg.quiet, t->cfg.log_every,
                             t->cfg.launched);
    } else {
        memset(&t->log, 0, sizeof t->log);
        t->log.quiet = 1;
    }
    return dist_agree(t->dist, rc, "checkpoint directory");
}

/* ------------------------------------------------------------ the steps */

/* One step of the epoch: this rank's micro-batches, the exact gradient, Adam. */
static int train_step(Trainer *t, size_t st, size_t pos, StepSums *sums)
{
    const Schedule *s = &t->sched;
    int f, l;
    sched_rank_micros(s, st, t->rank, &f, &l);
    int sizes[l - f > 0 ? l - f : 1];
    for (int j = f; j < l; j++)
        sizes[j - f] = sched_micro_size(s, st, j);
    for (int r = 0; r < t->size; r++) {
        int rf, rl;
        sched_rank_micros(s, st, r, &rf, &rl);
        t->rank_micros[r] = rl - rf;
    }
    float *params = t->ms.params;
    if (fault_due("nan", t->rs.step + 1, t->rank))
        params[0] = NAN;
    if (fault_due("hang", t->rs.step + 1, t->rank))
        for (;;) /* as a rank stuck on a dead file system would */
            pause();
    const StepBatch batch = {
        .images = t->xch.sample + pos,
        .labels = t->xch.label + pos,
        .positions = t->xch.positions + pos,
        .sizes = sizes,
        .nmicro = l - f,
        .nmicro_total = sched_micro_count(s, st),
        .rank_micros = t->rank_micros,
        .batch_total = sched_step_size(s, st),
        .seed = t->cfg.seed,
        .step = t->rs.step + 1,
    };
    if (stepper_gradient(t->stepper, t->dist, t->grads, t->ms.buffers, t->batches, sums, params,
                         &batch) < 0) {
        char where[64] = "some rank";
        if (sums->bad_rank != STEP_SOME_RANK)
            snprintf(where, sizeof where, "rank %d", sums->bad_rank);
        return err_set("non-finite %s at step %" PRId64 " (epoch %d, step %zu of it, seen on "
                       "%s); stopped before any weight was updated with it (a smaller --lr "
                       "may help)",
                       sums->loss_bad ? "loss" : "gradient", t->rs.step + 1,
                       t->rs.epochs_done + 1, st + 1, where);
    }
    t->rs.step++;
    /* Linear warm-up: lr * t / warmup for the first steps (the usual remedy
     * when a large global batch comes with a scaled-up learning rate). */
    double lr = t->cfg.lr;
    if (t->rs.step < t->cfg.warmup)
        lr = t->cfg.lr * (double)t->rs.step / (double)t->cfg.warmup;
    AdamConfig ac = {lr, t->cfg.beta1, t->cfg.beta2, t->cfg.eps};
    /* element by element, so the threads take pieces (multiples of 64
     * floats: the same elements take the vector path as in one call) */
    const size_t P = t->net.nparams, piece = 8192;
#pragma omp parallel for num_threads(t->threads) schedule(static)
    for (size_t at = 0; at < P; at += piece)
        adam_step(params + at, t->ms.adam_m + at, t->ms.adam_v + at, t->grads + at,
                  P - at < piece ? P - at : piece, &ac, t->rs.step);
    if (fault_due("drift", t->rs.step, t->rank))
        params[0] += 1e-3f;
    if (fault_due("kill", t->rs.step, t->rank))
        raise(SIGKILL);
    return 0;
}

enum { EPOCH_DONE = 0, EPOCH_FAILED = -1, EPOCH_STOPPED = 1 };

/* Train epoch rs.epochs_done + 1 from step rs.step_in_epoch on. */
static int run_epoch(Trainer *t)
{
    const TrainConfig *cfg = &t->cfg;
    RunState *rs = &t->rs;
    const int epoch = rs->epochs_done + 1;
    const double t0 = dist_wtime();
    if (cfg->shuffle)
        rng_permutation(t->perm, t->sched.n, cfg->seed, (uint64_t)epoch);
    else
        for (size_t i = 0; i < t->sched.n; i++)
            t->perm[i] = (uint32_t)i;
    exchange_run(&t->xch, &t->train_block, t->perm, t->dist);
    t->shard_seconds = dist_wtime() - t0;
    t->stepper->reduce_seconds = 0;

    const int64_t steps = (int64_t)sched_steps(&t->sched);
    const int64_t run_steps = steps * cfg->epochs;
    size_t pos = sched_rank_offset(&t->sched, (size_t)rs->step_in_epoch, t->rank);
    const int64_t first = rs->step_in_epoch;
    t->samples_run = 0;
    for (int64_t st = first; st < steps; st++) {
        watchdog_beat("step", rs->step + 1);
        StepSums sums = {0, 0, stop_requested() != 0, -1, 0};
        if (train_step(t, (size_t)st, pos, &sums) < 0) {
            msg_job_error("%s; the last complete checkpoint is %s/latest.h5", err_get(),
                          cfg->checkpoint_dir);
            return EPOCH_FAILED;
        }
        if (!t->stepped++) {
            runtime_phase("the first step");
            if (!cfg->quiet && !msg_tag()[0]) { /* a sweep's later runs started long ago */
                char text[256];
                runtime_startup_text(text, sizeof text);
                runlog_notice(&t->log, "start-up to the end of the first step %s", text);
            }
        }
        pos += sched_rank_step_samples(&t->sched, (size_t)st, t->rank);
        const int bs = sched_step_size(&t->sched, (size_t)st);
        t->samples_run += bs;
        rs->step_in_epoch = st + 1;
        rs->epoch_loss_sum += sums.loss_sum;
        rs->epoch_correct += sums.correct;

        const double now = dist_wtime();
        if (cfg->metrics_every > 0 && rs->step % cfg->metrics_every == 0)
            runlog_step(&t->log, epoch, rs->step, sums.loss_sum, sums.correct, bs, now - t0,
                        t->size);
        const int64_t seen = st + 1 < steps ? (st + 1) * cfg->batch_size : (int64_t)t->sched.n;
        const int64_t here = st + 1 - first; /* steps this process ran in this epoch */
        const int64_t left = run_steps - ((int64_t)rs->epochs_done * steps + st + 1);
        Progress p = {epoch,
                      cfg->epochs,
                      st + 1,
                      steps,
                      rs->epoch_loss_sum / (double)seen,
                      (double)t->samples_run / (now - t0),
                      (now - t0) / (double)here * (double)left};
        runlog_progress(&t->log, &p);

        /* all ranks agreed in the step: the caller writes the checkpoint */
        if (sums.stop)
            return EPOCH_STOPPED;
        if (cfg->check_every > 0 && rs->step % cfg->check_every == 0 &&
            check_replicas(t, "during training") < 0)
            return EPOCH_FAILED;
        if (cfg->checkpoint_every_steps && rs->step % cfg->checkpoint_every == 0 &&
            st + 1 < steps && save_step_checkpoint(t) < 0)
            return EPOCH_FAILED;
    }
    return EPOCH_DONE;
}

/* The epoch is trained: evaluate, record, and checkpoint it when due, when it
 * is the last, or when the ranks agreed to stop. */
static int finish_epoch(Trainer *t, double train_seconds, int stopping)
{
    RunState *rs = &t->rs;
    const double t1 = dist_wtime();
    watchdog_beat("evaluating after step", rs->step);
    EvalResult ev = {0, 0, 0, NULL};
    stepper_evaluate(t->stepper, t->dist, &ev, t->ms.params, t->ms.buffers, t->test_block.images,
                     t->test_block.labels, t->test_block.count, t->test_chunks_total);
    EpochRecord r = {rs->epochs_done + 1, rs->epoch_loss_sum, rs->epoch_correct,
                     (int64_t)t->sched.n, ev.loss_sum, ev.correct, ev.count, train_seconds,
                     dist_wtime() - t1, t->shard_seconds, t->stepper->reduce_seconds, t->size,
                     t->samples_run};
    /* The metrics line goes first, then the checkpoint: a checkpoint's epoch
     * always has its line, and a resume drops lines past its checkpoint. */
    if (dist_agree(t->dist, runlog_epoch(&t->log, &r), "metrics") < 0)
        return -1;
    rs->epochs_done++;
    rs->step_in_epoch = 0;
    rs->epoch_loss_sum = 0.0;
    rs->epoch_correct = 0;
    const int due = !t->cfg.checkpoint_every_steps
                        ? rs->epochs_done % t->cfg.checkpoint_every == 0
                        : 1;
    if (due || rs->epochs_done == t->cfg.epochs || stopping)
        return save_epoch_checkpoint(t);
    return check_replicas(t, "at the end of an epoch");
}

/* ------------------------------------------------------- --print-model */

int train_print_model(const TrainConfig *cfg)
{
    Shape in = {cfg->input_c, cfg->input_h, cfg->input_w, 0};
    int classes = 0;
    if (!cfg->input_c) {
        Dataset ds;
        if (dataset_open(&ds, cfg->data_path) < 0) {
            msg_error("%s", err_get());
            return DPCNN_EXIT_FAILURE;
        }
        in = (Shape){ds.shape.channels, ds.shape.height, ds.shape.width, 0};
        classes = ds.shape.classes;
        dataset_close(&ds);
    }
    Net *net = XCALLOC(Net, 1);
    int rc = net_load(net, cfg->model, in, classes);
    if (rc == 0) {
        printf("network %s, input %dx%dx%d, %d classes:\n", cfg->model, in.c, in.h, in.w,
               net->classes);
        net_print(stdout, net);
        printf("\n%s", net->text);
    } else {
        msg_error("%s", err_get());
    }
    free(net);
    return rc == 0 ? DPCNN_EXIT_OK : DPCNN_EXIT_FAILURE;
}

/* -------------------------------------------------------------- the run */

int train_run(const TrainConfig *cfg, Dist *d)
{
    Trainer T;
    memset(&T, 0, sizeof T);
    Trainer *t = &T;
    t->cfg = *cfg;
    t->dist = d;
    t->rank = dist_rank(d);
    t->size = dist_size(d);
    t->data.file = -1;
    t->log.quiet = 1;
    t->lock_fd = -1;
    if (engine_select(cfg->kernels) < 0) /* options_parse checked the name */
        DIE("%s", err_get());
    runtime_blas_single();
    fault_read();
    watchdog_beat("reading the data, step", 0);
    int status = DPCNN_EXIT_FAILURE;
    if (open_data(t) < 0)
        goto out;
    runtime_phase("data");
    t->threads = runtime_threads(cfg->threads, d, sched_max_rank_micros(&t->sched));
    alloc_state(t);
    define_run(t);
    runtime_phase("state");
    if (!cfg->quiet) {
        msg_info("dpcnn %s: %d rank%s x %d thread%s; data %s: %zu train, %zu test samples "
                 "(fingerprint %s)",
                 PACKAGE_VERSION, t->size, t->size == 1 ? "" : "s", t->threads,
                 t->threads == 1 ? "" : "s", cfg->data_path, t->sched.n, t->n_test,
                 t->data.fingerprint);
        msg_info("batch %d (micro-batches of %d), %zu steps per epoch, lr %g, seed %" PRIu64
                 ", %s, %s reduction",
                 cfg->batch_size, cfg->micro_batch, sched_steps(&t->sched), cfg->lr, cfg->seed,
                 cfg->shuffle ? "shuffled" : "not shuffled",
                 cfg->reduction == REDUCE_EXACT ? "exact" : "float");
        runtime_report_kernels(d, t->threads);
        if (t->rank == 0) {
            /* line by line through msg_info: in a sweep each line names its run */
            char *table = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&table, &len);
            net_print(f, &t->net);
            fclose(f);
            msg_info("network %s:", cfg->model);
            char *save = NULL;
            for (char *line = strtok_r(table, "\n", &save); line;
                 line = strtok_r(NULL, "\n", &save))
                msg_info("%s", line);
            free(table);
        }
    }

    const int resumed = cfg->resume_path != NULL;
    if (resumed) {
        if (resume(t) < 0)
            goto out;
        if (t->rs.epochs_done >= cfg->epochs) {
            msg_info("the run is already complete: %d epochs done, --epochs %d",
                     t->rs.epochs_done, cfg->epochs);
            status = DPCNN_EXIT_OK;
            goto out;
        }
    } else {
        /* Identical start everywhere: rank 0 decides, everyone receives. */
        int rc = 0;
        if (t->rank == 0) {
            net_init(&t->net, t->ms.params, t->ms.buffers, t->batches, cfg->seed);
            if (cfg->init_path)
                rc = weights_load(cfg->init_path, &t->net, t->ms.params, t->ms.buffers,
                                  t->batches);
        }
        if (dist_agree(d, rc, "--init") < 0)
            goto out;
        broadcast_state(t);
    }
    if (prepare_outputs(t, resumed) < 0)
        goto out;
    if (!resumed && save_epoch_checkpoint(t) < 0) /* epoch-0000.h5: the starting point */
        goto out;
    runtime_phase(resumed ? "resume" : "weights and epoch-0000.h5");

    const int64_t steps = (int64_t)sched_steps(&t->sched);
    while (t->rs.epochs_done < cfg->epochs) {
        const double t0 = dist_wtime();
        int r = run_epoch(t);
        if (r == EPOCH_FAILED)
            goto out;
        int stop = r == EPOCH_STOPPED; /* agreed in a step's collective */
        if (t->rs.step_in_epoch == steps) {
            if (!stop) { /* a signal may have come during the last step or since: agree */
                int s[1] = {stop_requested() != 0};
                dist_max_int(d, s, 1);
                stop = s[0];
            }
            if (finish_epoch(t, dist_wtime() - t0, stop) < 0)
                goto out;
        } else if (save_step_checkpoint(t) < 0) {
            goto out;
        }
        if (stop) {
            runlog_notice(&t->log,
                       "stopped by %s after step %" PRId64 "; checkpoint %s/latest.h5; the "
                       "same command with --resume %s continues the run",
                       stop_requested() ? stop_signal_name(stop_requested()) : "another rank's signal",
                       t->rs.step, cfg->checkpoint_dir, cfg->checkpoint_dir);
            status = DPCNN_EXIT_STOPPED;
            goto out;
        }
    }
    status = DPCNN_EXIT_OK;
out:
    free_trainer(t);
    return status;
}
