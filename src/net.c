/* The network as data: parsing a description, checking its shapes, laying out
 * its tensors (net.h, doc/models.md).
 *
 * Each layer kind is one row of `kinds` below: its torch.nn name, its
 * arguments (names, types and defaults in torch.nn's order), and the three
 * functions that check the arguments, infer the output shape (and refuse what
 * does not fit) and print the canonical form. Adding a kind is a row, three
 * small functions, and its kernels. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/net.h"
#include "dpcnn/rng.h"

/* ------------------------------------------------------------ built-ins */

/* The built-in networks: data/models/NAME.txt, compiled in by the build
 * (models-builtin.h is generated from those files) and installed as files. */
static const struct {
    const char *name, *text;
} builtins[] = {
#include "models-builtin.h"
};

const char *net_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp(builtins[i].name, name) == 0)
            return builtins[i].text;
    return NULL;
}

const char *net_builtin_names(void)
{
    return "tutorial, bn, lenet5";
}

/* ------------------------------------------------------------ arguments */

typedef enum { A_INT, A_INT2, A_REAL, A_BOOL, A_STR, A_INT_NONE, A_INT2_NONE, A_REAL_NONE } ArgType;

typedef struct {
    const char *name;
    ArgType type;
    const char *dflt; /* as written in Python; NULL: required */
} ArgSpec;

/* A value as written: a number, True/False, None, a string, or a tuple. */
typedef struct {
    enum { V_NUM, V_BOOL, V_NONE, V_STR, V_TUPLE } kind;
    double num;
    int integral;
    long long tuple[4];
    int ntuple;
    char str[32];
} Value;

#define MAX_ARGS 12

typedef struct {
    Value v[MAX_ARGS];
    int given[MAX_ARGS];
} Args;

typedef struct Kind Kind;
typedef struct {
    const char *source;
    int line;
    const char *layer; /* the layer as written, for messages */
} Where;

struct Kind {
    const char *name;
    LayerType type;
    ArgSpec args[MAX_ARGS];
    int (*take)(Layer *l, const Args *a, const Where *w);
};

static int __attribute__((format(printf, 2, 3))) bad(const Where *w, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set("%s, line %d: %s: %s", w->source, w->line, w->layer, msg);
}

/* The argument's value as an int (a tuple of equal ints counts as one). */
static long long int_of(const Value *v)
{
    return v->kind == V_TUPLE ? v->tuple[0] : (long long)v->num;
}

static int is_none(const Value *v) { return v->kind == V_NONE; }
static int truth(const Value *v) { return v->kind == V_BOOL && v->num != 0; }

/* Check a value against its type; the message names the argument. */
static int check_type(const Value *v, const ArgSpec *s, const Where *w)
{
    const int none_ok = s->type == A_INT_NONE || s->type == A_INT2_NONE || s->type == A_REAL_NONE;
    if (v->kind == V_NONE) {
        if (none_ok)
            return 0;
        return bad(w, "%s cannot be None", s->name);
    }
    switch (s->type) {
    case A_INT:
    case A_INT_NONE:
        if (v->kind != V_NUM || !v->integral)
            return bad(w, "%s must be a whole number", s->name);
        return 0;
    case A_INT2:
    case A_INT2_NONE:
        if (v->kind == V_TUPLE) {
            for (int k = 1; k < v->ntuple; k++)
                if (v->tuple[k] != v->tuple[0])
                    return bad(w, "%s (%lld, %lld): dpcnn supports square kernels, strides and "
                                  "padding only (give one number)",
                               s->name, v->tuple[0], v->tuple[k]);
            return 0;
        }
        if (v->kind == V_STR)
            return bad(w, "%s='%s' is not supported (give a number)", s->name, v->str);
        if (v->kind != V_NUM || !v->integral)
            return bad(w, "%s must be a whole number or a tuple of them", s->name);
        return 0;
    case A_REAL:
    case A_REAL_NONE:
        if (v->kind != V_NUM)
            return bad(w, "%s must be a number", s->name);
        return 0;
    case A_BOOL:
        if (v->kind != V_BOOL)
            return bad(w, "%s must be True or False", s->name);
        return 0;
    case A_STR:
        if (v->kind != V_STR)
            return bad(w, "%s must be a quoted string", s->name);
        return 0;
    }
    return 0;
}

/* --------------------------------------------------------------- lexing */

typedef struct {
    const char *p;
} Lex;

static void skip_space(Lex *x)
{
    while (*x->p == ' ' || *x->p == '\t' || *x->p == '\r')
        x->p++;
}

static int ident(Lex *x, char *out, size_t n)
{
    skip_space(x);
    size_t k = 0;
    if (!(isalpha((unsigned char)*x->p) || *x->p == '_'))
        return 0;
    while (isalnum((unsigned char)*x->p) || *x->p == '_') {
        if (k + 1 < n)
            out[k++] = *x->p;
        x->p++;
    }
    out[k] = '\0';
    return 1;
}

