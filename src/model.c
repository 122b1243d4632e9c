/* The forward and backward passes of a described network (model.h).
 *
 * The plan: one Step per layer, except where a fusion pays (model.h); each
 * step knows its shapes and which activation buffers it reads and writes.
 * act[i] is layer i's input and act[i + 1] its output; grad[i] is the
 * gradient with respect to act[i]. Flatten's output is its input, viewed flat
 * (NCHW per sample is already the flattened order). Buffers nobody reads are
 * not allocated: the ReLU output inside a fused step, gradients in front of
 * the first layer with parameters. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpcnn/error.h"
#include "dpcnn/layers.h"
#include "dpcnn/model.h"

typedef enum {
    S_CONV,      /* Conv2d */
    S_CONV_POOL, /* Conv2d, ReLU, MaxPool2d: backward over the winners only */
    S_RELU_POOL, /* ReLU, MaxPool2d: one pass */
    S_RELU_AVG,  /* ReLU, AvgPool2d (windows not overlapping): one pass */
    S_MAXPOOL,
    S_AVGPOOL,
    S_RELU,
    S_FLATTEN,
    S_LINEAR,
    S_BATCHNORM,
    S_DROPOUT,
} StepKind;

struct Step {
    StepKind kind;
    int layer;       /* its first layer */
    int span;        /* how many layers it covers */
    int conv_side;   /* works on one sample at a time: may run sample by sample */
    int bn;          /* batch norm: its index among the batch-norm layers */
    size_t bn_off;   /* and where its statistics sit in bn_stats */
    ConvShape conv;
    PoolShape pool;
    size_t in_count, out_count; /* per sample */
};

static ConvShape conv_of(const Layer *l)
{
    ConvShape c = {l->in_shape.c, l->in_shape.h, l->in_shape.w, l->out, l->kernel, l->stride,
                   l->padding, 0, 0};
    if (conv_shape(&c) < 0)
        DIE("convolution shape %dx%dx%d k%d s%d p%d does not fit", c.C, c.H, c.W, c.K, c.S, c.P);
    return c;
}

static PoolShape pool_of(const Layer *l)
{
    PoolShape p = {l->in_shape.c, l->in_shape.h, l->in_shape.w, l->kernel, l->stride, 0, 0};
    if (pool_shape(&p) < 0)
        DIE("pool shape %dx%dx%d k%d s%d does not fit", p.C, p.H, p.W, p.K, p.S);
    return p;
}

/* The steps of the plan, into steps[] (room for net->nlayers). */
static int plan(const Net *net, Step *steps)
{
    int n = 0, bn = 0;
    size_t bn_off = 0;
    for (int i = 0; i < net->nlayers;) {
        const Layer *l = &net->layers[i];
        const LayerType next = i + 1 < net->nlayers ? net->layers[i + 1].type : LAYER_KINDS;
        const LayerType next2 = i + 2 < net->nlayers ? net->layers[i + 2].type : LAYER_KINDS;
        Step *s = &steps[n++];
        memset(s, 0, sizeof *s);
        s->layer = i;
        s->span = 1;
        s->in_count = shape_count(l->in_shape);
        s->conv_side = !l->in_shape.flat;
        switch (l->type) {
        case LAYER_CONV2D:
            s->conv = conv_of(l);
            if (next == LAYER_RELU && next2 == LAYER_MAXPOOL2D) {
                s->kind = S_CONV_POOL;
                s->span = 3;
                s->pool = pool_of(&net->layers[i + 2]);
            } else {
                s->kind = S_CONV;
            }
            break;
        case LAYER_RELU:
            if (next == LAYER_MAXPOOL2D) {
                s->kind = S_RELU_POOL;
                s->span = 2;
                s->pool = pool_of(&net->layers[i + 1]);
            } else if (next == LAYER_AVGPOOL2D &&
                       net->layers[i + 1].kernel == net->layers[i + 1].stride) {
                s->kind = S_RELU_AVG;
                s->span = 2;
                s->pool = pool_of(&net->layers[i + 1]);
            } else {
                s->kind = S_RELU;
            }
            break;
        case LAYER_MAXPOOL2D:
            s->kind = S_MAXPOOL;
            s->pool = pool_of(l);
            break;
        case LAYER_AVGPOOL2D:
            s->kind = S_AVGPOOL;
            s->pool = pool_of(l);
            break;
        case LAYER_FLATTEN: s->kind = S_FLATTEN; break;
        case LAYER_LINEAR: s->kind = S_LINEAR; break;
        case LAYER_BATCHNORM2D:
        case LAYER_BATCHNORM1D:
            s->kind = S_BATCHNORM;
            s->conv_side = 0; /* its statistics span the micro-batch */
            s->bn = bn++;
            s->bn_off = bn_off;
            bn_off += 2 * (size_t)l->in;
            break;
        case LAYER_DROPOUT: s->kind = S_DROPOUT; break;
        default: DIE("layer kind %d has no step", (int)l->type);
        }
        s->out_count = shape_count(net->layers[i + s->span - 1].out_shape);
        i += s->span;
    }
    return n;
}

