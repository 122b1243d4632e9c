#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/options.h"
#include "dpcnn/step.h"

void options_usage(FILE *f)
{
    fputs(
        "Usage: dpcnn [OPTION]...\n"
        "       mpirun -np N dpcnn [OPTION]...\n"
        "Train the PyTorch tutorial CNN on Fashion-MNIST, data-parallel over MPI ranks.\n"
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
        "  --limit N           train on the first N training samples only\n"
        "  --test-limit N      evaluate on the first N test samples only\n"
        "  --data FILE         HDF5 data file (default: data/fashion-mnist.h5, found\n"
        "                      in the current, build or install directory)\n"
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
        "                      seconds (default 300; 0: never)\n"
        "  --threads N         worker threads per rank (default: this rank's share of\n"
        "                      the node's cores)\n"
        "  --check-every N     compare replicas across ranks every N steps (default 100;\n"
        "                      0: at checkpoints only)\n"
        "  --reduction MODE    exact (default): gradients summed in int64 fixed point,\n"
        "                      the same bits at any rank count; float: one float32\n"
        "                      allreduce, cheaper on very many ranks, bits then depend\n"
        "                      on the rank count\n"
        "  -h, --help          this text\n"
        "  -V, --version       the version\n"
        "\n"
        "\n"
        "Other commands:\n"
        "  dpcnn evaluate CHECKPOINT [--data FILE] [--csv FILE] ...\n"
        "                      test loss, accuracy per class, confusion matrix\n"
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

static int usage_error(int speak, const char *fmt, const char *opt, const char *val)
{
    if (speak) {
        fputs("dpcnn: ", stderr);
        fprintf(stderr, fmt, opt, val);
        fputs("\nTry 'dpcnn --help'.\n", stderr);
    }
    return OPTIONS_EXIT_USAGE;
}

/* A whole number in [lo, hi], all of the text. */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int options_parse(TrainConfig *cfg, int argc, char **argv, int speak)
{
    enum {
        O_EPOCHS = 256, O_BATCH, O_MICRO, O_LR, O_SEED, O_DATA, O_NO_SHUFFLE, O_CKPT, O_INIT,
        O_THREADS, O_LIMIT, O_TEST_LIMIT, O_CHECK_EVERY, O_REDUCTION, O_RESUME, O_OVERRIDE,
        O_CKPT_EVERY, O_KEEP, O_QUIET, O_LOG_EVERY, O_METRICS_EVERY, O_WARMUP, O_HANG,
    };
    static const struct option opts[] = {
        {"epochs", required_argument, 0, O_EPOCHS},
        {"batch-size", required_argument, 0, O_BATCH},
        {"micro-batch", required_argument, 0, O_MICRO},
        {"lr", required_argument, 0, O_LR},
        {"warmup", required_argument, 0, O_WARMUP},
        {"seed", required_argument, 0, O_SEED},
        {"data", required_argument, 0, O_DATA},
        {"no-shuffle", no_argument, 0, O_NO_SHUFFLE},
        {"checkpoint-dir", required_argument, 0, O_CKPT},
        {"init", required_argument, 0, O_INIT},
        {"threads", required_argument, 0, O_THREADS},
        {"limit", required_argument, 0, O_LIMIT},
        {"test-limit", required_argument, 0, O_TEST_LIMIT},
        {"check-every", required_argument, 0, O_CHECK_EVERY},
        {"reduction", required_argument, 0, O_REDUCTION},
        {"resume", required_argument, 0, O_RESUME},
        {"override-hparams", no_argument, 0, O_OVERRIDE},
        {"checkpoint-every", required_argument, 0, O_CKPT_EVERY},
        {"keep", required_argument, 0, O_KEEP},
        {"quiet", no_argument, 0, O_QUIET},
        {"log-every", required_argument, 0, O_LOG_EVERY},
        {"metrics-every", required_argument, 0, O_METRICS_EVERY},
        {"hang-timeout", required_argument, 0, O_HANG},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    train_config_defaults(cfg);
    int ckpt_given = 0;
    opterr = 0;
    optind = 1;
    int c;
    long long v;
    while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "";
        switch (c) {
        case O_EPOCHS:
            if (parse_int(optarg, 0, 1000000, &v) < 0)
                return usage_error(speak, "%s: expected a whole number of epochs >= 0, got '%s'",
                                   "--epochs", optarg);
            cfg->epochs = (int)v;
            break;
        case O_BATCH:
            if (parse_int(optarg, 1, 1 << 24, &v) < 0)
                return usage_error(speak, "%s: expected a whole number >= 1, got '%s'",
                                   "--batch-size", optarg);
            cfg->batch_size = (int)v;
            break;
        case O_MICRO:
            if (parse_int(optarg, 1, 1 << 16, &v) < 0)
                return usage_error(speak, "%s: expected a whole number from 1 to 65536, got '%s'",
                                   "--micro-batch", optarg);
            cfg->micro_batch = (int)v;
            break;
        case O_LR: {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || *end || !*optarg || !isfinite(x) || x <= 0)
                return usage_error(speak, "%s: expected a positive number, got '%s'", "--lr",
                                   optarg);
            cfg->lr = x;
            break;
        }
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || *end || !*optarg || optarg[0] == '-')
                return usage_error(speak, "%s: expected a whole number >= 0, got '%s'", "--seed",
                                   optarg);
            cfg->seed = (uint64_t)s;
            break;
        }
        case O_DATA: cfg->data_path = optarg; break;
        case O_NO_SHUFFLE: cfg->shuffle = 0; break;
        case O_CKPT:
            if (!*optarg)
                return usage_error(speak, "%s: expected a directory%s", "--checkpoint-dir", "");
            cfg->checkpoint_dir = optarg;
            ckpt_given = 1;
            break;
        case O_INIT: cfg->init_path = optarg; break;
        case O_THREADS:
            if (parse_int(optarg, 1, 1024, &v) < 0)
                return usage_error(speak, "%s: expected a whole number from 1 to 1024, got '%s'",
                                   "--threads", optarg);
            cfg->threads = (int)v;
            break;
        case O_LIMIT:
        case O_TEST_LIMIT:
            if (parse_int(optarg, 1, (long long)1 << 40, &v) < 0)
                return usage_error(speak, "%s: expected a whole number >= 1, got '%s'",
                                   c == O_LIMIT ? "--limit" : "--test-limit", optarg);
            if (c == O_LIMIT)
                cfg->limit = (size_t)v;
            else
                cfg->test_limit = (size_t)v;
            break;
        case O_CHECK_EVERY:
            if (parse_int(optarg, 0, 1 << 30, &v) < 0)
                return usage_error(speak, "%s: expected a whole number >= 0, got '%s'",
                                   "--check-every", optarg);
            cfg->check_every = (int)v;
            break;
        case O_RESUME: cfg->resume_path = optarg; break;
        case O_OVERRIDE: cfg->override_hparams = 1; break;
        case O_CKPT_EVERY: {
            char *end;
            errno = 0;
            long n = strtol(optarg, &end, 10);
            int steps = 0;
            if (end != optarg && (strcmp(end, "s") == 0 || strcmp(end, "steps") == 0))
                steps = 1;
            else if (end != optarg && *end && strcmp(end, "e") != 0 && strcmp(end, "epochs") != 0)
                n = -1;
            if (errno || end == optarg || n < 1 || n > (1L << 30))
                return usage_error(speak,
                                   "%s: expected N epochs (N or Ne) or N steps (Ns), N >= 1, "
                                   "got '%s'",
                                   "--checkpoint-every", optarg);
            cfg->checkpoint_every = (int)n;
            cfg->checkpoint_every_steps = steps;
            break;
        }
        case O_WARMUP:
            if (parse_int(optarg, 0, 1 << 30, &v) < 0)
                return usage_error(speak, "%s: expected a whole number of steps >= 0, got '%s'",
                                   "--warmup", optarg);
            cfg->warmup = (int)v;
            break;
        case O_KEEP:
        case O_LOG_EVERY:
        case O_METRICS_EVERY: {
            const char *flag = c == O_KEEP ? "--keep" : c == O_LOG_EVERY ? "--log-every" : "--metrics-every";
            if (parse_int(optarg, c == O_LOG_EVERY ? 1 : 0, 1 << 30, &v) < 0)
                return usage_error(speak, "%s: expected a whole number, got '%s'", flag, optarg);
            if (c == O_KEEP)
                cfg->keep = (int)v;
            else if (c == O_LOG_EVERY)
                cfg->log_every = (int)v;
            else
                cfg->metrics_every = (int)v;
            break;
        }
        case O_QUIET: cfg->quiet = 1; break;
        case O_HANG: {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || *end || !*optarg || !isfinite(x) || x < 0)
                return usage_error(speak, "%s: expected seconds >= 0, got '%s'", "--hang-timeout",
                                   optarg);
            cfg->hang_timeout = x;
            break;
        }
        case O_REDUCTION:
            if (strcmp(optarg, "exact") == 0)
                cfg->reduction = REDUCE_EXACT;
            else if (strcmp(optarg, "float") == 0)
                cfg->reduction = REDUCE_FLOAT;
            else
                return usage_error(speak, "%s: expected exact or float, got '%s'", "--reduction",
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
            return usage_error(speak, "%s: needs a value%s", name, "");
        default:
            return usage_error(speak, "unknown option '%s'%s", name, "");
        }
    }
    if (optind < argc)
        return usage_error(speak, "unexpected argument '%s'%s", argv[optind], "");
    if (cfg->resume_path && cfg->init_path)
        return usage_error(speak, "%s and %s: a resumed run already has its weights", "--resume",
                           "--init");
    if (cfg->resume_path && !ckpt_given) {
        /* continue writing where the run was saved */
        static char dir[4096];
        struct stat st;
        if (stat(cfg->resume_path, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(dir, sizeof dir, "%s", cfg->resume_path);
        else {
            snprintf(dir, sizeof dir, "%s", cfg->resume_path);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            else
                snprintf(dir, sizeof dir, ".");
        }
        cfg->checkpoint_dir = dir;
    }
    if (!cfg->data_path) {
        cfg->data_path = options_default_data();
        if (!cfg->data_path) {
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
