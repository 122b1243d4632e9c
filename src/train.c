/* The training run: data, the epoch loop, evaluation, outputs.
 *
 * Ranks split every global batch by micro-batches and combine gradients
 * exactly (step.c), so every rank applies the same Adam step to the same
 * gradient and the run's bits do not depend on the number of ranks or
 * threads. doc/determinism.md explains the design and what it costs. */
#include "config.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
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
#include "dpcnn/model.h"
#include "dpcnn/rng.h"
#include "dpcnn/shard.h"
#include "dpcnn/step.h"
#include "dpcnn/train.h"

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
    cfg->checkpoint_dir = "checkpoints";
    cfg->check_every = 100;
}

typedef struct {
    TrainConfig cfg;
    Dist *dist;
    int rank, size, threads;
    Dataset data;
    Schedule sched;
    size_t n_test;
    Block train_block, test_block;
    size_t test_chunk0, test_chunks, test_chunks_total;
    Exchange xch;
    uint32_t *perm;
    float *state; /* params | Adam m | Adam v, contiguous: one hash, one broadcast */
    float *params, *adam_m, *adam_v;
    float *grads;
    Stepper *stepper;
    int64_t step; /* Adam's step count */
    FILE *metrics;
    double shard_seconds; /* exchange time of the last epoch */
} Trainer;

/* ---------------------------------------------------------------- set-up */

/* Worker threads: the cores this rank may use. Under a launcher that binds
 * ranks, the affinity mask already says; unbound, the node's cores are shared
 * out among the ranks on it. Never more than there are micro-batches. */
static int choose_threads(const TrainConfig *cfg, Dist *d, int max_micros)
{
    int t = cfg->threads;
    if (t <= 0) {
        cpu_set_t set;
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
        if (mine >= online)
            t = (int)(online / dist_local_size(d));
        else
            t = mine;
        if (t < 1)
            t = 1;
    }
#ifndef _OPENMP
    t = 1;
#endif
    if (t > max_micros)
        t = max_micros;
    return t < 1 ? 1 : t;
}

static const char *blas_core(void)
{
#ifdef HAVE_OPENBLAS_GET_CORENAME
    return openblas_get_corename();
#else
    return "unknown";
#endif
}

/* Debian's OpenBLAS 0.3.21 does not know some recent CPUs and falls back to
 * its generic SSE3 kernel, about 4x slower than the AVX-512 one. */
static void report_blas(Trainer *t)
{
    const char *core = blas_core();
    msg_info("OpenBLAS kernel: %s (single-threaded inside each of %d worker thread%s per rank)",
             core, t->threads, t->threads == 1 ? "" : "s");
    int generic = strcmp(core, "Prescott") == 0 || strcmp(core, "Core2") == 0 ||
                  strcmp(core, "Penryn") == 0 || strcmp(core, "Nehalem") == 0 ||
                  strcmp(core, "Dunnington") == 0 || strcmp(core, "Atom") == 0;
    __builtin_cpu_init();
    if (t->rank == 0 && generic && __builtin_cpu_supports("avx512f"))
        msg_warn("this CPU has AVX-512 but OpenBLAS chose its generic %s kernel; matrix "
                 "products run about 4x faster with OPENBLAS_CORETYPE=SkylakeX in the "
                 "environment (under mpirun on several nodes add -x OPENBLAS_CORETYPE)",
                 core);
    else if (t->rank == 0 && generic && __builtin_cpu_supports("avx2"))
        msg_warn("this CPU has AVX2 but OpenBLAS chose its generic %s kernel; set "
                 "OPENBLAS_CORETYPE=Haswell for faster matrix products",
                 core);
    /* Different kernels round differently: then ranks would disagree. */
    uint64_t h = UINT64_C(1469598103934665603);
    for (const char *p = core; *p; p++)
        h = (h ^ (uint8_t)*p) * UINT64_C(1099511628211);
    uint64_t *all = XCALLOC(uint64_t, (size_t)t->size);
    dist_allgather_u64(t->dist, h, all);
    for (int r = 1; r < t->size; r++)
        if (all[r] != all[0]) {
            if (t->rank == 0)
                msg_warn("ranks run different OpenBLAS kernels (rank %d differs from rank 0): "
                         "results will not be bitwise reproducible; set OPENBLAS_CORETYPE "
                         "the same everywhere",
                         r);
            break;
        }
    free(all);
}

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

    const size_t m = (size_t)c->micro_batch;
    t->test_chunks_total = (nt + m - 1) / m;
    t->test_chunk0 = part_first(t->test_chunks_total, t->size, t->rank);
    t->test_chunks = part_first(t->test_chunks_total, t->size, t->rank + 1) - t->test_chunk0;
    Block *tb = &t->test_block;
    tb->first = t->test_chunk0 * m;
    size_t end = (t->test_chunk0 + t->test_chunks) * m;
    tb->count = (end < nt ? end : nt) - tb->first;
    if (t->test_chunks == 0)
        tb->count = 0;
    tb->images = XCALLOC(uint8_t, tb->count * MODEL_IMAGE_PIXELS);
    tb->labels = XCALLOC(uint8_t, tb->count);
    if (rc == 0)
        rc = dataset_read(&t->data, SPLIT_TEST, tb->first, tb->count, tb->images, tb->labels);
    return dist_agree(t->dist, rc, NULL);
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
    if (t->metrics)
        fclose(t->metrics);
}

