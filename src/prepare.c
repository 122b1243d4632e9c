/* dpcnn-prepare: four IDX files of an MNIST-format data set (any image size,
 * [N,H,W] or [N,C,H,W]) -> one HDF5 data file (dataset.h). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/dataset.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/idx.h"

static void usage(FILE *f)
{
    fputs("Usage: dpcnn-prepare [-o OUT.h5] [DIR]\n"
          "       dpcnn-prepare -o OUT.h5 --train-images F --train-labels F\n"
          "                     --test-images F --test-labels F\n"
          "Convert an MNIST-format data set (four IDX files, gzipped or plain) into the\n"
          "HDF5 data file dpcnn reads. DIR holds train-images-idx3-ubyte[.gz],\n"
          "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and\n"
          "t10k-labels-idx1-ubyte[.gz] (default: /usr/share/datasets/fashion-mnist).\n"
          "\n"
          "  -o, --output FILE   where to write (default: fashion-mnist.h5); written\n"
          "                      under a temporary name and renamed when complete\n"
          "  --class-names LIST  the classes' names, comma-separated, one per class, or\n"
          "                      fashion-mnist (default for Fashion-MNIST's directory;\n"
          "                      otherwise 0,1,... up to the largest label)\n"
          "  -h, --help          this text\n"
          "  -V, --version       the version\n",
          f);
}

/* DIR/base.gz if it exists, else DIR/base. */
static char *find_in(const char *dir, const char *base)
{
    char *p = malloc(strlen(dir) + strlen(base) + 8);
    sprintf(p, "%s/%s.gz", dir, base);
    if (!fs_exists(p))
        sprintf(p, "%s/%s", dir, base);
    return p;
}

