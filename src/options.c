#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/options.h"
#include "dpcnn/step.h"

void options_usage(FILE *f)
{
    fputs(
        "Usage: dpcnn [OPTION]...\n"
        "       mpirun -np N dpcnn [OPTION]...\n"
        "Train a convolutional network (the PyTorch tutorial's by default) on an image\n"
        "data set (Fashion-MNIST by default), data-parallel over MPI ranks.\n"
        "The same options give the same bits at any rank and thread count.\n"
        "\n"
        "What is trained (these change the result):\n"
        "  --epochs N          epochs to train (default 1)\n"
        "  --batch-size N      global batch over all ranks (default 100)\n"
        "  --micro-batch N     samples per micro-batch, the unit of work (default 25)\n"
        "  --lr X              Adam learning rate (default 0.01)\n"
        "  --warmup N          raise the learning rate linearly over the first N steps\n"
        "                      (default 0: none)\n"
        "  --seed N            seed of the initial weights and the epoch orders (default 0)\n"
        "  --no-shuffle        visit the training set in file order every epoch\n"
        "  --shuffle           a new order every epoch, from the seed (the default)\n"
        "  --limit N           train on the first N training samples only\n"
        "  --test-limit N      evaluate on the first N test samples only\n"
        "  --data FILE         HDF5 data file (default: data/fashion-mnist.h5, found\n"
        "                      in the current, build or install directory)\n"
        "  --model NAME|FILE   the network: tutorial (default), bn, lenet5, or a file\n"
        "                      describing one in PyTorch's terms (doc/models.md)\n"
        "  --normalize MEAN,STD  normalise the input after /255, one pair per channel\n"
        "                      (none: off, the default; 0.2860,0.3530 for Fashion-MNIST)\n"
        "  --init FILE         start from these weights (a dpcnn weights file)\n"
        "  --resume DIR|FILE   continue the run saved in DIR (its latest.h5) or FILE,\n"
        "                      to the same bits as if it had never stopped; give the\n"
        "                      same options (--epochs is the run's total)\n"
        "  --override-hparams  let a resumed run change --batch-size and --lr\n"
        "\n"
        "How it runs (these never change the result):\n"
        "  --checkpoint-dir DIR  where checkpoints and metrics.jsonl go (default\n"
        "                      checkpoints, or the --resume directory)\n"
        "  --checkpoint-every N[e|s]  checkpoint every N epochs (N or Ne, default 1)\n"
        "                      or every N steps (Ns) as well as every epoch\n"
        "  --keep N            keep only the newest N checkpoints (default: all)\n"
        "  --quiet             print nothing but warnings and errors\n"
        "  --log-every N       progress every N steps when not on a terminal (default 100)\n"
        "  --metrics-every N   a per-step record in metrics.jsonl every N steps (default 0:\n"
        "                      epochs only)\n"
        "  --hang-timeout S    end the whole job when a rank makes no progress for S\n"
        "                      seconds (default 60; 0: never)\n"
        "  --kernels NAME      native (default): dpcnn's own kernels, the same bits on\n"
        "                      every x86-64 CPU; openblas: OpenBLAS's sgemm, whose bits\n"
        "                      depend on its kernel for the CPU\n"
        "  --threads N         worker threads per rank (default: this rank's share of\n"
        "                      the node's cores)\n"
        "  --check-every N     compare replicas across ranks every N steps (default 100;\n"
        "                      0: at checkpoints only)\n"
        "  --reduction MODE    exact (default): gradients summed in int64 fixed point,\n"
        "                      the same bits at any rank count; float: one float32\n"
        "                      allreduce, cheaper on very many ranks, bits then depend\n"
        "                      on the rank count\n"
        "  --print-model       print the network (layers, shapes, parameters, FLOPs)\n"
        "                      and exit; the input shape comes from --data or from\n"
        "  --input-shape C,H,W the shape of one input sample\n"
        "  -h, --help          this text\n"
        "  -V, --version       the version\n"
        "\n"
        "\n"
        "Other commands:\n"
        "  dpcnn evaluate CHECKPOINT [--data FILE] [--csv FILE] ...\n"
        "                      test loss, accuracy per class, confusion matrix\n"
        "  dpcnn sweep EXPERIMENT-DIR [OPTION]...  (mpirun -np N too)\n"
        "                      an experiment: one run per combination of the values of\n"
        "                      options given several times (--lr 0.01 --lr 0.001 ...),\n"
        "                      side by side in groups of ranks, and one table of them\n"
        "                      (dpcnn sweep --help)\n"
        "\n"
        "Signals: SIGTERM, SIGINT or SIGUSR1 stop the run at the next step with a\n"
        "checkpoint (exit status 75); a second one stops it at once.\n"
        "Exit status: 0 done, 1 runtime error, 2 bad command line, 75 stopped by a\n"
        "signal with a checkpoint written (resume with --resume).\n",
        f);
}

