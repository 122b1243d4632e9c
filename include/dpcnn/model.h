/* The forward and backward passes of a network (net.h) over a micro-batch.
 *
 * The layers run as a short list of steps planned once from the description:
 * a Conv2d followed by ReLU and MaxPool2d is one step whose backward pass sums
 * over the pooling winners only (conv_pool_backward); a ReLU followed by a
 * MaxPool2d, or by an AvgPool2d whose windows do not overlap, is one fused
 * step (the latter writes its whole input gradient, so that gradient is not
 * zeroed before each pass); every other layer is a step of its own. Runs of
 * convolution-side steps go sample by sample, while one sample's activations
 * are still in cache; batch norm and the fully connected layers take the whole
 * micro-batch. Each sample's arithmetic is the same either way, so the bits do
 * not depend on the grouping.
 *
 * All parameters live in one flat float buffer in state_dict order (net.h),
 * gradients and Adam's moments in the same layout; batch norm's running
 * statistics in a second flat buffer. */
#ifndef DPCNN_MODEL_H
#define DPCNN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "dpcnn/layers.h"
#include "dpcnn/net.h"

#define MODEL_MAX_CHANNELS 16 /* input channels that --normalize can describe */

/* How the input pixels become floats: p / 255 (ToTensor), then (x - mean) / std
 * per channel when normalize is set (torchvision's Normalize). */
typedef struct {
    int normalize;
    float mean[MODEL_MAX_CHANNELS], std[MODEL_MAX_CHANNELS];
} InputTransform;

/* --normalize TEXT for an input of `channels` channels: "none", or one
 * MEAN,STD pair per channel. canonical (size n) gets the form a checkpoint
 * records ("none" or the values as %.9g), so equal values compare equal. */
int input_transform_parse(InputTransform *t, const char *text, int channels, char *canonical,
                          size_t n);

/* What a forward pass needs besides the weights. */
typedef struct {
    int train;               /* batch statistics for batch norm, dropout on */
    uint64_t seed;           /* dropout's keys (doc/models.md): the run's seed, */
    int64_t step;            /* the global step being trained (from 1), */
    uint64_t first_position; /* and the epoch position of the pass's first sample */
} PassInfo;

typedef struct Step Step;

/* Everything one forward/backward pass touches for up to max_n samples,
 * allocated once, so a training step never allocates. One per worker thread. */
typedef struct {
    const Net *net;
    const Engine *engine; /* the convolutions' and linear layers' (layers.h) */
    InputTransform input;
    int max_n;
    Step *steps;
    int nsteps;
    float *act[NET_MAX_LAYERS + 1];  /* act[0]: the input; act[i + 1]: layer i's output
                                      * (a convolution fused with its ReLU and max-pool
                                      * may leave its own unwritten: layers.h) */
    float *grad[NET_MAX_LAYERS + 1]; /* their gradients (NULL where none is needed) */
    int32_t *arg[NET_MAX_LAYERS];    /* max-pool winners, by layer */
    uint8_t *mask[NET_MAX_LAYERS];   /* dropout masks, by layer */
    float *bn_mean[NET_MAX_LAYERS], *bn_invstd[NET_MAX_LAYERS];
    float *bn_stats; /* this pass's statistics: per batch-norm layer, mean [C] then
                      * unbiased variance [C]; 2 * net->bn_channels floats */
    float *probs;    /* [n, classes] */
    float *scratch;  /* convolution scratch for one sample */
    float *grads_mem;
    size_t grads_count; /* the activation gradients steps add into, contiguous from
                         * grads_mem: one memset per pass */
    float *mem;
    int32_t *mem32;
    uint8_t *mem8;
    /* For the benchmark only (NULL otherwise): seconds spent in each step,
     * forward and backward, added up over the passes. */
    double *prof_forward, *prof_backward;
} Workspace;

Workspace *workspace_create(const Net *net, const InputTransform *input, int max_n);
void workspace_free(Workspace *ws);

/* Forward pass of n <= max_n samples (uint8, [n, C*H*W]). With labels, returns
 * the summed cross-entropy and adds the number of correct predictions to
 * *correct; without, returns 0. The logits (act[nlayers]) and probabilities
 * stay in ws; in training, the batch-norm statistics in ws->bn_stats. */
double model_forward(Workspace *ws, const float *params, const float *buffers,
                     const uint8_t *images, const uint8_t *labels, int n, int *correct,
                     const PassInfo *pass);

/* Backward pass of the last (training) forward: grads += d(scale * loss_sum)/d params. */
void model_backward(float *grads, Workspace *ws, const float *params, const uint8_t *labels,
                    int n, float scale);

/* Apply one micro-batch's batch-norm statistics (as ws->bn_stats holds them)
 * to the running statistics: once per micro-batch, in the global order of the
 * micro-batches (doc/models.md). batches[b] counts batch-norm layer b's. */
void model_update_running(const Net *net, float *buffers, int64_t *batches, const float *stats);

/* The steps as the benchmark reports them: step k's name ("Conv2d+ReLU+
 * MaxPool2d"), its first layer and how many it covers; -1 past the last. */
int model_step_info(const Workspace *ws, int k, char *name, size_t n, int *layer, int *span);

/* The logits of sample s after a forward pass. */
const float *model_logits(const Workspace *ws, int s);

#endif
