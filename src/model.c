#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/error.h"
#include "dpcnn/layers.h"
#include "dpcnn/model.h"
#include "dpcnn/rng.h"

/* Offsets are cumulative counts; the static assert below keeps the table honest. */
#define OFF_CONV1_W 0
#define OFF_CONV1_B (OFF_CONV1_W + 6 * 1 * 5 * 5)
#define OFF_CONV2_W (OFF_CONV1_B + 6)
#define OFF_CONV2_B (OFF_CONV2_W + 12 * 6 * 5 * 5)
#define OFF_FC1_W (OFF_CONV2_B + 12)
#define OFF_FC1_B (OFF_FC1_W + 120 * 192)
#define OFF_FC2_W (OFF_FC1_B + 120)
#define OFF_FC2_B (OFF_FC2_W + 60 * 120)
#define OFF_OUT_W (OFF_FC2_B + 60)
#define OFF_OUT_B (OFF_OUT_W + 10 * 60)
#define OFF_END (OFF_OUT_B + 10)
_Static_assert(OFF_END == 32998, "parameter count");

const TensorInfo model_tensors[MODEL_NUM_TENSORS] = {
    {"conv1.weight", 4, {6, 1, 5, 5}, OFF_CONV1_W, 150, 25},
    {"conv1.bias", 1, {6}, OFF_CONV1_B, 6, 25},
    {"conv2.weight", 4, {12, 6, 5, 5}, OFF_CONV2_W, 1800, 150},
    {"conv2.bias", 1, {12}, OFF_CONV2_B, 12, 150},
    {"fc1.weight", 2, {120, 192}, OFF_FC1_W, 23040, 192},
    {"fc1.bias", 1, {120}, OFF_FC1_B, 120, 192},
    {"fc2.weight", 2, {60, 120}, OFF_FC2_W, 7200, 120},
    {"fc2.bias", 1, {60}, OFF_FC2_B, 60, 120},
    {"out.weight", 2, {10, 60}, OFF_OUT_W, 600, 60},
    {"out.bias", 1, {10}, OFF_OUT_B, 10, 60},
};

int model_tensor_index(const char *name)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++)
        if (strcmp(model_tensors[t].name, name) == 0)
            return t;
    return -1;
}