static int number(Lex *x, double *v, int *integral)
{
    skip_space(x);
    const char *s = x->p;
    if (*s == '-' || *s == '+')
        s++;
    if (!(isdigit((unsigned char)*s) || (*s == '.' && isdigit((unsigned char)s[1]))))
        return 0;
    char *end;
    errno = 0;
    *v = strtod(x->p, &end);
    if (errno || end == x->p)
        return 0;
    *integral = 1;
    for (const char *c = x->p; c < end; c++)
        if (*c == '.' || *c == 'e' || *c == 'E' || *c == 'x' || *c == 'X' || *c == 'n' ||
            *c == 'i')
            *integral = 0;
    if (*integral && fabs(*v) > 1e9)
        return 0;
    x->p = end;
    return 1;
}

/* Where the parser stopped, for messages. */
static const char *here(const char *p)
{
    static _Thread_local char buf[40];
    if (!*p || *p == '\n')
        return "the end of the line";
    size_t n = strcspn(p, "\n");
    snprintf(buf, sizeof buf, "'%.*s'", (int)(n < 16 ? n : 16), p);
    return buf;
}

/* value: number | True | False | None | 'str' | (n, n, ...) */
static int value(Lex *x, Value *v, const Where *w)
{
    memset(v, 0, sizeof *v);
    skip_space(x);
    if (*x->p == '(') {
        x->p++;
        v->kind = V_TUPLE;
        for (;;) {
            double d;
            int integral;
            skip_space(x);
            if (*x->p == ')' && v->ntuple > 0) {
                x->p++;
                return 0;
            }
            if (!number(x, &d, &integral) || !integral)
                return bad(w, "a tuple holds whole numbers");
            if (v->ntuple == 4)
                return bad(w, "a tuple of more than four numbers");
            v->tuple[v->ntuple++] = (long long)d;
            skip_space(x);
            if (*x->p == ',')
                x->p++;
            else if (*x->p != ')')
                return bad(w, "expected ',' or ')' in a tuple at %s", here(x->p));
        }
    }
    if (*x->p == '\'' || *x->p == '"') {
        const char q = *x->p++;
        size_t k = 0;
        while (*x->p && *x->p != q && *x->p != '\n') {
            if (k + 1 < sizeof v->str)
                v->str[k++] = *x->p;
            x->p++;
        }
        if (*x->p != q)
            return bad(w, "an unterminated string");
        x->p++;
        v->str[k] = '\0';
        v->kind = V_STR;
        return 0;
    }
    double d;
    int integral;
    if (number(x, &d, &integral)) {
        v->kind = V_NUM;
        v->num = d;
        v->integral = integral;
        return 0;
    }
    char word[32];
    const char *at = x->p;
    if (ident(x, word, sizeof word)) {
        if (strcmp(word, "True") == 0 || strcmp(word, "False") == 0) {
            v->kind = V_BOOL;
            v->num = word[0] == 'T';
            return 0;
        }
        if (strcmp(word, "None") == 0) {
            v->kind = V_NONE;
            return 0;
        }
        return bad(w, "'%s' is not a value (numbers, True, False, None, 'strings' or tuples)",
                   word);
    }
    return bad(w, "expected a value at %s", here(at));
}

/* Levenshtein distance, for "did you mean". */
static int distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 40 || m > 40)
        return 99;
    int d[41][41];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int c = d[i - 1][j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = c < del ? (c < ins ? c : ins) : (del < ins ? del : ins);
        }
    return d[n][m];
}

/* ------------------------------------------------------- the layer kinds */

#define NONE_ARG {NULL, 0, NULL}

static int take_conv(Layer *l, const Args *a, const Where *w)
{
    l->in = (int)int_of(&a->v[0]);
    l->out = (int)int_of(&a->v[1]);
    l->kernel = (int)int_of(&a->v[2]);
    l->stride = (int)int_of(&a->v[3]);
    l->padding = (int)int_of(&a->v[4]);
    l->bias = truth(&a->v[7]);
    if (l->in < 1 || l->out < 1)
        return bad(w, "in_channels and out_channels must be >= 1");
    if (l->kernel < 1 || l->stride < 1 || l->padding < 0)
        return bad(w, "kernel_size and stride must be >= 1, padding >= 0");
    if (int_of(&a->v[5]) != 1)
        return bad(w, "dilation=%lld is not supported (1 only)", int_of(&a->v[5]));
    if (int_of(&a->v[6]) != 1)
        return bad(w, "groups=%lld is not supported (1 only)", int_of(&a->v[6]));
    if (strcmp(a->v[8].str, "zeros") != 0)
        return bad(w, "padding_mode='%s' is not supported ('zeros' only)", a->v[8].str);
    return 0;
}