const char *options_default_data(void)
{
    static const char *const places[] = {"data/fashion-mnist.h5", DPCNN_BUILD_DATA,
                                         DPCNN_INSTALLED_DATA};
    const char *env = getenv("DPCNN_DATA");
    if (env && *env)
        return env;
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++)
        if (fs_exists(places[i]))
            return places[i];
    return NULL;
}

/* One line naming the option, then a hint; printed by rank 0 only. The
 * message is also kept as err_get(): a sweep records it as a run's reason. */
static int __attribute__((format(printf, 2, 3))) usage_error(int speak, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set("%s", msg);
    if (speak) { /* one write: under mpirun, pieces of a message could be
                  * interleaved with the launcher's own */
        fprintf(stderr, "dpcnn: %s\nTry 'dpcnn --help'.\n", msg);
        fflush(stderr);
    }
    return OPTIONS_EXIT_USAGE;
}

/* Numbers are digits and nothing else: strtoll and strtod would skip
 * leading blanks and take a sign, so ' 1' would pass as 1 and ' -1' as a
 * huge unsigned seed. A value that is not written plainly is refused. */
static int plain_digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

int options_parse_whole(const char *s, unsigned long long lo, unsigned long long hi,
                        unsigned long long *out)
{
    if (!plain_digits(s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int options_parse_real(const char *s, int zero_ok, double *out)
{
    /* a plain decimal number: digits, one point, an exponent (1e-3) */
    if (!s || !((*s >= '0' && *s <= '9') || *s == '.'))
        return -1;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || *end || !isfinite(x) || x < 0 || (x == 0 && !zero_ok))
        return -1;
    for (const char *p = s; p < end; p++) /* no hexadecimal floats */
        if (*p == 'x' || *p == 'X')
            return -1;
    *out = x;
    return 0;
}

/* Every option of a training run, once: its name, its id, whether it takes a
 * value, and the run parameter it sets when it decides the result (the axes of
 * `dpcnn sweep`, its run directories' names and the experiment's columns;
 * PARAM_NONE for the options that never change a bit), with, for a flag, the
 * parameter's value it stands for. getopt's table is made from this one. */
enum {
    O_EPOCHS = 256, O_BATCH, O_MICRO, O_LR, O_SEED, O_DATA, O_SHUFFLE, O_NO_SHUFFLE, O_CKPT,
    O_INIT, O_THREADS, O_LIMIT, O_TEST_LIMIT, O_CHECK_EVERY, O_REDUCTION, O_RESUME, O_OVERRIDE,
    O_CKPT_EVERY, O_KEEP, O_QUIET, O_LOG_EVERY, O_METRICS_EVERY, O_WARMUP, O_HANG, O_MODEL,
    O_NORMALIZE, O_PRINT_MODEL, O_INPUT_SHAPE, O_KERNELS,
};
static const OptionSpec option_specs[] = {
    {"epochs", O_EPOCHS, 1, PARAM_EPOCHS, NULL},
    {"batch-size", O_BATCH, 1, PARAM_BATCH_SIZE, NULL},
    {"micro-batch", O_MICRO, 1, PARAM_MICRO_BATCH, NULL},
    {"lr", O_LR, 1, PARAM_LR, NULL},
    {"warmup", O_WARMUP, 1, PARAM_WARMUP, NULL},
    {"seed", O_SEED, 1, PARAM_SEED, NULL},
    {"shuffle", O_SHUFFLE, 0, PARAM_SHUFFLE, "yes"},
    {"no-shuffle", O_NO_SHUFFLE, 0, PARAM_SHUFFLE, "no"},
    {"limit", O_LIMIT, 1, PARAM_LIMIT, NULL},
    {"test-limit", O_TEST_LIMIT, 1, PARAM_TEST_LIMIT, NULL},
    {"data", O_DATA, 1, PARAM_DATA, NULL},
    {"model", O_MODEL, 1, PARAM_MODEL, NULL},
    {"normalize", O_NORMALIZE, 1, PARAM_NORMALIZE, NULL},
    {"init", O_INIT, 1, PARAM_INIT, NULL},
    {"reduction", O_REDUCTION, 1, PARAM_REDUCTION, NULL},
    {"kernels", O_KERNELS, 1, PARAM_KERNELS, NULL},
    {"resume", O_RESUME, 1, PARAM_NONE, NULL},
    {"override-hparams", O_OVERRIDE, 0, PARAM_NONE, NULL},
    {"checkpoint-dir", O_CKPT, 1, PARAM_NONE, NULL},
    {"checkpoint-every", O_CKPT_EVERY, 1, PARAM_NONE, NULL},
    {"keep", O_KEEP, 1, PARAM_NONE, NULL},
    {"threads", O_THREADS, 1, PARAM_NONE, NULL},
    {"check-every", O_CHECK_EVERY, 1, PARAM_NONE, NULL},
    {"quiet", O_QUIET, 0, PARAM_NONE, NULL},
    {"log-every", O_LOG_EVERY, 1, PARAM_NONE, NULL},
    {"metrics-every", O_METRICS_EVERY, 1, PARAM_NONE, NULL},
    {"hang-timeout", O_HANG, 1, PARAM_NONE, NULL},
    {"print-model", O_PRINT_MODEL, 0, PARAM_NONE, NULL},
    {"input-shape", O_INPUT_SHAPE, 1, PARAM_NONE, NULL},
    {"help", 'h', 0, PARAM_NONE, NULL},
    {"version", 'V', 0, PARAM_NONE, NULL},
};
#define NOPTIONS (sizeof option_specs / sizeof option_specs[0])

const OptionSpec *options_find(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(option_specs[i].name, name) == 0)
            return &option_specs[i];
    return NULL;
}

static const char *const param_names[PARAM_COUNT] = {
    [PARAM_EPOCHS] = "epochs",       [PARAM_BATCH_SIZE] = "batch_size",
    [PARAM_MICRO_BATCH] = "micro_batch", [PARAM_LR] = "lr",
    [PARAM_WARMUP] = "warmup",       [PARAM_SEED] = "seed",
    [PARAM_SHUFFLE] = "shuffle",     [PARAM_LIMIT] = "limit",
    [PARAM_TEST_LIMIT] = "test_limit", [PARAM_DATA] = "data",
    [PARAM_MODEL] = "model",         [PARAM_NORMALIZE] = "normalize",
    [PARAM_INIT] = "init",           [PARAM_REDUCTION] = "reduction",
    [PARAM_KERNELS] = "kernels",
};

const char *options_param_name(RunParam p)
{
    return p >= 0 && p < PARAM_COUNT ? param_names[p] : "?";
}

void options_format_real(char *buf, size_t n, double x)
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

void options_param_value(const TrainConfig *c, RunParam p, char *buf, size_t n)
{
    switch (p) {
    case PARAM_EPOCHS: snprintf(buf, n, "%d", c->epochs); break;
    case PARAM_BATCH_SIZE: snprintf(buf, n, "%d", c->batch_size); break;
    case PARAM_MICRO_BATCH: snprintf(buf, n, "%d", c->micro_batch); break;
    case PARAM_LR: options_format_real(buf, n, c->lr); break;
    case PARAM_WARMUP: snprintf(buf, n, "%d", c->warmup); break;
    case PARAM_SEED: snprintf(buf, n, "%" PRIu64, c->seed); break;
    case PARAM_SHUFFLE: snprintf(buf, n, "%s", c->shuffle ? "yes" : "no"); break;
    case PARAM_LIMIT:
        if (c->limit)
            snprintf(buf, n, "%zu", c->limit);
        else
            snprintf(buf, n, "all");
        break;
    case PARAM_TEST_LIMIT:
        if (c->test_limit)
            snprintf(buf, n, "%zu", c->test_limit);
        else
            snprintf(buf, n, "all");
        break;
    case PARAM_DATA: snprintf(buf, n, "%s", c->data_path ? c->data_path : "none"); break;
    case PARAM_MODEL: snprintf(buf, n, "%s", c->model); break;
    case PARAM_NORMALIZE: snprintf(buf, n, "%s", c->normalize); break;
    case PARAM_INIT: snprintf(buf, n, "%s", c->init_path ? c->init_path : "none"); break;
    case PARAM_REDUCTION:
        snprintf(buf, n, "%s", c->reduction == REDUCE_EXACT ? "exact" : "float");
        break;
    case PARAM_KERNELS: snprintf(buf, n, "%s", c->kernels); break;
    default: snprintf(buf, n, "?"); break;
    }
}

int options_parse(TrainConfig *cfg, int argc, char **argv, int speak)
{
    struct option opts[NOPTIONS + 1];
    for (size_t i = 0; i < NOPTIONS; i++)
        opts[i] = (struct option){option_specs[i].name,
                                  option_specs[i].takes_value ? required_argument : no_argument,
                                  0, option_specs[i].id};
    opts[NOPTIONS] = (struct option){0, 0, 0, 0};
    train_config_defaults(cfg);
    /* The options that take a whole number: range, message, and where it goes. */
    const struct {
        int id;
        const char *flag;
        unsigned long long lo, hi;
        const char *expected;
        int *as_int;
        size_t *as_size;
    } whole[] = {
        {O_EPOCHS, "--epochs", 0, 1000000, "a whole number of epochs >= 0", &cfg->epochs, NULL},
        {O_BATCH, "--batch-size", 1, 1 << 24, "a whole number >= 1", &cfg->batch_size, NULL},
        {O_MICRO, "--micro-batch", 1, 1 << 16, "a whole number from 1 to 65536",
         &cfg->micro_batch, NULL},
        {O_THREADS, "--threads", 1, 1024, "a whole number from 1 to 1024", &cfg->threads, NULL},
        {O_LIMIT, "--limit", 1, 1LL << 40, "a whole number >= 1", NULL, &cfg->limit},
        {O_TEST_LIMIT, "--test-limit", 1, 1LL << 40, "a whole number >= 1", NULL,
         &cfg->test_limit},
        {O_CHECK_EVERY, "--check-every", 0, 1 << 30, "a whole number >= 0", &cfg->check_every,
         NULL},
        {O_WARMUP, "--warmup", 0, 1 << 30, "a whole number of steps >= 0", &cfg->warmup, NULL},
        {O_KEEP, "--keep", 0, 1 << 30, "a whole number", &cfg->keep, NULL},
        {O_LOG_EVERY, "--log-every", 1, 1 << 30, "a whole number", &cfg->log_every, NULL},
        {O_METRICS_EVERY, "--metrics-every", 0, 1 << 30, "a whole number", &cfg->metrics_every,
         NULL},
    };
    int ckpt_given = 0;
    opterr = 0;
    optind = 1;
    int c;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "";
        size_t w = 0;
        while (w < sizeof whole / sizeof whole[0] && whole[w].id != c)
            w++;
        if (w < sizeof whole / sizeof whole[0]) {
            if (options_parse_whole(optarg, whole[w].lo, whole[w].hi, &v) < 0)
                return usage_error(speak, "%s: expected %s, got '%s'", whole[w].flag,
                                   whole[w].expected, optarg);
            if (whole[w].as_int)
                *whole[w].as_int = (int)v;
            else
                *whole[w].as_size = (size_t)v;
            continue;
        }
        switch (c) {
        case O_LR:
            if (options_parse_real(optarg, 0, &cfg->lr) < 0)
                return usage_error(speak, "--lr: expected a positive number, got '%s'", optarg);
            break;
        case O_HANG:
            if (options_parse_real(optarg, 1, &cfg->hang_timeout) < 0)
                return usage_error(speak, "--hang-timeout: expected seconds >= 0, got '%s'",
                                   optarg);
            break;
        case O_SEED:
            if (options_parse_whole(optarg, 0, UINT64_MAX, &v) < 0)
                return usage_error(speak, "--seed: expected a whole number >= 0, got '%s'",
                                   optarg);
            cfg->seed = (uint64_t)v;
            break;
        case O_DATA:
            if (!*optarg)
                return usage_error(speak, "--data: expected a file, got ''");
            cfg->data_path = optarg;
            break;
        case O_SHUFFLE: cfg->shuffle = 1; break;
        case O_NO_SHUFFLE: cfg->shuffle = 0; break;
        case O_CKPT:
            if (!*optarg)
                return usage_error(speak, "--checkpoint-dir: expected a directory, got '%s'",
                                   optarg);
            cfg->checkpoint_dir = optarg;
            ckpt_given = 1;
            break;
        case O_INIT:
            if (!*optarg)
                return usage_error(speak, "--init: expected a file, got ''");
            cfg->init_path = optarg;
            break;
        case O_RESUME:
            if (!*optarg)
                return usage_error(speak, "--resume: expected a directory or a file, got ''");
            cfg->resume_path = optarg;
            break;
        case O_OVERRIDE: cfg->override_hparams = 1; break;
        case O_MODEL:
            if (!*optarg)
                return usage_error(speak, "--model: expected a network's name or a file, got ''");
            cfg->model = optarg;
            break;
        case O_NORMALIZE:
            if (!*optarg)
                return usage_error(speak, "--normalize: expected MEAN,STD per channel or none, "
                                          "got ''");
            cfg->normalize = optarg; /* checked against the data's channels later */
            break;
        case O_PRINT_MODEL: cfg->print_model = 1; break;
        case O_KERNELS:
            if (strcmp(optarg, "native") != 0 && strcmp(optarg, "openblas") != 0)
                return usage_error(speak, "--kernels: expected native or openblas, got '%s'",
                                   optarg);
            cfg->kernels = optarg;
            break;
        case O_INPUT_SHAPE: {
            unsigned long long dims[3];
            char part[3][24];
            const char *p = optarg;
            int k = 0, ok = 1;
            for (; k < 3 && ok; k++) {
                size_t len = strcspn(p, ",");
                ok = len > 0 && len < sizeof part[k] && (p[len] == ',') == (k < 2);
                if (ok) {
                    snprintf(part[k], sizeof part[k], "%.*s", (int)len, p);
                    ok = options_parse_whole(part[k], 1, 65536, &dims[k]) == 0;
                    p += len + (k < 2);
                }
            }
            if (!ok || *p)
                return usage_error(speak, "--input-shape: expected C,H,W (three whole numbers "
                                          ">= 1), got '%s'",
                                   optarg);
            cfg->input_c = (int)dims[0];
            cfg->input_h = (int)dims[1];
            cfg->input_w = (int)dims[2];
            break;
        }
        case O_QUIET: cfg->quiet = 1; break;
        case O_CKPT_EVERY: {
            /* N, Ne or Nepochs: epochs; Ns or Nsteps: steps */
            char num[32];
            size_t k = strspn(optarg, "0123456789");
            const char *unit = optarg + k;
            int steps = strcmp(unit, "s") == 0 || strcmp(unit, "steps") == 0;
            int epochs = !*unit || strcmp(unit, "e") == 0 || strcmp(unit, "epochs") == 0;
            snprintf(num, sizeof num, "%.*s", (int)(k < sizeof num - 1 ? k : sizeof num - 1),
                     optarg);
            if (k == 0 || k >= sizeof num || !(steps || epochs) ||
                options_parse_whole(num, 1, 1u << 30, &v) < 0)
                return usage_error(speak,
                                   "--checkpoint-every: expected N epochs (N or Ne) or N "
                                   "steps (Ns), N >= 1, got '%s'",
                                   optarg);
            cfg->checkpoint_every = (int)v;
            cfg->checkpoint_every_steps = steps;
            break;
        }
        case O_REDUCTION:
            if (strcmp(optarg, "exact") == 0)
                cfg->reduction = REDUCE_EXACT;
            else if (strcmp(optarg, "float") == 0)
                cfg->reduction = REDUCE_FLOAT;
            else
                return usage_error(speak, "--reduction: expected exact or float, got '%s'",
                                   optarg);
            break;
        case 'h':
            if (speak)
                options_usage(stdout);
            return OPTIONS_EXIT_OK;
        case 'V':
            if (speak)
                printf("dpcnn %s\n", PACKAGE_VERSION);
            return OPTIONS_EXIT_OK;
        case ':':
            return usage_error(speak, "%s: needs a value", name);
        default:
            return usage_error(speak, "unknown option '%s'", name);
        }
    }
    if (optind < argc)
        return usage_error(speak, "unexpected argument '%s'", argv[optind]);
    if (cfg->resume_path && cfg->init_path)
        return usage_error(speak, "--resume and --init: a resumed run already has its weights");
    if (cfg->resume_path && !ckpt_given) {
        /* continue writing where the run was saved */
        static char file[4096], dir[4096];
        checkpoint_resolve(cfg->resume_path, file, dir, sizeof dir);
        cfg->checkpoint_dir = dir;
    }
    if (cfg->input_c && !cfg->print_model)
        return usage_error(speak, "--input-shape goes with --print-model (training takes the "
                                  "shape from the data)");
    if (!cfg->data_path && !(cfg->print_model && cfg->input_c)) {
        cfg->data_path = options_default_data();
        if (!cfg->data_path) {
            err_set("no data file: run `make data` in the build directory, or pass --data FILE");
            if (speak)
                fprintf(stderr,
                        "dpcnn: no data file: looked for data/fashion-mnist.h5 here, in\n"
                        "  %s and in %s.\n"
                        "  Run `make data` in the build directory, or pass --data FILE\n"
                        "  (dpcnn-prepare makes one from MNIST-format IDX files).\n",
                        DPCNN_BUILD_DATA, DPCNN_INSTALLED_DATA);
            return OPTIONS_EXIT_USAGE;
        }
    }
    return OPTIONS_RUN;
}
