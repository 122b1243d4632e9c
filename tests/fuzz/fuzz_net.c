/* Fuzz harness: the network description reader, net_load (--model FILE).
 *
 * The input is the description file, built for two inputs (1x28x28 as
 * Fashion-MNIST's, 3x32x32 as CIFAR's) and ten classes. Each build must refuse
 * with a message naming the file, or give a network whose layout holds
 * together: the tensors tile the parameter buffer in order, the last layer
 * gives the ten classes, and the canonical text (what a checkpoint stores and
 * dpcnn evaluate rebuilds from) parses and builds again to the very same
 * network. A small network is initialised too, and must come out finite. */
#include "config.h"

#include <math.h>

#include "dpcnn/error.h"
#include "dpcnn/net.h"
#include "fuzz.h"

enum { CLASSES = 10 };

/* The layout of a built network: offsets contiguous from 0, counts the
 * products of the shapes, the totals their sums. */
static void check_layout(const TensorInfo *t, int n, size_t total, const char *what)
{
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t count = 1;
        FUZZ_CHECK(t[i].ndim >= 1 && t[i].ndim <= 4, "%s %s has %d dimensions", what, t[i].name,
                   t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) {
            FUZZ_CHECK(t[i].shape[d] > 0, "%s %s has a dimension of %d", what, t[i].name,
                       t[i].shape[d]);
            count *= (size_t)t[i].shape[d];
        }
        FUZZ_CHECK(t[i].offset == at && t[i].count == count,
                   "%s %s at %zu of %zu floats, expected at %zu of %zu", what, t[i].name,
                   t[i].offset, t[i].count, at, count);
        at += count;
    }
    FUZZ_CHECK(at == total, "%s take %zu floats but the network counts %zu", what, at, total);
}

/* 1 if path builds for input. */
static int check_build(const char *path, Shape input)
{
    static Net net, again;
    fuzz_clear_error();
    int rc = net_load(&net, path, input, CLASSES);
    fuzz_check_outcome(rc, "net_load", path);
    if (rc < 0)
        return 0;

    FUZZ_CHECK(net.nlayers > 0, "a network without layers was accepted");
    const Shape out = net.layers[net.nlayers - 1].out_shape;
    FUZZ_CHECK(out.flat && out.c == CLASSES, "the network ends in %d %s values, not %d classes",
               out.c, out.flat ? "flat" : "unflattened", CLASSES);
    FUZZ_CHECK(net.flops > 0, "a network of %lld FLOPs per sample", net.flops);
    check_layout(net.tensors, net.ntensors, net.nparams, "parameter");
    check_layout(net.buffers, net.nbuffers, net.nbuffer_floats, "buffer");

    /* the canonical text stands for the network */
    fuzz_clear_error();
    FUZZ_CHECK(net_parse(&again, net.text, "canonical") == 0 &&
                   net_build(&again, input, CLASSES, "canonical") == 0,
               "the canonical text of an accepted network is refused: %s\n%s", err_get(),
               net.text);
    FUZZ_CHECK(strcmp(again.text, net.text) == 0 && again.nparams == net.nparams &&
                   again.nbuffer_floats == net.nbuffer_floats && again.flops == net.flops &&
                   again.nlayers == net.nlayers,
               "the canonical text builds another network:\n%s\n---\n%s", net.text, again.text);

    if (net.nparams + net.nbuffer_floats <= (1u << 20)) {
        float *p = malloc((net.nparams + net.nbuffer_floats + 1) * sizeof(float));
        int64_t *batches = calloc((size_t)net.nbatchnorm + 1, sizeof(int64_t));
        FUZZ_CHECK(p && batches, "out of memory");
        net_init(&net, p, p + net.nparams, batches, 1);
        for (size_t i = 0; i < net.nparams + net.nbuffer_floats; i++)
            FUZZ_CHECK(isfinite(p[i]), "float %zu of the initial state is %g", i, p[i]);
        free(p);
        free(batches);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    int a = check_build(path, (Shape){1, 28, 28, 0});
    int b = check_build(path, (Shape){3, 32, 32, 0});
    fuzz_check_accepted(a || b);
    return 0;
}
