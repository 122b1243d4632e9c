/* The model description: every built-in network parses to the shapes and
 * tensors PyTorch gives it; PyTorch's own print(model) output reads back as
 * the same network; and every malformed description in a table of cases is
 * refused with its message (the line, the layer, what was expected). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dpcnn/error.h"
#include "dpcnn/net.h"
#include "dpcnn/rng.h"

static const Shape MNIST = {1, 28, 28, 0};

static Net *build(const char *text, Shape in, int classes, int want_ok)
{
    static Net net;
    int rc = net_parse(&net, text, "test");
    if (rc == 0)
        rc = net_build(&net, in, classes, "test");
    if (want_ok && rc < 0)
        fail_msg("refused: %s", err_get());
    if (!want_ok && rc == 0)
        fail_msg("accepted a description that should be refused:\n%s", text);
    return &net;
}

/* The state_dict of each built-in network, as PyTorch names and shapes it. */
static void test_builtins(void **state)
{
    (void)state;
    Net *n = build(net_builtin("tutorial"), MNIST, 10, 1);
    assert_int_equal(n->nparams, 32998);
    assert_int_equal(n->ntensors, 10);
    const char *tut[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                         "fc1.bias",     "fc2.weight", "fc2.bias",     "out.weight", "out.bias"};
    for (int t = 0; t < 10; t++)
        assert_string_equal(n->tensors[t].name, tut[t]);
    assert_int_equal(n->tensors[4].shape[0], 120);
    assert_int_equal(n->tensors[4].shape[1], 192);
    assert_int_equal(n->flops, 2 * (6 * 25 * 576 + 12 * 150 * 64 + 192 * 120 + 120 * 60 + 60 * 10) +
                                   3456 * 2 + 768 * 2 + 120 + 60);

    n = build(net_builtin("bn"), MNIST, 10, 1);
    assert_int_equal(n->nparams, 32998 + 12 + 240);
    assert_int_equal(n->nbuffers, 4);
    assert_int_equal(n->nbatchnorm, 2);
    assert_string_equal(n->buffers[0].name, "3.running_mean");
    assert_string_equal(n->buffers[3].name, "10.running_var");
    assert_string_equal(n->tensors[2].name, "3.weight");
    assert_true(n->tensors[2].fan_in == 0 && n->tensors[2].fill == 1.0f);
    assert_int_equal(n->bn_channels, 126);

    n = build(net_builtin("lenet5"), MNIST, 10, 1);
    assert_int_equal(n->nparams, 61706); /* 156 + 2416 + 48120 + 10164 + 850 */
    assert_int_equal(n->layers[2].out_shape.h, 14);
    assert_int_equal(n->layers[5].out_shape.c * n->layers[5].out_shape.h * n->layers[5].out_shape.w,
                     400);
}

/* What PyTorch 1.13 prints for the bn network reads back as it. */
static void test_pytorch_print(void **state)
{
    (void)state;
    const char *printed =
        "Sequential(\n"
        "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))\n"
        "  (1): ReLU()\n"
        "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "  (3): BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (4): Conv2d(6, 12, kernel_size=(5, 5), stride=(1, 1))\n"
        "  (5): ReLU()\n"
        "  (6): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "  (7): Flatten(start_dim=1, end_dim=-1)\n"
        "  (8): Linear(in_features=192, out_features=120, bias=True)\n"
        "  (9): ReLU()\n"
        "  (10): BatchNorm1d(120, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (11): Linear(in_features=120, out_features=60, bias=True)\n"
        "  (12): ReLU()\n"
        "  (13): Linear(in_features=60, out_features=10, bias=True)\n"
        ")\n";
    Net *n = build(printed, MNIST, 10, 1);
    /* the canonical text is exactly PyTorch's */
    assert_string_equal(n->text, printed);
    static Net bn;
    assert_int_equal(net_parse(&bn, net_builtin("bn"), "bn"), 0);
    assert_int_equal(net_build(&bn, MNIST, 10, "bn"), 0);
    assert_string_equal(bn.text, printed);
    /* and the canonical text reads back as itself */
    static Net again;
    assert_int_equal(net_parse(&again, bn.text, "again"), 0);
    assert_int_equal(net_build(&again, MNIST, 10, "again"), 0);
    assert_string_equal(again.text, bn.text);
}