/* Sub-buffers start on 64-byte boundaries (16 floats), as the vector units like. */
static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

Workspace *workspace_create(const Net *net, const InputTransform *input, int max_n)
{
    Workspace *ws = XCALLOC(Workspace, 1);
    ws->net = net;
    ws->engine = engine_current();
    ws->input = *input;
    ws->max_n = max_n;
    ws->steps = XCALLOC(Step, (size_t)net->nlayers);
    ws->nsteps = plan(net, ws->steps);
    const int L = net->nlayers;
    const size_t n = (size_t)max_n;

    /* Which activations exist, and which gradients are needed. */
    int need_act[NET_MAX_LAYERS + 1], need_grad[NET_MAX_LAYERS + 1], alias[NET_MAX_LAYERS + 1];
    for (int i = 0; i <= L; i++) {
        need_act[i] = 1;
        need_grad[i] = 0;
        alias[i] = 0;
    }
    for (int k = 0; k < ws->nsteps; k++) {
        const Step *s = &ws->steps[k];
        /* inside a fused step, the ReLU's output is never made (the
         * convolution's output, before the ReLU, is: the pool reads it) */
        for (int j = s->kind == S_CONV_POOL ? 2 : 1; j < s->span; j++)
            need_act[s->layer + j] = 0;
        if (s->kind == S_FLATTEN)
            alias[s->layer + 1] = 1;
    }
    /* grad[i] is needed where a step begins (or at the logits) once a layer
     * with parameters lies before layer i; inside a fused step no gradient
     * is ever formed */
    int step_begins[NET_MAX_LAYERS + 1] = {0};
    for (int k = 0; k < ws->nsteps; k++)
        step_begins[ws->steps[k].layer] = 1;
    step_begins[L] = 1;
    int params_before = 0;
    for (int i = 0; i <= L; i++) {
        need_grad[i] = params_before && step_begins[i];
        if (i < L && net->layers[i].first_tensor >= 0)
            params_before = 1;
    }

    size_t floats = 0, ints = 0, bytes = 0, grads = 0, scratch = 0;
    for (int i = 0; i <= L; i++) {
        const size_t c = i == 0 ? shape_count(net->input) : shape_count(net->layers[i - 1].out_shape);
        if (need_act[i] && !alias[i])
            floats += round16(n * c);
        if (need_grad[i] && !alias[i])
            grads += round16(n * c);
    }
    for (int k = 0; k < ws->nsteps; k++) {
        const Step *s = &ws->steps[k];
        const Layer *l = &net->layers[s->layer];
        if (s->kind == S_CONV || s->kind == S_CONV_POOL) {
            size_t f = conv2d_forward_floats(&s->conv), b = conv2d_backward_floats(&s->conv);
            scratch = f > scratch ? f : scratch;
            scratch = b > scratch ? b : scratch;
        }
        if (s->kind == S_LINEAR) {
            size_t f = linear_scratch_floats(max_n, l->in, l->out);
            scratch = f > scratch ? f : scratch;
        }
        if (s->kind == S_CONV_POOL || s->kind == S_RELU_POOL || s->kind == S_MAXPOOL)
            ints += round16(n * s->out_count);
        if (s->kind == S_DROPOUT)
            bytes += round16(n * s->in_count);
        if (s->kind == S_BATCHNORM)
            floats += round16((size_t)l->in); /* invstd */
    }
    floats += round16(2 * net->bn_channels) + round16(n * (size_t)net->classes) + round16(scratch);
    ws->mem = XCALLOC(float, floats + grads);
    ws->mem32 = XCALLOC(int32_t, ints);
    ws->mem8 = XCALLOC(uint8_t, bytes);

    float *p = ws->mem;
    for (int i = 0; i <= L; i++) {
        const size_t c = i == 0 ? shape_count(net->input) : shape_count(net->layers[i - 1].out_shape);
        if (alias[i])
            ws->act[i] = ws->act[i - 1];
        else if (need_act[i]) {
            ws->act[i] = p;
            p += round16(n * c);
        }
    }
    ws->bn_stats = p;
    p += round16(2 * net->bn_channels);
    ws->probs = p;
    p += round16(n * (size_t)net->classes);
    ws->scratch = p;
    p += round16(scratch);
    int32_t *q = ws->mem32;
    uint8_t *m = ws->mem8;
    for (int k = 0; k < ws->nsteps; k++) {
        const Step *s = &ws->steps[k];
        const int last = s->layer + s->span - 1;
        if (s->kind == S_CONV_POOL || s->kind == S_RELU_POOL || s->kind == S_MAXPOOL) {
            ws->arg[last] = q;
            q += round16(n * s->out_count);
        }
        if (s->kind == S_DROPOUT) {
            ws->mask[s->layer] = m;
            m += round16(n * s->in_count);
        }
        if (s->kind == S_BATCHNORM) {
            ws->bn_mean[s->layer] = ws->bn_stats + s->bn_off;
            ws->bn_invstd[s->layer] = p;
            p += round16((size_t)net->layers[s->layer].in);
        }
    }
    /* the activation gradients, contiguous: first those the steps add into
     * (one memset per pass zeroes them all), then those a step writes whole
     * (ReLU + average pool's dx), which need no zeroing */
    int written[NET_MAX_LAYERS + 1] = {0};
    for (int k = 0; k < ws->nsteps; k++)
        written[ws->steps[k].layer] = ws->steps[k].kind == S_RELU_AVG;
    ws->grads_mem = p;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i <= L; i++) {
            const size_t c =
                i == 0 ? shape_count(net->input) : shape_count(net->layers[i - 1].out_shape);
            if (need_grad[i] && !alias[i] && written[i] == pass) {
                ws->grad[i] = p;
                p += round16(n * c);
            }
        }
        if (pass == 0)
            ws->grads_count = (size_t)(p - ws->grads_mem);
    }
    for (int i = 0; i <= L; i++)
        if (alias[i] && need_grad[i])
            ws->grad[i] = ws->grad[i - 1];
    return ws;
}