static int take_pool(Layer *l, const Args *a, const Where *w)
{
    l->kernel = (int)int_of(&a->v[0]);
    l->stride = is_none(&a->v[1]) ? l->kernel : (int)int_of(&a->v[1]);
    if (l->kernel < 1 || l->stride < 1)
        return bad(w, "kernel_size and stride must be >= 1");
    if (int_of(&a->v[2]) != 0)
        return bad(w, "padding=%lld is not supported (0 only)", int_of(&a->v[2]));
    if (l->type == LAYER_MAXPOOL2D) {
        if (int_of(&a->v[3]) != 1)
            return bad(w, "dilation=%lld is not supported (1 only)", int_of(&a->v[3]));
        if (truth(&a->v[4]))
            return bad(w, "return_indices=True is not supported");
        if (truth(&a->v[5]))
            return bad(w, "ceil_mode=True is not supported (PyTorch's default floor rule only)");
    } else {
        if (truth(&a->v[3]))
            return bad(w, "ceil_mode=True is not supported (PyTorch's default floor rule only)");
        if (!is_none(&a->v[5]))
            return bad(w, "divisor_override is not supported");
    }
    return 0;
}

static int take_none(Layer *l, const Args *a, const Where *w)
{
    (void)l, (void)a, (void)w;
    return 0;
}

static int take_flatten(Layer *l, const Args *a, const Where *w)
{
    (void)l;
    if (int_of(&a->v[0]) != 1 || int_of(&a->v[1]) != -1)
        return bad(w, "only Flatten(start_dim=1, end_dim=-1) is supported");
    return 0;
}

static int take_linear(Layer *l, const Args *a, const Where *w)
{
    l->in = (int)int_of(&a->v[0]);
    l->out = (int)int_of(&a->v[1]);
    l->bias = truth(&a->v[2]);
    if (l->in < 1 || l->out < 1)
        return bad(w, "in_features and out_features must be >= 1");
    return 0;
}

static int take_batchnorm(Layer *l, const Args *a, const Where *w)
{
    l->in = l->out = (int)int_of(&a->v[0]);
    l->eps = a->v[1].num;
    l->cumulative = is_none(&a->v[2]);
    l->momentum = l->cumulative ? 0.0 : a->v[2].num;
    if (l->in < 1)
        return bad(w, "num_features must be >= 1");
    if (!(l->eps > 0) || !isfinite(l->eps))
        return bad(w, "eps must be a positive number");
    if (!l->cumulative && !(l->momentum >= 0 && l->momentum <= 1))
        return bad(w, "momentum must be in [0, 1] or None");
    if (!truth(&a->v[3]))
        return bad(w, "affine=False is not supported");
    if (!truth(&a->v[4]))
        return bad(w, "track_running_stats=False is not supported");
    return 0;
}

static int take_dropout(Layer *l, const Args *a, const Where *w)
{
    l->p = a->v[0].num;
    if (!(l->p >= 0 && l->p <= 1))
        return bad(w, "p must be in [0, 1], got %g", l->p);
    return 0;
}

static const Kind kinds[] = {
    {"Conv2d", LAYER_CONV2D,
     {{"in_channels", A_INT, NULL}, {"out_channels", A_INT, NULL}, {"kernel_size", A_INT2, NULL},
      {"stride", A_INT2, "1"}, {"padding", A_INT2, "0"}, {"dilation", A_INT2, "1"},
      {"groups", A_INT, "1"}, {"bias", A_BOOL, "True"}, {"padding_mode", A_STR, "'zeros'"},
      NONE_ARG},
     take_conv},
    {"MaxPool2d", LAYER_MAXPOOL2D,
     {{"kernel_size", A_INT2, NULL}, {"stride", A_INT2_NONE, "None"}, {"padding", A_INT2, "0"},
      {"dilation", A_INT2, "1"}, {"return_indices", A_BOOL, "False"},
      {"ceil_mode", A_BOOL, "False"}, NONE_ARG},
     take_pool},
    {"AvgPool2d", LAYER_AVGPOOL2D,
     {{"kernel_size", A_INT2, NULL}, {"stride", A_INT2_NONE, "None"}, {"padding", A_INT2, "0"},
      {"ceil_mode", A_BOOL, "False"}, {"count_include_pad", A_BOOL, "True"},
      {"divisor_override", A_INT_NONE, "None"}, NONE_ARG},
     take_pool},
    {"ReLU", LAYER_RELU, {{"inplace", A_BOOL, "False"}, NONE_ARG}, take_none},
    {"Flatten", LAYER_FLATTEN, {{"start_dim", A_INT, "1"}, {"end_dim", A_INT, "-1"}, NONE_ARG},
     take_flatten},
    {"Linear", LAYER_LINEAR,
     {{"in_features", A_INT, NULL}, {"out_features", A_INT, NULL}, {"bias", A_BOOL, "True"},
      NONE_ARG},
     take_linear},
    {"BatchNorm2d", LAYER_BATCHNORM2D,
     {{"num_features", A_INT, NULL}, {"eps", A_REAL, "1e-05"}, {"momentum", A_REAL_NONE, "0.1"},
      {"affine", A_BOOL, "True"}, {"track_running_stats", A_BOOL, "True"}, NONE_ARG},
     take_batchnorm},
    {"BatchNorm1d", LAYER_BATCHNORM1D,
     {{"num_features", A_INT, NULL}, {"eps", A_REAL, "1e-05"}, {"momentum", A_REAL_NONE, "0.1"},
      {"affine", A_BOOL, "True"}, {"track_running_stats", A_BOOL, "True"}, NONE_ARG},
     take_batchnorm},
    {"Dropout", LAYER_DROPOUT, {{"p", A_REAL, "0.5"}, {"inplace", A_BOOL, "False"}, NONE_ARG},
     take_dropout},
};
#define NKINDS ((int)(sizeof kinds / sizeof kinds[0]))

