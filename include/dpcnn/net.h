/* The network as data: a sequential CNN described in PyTorch's terms
 * (doc/models.md), checked against the input shape, and laid out once.
 *
 * A description is parsed into layers (net_parse), then net_build infers
 * every shape from the input shape and the number of classes, refuses what
 * does not fit (naming the line, the layer and what was expected), and lays
 * out the tensors: every trainable parameter in one flat float buffer, in
 * state_dict order (gradients and Adam's moments share that layout), and the
 * buffers (batch norm's running statistics) in a second flat float buffer.
 * The table of layer kinds in net.c drives parsing, shapes, tensors, FLOPs and
 * printing; model.c drives the forward and backward passes from the layers. */
#ifndef DPCNN_NET_H
#define DPCNN_NET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NET_MAX_LAYERS 64
#define NET_MAX_TENSORS (4 * NET_MAX_LAYERS)
#define NET_NAME_MAX 64
#define NET_TEXT_MAX 16384 /* a canonical description, as a checkpoint stores it */

typedef enum {
    LAYER_CONV2D,
    LAYER_MAXPOOL2D,
    LAYER_AVGPOOL2D,
    LAYER_RELU,
    LAYER_FLATTEN,
    LAYER_LINEAR,
    LAYER_BATCHNORM2D,
    LAYER_BATCHNORM1D,
    LAYER_DROPOUT,
    LAYER_KINDS
} LayerType;

/* An activation's shape per sample: c channels of h x w, or a flat vector of c
 * values (flat = 1, h = w = 1). */
typedef struct {
    int c, h, w;
    int flat;
} Shape;

static inline size_t shape_count(Shape s)
{
    return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

typedef struct {
    LayerType type;
    char name[NET_NAME_MAX]; /* state_dict prefix: "conv1", or the position "3" */
    int line;                /* in the description, for messages */
    /* arguments, as torch.nn names them */
    int in, out;             /* Conv2d in/out_channels, Linear in/out_features, BatchNorm num_features */
    int kernel, stride, padding;
    int bias;                /* Conv2d, Linear: has a bias */
    double eps, momentum;    /* BatchNorm */
    int cumulative;          /* BatchNorm momentum=None: cumulative moving average */
    double p;                /* Dropout */
    /* derived by net_build */
    Shape in_shape, out_shape;
    int first_tensor;        /* its parameters: tensors[first_tensor ...], or -1 */
    int first_buffer;        /* its buffers: buffers[first_buffer ...], or -1 */
    long long flops;         /* forward FLOPs per sample */
} Layer;

/* One named tensor of the state_dict: a parameter (in the flat parameter
 * buffer) or a buffer (in the flat buffer of running statistics). */
typedef struct {
    char name[NET_NAME_MAX + 24]; /* "conv1.weight", "3.running_mean" */
    int ndim;
    int shape[4];
    size_t offset;  /* in floats, into its flat buffer */
    size_t count;
    int fan_in;     /* PyTorch's default init bound 1/sqrt(fan_in); 0: constant */
    float fill;     /* with fan_in 0: the constant (batch norm weight 1, bias 0, ...) */
    int layer;
} TensorInfo;

typedef struct Net {
    Layer layers[NET_MAX_LAYERS];
    int nlayers;
    Shape input;
    int classes;
    TensorInfo tensors[NET_MAX_TENSORS]; /* trainable, in state_dict order */
    int ntensors;
    size_t nparams;
    TensorInfo buffers[NET_MAX_TENSORS]; /* running statistics, in state_dict order */
    int nbuffers;
    size_t nbuffer_floats;
    int nbatchnorm;          /* batch-norm layers: each has a num_batches_tracked */
    size_t bn_channels;      /* their channels, summed: one micro-batch's statistics are
                              * 2 * bn_channels floats (mean and unbiased variance) */
    long long flops;         /* forward FLOPs per sample, all layers */
    char text[NET_TEXT_MAX]; /* the canonical description */
} Net;

/* The torch.nn name of a layer kind: "Conv2d". */
const char *layer_kind_name(LayerType type);

/* The built-in descriptions by name, or NULL. */
const char *net_builtin(const char *name);
/* The names of the built-in networks, for messages: "tutorial, bn, lenet5". */
const char *net_builtin_names(void);

/* Parse text (from source, for messages: "tutorial" or a file name) into
 * net's layers; -1 with one message naming the line otherwise. */
int net_parse(Net *net, const char *text, const char *source);
/* Infer and check every shape from the input and the classes (classes <= 0:
 * whatever the flat output gives, for --print-model without data), lay out
 * the tensors, and write the canonical description; -1 with a message. */
int net_build(Net *net, Shape input, int classes, const char *source);
/* net_parse + net_build of NAME (built-in) or FILE. */
int net_load(Net *net, const char *name_or_file, Shape input, int classes);

/* The layer table: each layer with its output shape, parameters and forward
 * FLOPs per sample, then the totals. */
void net_print(FILE *f, const Net *net);

/* PyTorch's default initialisation, from dpcnn's keyed generator
 * (doc/models.md): trainable tensor t draws from stream (seed, init, t). */
void net_init(const Net *net, float *params, float *buffers, int64_t *batches, uint64_t seed);

/* Name to index in tensors[] (params) or buffers[], or -1. */
int net_tensor_index(const Net *net, const char *name);
int net_buffer_index(const Net *net, const char *name);

#endif