void workspace_free(Workspace *ws)
{
    if (!ws)
        return;
    free(ws->steps);
    free(ws->mem);
    free(ws->mem32);
    free(ws->mem8);
    free(ws);
}

/* A layer's parameters: its weight (or gamma), and its bias (or beta, or NULL). */
static const float *param(const Net *net, const float *params, const Layer *l, int k)
{
    if (l->first_tensor < 0)
        return NULL;
    const int t = l->first_tensor + k;
    return t < net->ntensors && net->tensors[t].layer == (int)(l - net->layers)
               ? params + net->tensors[t].offset
               : NULL;
}

static float *dparam(const Net *net, float *grads, const Layer *l, int k)
{
    const float *p = param(net, grads, l, k);
    return (float *)p;
}

/* pixels / 255, then (x - mean) / std per channel */
static void load_input(float *x, const uint8_t *images, size_t count, int n, const Net *net,
                       const InputTransform *in)
{
    const size_t plane = (size_t)net->input.h * (size_t)net->input.w;
    for (size_t i = 0; i < (size_t)n * count; i++)
        x[i] = (float)images[i] / 255.0f;
    if (!in->normalize)
        return;
    for (int s = 0; s < n; s++)
        for (int c = 0; c < net->input.c; c++) {
            float *xc = x + (size_t)s * count + (size_t)c * plane;
            const float mean = in->mean[c], std = in->std[c];
            for (size_t k = 0; k < plane; k++)
                xc[k] = (xc[k] - mean) / std;
        }
}