const char *layer_kind_name(LayerType type)
{
    for (int k = 0; k < NKINDS; k++)
        if (kinds[k].type == type)
            return kinds[k].name;
    return "?";
}

static int nargs(const Kind *k)
{
    int n = 0;
    while (n < MAX_ARGS && k->args[n].name)
        n++;
    return n;
}

/* ---------------------------------------------------------------- parse */

/* One layer line: [(NAME):] Kind(args). */
static int parse_layer(Net *net, Lex *x, const Where *w0, int position)
{
    Where w = *w0;
    Layer *l = &net->layers[net->nlayers];
    memset(l, 0, sizeof *l);
    l->line = w.line;
    l->first_tensor = l->first_buffer = -1;
    snprintf(l->name, sizeof l->name, "%d", position);
    skip_space(x);
    if (*x->p == '(') {
        x->p++;
        skip_space(x);
        size_t k = 0;
        char name[NET_NAME_MAX + 1];
        while (isalnum((unsigned char)*x->p) || *x->p == '_') {
            if (k < NET_NAME_MAX)
                name[k++] = *x->p;
            x->p++;
        }
        name[k] = '\0';
        skip_space(x);
        if (k == 0 || *x->p != ')')
            return bad(&w, "a layer name is letters, digits and _ in parentheses: (conv1): ...");
        if (k >= NET_NAME_MAX)
            return bad(&w, "the layer name is longer than %d characters", NET_NAME_MAX - 1);
        x->p++;
        skip_space(x);
        if (*x->p != ':')
            return bad(&w, "expected ':' after the layer name (%s)", name);
        x->p++;
        memcpy(l->name, name, k + 1);
    }
    char kname[64];
    if (!ident(x, kname, sizeof kname))
        return bad(&w, "expected a layer such as Conv2d(...) at %s", here(x->p));
    w.layer = kname;
    const Kind *kind = NULL;
    for (int k = 0; k < NKINDS && !kind; k++)
        if (strcmp(kinds[k].name, kname) == 0)
            kind = &kinds[k];
    if (!kind) {
        int best = 0;
        for (int k = 1; k < NKINDS; k++)
            if (distance(kname, kinds[k].name) < distance(kname, kinds[best].name))
                best = k;
        char known[256] = "";
        for (int k = 0; k < NKINDS; k++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "",
                     kinds[k].name);
        if (distance(kname, kinds[best].name) <= 3)
            return err_set("%s, line %d: unknown layer '%s' (did you mean %s?)", w.source,
                           w.line, kname, kinds[best].name);
        return err_set("%s, line %d: unknown layer '%s' (dpcnn knows %s)", w.source, w.line,
                       kname, known);
    }
    l->type = kind->type;
    skip_space(x);
    if (*x->p != '(')
        return bad(&w, "expected '(' after %s", kname);
    x->p++;
    Args a;
    memset(&a, 0, sizeof a);
    const int n = nargs(kind);
    int positional = 0, keywords = 0;
    for (;;) {
        skip_space(x);
        if (*x->p == ')') {
            x->p++;
            break;
        }
        /* keyword=value, or a positional value */
        Lex look = *x;
        char key[64];
        int slot = -1;
        if (ident(&look, key, sizeof key) && (skip_space(&look), *look.p == '=')) {
            for (int k = 0; k < n && slot < 0; k++)
                if (strcmp(kind->args[k].name, key) == 0)
                    slot = k;
            if (slot < 0) {
                int best = 0;
                for (int k = 1; k < n; k++)
                    if (distance(key, kind->args[k].name) < distance(key, kind->args[best].name))
                        best = k;
                if (n > 0 && distance(key, kind->args[best].name) <= 3)
                    return bad(&w, "unknown argument '%s' (did you mean %s?)", key,
                               kind->args[best].name);
                return bad(&w, "unknown argument '%s'", key);
            }
            if (a.given[slot])
                return bad(&w, "%s is given twice", key);
            x->p = look.p + 1;
            keywords++;
        } else {
            if (keywords)
                return bad(&w, "a positional argument after keyword arguments");
            if (positional >= n)
                return bad(&w, "takes at most %d argument%s", n, n == 1 ? "" : "s");
            slot = positional++;
        }
        if (value(x, &a.v[slot], &w) < 0)
            return -1;
        if (check_type(&a.v[slot], &kind->args[slot], &w) < 0)
            return -1;
        a.given[slot] = 1;
        skip_space(x);
        if (*x->p == ',') {
            x->p++;
            continue;
        }
        if (*x->p != ')')
            return bad(&w, "expected ',' or ')' at %s", here(x->p));
    }
    /* defaults, and what is required */
    for (int k = 0; k < n; k++) {
        if (a.given[k])
            continue;
        if (!kind->args[k].dflt)
            return bad(&w, "missing %s", kind->args[k].name);
        Lex d = {kind->args[k].dflt};
        Where dw = w;
        if (value(&d, &a.v[k], &dw) < 0)
            return -1;
    }
    return kind->take(l, &a, &w);
}