/* Stride, padding, overlapping pools, dropout, no bias: shapes by PyTorch's floor rule. */
static void test_shapes(void **state)
{
    (void)state;
    Net *n = build("Conv2d(3, 8, kernel_size=3, padding=1, bias=False)\n"
                   "ReLU()\n"
                   "MaxPool2d(3, stride=2)\n"
                   "Conv2d(8, 16, (3, 3), stride=(2, 2), padding=1)\n"
                   "AvgPool2d(kernel_size=2)\n"
                   "Flatten()\n"
                   "Dropout(p=0.25)\n"
                   "Linear(256, 10)\n",
                   (Shape){3, 32, 32, 0}, 10, 1);
    assert_int_equal(n->layers[0].out_shape.h, 32);
    assert_int_equal(n->layers[2].out_shape.h, 15); /* floor((32 - 3) / 2) + 1 */
    assert_int_equal(n->layers[3].out_shape.h, 8);  /* floor((15 + 2 - 3) / 2) + 1 */
    assert_int_equal(n->layers[4].out_shape.h, 4);
    assert_string_equal(n->tensors[0].name, "0.weight");
    assert_string_equal(n->tensors[1].name, "3.weight"); /* no 0.bias */
    assert_int_equal(n->nparams, 8 * 3 * 9 + 16 * 8 * 9 + 16 + 256 * 10 + 10);
    /* comments, blank lines, keyword order, True/False and None */
    n = build("# a comment\n\n  Flatten()   # trailing\n"
              "BatchNorm1d(num_features=784, momentum=None, eps=0.001)\n"
              "Linear(out_features=10, in_features=784, bias=True)\n",
              MNIST, 10, 1);
    assert_true(n->layers[1].cumulative);
    assert_true(n->layers[1].eps == 0.001);
}

typedef struct {
    const char *text, *message;
} BadCase;

