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
#include "dpcnn/fsutil.h"
#include "dpcnn/hash.h"
#include "dpcnn/model.h"
#include "dpcnn/rng.h"
#include "dpcnn/runlog.h"
#include "dpcnn/runtime.h"
#include "dpcnn/shard.h"
#include "dpcnn/step.h"
#include "dpcnn/train.h"
#include "dpcnn/watchdog.h"

#define NPARAM MODEL_NUM_PARAMS

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
    cfg->hang_timeout = 300;
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
    float *state; /* params | Adam m | Adam v, contiguous: one hash, one broadcast */
    float *params, *adam_m, *adam_v;
    float *grads;
    Stepper *stepper;
    RunState rs; /* the run's definition and position: what a checkpoint holds */
    RunLog log;
    double shard_seconds; /* exchange time of the current epoch */
    int64_t samples_run;  /* samples of the current epoch trained by this process */
} Trainer;

/* ------------------------------------------------------------ preemption */

/* SIGTERM, SIGINT and SIGUSR1 ask for a stop at the next step boundary (Slurm
 * sends one before a time limit or preemption; mpirun forwards them). The
 * ranks agree on it inside the step's own collective, so all stop after the
 * same step. A second signal of the same kind stops the process at once. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    if (g_stop_signal == sig) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop_signal = sig;
}

void train_catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
    }
}

/* ---------------------------------------------------------------- set-up */

static int open_data(Trainer *t)
{
    const TrainConfig *c = &t->cfg;
    int rc = dataset_open(&t->data, c->data_path);
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
    b->images = XCALLOC(uint8_t, b->count * MODEL_IMAGE_PIXELS);
    b->labels = XCALLOC(uint8_t, b->count);
    rc = dataset_read(&t->data, SPLIT_TRAIN, b->first, b->count, b->images, b->labels);

    int rc2 = shard_read_test(&t->test_block, &t->test_chunks, &t->test_chunks_total, &t->data,
                              nt, (size_t)c->micro_batch, t->rank, t->size);
    return dist_agree(t->dist, rc < 0 ? rc : rc2, NULL);
}

static void alloc_state(Trainer *t)
{
    t->state = XCALLOC(float, 3 * NPARAM);
    t->params = t->state;
    t->adam_m = t->state + NPARAM;
    t->adam_v = t->state + 2 * NPARAM;
    t->grads = XCALLOC(float, NPARAM);
    t->perm = XCALLOC(uint32_t, t->sched.n);
    t->stepper = stepper_create(t->cfg.micro_batch, sched_max_rank_micros(&t->sched),
                                t->threads, t->test_chunks, t->cfg.reduction);
    exchange_init(&t->xch, &t->sched, t->rank);
}

static void free_trainer(Trainer *t)
{
    exchange_free(&t->xch);
    stepper_free(t->stepper);
    free(t->state);
    free(t->grads);
    free(t->perm);
    free(t->train_block.images);
    free(t->train_block.labels);
    free(t->test_block.images);
    free(t->test_block.labels);
    if (t->data.path)
        dataset_close(&t->data);
    runlog_close(&t->log);
}

/* The run's definition, from the command line and the data. */
static void define_run(Trainer *t)
{
    RunState *rs = &t->rs;
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
}

/* A checkpoint continues this run only if it was this run: same data, same
 * seed, same cut into micro-batches... Batch size and learning rate may
 * change with --override-hparams (the run is then, knowingly, another one). */
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
#define SAME(field, flag, fmt)                                                               \
    if (ck->field != now->field)                                                             \
        return err_set("%s was made with " flag " " fmt ", this run asks for " fmt           \
                       ": a resumed run must be the same run",                               \
                       path, ck->field, now->field)
    SAME(seed, "--seed", "%" PRIu64);
    SAME(micro_batch, "--micro-batch", "%d");
    SAME(shuffle, "shuffle", "%d");
    SAME(reduction, "--reduction", "%d");
    SAME(warmup, "--warmup", "%d");
    SAME(beta1, "beta1", "%g");
    SAME(beta2, "beta2", "%g");
    SAME(eps, "eps", "%g");