int net_parse(Net *net, const char *text, const char *source)
{
    memset(net, 0, sizeof *net);
    Lex x = {text};
    int line = 1, wrapped = 0, closed = 0;
    while (*x.p) {
        Where w = {source, line, "the description"};
        skip_space(&x);
        if (*x.p == '#') /* a comment to the end of the line */
            while (*x.p && *x.p != '\n')
                x.p++;
        if (*x.p == '\n' || !*x.p) {
            if (*x.p)
                x.p++;
            line++;
            continue;
        }
        if (closed)
            return err_set("%s, line %d: text after the closing ')' of Sequential(", source,
                           line);
        Lex look = x;
        char word[32];
        if (net->nlayers == 0 && !wrapped && ident(&look, word, sizeof word) &&
            strcmp(word, "Sequential") == 0 && (skip_space(&look), *look.p == '(')) {
            x.p = look.p + 1;
            wrapped = 1;
        } else if (*x.p == ')' && wrapped) {
            x.p++;
            closed = 1;
        } else {
            if (net->nlayers == NET_MAX_LAYERS)
                return err_set("%s, line %d: more than %d layers", source, line, NET_MAX_LAYERS);
            if (parse_layer(net, &x, &w, net->nlayers) < 0)
                return -1;
            net->nlayers++;
        }
        skip_space(&x);
        if (*x.p == '#')
            while (*x.p && *x.p != '\n')
                x.p++;
        if (*x.p && *x.p != '\n')
            return err_set("%s, line %d: unexpected text %s after the layer", source, line,
                           here(x.p));
    }
    if (wrapped && !closed)
        return err_set("%s: Sequential( is not closed with ')'", source);
    if (net->nlayers == 0)
        return err_set("%s: no layers (one per line, e.g. Conv2d(1, 6, 5))", source);
    for (int i = 0; i < net->nlayers; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(net->layers[i].name, net->layers[j].name) == 0)
                return err_set("%s, line %d: the name '%s' is already the name of line %d",
                               source, net->layers[i].line, net->layers[i].name,
                               net->layers[j].line);
    return 0;
}

/* ---------------------------------------------------------------- build */

static void shape_text(char *buf, size_t n, Shape s)
{
    if (s.flat)
        snprintf(buf, n, "%d", s.c);
    else
        snprintf(buf, n, "%dx%dx%d", s.c, s.h, s.w);
}

static int add_tensor(Net *net, const Layer *l, int li, const char *what, int ndim, const int *shape,
                      int fan_in, float fill, int buffer)
{
    TensorInfo *list = buffer ? net->buffers : net->tensors;
    int *count = buffer ? &net->nbuffers : &net->ntensors;
    size_t *total = buffer ? &net->nbuffer_floats : &net->nparams;
    if (*count == NET_MAX_TENSORS)
        return err_set("too many tensors");
    TensorInfo *t = &list[(*count)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s.%s", l->name, what);
    t->ndim = ndim;
    t->count = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->count *= (size_t)shape[d];
    }
    t->offset = *total;
    *total += t->count;
    t->fan_in = fan_in;
    t->fill = fill;
    t->layer = li;
    return 0;
}

/* Shortest decimal that reads back as the same double, as Python's repr. */
static void real_text(char *buf, size_t n, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".en")) /* 1 -> 1.0, as Python prints a float */
        snprintf(buf + strlen(buf), n - strlen(buf), ".0");
}

