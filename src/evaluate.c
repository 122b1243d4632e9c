#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/evaluate.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/model.h"
#include "dpcnn/options.h"
#include "dpcnn/runtime.h"
#include "dpcnn/shard.h"
#include "dpcnn/step.h"
#include "dpcnn/train.h"
#include "dpcnn/watchdog.h"

static void usage(FILE *f)
{
    fputs("Usage: dpcnn evaluate CHECKPOINT [OPTION]...\n"
          "Evaluate a dpcnn checkpoint or weights file on the test set: loss, accuracy,\n"
          "accuracy per class and the confusion matrix.\n"
          "\n"
          "  --data FILE         HDF5 data file (default as for training)\n"
          "  --csv FILE          also write the confusion matrix as CSV\n"
          "  --test-limit N      evaluate on the first N test samples only\n"
          "  --threads N         worker threads per rank\n"
          "  --micro-batch N     samples per evaluation chunk (default 25)\n"
          "  --hang-timeout S    end the whole job when a rank makes no progress for S\n"
          "                      seconds (default as for training; 0: never)\n"
          "  -h, --help          this text\n",
          f);
}

static int bad(int speak, const char *msg, const char *arg)
{
    if (speak)
        fprintf(stderr, "dpcnn evaluate: %s '%s'\nTry 'dpcnn evaluate --help'.\n", msg, arg);
    return OPTIONS_EXIT_USAGE;
}