/* The clock for the benchmark's per-step profile (ws->prof_*). */
static double prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void step_forward_once(Workspace *ws, const Step *s, const float *params,
                              const float *buffers, int s0, int n, const PassInfo *pass);

/* One step forward over samples [s0, s0 + n), timed if the benchmark asks. */
static void step_forward(Workspace *ws, const Step *s, const float *params, const float *buffers,
                         int s0, int n, const PassInfo *pass)
{
    if (!ws->prof_forward) {
        step_forward_once(ws, s, params, buffers, s0, n, pass);
        return;
    }
    const double t0 = prof_now();
    step_forward_once(ws, s, params, buffers, s0, n, pass);
    ws->prof_forward[s - ws->steps] += prof_now() - t0;
}

static void step_forward_once(Workspace *ws, const Step *s, const float *params, const float *buffers,
                         int s0, int n, const PassInfo *pass)
{
    const Net *net = ws->net;
    const int i = s->layer, last = i + s->span - 1;
    const Layer *l = &net->layers[i];
    const float *x = ws->act[i] + (size_t)s0 * s->in_count;
    float *y = ws->act[last + 1] + (size_t)s0 * s->out_count;
    switch (s->kind) {
    case S_CONV:
        ws->engine->conv2d_forward(y, ws->scratch, x, param(net, params, l, 0),
                                   param(net, params, l, 1), n, &s->conv);
        break;
    case S_CONV_POOL: {
        const size_t cc = (size_t)s->conv.F * s->conv.OH * s->conv.OW;
        float *c = ws->act[i + 1] + (size_t)s0 * cc;
        ws->engine->conv_pool_forward(y, ws->arg[last] + (size_t)s0 * s->out_count, c,
                                      ws->scratch, x, param(net, params, l, 0),
                                      param(net, params, l, 1), n, &s->conv, &s->pool);
        break;
    }
    case S_RELU_POOL:
        relu_maxpool_forward(y, ws->arg[last] + (size_t)s0 * s->out_count, x, n, &s->pool);
        break;
    case S_MAXPOOL:
        maxpool_forward(y, ws->arg[last] + (size_t)s0 * s->out_count, x, n, &s->pool);
        break;
    case S_RELU_AVG: relu_avgpool_forward(y, x, n, &s->pool); break;
    case S_AVGPOOL: avgpool_forward(y, x, n, &s->pool); break;
    case S_RELU: relu_forward(y, x, (size_t)n * s->in_count); break;
    case S_FLATTEN: break; /* a view */
    case S_LINEAR:
        ws->engine->linear_forward(y, ws->scratch, x, param(net, params, l, 0),
                                   param(net, params, l, 1), n, l->in, l->out);
        break;
    case S_BATCHNORM: {
        const int C = l->in, Lsz = (int)(s->in_count / (size_t)C);
        const float *gamma = param(net, params, l, 0), *beta = param(net, params, l, 1);
        if (pass->train) {
            float *stats = ws->bn_stats + s->bn_off;
            batchnorm_forward_train(y, stats, ws->bn_invstd[i], stats + C, x, gamma, beta, n, C,
                                    Lsz, l->eps);
        } else {
            const float *rm = buffers + net->buffers[l->first_buffer].offset;
            const float *rv = buffers + net->buffers[l->first_buffer + 1].offset;
            batchnorm_forward_eval(y, x, gamma, beta, rm, rv, n, C, Lsz, l->eps);
        }
        break;
    }
    case S_DROPOUT:
        if (pass->train)
            dropout_forward(y, ws->mask[i] + (size_t)s0 * s->in_count, x, n, s->in_count, l->p,
                            pass->seed, i, pass->step, pass->first_position + (uint64_t)s0);
        else
            memcpy(y, x, sizeof(float) * (size_t)n * s->in_count);
        break;
    }
}