int main(int argc, char **argv)
{
    const char *out = "fashion-mnist.h5";
    char *files[4] = {NULL, NULL, NULL, NULL}; /* train images, labels, test images, labels */
    uint8_t *img[2] = {NULL, NULL}, *lab[2] = {NULL, NULL};
    int status = DPCNN_EXIT_USAGE;
    const char *names_arg = NULL;
    char (*names)[DATASET_NAME_MAX] = NULL;
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},   {"train-images", required_argument, 0, 1},
        {"train-labels", required_argument, 0, 2}, {"test-images", required_argument, 0, 3},
        {"test-labels", required_argument, 0, 4}, {"class-names", required_argument, 0, 5},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},         {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "o:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 5: names_arg = optarg; break;
        case 1: case 2: case 3: case 4:
            free(files[c - 1]); /* the last of a repeated flag wins */
            files[c - 1] = xstrdup(optarg);
            break;
        case 'h': usage(stdout); status = 0; goto done;
        case 'V': printf("dpcnn-prepare %s\n", PACKAGE_VERSION); status = 0; goto done;
        default:
            fputs("Try 'dpcnn-prepare --help'.\n", stderr);
            goto done;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "dpcnn-prepare: one data directory at most, got %d\n", argc - optind);
        goto done;
    }
    int given = !!files[0] + !!files[1] + !!files[2] + !!files[3];
    if (given > 0 && (given < 4 || argc - optind == 1)) {
        fputs("dpcnn-prepare: give either a directory or all four --train-/--test- files\n",
              stderr);
        goto done;
    }
    if (!*out) {
        fputs("dpcnn-prepare: -o: expected a file name\n", stderr);
        goto done;
    }
    if (fs_check_output(out) < 0) { /* before the work, not after it */
        fprintf(stderr, "dpcnn-prepare: error: %s\n", err_get());
        status = DPCNN_EXIT_FAILURE;
        goto done;
    }
    const char *dir = argc - optind == 1 ? argv[optind] : "/usr/share/datasets/fashion-mnist";
    if (given == 0) {
        files[0] = find_in(dir, "train-images-idx3-ubyte");
        files[1] = find_in(dir, "train-labels-idx1-ubyte");
        files[2] = find_in(dir, "t10k-images-idx3-ubyte");
        files[3] = find_in(dir, "t10k-labels-idx1-ubyte");
    }

    /* The classes: named on the command line, Fashion-MNIST's for its directory,
     * or numbered up to the largest label. */
    int classes = 0;
    if (!names_arg && given == 0 && (argc - optind == 0 || strstr(dir, "fashion-mnist")))
        names_arg = "fashion-mnist";
    if (names_arg && strcmp(names_arg, "fashion-mnist") == 0) {
        classes = 10;
        names = xcalloc(10, DATASET_NAME_MAX);
        for (int k = 0; k < 10; k++)
            snprintf(names[k], DATASET_NAME_MAX, "%s", dataset_fashion_names[k]);
    } else if (names_arg) {
        classes = 1;
        for (const char *c = names_arg; *c; c++)
            classes += *c == ',';
        if (classes < 2 || classes > DATASET_MAX_CLASSES) {
            fprintf(stderr, "dpcnn-prepare: --class-names: %d names; 2 to %d classes are "
                            "possible\n",
                    classes, DATASET_MAX_CLASSES);
            goto done;
        }
        names = xcalloc((size_t)classes, DATASET_NAME_MAX);
        const char *c = names_arg;
        for (int k = 0; k < classes; k++) {
            size_t len = strcspn(c, ",");
            if (len == 0 || len >= DATASET_NAME_MAX) {
                fprintf(stderr, "dpcnn-prepare: --class-names: name %d is empty or longer than "
                                "%d characters\n",
                        k + 1, DATASET_NAME_MAX - 1);
                goto done;
            }
            snprintf(names[k], DATASET_NAME_MAX, "%.*s", (int)len, c);
            c += len + (c[len] == ',');
        }
    }

    status = DPCNN_EXIT_FAILURE;
    size_t ni[2], nl[2];
    int shape[2][3];
    for (int s = 0; s < 2; s++) {
        if (idx_read_images(files[2 * s], &img[s], &ni[s], shape[s]) < 0 ||
            idx_read_labels(files[2 * s + 1], &lab[s], &nl[s],
                            classes ? classes : DATASET_MAX_CLASSES) < 0) {
            fprintf(stderr, "dpcnn-prepare: error: %s\n", err_get());
            goto done;
        }
        if (ni[s] != nl[s]) {
            fprintf(stderr,
                    "dpcnn-prepare: error: inconsistent input: %s holds %zu images but %s "
                    "holds %zu labels\n",
                    files[2 * s], ni[s], files[2 * s + 1], nl[s]);
            goto done;
        }
    }
    if (memcmp(shape[0], shape[1], sizeof shape[0]) != 0) {
        fprintf(stderr, "dpcnn-prepare: error: inconsistent input: %s holds %dx%dx%d images, %s "
                        "%dx%dx%d\n",
                files[0], shape[0][0], shape[0][1], shape[0][2], files[2], shape[1][0],
                shape[1][1], shape[1][2]);
        goto done;
    }
    if (!names) { /* numbered: 0 .. the largest label */
        for (int s = 0; s < 2; s++)
            for (size_t i = 0; i < nl[s]; i++)
                classes = lab[s][i] + 1 > classes ? lab[s][i] + 1 : classes;
        classes = classes < 2 ? 2 : classes;
        names = xcalloc((size_t)classes, DATASET_NAME_MAX);
        for (int k = 0; k < classes; k++)
            snprintf(names[k], DATASET_NAME_MAX, "%d", k);
    }
    char source[8192];
    snprintf(source, sizeof source, "%s; %s; %s; %s", files[0], files[1], files[2], files[3]);
    SplitData train = {img[0], lab[0], ni[0]}, test = {img[1], lab[1], ni[1]};
    /* an IDX file of one channel is stored as [N,H,W], as it came */
    DataShape ds = {shape[0][0], shape[0][1], shape[0][2], shape[0][0] == 1 ? 3 : 4, classes,
                    names};
    if (dataset_write(out, &ds, &train, &test, source) < 0) {
        fprintf(stderr, "dpcnn-prepare: error: %s\n", err_get());
        goto done;
    }
    char fp[32];
    dataset_fingerprint(fp, &ds, &train, &test);
    printf("dpcnn-prepare: wrote %s: %zu train and %zu test images of %dx%dx%d, %d classes, "
           "fingerprint %s\n",
           out, ni[0], ni[1], ds.channels, ds.height, ds.width, classes, fp);
    status = 0;
done:
    /* every path frees what it took, so LeakSanitizer hears nothing on errors either */
    for (int s = 0; s < 2; s++) {
        free(img[s]);
        free(lab[s]);
    }
    for (int k = 0; k < 4; k++)
        free(files[k]);
    free(names);
    return status;
}