/* The layer as print(model) shows it. */
static void layer_text(char *buf, size_t n, const Layer *l)
{
    char a[32], b[32];
    switch (l->type) {
    case LAYER_CONV2D:
        snprintf(buf, n, "Conv2d(%d, %d, kernel_size=(%d, %d), stride=(%d, %d)", l->in, l->out,
                 l->kernel, l->kernel, l->stride, l->stride);
        if (l->padding)
            snprintf(buf + strlen(buf), n - strlen(buf), ", padding=(%d, %d)", l->padding,
                     l->padding);
        snprintf(buf + strlen(buf), n - strlen(buf), "%s)", l->bias ? "" : ", bias=False");
        break;
    case LAYER_MAXPOOL2D:
        snprintf(buf, n, "MaxPool2d(kernel_size=%d, stride=%d, padding=0, dilation=1, "
                         "ceil_mode=False)",
                 l->kernel, l->stride);
        break;
    case LAYER_AVGPOOL2D:
        snprintf(buf, n, "AvgPool2d(kernel_size=%d, stride=%d, padding=0)", l->kernel, l->stride);
        break;
    case LAYER_RELU: snprintf(buf, n, "ReLU()"); break;
    case LAYER_FLATTEN: snprintf(buf, n, "Flatten(start_dim=1, end_dim=-1)"); break;
    case LAYER_LINEAR:
        snprintf(buf, n, "Linear(in_features=%d, out_features=%d, bias=%s)", l->in, l->out,
                 l->bias ? "True" : "False");
        break;
    case LAYER_BATCHNORM2D:
    case LAYER_BATCHNORM1D:
        real_text(a, sizeof a, l->eps);
        if (l->cumulative)
            snprintf(b, sizeof b, "None");
        else
            real_text(b, sizeof b, l->momentum);
        snprintf(buf, n, "BatchNorm%s(%d, eps=%s, momentum=%s, affine=True, "
                         "track_running_stats=True)",
                 l->type == LAYER_BATCHNORM2D ? "2d" : "1d", l->in, a, b);
        break;
    case LAYER_DROPOUT:
        real_text(a, sizeof a, l->p);
        snprintf(buf, n, "Dropout(p=%s, inplace=False)", a);
        break;
    default: snprintf(buf, n, "?"); break;
    }
}

static void layer_short(char *buf, size_t n, const Layer *l);

int net_build(Net *net, Shape input, int classes, const char *source)
{
    net->input = input;
    net->classes = classes;
    net->ntensors = net->nbuffers = 0;
    net->nparams = net->nbuffer_floats = 0;
    net->nbatchnorm = 0;
    net->bn_channels = 0;
    net->flops = 0;
    Shape s = input;
    char have[64], line[256];
    for (int i = 0; i < net->nlayers; i++) {
        Layer *l = &net->layers[i];
        layer_short(line, sizeof line, l);
        Where w = {source, l->line, line};
        shape_text(have, sizeof have, s);
        const char *from = i == 0 ? "the input" : "the layer before";
        l->in_shape = s;
        const size_t count = shape_count(s);
        switch (l->type) {
        case LAYER_CONV2D: {
            if (s.flat)
                return bad(&w, "expects a feature map [C,H,W], but its input is flat (%s "
                               "values)",
                           have);
            if (s.c != l->in)
                return bad(&w, "expects %d input channels, but %s has %d (%s)", l->in, from, s.c,
                           have);
            const int h = s.h + 2 * l->padding, wd = s.w + 2 * l->padding;
            if (l->kernel > h || l->kernel > wd)
                return bad(&w, "kernel %d is larger than its input %dx%d%s", l->kernel, s.h, s.w,
                           l->padding ? " with its padding" : "");
            Shape o = {l->out, (h - l->kernel) / l->stride + 1, (wd - l->kernel) / l->stride + 1,
                       0};
            const int fan = l->in * l->kernel * l->kernel;
            int ws[4] = {l->out, l->in, l->kernel, l->kernel};
            l->first_tensor = net->ntensors;
            if (add_tensor(net, l, i, "weight", 4, ws, fan, 0, 0) < 0 ||
                (l->bias && add_tensor(net, l, i, "bias", 1, &l->out, fan, 0, 0) < 0))
                return -1;
            l->flops = 2LL * fan * (long long)shape_count(o);
            s = o;
            break;
        }
        case LAYER_MAXPOOL2D:
        case LAYER_AVGPOOL2D:
            if (s.flat)
                return bad(&w, "expects a feature map [C,H,W], but its input is flat (%s "
                               "values)",
                           have);
            if (l->kernel > s.h || l->kernel > s.w)
                return bad(&w, "kernel %d is larger than its input %dx%d", l->kernel, s.h, s.w);
            s.h = (s.h - l->kernel) / l->stride + 1;
            s.w = (s.w - l->kernel) / l->stride + 1;
            l->flops = (long long)l->kernel * l->kernel * (long long)shape_count(s);
            break;
        case LAYER_RELU:
        case LAYER_DROPOUT:
            l->flops = (long long)count;
            break;
        case LAYER_FLATTEN:
            s = (Shape){(int)count, 1, 1, 1};
            break;
        case LAYER_LINEAR: {
            if (!s.flat)
                return bad(&w, "expects a flat input, but %s gives %s: add Flatten() before it",
                           from, have);
            if (s.c != l->in)
                return bad(&w, "in_features is %d, but its input has %d values (%s): use "
                               "Linear(%d, %d)",
                           l->in, s.c, i == 0 ? "the input" : "the flattened size", s.c, l->out);
            int ws[2] = {l->out, l->in};
            l->first_tensor = net->ntensors;
            if (add_tensor(net, l, i, "weight", 2, ws, l->in, 0, 0) < 0 ||
                (l->bias && add_tensor(net, l, i, "bias", 1, &l->out, l->in, 0, 0) < 0))
                return -1;
            l->flops = 2LL * l->in * l->out;
            s = (Shape){l->out, 1, 1, 1};
            break;
        }
        case LAYER_BATCHNORM2D:
        case LAYER_BATCHNORM1D: {
            const int two_d = l->type == LAYER_BATCHNORM2D;
            if (two_d && s.flat)
                return bad(&w, "expects a feature map [C,H,W], but its input is flat (%s "
                               "values): use BatchNorm1d",
                           have);
            if (!two_d && !s.flat)
                return bad(&w, "expects a flat input [N,%d], but %s gives %s: use BatchNorm2d, "
                               "or Flatten() before it",
                           l->in, from, have);
            if (s.c != l->in)
                return bad(&w, "num_features is %d, but its input has %d %s (%s)", l->in, s.c,
                           two_d ? "channels" : "features", have);
            l->first_tensor = net->ntensors;
            l->first_buffer = net->nbuffers;
            if (add_tensor(net, l, i, "weight", 1, &l->in, 0, 1.0f, 0) < 0 ||
                add_tensor(net, l, i, "bias", 1, &l->in, 0, 0.0f, 0) < 0 ||
                add_tensor(net, l, i, "running_mean", 1, &l->in, 0, 0.0f, 1) < 0 ||
                add_tensor(net, l, i, "running_var", 1, &l->in, 0, 1.0f, 1) < 0)
                return -1;
            net->nbatchnorm++;
            net->bn_channels += (size_t)l->in;
            l->flops = 2LL * (long long)count;
            break;
        }
        default: return bad(&w, "unknown layer kind");
        }
        l->out_shape = s;
        net->flops += l->flops;
    }
    shape_text(have, sizeof have, s);
    if (classes <= 0 && s.flat) /* --print-model without data: any number of classes */
        net->classes = classes = s.c;
    if (!s.flat || s.c != classes) {
        const Layer *last = &net->layers[net->nlayers - 1];
        return err_set("%s, line %d: the network ends with %s values, but the data has %d "
                       "classes: the last layer must give a flat %d (e.g. Linear(..., %d))",
                       source, last->line, have, classes, classes, classes);
    }
    /* the canonical text: what print(nn.Sequential(OrderedDict(...))) shows */
    size_t at = (size_t)snprintf(net->text, sizeof net->text, "Sequential(\n");
    for (int i = 0; i < net->nlayers && at < sizeof net->text; i++) {
        layer_text(line, sizeof line, &net->layers[i]);
        at += (size_t)snprintf(net->text + at, sizeof net->text - at, "  (%s): %s\n",
                               net->layers[i].name, line);
    }
    if (at + 3 >= sizeof net->text)
        return err_set("%s: the description is too long", source);
    snprintf(net->text + at, sizeof net->text - at, ")\n");
    return 0;
}