double model_forward(Workspace *ws, const float *params, const float *buffers,
                     const uint8_t *images, const uint8_t *labels, int n, int *correct,
                     const PassInfo *pass)
{
    const Net *net = ws->net;
    if (n > ws->max_n)
        DIE("micro-batch of %d exceeds the workspace (%d)", n, ws->max_n);
    const size_t in = shape_count(net->input);
    for (int k = 0; k < ws->nsteps;) {
        /* a run of convolution-side steps with a convolution in it goes sample
         * by sample (with the input conversion), the rest batch-wide */
        int end = k;
        int has_conv = 0;
        while (end < ws->nsteps && ws->steps[end].conv_side) {
            has_conv |= ws->steps[end].kind == S_CONV || ws->steps[end].kind == S_CONV_POOL;
            end++;
        }
        if (k == 0 && !(has_conv && end > k))
            load_input(ws->act[0], images, in, n, net, &ws->input);
        if (has_conv && end > k) {
            for (int s = 0; s < n; s++) {
                if (k == 0)
                    load_input(ws->act[0] + (size_t)s * in, images + (size_t)s * in, in, 1, net,
                               &ws->input);
                for (int j = k; j < end; j++)
                    step_forward(ws, &ws->steps[j], params, buffers, s, 1, pass);
            }
            k = end;
        } else {
            step_forward(ws, &ws->steps[k], params, buffers, 0, n, pass);
            k++;
        }
    }
    if (!labels)
        return 0.0;
    return softmax_xent_forward(ws->probs, correct, ws->act[net->nlayers], labels, n,
                                net->classes);
}

const float *model_logits(const Workspace *ws, int s)
{
    return ws->act[ws->net->nlayers] + (size_t)s * (size_t)ws->net->classes;
}

void model_backward(float *grads, Workspace *ws, const float *params, const uint8_t *labels,
                    int n, float scale)
{
    const Net *net = ws->net;
    memset(ws->grads_mem, 0, sizeof(float) * ws->grads_count);
    softmax_xent_backward(ws->grad[net->nlayers], ws->probs, labels, n, net->classes, scale);
    for (int k = ws->nsteps - 1; k >= 0; k--) {
        const Step *s = &ws->steps[k];
        const int i = s->layer, last = i + s->span - 1;
        const Layer *l = &net->layers[i];
        float *dx = ws->grad[i];
        const float *dy = ws->grad[last + 1], *x = ws->act[i], *y = ws->act[last + 1];
        if (!dx && l->first_tensor < 0)
            continue; /* nothing before it needs a gradient */
        const double t0 = ws->prof_backward ? prof_now() : 0.0;
        switch (s->kind) {
        case S_CONV:
            ws->engine->conv2d_backward(dx, dparam(net, grads, l, 0), dparam(net, grads, l, 1),
                                        ws->scratch, dy, x, param(net, params, l, 0), n,
                                        &s->conv);
            break;
        case S_CONV_POOL:
            ws->engine->conv_pool_backward(dx, dparam(net, grads, l, 0), dparam(net, grads, l, 1),
                                           dy, y, ws->arg[last], x, param(net, params, l, 0), n,
                                           &s->conv, &s->pool);
            break;
        case S_RELU_POOL: relu_maxpool_backward(dx, dy, y, ws->arg[last], n, &s->pool); break;
        case S_MAXPOOL: maxpool_backward(dx, dy, ws->arg[last], n, &s->pool); break;
        case S_RELU_AVG: relu_avgpool_backward(dx, dy, x, n, &s->pool); break;
        case S_AVGPOOL: avgpool_backward(dx, dy, n, &s->pool); break;
        case S_RELU: relu_backward(dx, dy, y, (size_t)n * s->in_count); break;
        case S_FLATTEN: break; /* the same memory */
        case S_LINEAR:
            ws->engine->linear_backward(dx, dparam(net, grads, l, 0), dparam(net, grads, l, 1),
                                        dy, x, param(net, params, l, 0), n, l->in, l->out);
            break;
        case S_BATCHNORM: {
            const int C = l->in, Lsz = (int)(s->in_count / (size_t)C);
            batchnorm_backward(dx, dparam(net, grads, l, 0), dparam(net, grads, l, 1), dy, x,
                               ws->bn_mean[i], ws->bn_invstd[i], param(net, params, l, 0), n, C,
                               Lsz);
            break;
        }
        case S_DROPOUT: dropout_backward(dx, dy, ws->mask[i], n, s->in_count, l->p); break;
        }
        if (ws->prof_backward)
            ws->prof_backward[k] += prof_now() - t0;
    }
}