int evaluate_parse(EvalConfig *cfg, int argc, char **argv, int speak)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},        {"csv", required_argument, 0, 'c'},
        {"test-limit", required_argument, 0, 'l'},  {"threads", required_argument, 0, 't'},
        {"micro-batch", required_argument, 0, 'm'}, {"hang-timeout", required_argument, 0, 'H'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0},
    };
    memset(cfg, 0, sizeof *cfg);
    cfg->micro_batch = 25;
    cfg->hang_timeout = TRAIN_DEFAULT_HANG_TIMEOUT;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        unsigned long long v = 0;
        const unsigned long long hi = c == 'l' ? 1ULL << 40 : c == 't' ? 1024 : 65536;
        if ((c == 'l' || c == 't' || c == 'm') && options_parse_whole(optarg, 1, hi, &v) < 0)
            return bad(speak, "expected a whole number >= 1, got", optarg);
        if ((c == 'd' || c == 'c') && !*optarg)
            return bad(speak, "expected a file name, got", optarg);
        switch (c) {
        case 'd': cfg->data_path = optarg; break;
        case 'c': cfg->csv = optarg; break;
        case 'l': cfg->test_limit = (size_t)v; break;
        case 't': cfg->threads = (int)v; break;
        case 'm': cfg->micro_batch = (int)v; break;
        case 'H':
            if (options_parse_real(optarg, 1, &cfg->hang_timeout) < 0)
                return bad(speak, "--hang-timeout: expected seconds >= 0, got", optarg);
            break;
        case 'h':
            if (speak)
                usage(stdout);
            return OPTIONS_EXIT_OK;
        case ':': return bad(speak, "missing value for", argv[optind - 1]);
        default: return bad(speak, "unknown option", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return bad(speak, "expects one checkpoint file, got",
                   argc - optind ? argv[optind + 1] : "none");
    cfg->weights = argv[optind];
    if (!*cfg->weights)
        return bad(speak, "expects one checkpoint file, got", "");
    if (!cfg->data_path && !(cfg->data_path = options_default_data())) {
        if (speak)
            fprintf(stderr, "dpcnn evaluate: no data file: pass --data FILE\n");
        return OPTIONS_EXIT_USAGE;
    }
    return OPTIONS_RUN;
}

static const char *const short_names[MODEL_CLASSES] = {
    "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot",
};

static void print_report(const EvalConfig *cfg, const EvalResult *r)
{
    printf("%s on %s: %lld test images\n", cfg->weights, cfg->data_path, (long long)r->count);
    printf("test loss %.4f  accuracy %.4f (%lld/%lld)\n\n", r->loss_sum / (double)r->count,
           (double)r->correct / (double)r->count, (long long)r->correct, (long long)r->count);
    printf("%-12s %9s %15s\n", "class", "accuracy", "correct/total");
    for (int k = 0; k < MODEL_CLASSES; k++) {
        long long row = 0;
        for (int j = 0; j < MODEL_CLASSES; j++)
            row += r->confusion[k * MODEL_CLASSES + j];
        long long hit = r->confusion[k * MODEL_CLASSES + k];
        printf("%-12s %9.4f %9lld/%-5lld\n", dataset_class_names[k],
               row ? (double)hit / (double)row : 0.0, hit, row);
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%-12s", "");
    for (int j = 0; j < MODEL_CLASSES; j++)
        printf(" %8s", short_names[j]);
    putchar('\n');
    for (int k = 0; k < MODEL_CLASSES; k++) {
        printf("%-12s", dataset_class_names[k]);
        for (int j = 0; j < MODEL_CLASSES; j++)
            printf(" %8lld", (long long)r->confusion[k * MODEL_CLASSES + j]);
        putchar('\n');
    }
    fflush(stdout);
}

/* CSV: a header of predicted classes, then one row per true class. */
static int write_csv(const char *path, const EvalResult *r)
{
    if (fs_check_output(path) < 0)
        return -1;
    char tmp[4300];
    fs_temp_name(tmp, sizeof tmp, path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set("%s: cannot write: %s", path, strerror(errno));
    fputs("true\\predicted", f);
    for (int j = 0; j < MODEL_CLASSES; j++)
        fprintf(f, ",%s", dataset_class_names[j]);
    fputc('\n', f);
    for (int k = 0; k < MODEL_CLASSES; k++) {
        fputs(dataset_class_names[k], f);
        for (int j = 0; j < MODEL_CLASSES; j++)
            fprintf(f, ",%lld", (long long)r->confusion[k * MODEL_CLASSES + j]);
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        unlink(tmp);
        return err_set("%s: cannot write: %s", path, strerror(errno));
    }
    return fs_commit(tmp, path);
}

int evaluate_run(const EvalConfig *cfg, Dist *d)
{
    runtime_blas_single();
    watchdog_beat("reading the weights", 0);
    const int rank = dist_rank(d), size = dist_size(d);
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.file = -1;
    Block test = {0, 0, NULL, NULL};
    size_t chunks = 0, total = 0;
    float *params = XCALLOC(float, MODEL_NUM_PARAMS);
    Stepper *st = NULL;
    int status = DPCNN_EXIT_FAILURE;
    int rc = rank == 0 ? weights_load(cfg->weights, params) : 0;
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    dist_bcast(d, params, sizeof(float) * MODEL_NUM_PARAMS, 0);
    watchdog_beat("reading the data", 0);
    rc = dataset_open(&ds, cfg->data_path);
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    size_t n = ds.count[SPLIT_TEST];
    if (cfg->test_limit && cfg->test_limit < n)
        n = cfg->test_limit;
    rc = shard_read_test(&test, &chunks, &total, &ds, n, (size_t)cfg->micro_batch, rank, size);
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    int threads = runtime_threads(cfg->threads, d, chunks > 0 ? (int)(chunks < 1024 ? chunks : 1024) : 1);
    st = stepper_create(cfg->micro_batch, 1, threads, chunks, REDUCE_EXACT);
    EvalResult r;
    watchdog_beat("evaluating", 0);
    stepper_evaluate(st, d, &r, params, test.images, test.labels, test.count, total);
    rc = 0;
    watchdog_beat("writing the report", 0);
    if (rank == 0) {
        print_report(cfg, &r);
        if (cfg->csv) {
            rc = write_csv(cfg->csv, &r);
            if (rc == 0)
                printf("\nconfusion matrix written to %s\n", cfg->csv);
        }
    }
    if (dist_agree(d, rc, "--csv") == 0)
        status = DPCNN_EXIT_OK;
out:
    stepper_free(st);
    free(params);
    free(test.images);
    free(test.labels);
    if (ds.path)
        dataset_close(&ds);
    return status;
}