void model_init(float *params, uint64_t seed)
{
    for (int t = 0; t < MODEL_NUM_TENSORS; t++) {
        const TensorInfo *ti = &model_tensors[t];
        const float bound = (float)(1.0 / sqrt((double)ti->fan_in));
        Rng rng;
        rng_init(&rng, seed, RNG_STREAM_INIT, (uint64_t)t);
        for (size_t i = 0; i < ti->count; i++)
            params[ti->offset + i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    }
}

/* Shapes of the activations, per sample. */
enum {
    S_X = 1 * 28 * 28,
    S_C1 = 6 * 24 * 24,
    S_P1 = 6 * 12 * 12,
    S_C2 = 12 * 8 * 8,
    S_P2 = 12 * 4 * 4,
    S_F1 = 120,
    S_F2 = 60,
    S_OUT = 10,
};

/* The convolutional layers' shapes, for the layer kernels. */
static const ConvShape conv1_shape = {.C = 1, .H = 28, .W = 28, .F = 6, .K = 5, .S = 1, .P = 0,
                                      .OH = 24, .OW = 24};
static const PoolShape pool1_shape = {.C = 6, .H = 24, .W = 24, .K = 2, .S = 2, .OH = 12, .OW = 12};
static const ConvShape conv2_shape = {.C = 6, .H = 12, .W = 12, .F = 12, .K = 5, .S = 1, .P = 0,
                                      .OH = 8, .OW = 8};
static const PoolShape pool2_shape = {.C = 12, .H = 8, .W = 8, .K = 2, .S = 2, .OH = 4, .OW = 4};

Workspace *workspace_create(int max_n)
{
    Workspace *ws = XCALLOC(Workspace, 1);
    const size_t n = (size_t)max_n;
    ws->max_n = max_n;
    /* im2col scratch for one sample: the backward pass does not need it */
    size_t col1 = conv2d_forward_floats(&conv1_shape);
    size_t col2 = conv2d_forward_floats(&conv2_shape);
    /* forward activations, then their gradients (contiguous: one memset) */
    size_t fwd = n * (S_X + S_C1 + S_P1 + S_C2 + S_P2 + 2 * S_F1 + 2 * S_F2 + 2 * S_OUT);
    size_t bwd = n * (S_P1 + S_P2 + 2 * S_F1 + 2 * S_F2 + S_OUT);
    ws->mem = XCALLOC(float, fwd + bwd + col1 + col2);
    ws->mem32 = XCALLOC(int32_t, n * (S_P1 + S_P2));
    float *p = ws->mem;
#define TAKE(field, count) (ws->field = p, p += (count))
    TAKE(x, n * S_X);
    TAKE(c1, n * S_C1);
    TAKE(p1, n * S_P1);
    TAKE(c2, n * S_C2);
    TAKE(p2, n * S_P2);
    TAKE(f1, n * S_F1);
    TAKE(g1, n * S_F1);
    TAKE(f2, n * S_F2);
    TAKE(g2, n * S_F2);
    TAKE(logits, n * S_OUT);
    TAKE(probs, n * S_OUT);
    ws->act_grads = p;
    TAKE(dp1, n * S_P1);
    TAKE(dp2, n * S_P2);
    TAKE(df1, n * S_F1);
    TAKE(dg1, n * S_F1);
    TAKE(df2, n * S_F2);
    TAKE(dg2, n * S_F2);
    TAKE(dlogits, n * S_OUT);
    ws->act_grads_count = (size_t)(p - ws->act_grads);
    TAKE(col1, col1);
    TAKE(col2, col2);
#undef TAKE
    ws->arg1 = ws->mem32;
    ws->arg2 = ws->mem32 + n * S_P1;
    return ws;
}

void workspace_free(Workspace *ws)
{
    if (!ws)
        return;
    free(ws->mem);
    free(ws->mem32);
    free(ws);
}

#define W(t) (params + model_tensors[t].offset)
#define G(t) (grads + model_tensors[t].offset)

/* The convolutional part runs sample by sample: conv, ReLU and pool of one
 * sample follow each other while its activations are still in cache (a whole
 * micro-batch of them would not fit). The fully connected part runs on the
 * whole micro-batch, where wider products pay. Either way each sample's
 * arithmetic is the same, so the bits do not depend on the grouping. */
double model_forward(Workspace *ws, const float *params, const uint8_t *images,
                     const uint8_t *labels, int n, int *correct)
{
    if (n > ws->max_n)
        DIE("micro-batch of %d exceeds the workspace (%d)", n, ws->max_n);
    for (int s = 0; s < n; s++) {
        float *x = ws->x + (size_t)s * S_X;
        /* The tutorial's ToTensor: float(pixel) / 255, a division as PyTorch does it. */
        for (int i = 0; i < S_X; i++)
            x[i] = (float)images[(size_t)s * S_X + i] / 255.0f;
        float *c1 = ws->c1 + (size_t)s * S_C1, *p1 = ws->p1 + (size_t)s * S_P1;
        conv2d_forward(c1, ws->col1, x, W(T_CONV1_W), W(T_CONV1_B), 1, &conv1_shape);
        /* ReLU then max-pool in one pass (layers.h: bitwise the same as two) */
        relu_maxpool_forward(p1, ws->arg1 + (size_t)s * S_P1, c1, 1, &pool1_shape);

        float *c2 = ws->c2 + (size_t)s * S_C2;
        conv2d_forward(c2, ws->col2, p1, W(T_CONV2_W), W(T_CONV2_B), 1, &conv2_shape);
        relu_maxpool_forward(ws->p2 + (size_t)s * S_P2, ws->arg2 + (size_t)s * S_P2, c2, 1,
                             &pool2_shape);
    }

    /* p2 [n,12,4,4] is already the flattened [n,192], in PyTorch's order. */
    linear_forward(ws->f1, ws->p2, W(T_FC1_W), W(T_FC1_B), n, S_P2, S_F1);
    relu_forward(ws->g1, ws->f1, (size_t)n * S_F1);
    linear_forward(ws->f2, ws->g1, W(T_FC2_W), W(T_FC2_B), n, S_F1, S_F2);
    relu_forward(ws->g2, ws->f2, (size_t)n * S_F2);
    linear_forward(ws->logits, ws->g2, W(T_OUT_W), W(T_OUT_B), n, S_F2, S_OUT);

    if (!labels)
        return 0.0;
    return softmax_xent_forward(ws->probs, correct, ws->logits, labels, n, S_OUT);
}

void model_backward(float *grads, Workspace *ws, const float *params, const uint8_t *labels,
                    int n, float scale)
{
    memset(ws->act_grads, 0, sizeof(float) * ws->act_grads_count);
    softmax_xent_backward(ws->dlogits, ws->probs, labels, n, S_OUT, scale);
    linear_backward(ws->dg2, G(T_OUT_W), G(T_OUT_B), ws->dlogits, ws->g2, W(T_OUT_W), n, S_F2,
                    S_OUT);
    relu_backward(ws->df2, ws->dg2, ws->g2, (size_t)n * S_F2);
    linear_backward(ws->dg1, G(T_FC2_W), G(T_FC2_B), ws->df2, ws->g1, W(T_FC2_W), n, S_F1,
                    S_F2);
    relu_backward(ws->df1, ws->dg1, ws->g1, (size_t)n * S_F1);
    linear_backward(ws->dp2, G(T_FC1_W), G(T_FC1_B), ws->df1, ws->p2, W(T_FC1_W), n, S_P2,
                    S_F1);

    /* Back through pool, ReLU and convolution at once, over the pooling
     * winners only (conv_pool.c): conv2's input gradient, then conv1's weights. */
    conv_pool_backward(ws->dp1, G(T_CONV2_W), G(T_CONV2_B), ws->dp2, ws->p2, ws->arg2, ws->p1,
                       W(T_CONV2_W), n, &conv2_shape, &pool2_shape);
    conv_pool_backward(NULL, G(T_CONV1_W), G(T_CONV1_B), ws->dp1, ws->p1, ws->arg1, ws->x,
                       W(T_CONV1_W), n, &conv1_shape, &pool1_shape);
}