int model_step_info(const Workspace *ws, int k, char *name, size_t n, int *layer, int *span)
{
    if (k < 0 || k >= ws->nsteps)
        return -1;
    const Step *s = &ws->steps[k];
    *layer = s->layer;
    *span = s->span;
    size_t at = 0;
    name[0] = '\0';
    for (int j = 0; j < s->span && at < n; j++)
        at += (size_t)snprintf(name + at, n - at, "%s%s", j ? "+" : "",
                               layer_kind_name(ws->net->layers[s->layer + j].type));
    return 0;
}

void model_update_running(const Net *net, float *buffers, int64_t *batches, const float *stats)
{
    size_t off = 0;
    int b = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const Layer *l = &net->layers[i];
        if (l->type != LAYER_BATCHNORM2D && l->type != LAYER_BATCHNORM1D)
            continue;
        batches[b]++;
        const double factor = l->cumulative ? 1.0 / (double)batches[b] : l->momentum;
        batchnorm_update_running(buffers + net->buffers[l->first_buffer].offset,
                                 buffers + net->buffers[l->first_buffer + 1].offset, stats + off,
                                 stats + off + l->in, l->in, factor);
        off += 2 * (size_t)l->in;
        b++;
    }
}

int input_transform_parse(InputTransform *t, const char *text, int channels, char *canonical,
                          size_t n)
{
    memset(t, 0, sizeof *t);
    if (!text || strcmp(text, "none") == 0) {
        snprintf(canonical, n, "none");
        return 0;
    }
    double v[2 * MODEL_MAX_CHANNELS];
    int k = 0;
    const char *p = text;
    while (*p) {
        char *end;
        if (k == 2 * MODEL_MAX_CHANNELS || !(*p == '-' || *p == '.' || (*p >= '0' && *p <= '9')))
            return err_set("--normalize %s: expected MEAN,STD for each of the %d channel%s, or "
                           "none",
                           text, channels, channels == 1 ? "" : "s");
        v[k] = strtod(p, &end);
        if (end == p || !isfinite(v[k]) || (*end && *end != ','))
            return err_set("--normalize %s: '%.*s' is not a number", text, (int)strcspn(p, ","), p);
        k++;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p)
            return err_set("--normalize %s: a value is missing after the last comma", text);
    }
    if (k != 2 * channels)
        return err_set("--normalize %s: %d value%s, but the data has %d channel%s: give MEAN,STD "
                       "for each",
                       text, k, k == 1 ? "" : "s", channels, channels == 1 ? "" : "s");
    size_t at = 0;
    for (int c = 0; c < channels; c++) {
        t->mean[c] = (float)v[2 * c];
        t->std[c] = (float)v[2 * c + 1];
        if (!(t->std[c] > 0))
            return err_set("--normalize %s: the standard deviation of channel %d must be > 0",
                           text, c);
        at += (size_t)snprintf(canonical + at, at < n ? n - at : 0, "%s%.9g,%.9g", c ? "," : "",
                               (double)t->mean[c], (double)t->std[c]);
    }
    t->normalize = 1;
    return 0;
}