/* ------------------------------------------------------------ fault hooks */

/* DPCNN_FAULT=kind@step:rank injects a failure for the tests (doc/testing.md):
 * nan (a NaN weight before the step), drift (a perturbed replica after it),
 * kill (SIGKILL itself after it). */
static int fault_due(const char *kind, int64_t step, int rank)
{
    const char *f = getenv("DPCNN_FAULT");
    if (!f || strncmp(f, kind, strlen(kind)) != 0 || f[strlen(kind)] != '@')
        return 0;
    long long s;
    int r;
    if (sscanf(f + strlen(kind) + 1, "%lld:%d", &s, &r) != 2)
        return 0;
    return s == step && r == rank;
}

/* ----------------------------------------------------------------- a step */

static uint64_t state_hash(const Trainer *t)
{
    /* FNV-1a over the 32-bit words of params, m and v, then the step count. */
    const uint32_t *w = (const uint32_t *)t->state;
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < 3 * NPARAM; i++)
        h = (h ^ w[i]) * UINT64_C(1099511628211);
    return (h ^ (uint64_t)t->step) * UINT64_C(1099511628211);
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
                      when, t->step, list);
    }
    free(all);
    return bad >= 0 ? -1 : 0;
}

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
    if (fault_due("nan", t->step + 1, t->rank))
        t->params[0] = NAN;
    if (stepper_gradient(t->stepper, t->dist, t->grads, sums, t->params, images, labels, sizes,
                         l - f, sched_micro_count(s, st), sched_step_size(s, st)) < 0)
    {
        char where[64] = "some rank";
        if (sums->bad_rank != STEP_SOME_RANK)
            snprintf(where, sizeof where, "rank %d", sums->bad_rank);
        return err_set("non-finite %s at step %" PRId64 " (epoch step %zu, seen on %s); "
                       "stopped before any weight was updated with it (a smaller --lr may help)",
                       sums->loss_bad ? "loss" : "gradient", t->step + 1, st + 1, where);
    }
    t->step++;
    AdamConfig ac = {t->cfg.lr, t->cfg.beta1, t->cfg.beta2, t->cfg.eps};
    adam_step(t->params, t->adam_m, t->adam_v, t->grads, NPARAM, &ac, t->step);
    if (fault_due("drift", t->step, t->rank))
        t->params[0] += 1e-3f;
    if (fault_due("kill", t->step, t->rank))
        raise(SIGKILL);
    return 0;
}

static void evaluate(Trainer *t, EvalResult *ev)
{
    stepper_evaluate(t->stepper, t->dist, ev, t->params, t->test_block.images,
                     t->test_block.labels, t->test_block.count, t->test_chunks_total);
}

/* -------------------------------------------------------------- the run */

static int save_weights(Trainer *t, int epoch)
{
    int rc = 0;
    if (t->rank == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/epoch-%04d.h5", t->cfg.checkpoint_dir, epoch);
        rc = weights_save(path, t->params);
    }
    return dist_agree(t->dist, rc, "writing a checkpoint");
}

static int open_outputs(Trainer *t)
{
    int rc = 0;
    if (t->rank == 0) {
        rc = fs_make_dir(t->cfg.checkpoint_dir);
        if (rc == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/metrics.jsonl", t->cfg.checkpoint_dir);
            if (fs_exists(path))
                msg_warn("%s exists: starting it afresh for this run", path);
            t->metrics = fopen(path, "w");
            if (!t->metrics)
                rc = err_set("%s: cannot write: %s", path, strerror(errno));
        }
    }
    return dist_agree(t->dist, rc, "checkpoint directory");
}

