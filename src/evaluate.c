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
#include "dpcnn/net.h"
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
          "  --model NAME|FILE   the network of a weights file that does not store one\n"
          "                      (default tutorial; a dpcnn checkpoint stores its own)\n"
          "  --normalize MEAN,STD  its input normalisation (default none)\n"
          "  --kernels NAME      native (default) or openblas, as for training\n"
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
        {"model", required_argument, 0, 'M'},       {"normalize", required_argument, 0, 'N'},
        {"kernels", required_argument, 0, 'K'},
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
        if ((c == 'd' || c == 'c' || c == 'M' || c == 'N') && !*optarg)
            return bad(speak, "expected a file name, got", optarg);
        switch (c) {
        case 'd': cfg->data_path = optarg; break;
        case 'c': cfg->csv = optarg; break;
        case 'l': cfg->test_limit = (size_t)v; break;
        case 't': cfg->threads = (int)v; break;
        case 'm': cfg->micro_batch = (int)v; break;
        case 'M': cfg->model = optarg; break;
        case 'N': cfg->normalize = optarg; break;
        case 'K':
            if (strcmp(optarg, "native") != 0 && strcmp(optarg, "openblas") != 0)
                return bad(speak, "--kernels: expected native or openblas, got", optarg);
            cfg->kernels = optarg;
            break;
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

/* A class name short enough for a column of the matrix: up to a '/', then
 * the last word if still long ("T-shirt/top" -> "T-shirt", "Ankle boot" -> "boot"). */
static void short_name(char *out, size_t n, const char *name)
{
    char buf[DATASET_NAME_MAX];
    snprintf(buf, sizeof buf, "%.*s", (int)strcspn(name, "/"), name);
    const char *p = buf;
    if (strlen(p) > 8 && strrchr(p, ' '))
        p = strrchr(p, ' ') + 1;
    snprintf(out, n, "%.8s", p);
}

static void print_report(const EvalConfig *cfg, const EvalResult *r, const DataShape *ds)
{
    const int K = ds->classes;
    int width = 12;
    for (int k = 0; k < K; k++)
        width = (int)strlen(ds->class_names[k]) > width ? (int)strlen(ds->class_names[k]) : width;
    printf("%s on %s: %lld test images\n", cfg->weights, cfg->data_path, (long long)r->count);
    printf("test loss %.4f  accuracy %.4f (%lld/%lld)\n\n", r->loss_sum / (double)r->count,
           (double)r->correct / (double)r->count, (long long)r->correct, (long long)r->count);
    printf("%-*s %9s %15s\n", width, "class", "accuracy", "correct/total");
    for (int k = 0; k < K; k++) {
        long long row = 0;
        for (int j = 0; j < K; j++)
            row += r->confusion[k * K + j];
        long long hit = r->confusion[k * K + k];
        printf("%-*s %9.4f %9lld/%-5lld\n", width, ds->class_names[k],
               row ? (double)hit / (double)row : 0.0, hit, row);
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%-*s", width, "");
    for (int j = 0; j < K; j++) {
        char sn[16];
        short_name(sn, sizeof sn, ds->class_names[j]);
        printf(" %8s", sn);
    }
    putchar('\n');
    for (int k = 0; k < K; k++) {
        printf("%-*s", width, ds->class_names[k]);
        for (int j = 0; j < K; j++)
            printf(" %8lld", (long long)r->confusion[k * K + j]);
        putchar('\n');
    }
    fflush(stdout);
}

/* CSV: a header of predicted classes, then one row per true class. Names
 * are quoted where CSV needs it. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_csv(const char *path, const EvalResult *r, const DataShape *ds)
{
    if (fs_check_output(path) < 0)
        return -1;
    const int K = ds->classes;
    char tmp[4300];
    fs_temp_name(tmp, sizeof tmp, path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return err_set("%s: cannot write: %s", path, strerror(errno));
    fputs("true\\predicted", f);
    for (int j = 0; j < K; j++) {
        fputc(',', f);
        csv_field(f, ds->class_names[j]);
    }
    fputc('\n', f);
    for (int k = 0; k < K; k++) {
        csv_field(f, ds->class_names[k]);
        for (int j = 0; j < K; j++)
            fprintf(f, ",%lld", (long long)r->confusion[k * K + j]);
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        unlink(tmp);
        return err_set("%s: cannot write: %s", path, strerror(errno));
    }
    return fs_commit(tmp, path);
}

/* The network to evaluate: the one the checkpoint stores, or --model for a
 * foreign weights file; the input normalisation likewise. */
static int build_network(const EvalConfig *cfg, const Dataset *ds, Net *net, InputTransform *in)
{
    char *model = XCALLOC(char, NET_TEXT_MAX), normalize[256], canon[256];
    int rc = checkpoint_model(cfg->weights, model, normalize);
    const DataShape *sh = &ds->shape;
    Shape shape = {sh->channels, sh->height, sh->width, 0};
    if (rc == 0 && model[0]) {
        if (cfg->model || cfg->normalize)
            rc = err_set("%s holds its own network and normalisation: --model and --normalize "
                         "are for weights files without them",
                         cfg->weights);
        if (rc == 0 && net_parse(net, model, cfg->weights) == 0)
            rc = net_build(net, shape, sh->classes, cfg->weights);
        else if (rc == 0)
            rc = -1;
        if (rc == 0)
            rc = input_transform_parse(in, normalize, sh->channels, canon, sizeof canon);
    } else if (rc == 0) {
        rc = net_load(net, cfg->model ? cfg->model : "tutorial", shape, sh->classes);
        if (rc == 0)
            rc = input_transform_parse(in, cfg->normalize ? cfg->normalize : "none", sh->channels,
                                       canon, sizeof canon);
    }
    free(model);
    return rc;
}

int evaluate_run(const EvalConfig *cfg, Dist *d)
{
    runtime_blas_single();
    watchdog_beat("reading the data", 0);
    const int rank = dist_rank(d), size = dist_size(d);
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.file = -1;
    Block test = {0, 0, NULL, NULL};
    size_t chunks = 0, total = 0;
    Net *net = XCALLOC(Net, 1);
    InputTransform input;
    float *params = NULL, *buffers = NULL;
    int64_t *batches = NULL, *confusion = NULL;
    Stepper *st = NULL;
    int status = DPCNN_EXIT_FAILURE;
    int rc = dataset_open(&ds, cfg->data_path);
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    watchdog_beat("reading the weights", 0);
    rc = build_network(cfg, &ds, net, &input);
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    params = XCALLOC(float, net->nparams);
    buffers = XCALLOC(float, net->nbuffer_floats + 1);
    batches = XCALLOC(int64_t, (size_t)net->nbatchnorm + 1);
    rc = rank == 0 ? weights_load(cfg->weights, net, params, buffers, batches) : 0;
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    dist_bcast(d, params, sizeof(float) * net->nparams, 0);
    dist_bcast(d, buffers, sizeof(float) * net->nbuffer_floats, 0);
    size_t n = ds.count[SPLIT_TEST];
    if (cfg->test_limit && cfg->test_limit < n)
        n = cfg->test_limit;
    watchdog_beat("reading the test set", 0);
    rc = shard_read_test(&test, &chunks, &total, &ds, n, (size_t)cfg->micro_batch, rank, size);
    if (dist_agree(d, rc, NULL) < 0)
        goto out;
    int threads = runtime_threads(cfg->threads, d, chunks > 0 ? (int)(chunks < 1024 ? chunks : 1024) : 1);
    st = stepper_create(net, &input, cfg->micro_batch, 1, 1, threads, chunks, REDUCE_EXACT);
    confusion = XCALLOC(int64_t, (size_t)net->classes * net->classes);
    EvalResult r = {0, 0, 0, confusion};
    watchdog_beat("evaluating", 0);
    stepper_evaluate(st, d, &r, params, buffers, test.images, test.labels, test.count, total);
    rc = 0;
    watchdog_beat("writing the report", 0);
    if (rank == 0) {
        print_report(cfg, &r, &ds.shape);
        if (cfg->csv) {
            rc = write_csv(cfg->csv, &r, &ds.shape);
            if (rc == 0)
                printf("\nconfusion matrix written to %s\n", cfg->csv);
        }
    }
    if (dist_agree(d, rc, "--csv") == 0)
        status = DPCNN_EXIT_OK;
out:
    stepper_free(st);
    free(params);
    free(buffers);
    free(batches);
    free(confusion);
    free(net);
    free(test.images);
    free(test.labels);
    if (ds.path)
        dataset_close(&ds);
    return status;
}