int net_load(Net *net, const char *name_or_file, Shape input, int classes)
{
    const char *text = net_builtin(name_or_file);
    char *owned = NULL;
    if (!text) {
        if (!strchr(name_or_file, '/') && !strchr(name_or_file, '.') && !fs_exists(name_or_file))
            return err_set("--model %s: no such built-in network (%s) or file", name_or_file,
                           net_builtin_names());
        if (fs_check_input(name_or_file, "the model description") < 0)
            return -1;
        FILE *f = fopen(name_or_file, "r");
        if (!f)
            return err_set("%s: cannot read: %s", name_or_file, strerror(errno));
        owned = XCALLOC(char, NET_TEXT_MAX + 1);
        size_t n = fread(owned, 1, NET_TEXT_MAX + 1, f);
        fclose(f);
        if (n > NET_TEXT_MAX) {
            free(owned);
            return err_set("%s: longer than %d bytes: not a model description?", name_or_file,
                           NET_TEXT_MAX);
        }
        if (memchr(owned, '\0', n)) {
            free(owned);
            return err_set("%s: holds a NUL byte: not a model description", name_or_file);
        }
        owned[n] = '\0';
        text = owned;
    }
    int rc = net_parse(net, text, name_or_file);
    if (rc == 0)
        rc = net_build(net, input, classes, name_or_file);
    free(owned);
    return rc;
}

/* --------------------------------------------------------------- others */

int net_tensor_index(const Net *net, const char *name)
{
    for (int t = 0; t < net->ntensors; t++)
        if (strcmp(net->tensors[t].name, name) == 0)
            return t;
    return -1;
}

int net_buffer_index(const Net *net, const char *name)
{
    for (int t = 0; t < net->nbuffers; t++)
        if (strcmp(net->buffers[t].name, name) == 0)
            return t;
    return -1;
}