#undef SAME
    if (!override && ck->batch_size != now->batch_size)
        return err_set("%s was made with --batch-size %d, this run asks for %d; add "
                       "--override-hparams to continue it with the new value anyway",
                       path, ck->batch_size, now->batch_size);
    if (!override && ck->lr != now->lr)
        return err_set("%s was made with --lr %g, this run asks for %g; add "
                       "--override-hparams to continue it with the new value anyway",
                       path, ck->lr, now->lr);
    return 0;
}

/* Rank 0 reads the checkpoint, every rank receives it. */
static int resume(Trainer *t)
{
    char path[4200], dir[4200];
    checkpoint_resolve(t->cfg.resume_path, path, dir, sizeof path);
    RunState ck;
    int rc = 0;
    if (t->rank == 0) {
        rc = checkpoint_load(path, t->params, t->adam_m, t->adam_v, &ck);
        if (rc == 0)
            rc = check_same_run(&ck, &t->rs, path, t->cfg.override_hparams);
        if (rc == 0 && ck.step_in_epoch > 0 && ck.batch_size != t->rs.batch_size)
            rc = err_set("%s stopped inside an epoch; the batch size can change only at an "
                         "epoch boundary (resume from an epoch-NNNN.h5)",
                         path);
    }
    if (dist_agree(t->dist, rc, "--resume") < 0)
        return -1;
    dist_bcast(t->dist, t->state, sizeof(float) * 3 * NPARAM, 0);
    dist_bcast(t->dist, &ck, sizeof ck, 0);
    /* the position and the sums come from the checkpoint, the definition from
     * this run (the same, or changed on purpose) */
    t->rs.epochs_done = ck.epochs_done;
    t->rs.step_in_epoch = ck.step_in_epoch;
    t->rs.step = ck.step;
    t->rs.epoch_loss_sum = ck.epoch_loss_sum;
    t->rs.epoch_correct = ck.epoch_correct;
    if (!t->cfg.quiet)
        msg_info("resuming %s: %d epoch%s done, %" PRId64 " steps into epoch %d (step %" PRId64
                 ")",
                 path, ck.epochs_done, ck.epochs_done == 1 ? "" : "s", ck.step_in_epoch,
                 ck.epochs_done + 1, ck.step);
    return 0;
}

/* ------------------------------------------------------------ fault hooks */

/* DPCNN_FAULT=kind@step:rank injects a failure for the tests (doc/determinism.md):
 * nan (a NaN weight before the step), hang (stop making progress before it),
 * drift (a perturbed replica after it), kill (SIGKILL itself after it),
 * killwrite (SIGKILL itself halfway through writing the checkpoint of that
 * step, rank 0). Read once at start-up; unset, nothing is ever due. */
static struct {
    char kind[16];
    long long step;
    int rank;
} g_fault = {"", -1, -1};

static void fault_read(void)
{
    const char *f = getenv("DPCNN_FAULT");
    if (!f || sscanf(f, "%15[a-z]@%lld:%d", g_fault.kind, &g_fault.step, &g_fault.rank) != 3)
        g_fault.step = -1;
}

static int fault_due(const char *kind, int64_t step, int rank)
{
    return g_fault.step == step && g_fault.rank == rank && strcmp(g_fault.kind, kind) == 0;
}

/* ----------------------------------------------------------- checkpoints */

static uint64_t state_hash(const Trainer *t)
{
    /* params, m and v, then the step count */
    uint64_t h = fnv1a64(FNV1A64_INIT, t->state, sizeof(float) * 3 * NPARAM);
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
        rc = checkpoint_save(path, t->params, t->adam_m, t->adam_v, &t->rs);
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
        if (rc == 0)
            rc = checkpoint_clean_temps(t->cfg.checkpoint_dir);
        if (rc == 0)
            rc = runlog_open(&t->log, t->cfg.checkpoint_dir, t->rs.epochs_done,
                             resumed ? t->rs.step : -1, t->cfg.quiet, t->cfg.log_every);
    } else {
        memset(&t->log, 0, sizeof t->log);
        t->log.quiet = 1;
    }
    return dist_agree(t->dist, rc, "checkpoint directory");
}

/* ------------------------------------------------------------ the steps */