static void record_epoch(Trainer *t, int epoch, double train_loss_sum, int64_t train_correct,
                         const EvalResult *ev, double seconds, double eval_seconds)
{
    if (t->rank != 0)
        return;
    const size_t n = t->sched.n;
    double train_loss = train_loss_sum / (double)n;
    double test_loss = ev->loss_sum / (double)ev->count;
    double acc = (double)ev->correct / (double)ev->count;
    double sps = seconds > 0 ? (double)n / seconds : 0.0;
    msg_info("epoch %3d  train_loss %.4f  train_correct %" PRId64 "/%zu  test_loss %.4f  "
             "test_accuracy %.4f  %.2f s  %.0f samples/s",
             epoch, train_loss, train_correct, n, test_loss, acc, seconds, sps);
    if (t->metrics) {
        fprintf(t->metrics,
                "{\"type\":\"epoch\",\"epoch\":%d,\"train_loss\":%.17g,\"train_correct\":%" PRId64
                ",\"train_samples\":%zu,\"test_loss\":%.17g,\"test_correct\":%" PRId64
                ",\"test_samples\":%" PRId64 ",\"test_accuracy\":%.17g,"
                "\"seconds\":%.6f,\"samples_per_second\":%.3f,\"eval_seconds\":%.6f,"
                "\"shard_seconds\":%.6f,\"reduce_seconds\":%.6f,\"ranks\":%d}\n",
                epoch, train_loss, train_correct, n, test_loss, ev->correct, ev->count, acc, seconds, sps,
                eval_seconds, t->shard_seconds, t->stepper->reduce_seconds, t->size);
        t->stepper->reduce_seconds = 0;
        fflush(t->metrics);
        fsync(fileno(t->metrics));
    }
}

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
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    /* Parallelism comes from dpcnn's own threads, one micro-batch each: a
     * product's bits must not depend on how many threads OpenBLAS splits it over. */
    openblas_set_num_threads(1);
#endif
    int status = DPCNN_EXIT_FAILURE;
    if (open_data(t) < 0)
        goto out;
    t->threads = choose_threads(cfg, d, sched_max_rank_micros(&t->sched));
    alloc_state(t);
    msg_info("dpcnn %s: %d rank%s x %d thread%s; data %s: %zu train, %zu test samples "
             "(fingerprint %s)",
             PACKAGE_VERSION, t->size, t->size == 1 ? "" : "s", t->threads,
             t->threads == 1 ? "" : "s", cfg->data_path, t->sched.n, t->n_test,
             t->data.fingerprint);
    msg_info("batch %d (micro-batches of %d), %zu steps per epoch, lr %g, seed %" PRIu64
             ", %s",
             cfg->batch_size, cfg->micro_batch, sched_steps(&t->sched), cfg->lr, cfg->seed,
             cfg->shuffle ? "shuffled" : "not shuffled");
    report_blas(t);

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
    if (open_outputs(t) < 0 || save_weights(t, 0) < 0)
        goto out;

    for (int epoch = 1; epoch <= cfg->epochs; epoch++) {
        double t0 = dist_wtime();
        if (cfg->shuffle)
            rng_permutation(t->perm, t->sched.n, cfg->seed, (uint64_t)epoch);
        else
            for (size_t i = 0; i < t->sched.n; i++)
                t->perm[i] = (uint32_t)i;
        exchange_run(&t->xch, &t->train_block, t->perm, d);
        t->shard_seconds = dist_wtime() - t0;

        double loss_sum = 0.0;
        int64_t correct = 0;
        size_t pos = 0, steps = sched_steps(&t->sched);
        for (size_t st = 0; st < steps; st++) {
            StepSums r = {0, 0, 0, -1, 0};
            if (train_step(t, st, t->xch.sample + pos, t->xch.label + pos, &r) < 0) {
                msg_job_error("%s; the last complete checkpoint is %s/epoch-%04d.h5", err_get(),
                              cfg->checkpoint_dir, epoch - 1);
                goto out;
            }
            int f, l;
            sched_rank_micros(&t->sched, st, t->rank, &f, &l);
            for (int j = f; j < l; j++)
                pos += (size_t)sched_micro_size(&t->sched, st, j);
            loss_sum += r.loss_sum;
            correct += r.correct;
            if (cfg->check_every > 0 && t->step % cfg->check_every == 0 &&
                check_replicas(t, "during training") < 0)
                goto out;
        }
        double t1 = dist_wtime();
        EvalResult ev;
        evaluate(t, &ev);
        double t2 = dist_wtime();
        if (check_replicas(t, "at the end of an epoch") < 0)
            goto out;
        record_epoch(t, epoch, loss_sum, correct, &ev, t1 - t0, t2 - t1);
        if (save_weights(t, epoch) < 0)
            goto out;
    }
    status = DPCNN_EXIT_OK;
out:
    free_trainer(t);
    return status;
}
