/* The network: PyTorch's tutorial CNN for 28x28 grey images, 10 classes.
 *
 *   x [n,1,28,28] -> conv1 5x5 -> [n,6,24,24] -> ReLU -> max-pool 2 -> [n,6,12,12]
 *     -> conv2 5x5 -> [n,12,8,8] -> ReLU -> max-pool 2 -> [n,12,4,4] = [n,192]
 *     -> fc1 -> [n,120] -> ReLU -> fc2 -> [n,60] -> ReLU -> out -> logits [n,10]
 *
 * All parameters live in one flat float buffer, tensor after tensor in the
 * order of PyTorch's state_dict(); gradients and Adam's two moments use the
 * same layout, so an optimizer step is one loop, a gradient reduction one call
 * and a checkpoint one dataset per tensor. */
#ifndef DPCNN_MODEL_H
#define DPCNN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_IMAGE_SIDE 28
#define MODEL_IMAGE_PIXELS (MODEL_IMAGE_SIDE * MODEL_IMAGE_SIDE)
#define MODEL_CLASSES 10

enum {
    T_CONV1_W, T_CONV1_B, T_CONV2_W, T_CONV2_B, T_FC1_W, T_FC1_B,
    T_FC2_W, T_FC2_B, T_OUT_W, T_OUT_B, MODEL_NUM_TENSORS
};

typedef struct {
    const char *name; /* the state_dict key, e.g. "conv1.weight" */
    int ndim;
    int shape[4];
    size_t offset; /* into the flat buffer, in floats */
    size_t count;
    int fan_in;    /* PyTorch's default init draws from U(-1/sqrt(fan_in), +) */
} TensorInfo;

extern const TensorInfo model_tensors[MODEL_NUM_TENSORS];
/* 32,998 */
#define MODEL_NUM_PARAMS ((size_t)32998)

/* PyTorch's default initialisation for Conv2d and Linear (kaiming_uniform
 * with a = sqrt(5) for weights, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * and the same bound for biases), drawn from dpcnn's keyed generator: tensor
 * i uses the stream (seed, RNG_STREAM_INIT, i), element by element. */
void model_init(float *params, uint64_t seed);

/* Activations and their gradients for up to max_n samples: everything one
 * forward/backward pass touches, allocated once, so the training step itself
 * never allocates. One per worker thread. */
typedef struct {
    int max_n;
    float *x;                 /* [n,1,28,28] pixels / 255 */
    float *c1, *p1;           /* conv1 (before ReLU), pool (after ReLU) */
    float *c2, *p2;
    float *col1, *col2;       /* one sample's im2col, scratch */
    float *f1, *g1, *f2, *g2;   /* fc pre- and post-ReLU */
    float *logits, *probs;
    int32_t *arg1, *arg2;       /* pool winners: offsets in the input plane */
    /* gradients of the activations, same shapes */
    float *dp1, *dp2, *df1, *dg1, *df2, *dg2, *dlogits;
    float *act_grads;           /* dc1 ... dlogits, contiguous, zeroed per pass */
    size_t act_grads_count;
    float *mem;
    int32_t *mem32;
} Workspace;

Workspace *workspace_create(int max_n);
void workspace_free(Workspace *ws);

/* Forward pass of n <= max_n images (uint8, [n,28,28]). With labels, returns
 * the summed cross-entropy and adds the number of correct predictions to
 * *correct; without, returns 0. The logits and probabilities stay in ws. */
double model_forward(Workspace *ws, const float *params, const uint8_t *images,
                     const uint8_t *labels, int n, int *correct);

/* Backward pass of the last forward: grads += d(scale * loss_sum)/d params. */
void model_backward(float *grads, Workspace *ws, const float *params, const uint8_t *labels,
                    int n, float scale);

/* Name to index, or -1. */
int model_tensor_index(const char *name);

#endif