/* One step of the epoch: this rank's micro-batches, the exact gradient, Adam. */
static int train_step(Trainer *t, size_t st, const uint8_t *const *images,
                      const uint8_t *labels, StepSums *sums)
{
    const Schedule *s = &t->sched;
    int f, l;
    sched_rank_micros(s, st, t->rank, &f, &l);
    int sizes[l - f > 0 ? l - f : 1];
    for (int j = f; j < l; j++)
        sizes[j - f] = sched_micro_size(s, st, j);
    if (fault_due("nan", t->rs.step + 1, t->rank))
        t->params[0] = NAN;
    if (fault_due("hang", t->rs.step + 1, t->rank))
        for (;;) /* as a rank stuck on a dead file system would */
            pause();
    if (stepper_gradient(t->stepper, t->dist, t->grads, sums, t->params, images, labels, sizes,
                         l - f, sched_micro_count(s, st), sched_step_size(s, st)) < 0) {
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
    adam_step(t->params, t->adam_m, t->adam_v, t->grads, NPARAM, &ac, t->rs.step);
    if (fault_due("drift", t->rs.step, t->rank))
        t->params[0] += 1e-3f;
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
        StepSums sums = {0, 0, g_stop_signal != 0, -1, 0};
        if (train_step(t, (size_t)st, t->xch.sample + pos, t->xch.label + pos, &sums) < 0) {
            msg_job_error("%s; the last complete checkpoint is %s/latest.h5", err_get(),
                          cfg->checkpoint_dir);
            return EPOCH_FAILED;
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
    EvalResult ev;
    stepper_evaluate(t->stepper, t->dist, &ev, t->params, t->test_block.images,
                     t->test_block.labels, t->test_block.count, t->test_chunks_total);
    EpochRecord r = {rs->epochs_done + 1, rs->epoch_loss_sum, rs->epoch_correct,
                     (int64_t)t->sched.n, ev.loss_sum, ev.correct, ev.count, train_seconds,
                     dist_wtime() - t1, t->shard_seconds, t->stepper->reduce_seconds, t->size,
                     t->samples_run};
    /* The metrics line goes first, then the checkpoint: a checkpoint's epoch
     * always has its line, and a resume drops lines past its checkpoint. */
    runlog_epoch(&t->log, &r);
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
    runtime_blas_single();
    train_catch_stop_signals();
    fault_read();
    watchdog_start(cfg->hang_timeout);
    watchdog_beat("reading the data, step", 0);
    int status = DPCNN_EXIT_FAILURE;
    if (open_data(t) < 0)
        goto out;
    t->threads = runtime_threads(cfg->threads, d, sched_max_rank_micros(&t->sched));
    alloc_state(t);
    define_run(t);
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
        runtime_report_blas(d, t->threads);
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
            if (cfg->init_path)
                rc = weights_load(cfg->init_path, t->params);
            else
                model_init(t->params, cfg->seed);
        }
        if (dist_agree(d, rc, "--init") < 0)
            goto out;
        dist_bcast(d, t->params, sizeof(float) * NPARAM, 0);
    }
    if (prepare_outputs(t, resumed) < 0)
        goto out;
    if (!resumed && save_epoch_checkpoint(t) < 0) /* epoch-0000.h5: the starting point */
        goto out;

    const int64_t steps = (int64_t)sched_steps(&t->sched);
    while (t->rs.epochs_done < cfg->epochs) {
        const double t0 = dist_wtime();
        int r = run_epoch(t);
        if (r == EPOCH_FAILED)
            goto out;
        int stop = r == EPOCH_STOPPED; /* agreed in a step's collective */
        if (t->rs.step_in_epoch == steps) {
            if (!stop) { /* a signal may have come during the last step or since: agree */
                int s[1] = {g_stop_signal != 0};
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
                       g_stop_signal ? signal_name(g_stop_signal) : "another rank's signal",
                       t->rs.step, cfg->checkpoint_dir, cfg->checkpoint_dir);
            status = DPCNN_EXIT_STOPPED;
            goto out;
        }
    }
    status = DPCNN_EXIT_OK;
out:
    watchdog_stop();
    free_trainer(t);
    return status;
}