/* Each malformed description, and what its message must say. */
static const BadCase bad_cases[] = {
    {"Conv2d(2, 6, 5)\nFlatten()\nLinear(3456, 10)\n",
     "test, line 1: Conv2d(2, 6, 5): expects 2 input channels, but the input has 1 (1x28x28)"},
    {"Conv2d(1, 6, 5)\nConv2d(8, 6, 5)\n",
     "line 2: Conv2d(8, 6, 5): expects 8 input channels, but the layer before has 6 (6x24x24)"},
    {"Conv2d(1, 6, 30)\n", "line 1: Conv2d(1, 6, 30): kernel 30 is larger than its input 28x28"},
    {"MaxPool2d(29)\n", "MaxPool2d(29, 29): kernel 29 is larger than its input 28x28"},
    {"Conv2d(1, 6, 5)\nReLU()\nLinear(3456, 10)\n",
     "line 3: Linear(3456, 10): expects a flat input, but the layer before gives 6x24x24: add "
     "Flatten() before it"},
    {"Conv2d(1,6,5)\nFlatten()\nLinear(3000, 10)\n",
     "Linear(3000, 10): in_features is 3000, but its input has 3456 values (the flattened size): "
     "use Linear(3456, 10)"},
    {"Flatten()\nLinear(784, 12)\n",
     "line 2: the network ends with 12 values, but the data has 10 classes"},
    {"Conv2d(1, 6, 5)\n", "the network ends with 6x24x24 values"},
    {"Conv2D(1,6,5)\n", "line 1: unknown layer 'Conv2D' (did you mean Conv2d?)"},
    {"Frobnicate()\n", "unknown layer 'Frobnicate' (dpcnn knows Conv2d, MaxPool2d"},
    {"Conv2d(1,6,kernal_size=5)\n", "Conv2d: unknown argument 'kernal_size' (did you mean kernel_size?)"},
    {"Linear(784, 10, bais=False)\n", "Linear: unknown argument 'bais' (did you mean bias?)"},
    {"Conv2d(1,6,5,stride=(1,2))\n", "stride (1, 2): dpcnn supports square kernels"},
    {"Conv2d(1,6,5\n", "line 1: Conv2d: expected ',' or ')' at the end of the line"},
    {"Conv2d(1, 6)\n", "Conv2d: missing kernel_size"},
    {"Conv2d(1, 6, 5, 1, 0, 1, 1, True, 'zeros', 9)\n", "Conv2d: takes at most 9 arguments"},
    {"Conv2d(1, 6, 5, padding='same')\n", "padding='same' is not supported"},
    {"Conv2d(1, 6, 5, groups=2)\n", "groups=2 is not supported"},
    {"Conv2d(1, 6, 5, dilation=2)\n", "dilation=2 is not supported"},
    {"Conv2d(1, 6, 5, padding_mode='reflect')\n", "padding_mode='reflect' is not supported"},
    {"Conv2d(1, 6, 5, kernel_size=3)\n", "kernel_size is given twice"},
    {"Conv2d(in_channels=1, 6, 5)\n", "a positional argument after keyword arguments"},
    {"Conv2d(1.5, 6, 5)\n", "in_channels must be a whole number"},
    {"MaxPool2d(2, ceil_mode=True)\n", "ceil_mode=True is not supported"},
    {"MaxPool2d(2, padding=1)\n", "padding=1 is not supported"},
    {"AvgPool2d(2, divisor_override=3)\n", "divisor_override is not supported"},
    {"Flatten(start_dim=0)\n", "only Flatten(start_dim=1, end_dim=-1) is supported"},
    {"Flatten()\nBatchNorm2d(784)\n", "expects a feature map [C,H,W], but its input is flat"},
    {"BatchNorm1d(1)\n", "expects a flat input [N,1], but the input gives 1x28x28"},
    {"BatchNorm2d(3)\n", "num_features is 3, but its input has 1 channels"},
    {"BatchNorm2d(1, affine=False)\n", "affine=False is not supported"},
    {"BatchNorm2d(1, track_running_stats=False)\n", "track_running_stats=False is not supported"},
    {"BatchNorm2d(1, eps=0)\n", "eps must be a positive number"},
    {"Dropout(1.5)\n", "Dropout: p must be in [0, 1], got 1.5"},
    {"Dropout(p=True)\n", "p must be a number"},
    {"ReLU(inplace=1)\n", "inplace must be True or False"},
    {"(a): ReLU()\n(a): Flatten()\nLinear(784,10)\n", "line 2: the name 'a' is already the name of line 1"},
    {"(conv 1): ReLU()\n", "a layer name is letters, digits and _ in parentheses"},
    {"Flatten() Linear(784, 10)\n", "line 1: unexpected text 'Linear(784, 10)' after the layer"},
    {"Sequential(\n  (0): Flatten()\n", "Sequential( is not closed with ')'"},
    {"Sequential(\n  (0): Flatten()\n)\nLinear(784, 10)\n", "text after the closing ')'"},
    {"\n# nothing but a comment\n", "no layers"},
    {"Linear(784, 10, bias=maybe)\n", "'maybe' is not a value"},
    {"Conv2d(1, 6, (5, 5, 5, 5, 5))\n", "a tuple of more than four numbers"},
    {"Conv2d(1, 0, 5)\n", "in_channels and out_channels must be >= 1"},
    {"Conv2d(1, 6, 5, stride=0)\n", "kernel_size and stride must be >= 1"},
};

static void test_bad_descriptions(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        build(bad_cases[i].text, MNIST, 10, 0);
        printf("  refused: %s\n", err_get());
        if (!strstr(err_get(), bad_cases[i].message))
            fail_msg("case %zu: the message lacks '%s'", i, bad_cases[i].message);
    }
    printf("  %zu malformed descriptions, each refused with its message\n",
           sizeof bad_cases / sizeof bad_cases[0]);
}

/* Random bytes and mutated descriptions never crash the parser, and every
 * refusal has a message (the fuzz harness does this at length). */
static void test_garbage(void **state)
{
    (void)state;
    Rng rng;
    rng_init(&rng, 9, 0, 0);
    const char *seed = net_builtin("bn");
    char buf[2048];
    for (int c = 0; c < 3000; c++) {
        size_t n = strlen(seed);
        memcpy(buf, seed, n + 1);
        int flips = 1 + (int)rng_below(&rng, 4);
        for (int k = 0; k < flips; k++)
            buf[rng_below(&rng, n)] = (char)(1 + rng_below(&rng, 126));
        static Net net;
        int rc = net_parse(&net, buf, "garbage");
        if (rc == 0)
            rc = net_build(&net, MNIST, 10, "garbage");
        if (rc < 0)
            assert_true(strlen(err_get()) > 10);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins),         cmocka_unit_test(test_pytorch_print),
        cmocka_unit_test(test_shapes),           cmocka_unit_test(test_bad_descriptions),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