void net_init(const Net *net, float *params, float *buffers, int64_t *batches, uint64_t seed)
{
    for (int t = 0; t < net->ntensors; t++) {
        const TensorInfo *ti = &net->tensors[t];
        if (ti->fan_in == 0) {
            for (size_t i = 0; i < ti->count; i++)
                params[ti->offset + i] = ti->fill;
            continue;
        }
        const float bound = (float)(1.0 / sqrt((double)ti->fan_in));
        Rng rng;
        rng_init(&rng, seed, RNG_STREAM_INIT, (uint64_t)t);
        for (size_t i = 0; i < ti->count; i++)
            params[ti->offset + i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    }
    for (int t = 0; t < net->nbuffers; t++)
        for (size_t i = 0; i < net->buffers[t].count; i++)
            buffers[net->buffers[t].offset + i] = net->buffers[t].fill;
    for (int b = 0; b < net->nbatchnorm; b++)
        batches[b] = 0;
}

static void count_text(char *buf, size_t n, long long v)
{
    /* 1234567 -> 1,234,567 */
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", v);
    size_t len = strlen(raw), k = 0;
    for (size_t i = 0; i < len && k + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[k++] = ',';
        buf[k++] = raw[i];
    }
    buf[k] = '\0';
}

/* The layer in short, for the table: its non-default arguments only. */
static void layer_short(char *buf, size_t n, const Layer *l)
{
    char a[32];
    switch (l->type) {
    case LAYER_CONV2D:
        snprintf(buf, n, "Conv2d(%d, %d, %d", l->in, l->out, l->kernel);
        if (l->stride != 1)
            snprintf(buf + strlen(buf), n - strlen(buf), ", stride=%d", l->stride);
        if (l->padding)
            snprintf(buf + strlen(buf), n - strlen(buf), ", padding=%d", l->padding);
        snprintf(buf + strlen(buf), n - strlen(buf), "%s)", l->bias ? "" : ", bias=False");
        break;
    case LAYER_MAXPOOL2D:
    case LAYER_AVGPOOL2D:
        snprintf(buf, n, "%s(%d, %d)", l->type == LAYER_MAXPOOL2D ? "MaxPool2d" : "AvgPool2d",
                 l->kernel, l->stride);
        break;
    case LAYER_LINEAR:
        snprintf(buf, n, "Linear(%d, %d%s)", l->in, l->out, l->bias ? "" : ", bias=False");
        break;
    case LAYER_BATCHNORM2D:
    case LAYER_BATCHNORM1D:
        snprintf(buf, n, "BatchNorm%s(%d", l->type == LAYER_BATCHNORM2D ? "2d" : "1d", l->in);
        if (l->eps != 1e-5) {
            real_text(a, sizeof a, l->eps);
            snprintf(buf + strlen(buf), n - strlen(buf), ", eps=%s", a);
        }
        if (l->cumulative || l->momentum != 0.1) {
            if (l->cumulative)
                snprintf(a, sizeof a, "None");
            else
                real_text(a, sizeof a, l->momentum);
            snprintf(buf + strlen(buf), n - strlen(buf), ", momentum=%s", a);
        }
        snprintf(buf + strlen(buf), n - strlen(buf), ")");
        break;
    case LAYER_DROPOUT:
        real_text(a, sizeof a, l->p);
        snprintf(buf, n, "Dropout(p=%s)", a);
        break;
    case LAYER_RELU: snprintf(buf, n, "ReLU()"); break;
    case LAYER_FLATTEN: snprintf(buf, n, "Flatten()"); break;
    default: snprintf(buf, n, "?"); break;
    }
}

void net_print(FILE *f, const Net *net)
{
    char shape[64], params[32], flops[32], line[256];
    shape_text(shape, sizeof shape, net->input);
    fprintf(f, "%-8s %-36s %10s %11s %12s\n", "name", "layer", "output", "parameters",
            "FLOPs/sample");
    fprintf(f, "%-8s %-36s %10s\n", "", "input", shape);
    long long total_params = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const Layer *l = &net->layers[i];
        long long p = 0;
        for (int t = 0; t < net->ntensors; t++)
            if (net->tensors[t].layer == i)
                p += (long long)net->tensors[t].count;
        total_params += p;
        layer_short(line, sizeof line, l);
        shape_text(shape, sizeof shape, l->out_shape);
        count_text(params, sizeof params, p);
        count_text(flops, sizeof flops, l->flops);
        fprintf(f, "%-8s %-36s %10s %11s %12s\n", l->name, line, shape, p ? params : "",
                flops);
    }
    count_text(params, sizeof params, total_params);
    count_text(flops, sizeof flops, net->flops);
    fprintf(f, "%-8s %-36s %10s %11s %12s\n", "", "total (then softmax cross-entropy)", "",
            params, flops);
    if (net->nbuffers) {
        char buf[32];
        count_text(buf, sizeof buf, (long long)net->nbuffer_floats);
        fprintf(f, "%-8s running statistics: %s floats in %d batch-norm layer%s\n", "", buf,
                net->nbatchnorm, net->nbatchnorm == 1 ? "" : "s");
    }
    fflush(f);
}
