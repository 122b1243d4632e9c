/* dpcnn sweep: the runs of an experiment, their groups of ranks, and the
 * experiment's table. include/dpcnn/sweep.h has the outline; README
 * "Experiments" the user's view.
 *
 * Files, in EXPERIMENT-DIR:
 *   runs.txt           the experiment's runs, one line of options each (itself
 *                      a --runs FILE): what --table, --resume and the array
 *                      tasks read when no run options are given
 *   NAME/              one run's directory: train_run's checkpoints and
 *                      metrics.jsonl, run.json (its parameters, in full) and,
 *                      if it failed, failed.txt (the reason)
 *   experiment.csv     one row per run and epoch: the run, its parameters,
 *   experiment.jsonl   its status, the epoch's figures, the reason of a failure
 *
 * The table is made from the directories alone, so it is the same whichever
 * way the runs were trained. Only the world's collectives at the start and at
 * the end are reached by every rank; in between each group has its own. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/hash.h"
#include "dpcnn/options.h"
#include "dpcnn/stop.h"
#include "dpcnn/sweep.h"
#include "dpcnn/train.h"
#include "dpcnn/watchdog.h"

/* One option as given: --lr 0.01 is {lr's spec, "0.01"}, --no-shuffle {spec, NULL}. */
typedef struct {
    const OptionSpec *spec;
    const char *value;
} Occ;

typedef struct {
    Occ *v;
    int n, cap;
} OccList;

struct SweepRun {
    OccList opts;              /* its options, in order */
    int ok;                    /* options_parse takes them */
    char *reason;              /* why not */
    TrainConfig cfg;           /* parsed (pointers into argv) */
    char **argv;               /* "dpcnn", its option words */
    int argc;
    char *value[PARAM_COUNT];  /* each parameter's value as text */
    char *name;                /* its directory's name */
    char *dir;                 /* EXPERIMENT-DIR/name */
    char *line;                /* its line of runs.txt */
};

/* The longest name a run directory gets: file systems allow 255 bytes. */
#define NAME_MAX_LEN 200
/* More runs than this is a typing error, not an experiment. */
#define MAX_RUNS 10000

static void sweep_usage(FILE *f)
{
    fputs(
        "Usage: dpcnn sweep EXPERIMENT-DIR [OPTION]...\n"
        "       mpirun -np N dpcnn sweep EXPERIMENT-DIR [OPTION]...\n"
        "An experiment: one training run per combination of the values of the options\n"
        "given several times, each in EXPERIMENT-DIR/<its parameters>, and one table.\n"
        "\n"
        "  dpcnn sweep exp --lr 0.01 --lr 0.001 --model tutorial --model bn --epochs 10\n"
        "\n"
        "The options that decide the result (dpcnn --help: --epochs to --init, and\n"
        "--reduction; --shuffle and --no-shuffle are one parameter) may be given several\n"
        "times; the others apply to every run (the last counts). --checkpoint-dir and\n"
        "--resume DIR are the sweep's to set.\n"
        "\n"
        "  --runs FILE         the runs, one per line of options, instead of a grid\n"
        "                      (# starts a comment; quote values with blanks)\n"
        "  --group-size G      ranks per run (default: as many groups as there are runs\n"
        "                      to train, up to one per rank: the smallest divisor G of\n"
        "                      the rank count with at most that many groups); G must\n"
        "                      divide the rank count\n"
        "  --resume            skip finished runs, continue interrupted and failed ones\n"
        "                      to the same bits; without it, runs already in\n"
        "                      EXPERIMENT-DIR are refused\n"
        "  --index I           train run I alone (from 0, as --list numbers them), on all\n"
        "                      ranks: a Slurm array task (launch/dpcnn.sbatch)\n"
        "  --list              print the runs (index, name, status) and exit\n"
        "  --table             build experiment.csv and experiment.jsonl from the run\n"
        "                      directories, print the summary, and exit\n"
        "  -h, --help          this text\n"
        "\n"
        "Without run options or --runs, the runs are EXPERIMENT-DIR/runs.txt's (the\n"
        "experiment as last started there). Each group's rank 0 writes its run's\n"
        "files; a run that fails (a bad value, a non-finite loss, a wrong --model file)\n"
        "is recorded with its reason and the others go on. At the end: the table, and\n"
        "a summary of the last epochs sorted by test accuracy.\n"
        "Exit status: 0 every run done, 1 a run failed, 2 bad command line, 75 stopped\n"
        "by a signal (the same command with --resume continues).\n",
        f);
}

static int __attribute__((format(printf, 2, 3))) bad(int speak, const char *fmt, ...)
{
    if (speak) {
        va_list ap;
        va_start(ap, fmt);
        fputs("dpcnn sweep: ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'dpcnn sweep --help'.\n", stderr);
    }
    return OPTIONS_EXIT_USAGE;
}

static void occ_push(OccList *l, Occ o)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        Occ *grown = XCALLOC(Occ, (size_t)l->cap);
        if (l->n)
            memcpy(grown, l->v, sizeof(Occ) * (size_t)l->n);
        free(l->v);
        l->v = grown;
    }
    l->v[l->n++] = o;
}

/* Options a sweep sets itself, or that have no place in one. */
static const char *refused_in_sweep(const char *name)
{
    static const struct {
        const char *name, *why;
    } refused[] = {
        {"checkpoint-dir", "each run writes EXPERIMENT-DIR/its-name"},
        {"resume", "the sweep's --resume takes no value: it continues every run"},
        {"override-hparams", "a changed run is another run: give it its own values"},
        {"print-model", "use dpcnn --print-model"},
        {"input-shape", "use dpcnn --print-model"},
        {"version", "use dpcnn --version"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(refused[i].name, name) == 0)
            return refused[i].why;
    return NULL;
}

/* words[*i] is "--name" or "--name=value": one training option (its value the
 * next word if need be). 0, or -1 with the message in err. */
static int take_option(char **words, int n, int *i, Occ *out, char *err, size_t errn)
{
    const char *w = words[*i];
    char name[64];
    const char *eq = strchr(w, '=');
    size_t len = eq ? (size_t)(eq - w - 2) : strlen(w + 2);
    if (strncmp(w, "--", 2) != 0 || len == 0 || len >= sizeof name) {
        snprintf(err, errn, "unexpected argument '%s'", w);
        return -1;
    }
    memcpy(name, w + 2, len);
    name[len] = '\0';
    const OptionSpec *spec = options_find(name);
    if (!spec || strcmp(name, "help") == 0) {
        snprintf(err, errn, "unknown option '--%s'", name);
        return -1;
    }
    const char *why = refused_in_sweep(name);
    if (why) {
        snprintf(err, errn, "--%s: not in a sweep (%s)", name, why);
        return -1;
    }
    out->spec = spec;
    out->value = NULL;
    if (spec->takes_value) {
        if (eq)
            out->value = eq + 1;
        else if (*i + 1 < n)
            out->value = words[++*i];
        else {
            snprintf(err, errn, "--%s: needs a value", name);
            return -1;
        }
    } else if (eq) {
        snprintf(err, errn, "--%s takes no value", name);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ runs.txt lines */

/* One line's words: blanks separate them, '...' and "..." quote, # comments. */
static int split_line(const char *line, char ***words, int *n, char *err, size_t errn)
{
    size_t cap = strlen(line) + 1;
    char *buf = XCALLOC(char, cap);
    char **w = XCALLOC(char *, cap);
    int count = 0;
    const char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p || *p == '#')
            break;
        size_t at = 0;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            if (*p == '\'' || *p == '"') {
                const char q = *p++;
                while (*p && *p != q)
                    buf[at++] = *p++;
                if (*p != q) {
                    snprintf(err, errn, "an unterminated %c quote", q);
                    for (int k = 0; k < count; k++)
                        free(w[k]);
                    free(w);
                    free(buf);
                    return -1;
                }
                p++;
            } else {
                buf[at++] = *p++;
            }
        }
        buf[at] = '\0';
        w[count++] = xstrdup(buf);
    }
    free(buf);
    *words = w;
    *n = count;
    return 0;
}

/* A word as runs.txt writes it, quoted when it must be; -1 if it cannot be. */
static int quote_word(FILE *f, const char *w)
{
    if (strchr(w, '\n') || strchr(w, '\r'))
        return -1;
    if (*w && !strpbrk(w, " \t'\"#")) {
        fputs(w, f);
        return 0;
    }
    const char q = strchr(w, '\'') ? '"' : '\'';
    if (strchr(w, q))
        return -1;
    fprintf(f, "%c%s%c", q, w, q);
    return 0;
}

/* --------------------------------------------------------------- the runs */

static void add_run(SweepConfig *sc, int *cap, const OccList *opts)
{
    if (sc->nruns == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        SweepRun *grown = XCALLOC(SweepRun, (size_t)*cap);
        if (sc->nruns)
            memcpy(grown, sc->runs, sizeof(SweepRun) * (size_t)sc->nruns);
        free(sc->runs);
        sc->runs = grown;
    }
    SweepRun *r = &sc->runs[sc->nruns++];
    memset(r, 0, sizeof *r);
    for (int k = 0; k < opts->n; k++)
        occ_push(&r->opts, opts->v[k]);
}

/* Parse a run's options as dpcnn would; its parameters' values as text. */
static void define_run(SweepRun *r, const TrainConfig *defaults)
{
    r->argv = XCALLOC(char *, (size_t)(2 * r->opts.n + 2));
    r->argv[r->argc++] = xstrdup("dpcnn");
    for (int k = 0; k < r->opts.n; k++) {
        char flag[80];
        snprintf(flag, sizeof flag, "--%s", r->opts.v[k].spec->name);
        r->argv[r->argc++] = xstrdup(flag);
        if (r->opts.v[k].value)
            r->argv[r->argc++] = xstrdup(r->opts.v[k].value);
    }
    r->ok = options_parse(&r->cfg, r->argc, r->argv, 0) == OPTIONS_RUN;
    if (!r->ok)
        r->reason = xstrdup(err_get());
    for (int p = 0; p < PARAM_COUNT; p++) {
        char v[4200];
        if (r->ok) {
            options_param_value(&r->cfg, (RunParam)p, v, sizeof v);
        } else {
            /* refused: the values as given (the last one counts), else the defaults */
            options_param_value(defaults, (RunParam)p, v, sizeof v);
            for (int k = 0; k < r->opts.n; k++)
                if (r->opts.v[k].spec->param == (RunParam)p)
                    snprintf(v, sizeof v, "%s",
                             r->opts.v[k].value ? r->opts.v[k].value : r->opts.v[k].spec->flag_value);
        }
        r->value[p] = xstrdup(v);
    }
}

/* "lr=0.01": a path counts by its last part, and what a directory name
 * should not hold (/ , = blanks ...) becomes _. */
static void name_part(char *out, size_t n, const char *key, const char *value)
{
    const char *v = value;
    const char *slash = strrchr(v, '/');
    if (slash && slash[1])
        v = slash + 1;
    size_t at = (size_t)snprintf(out, n, "%s=", key);
    for (; *v && at + 1 < n; v++)
        out[at++] = isalnum((unsigned char)*v) || strchr("._+-", *v) ? *v : '_';
    out[at < n ? at : n - 1] = '\0';
}

static int same_values(const SweepRun *a, const SweepRun *b)
{
    for (int p = 0; p < PARAM_COUNT; p++)
        if (strcmp(a->value[p], b->value[p]) != 0)
            return 0;
    return 1;
}

/* The parameters that differ, in the order they first appear; each run's
 * name from them ("run" if none differ), unique. */
static int name_runs(SweepConfig *sc, int speak)
{
    for (int i = 0; i < sc->nruns; i++)
        for (int j = 0; j < i; j++)
            if (same_values(&sc->runs[i], &sc->runs[j]))
                return bad(speak, "runs %d and %d are the same run (their parameters are all "
                                  "equal): each combination once, please",
                           j, i);
    int differs[PARAM_COUNT] = {0}, listed[PARAM_COUNT] = {0};
    for (int p = 0; p < PARAM_COUNT; p++)
        for (int i = 1; i < sc->nruns; i++)
            differs[p] |= strcmp(sc->runs[i].value[p], sc->runs[0].value[p]) != 0;
    sc->nvarying = 0;
    for (int i = 0; i < sc->nruns; i++)
        for (int k = 0; k < sc->runs[i].opts.n; k++) {
            RunParam p = sc->runs[i].opts.v[k].spec->param;
            if (p != PARAM_NONE && differs[p] && !listed[p]) {
                listed[p] = 1;
                sc->varying[sc->nvarying++] = p;
            }
        }
    for (int i = 0; i < sc->nruns; i++) {
        SweepRun *r = &sc->runs[i];
        char name[4096] = "";
        for (int k = 0; k < sc->nvarying; k++) {
            char part[1024];
            size_t at = strlen(name);
            name_part(part, sizeof part, options_param_name(sc->varying[k]), r->value[sc->varying[k]]);
            if (at + strlen(part) + 2 < sizeof name)
                snprintf(name + at, sizeof name - at, "%s%s", k ? "," : "", part);
        }
        if (!name[0])
            snprintf(name, sizeof name, "run");
        r->name = xstrdup(name);
    }
    /* Too long, or two runs whose values differ only where a name cannot
     * show it (a/net.txt and b/net.txt): a hash of the values tells them apart. */
    for (int i = 0; i < sc->nruns; i++) {
        SweepRun *r = &sc->runs[i];
        int clash = strlen(r->name) > NAME_MAX_LEN;
        for (int j = 0; j < sc->nruns && !clash; j++)
            clash = j != i && strcmp(sc->runs[j].name, r->name) == 0;
        if (!clash)
            continue;
        uint64_t h = FNV1A64_INIT;
        for (int p = 0; p < PARAM_COUNT; p++)
            h = fnv1a64(h, r->value[p], strlen(r->value[p]) + 1);
        char name[NAME_MAX_LEN + 32];
        snprintf(name, sizeof name, "%.*s~%08" PRIx64, NAME_MAX_LEN - 10, r->name,
                 h & 0xffffffffu);
        free(r->name);
        r->name = xstrdup(name);
    }
    return OPTIONS_RUN;
}

/* The lines of a runs file, each added to the command line's options. */
static int read_runs_file(SweepConfig *sc, const char *path, const OccList *cl, int *cap,
                          int speak)
{
    if (fs_check_input(path, "the runs file") < 0)
        return bad(speak, "--runs: %s", err_get());
    FILE *f = fopen(path, "r");
    if (!f)
        return bad(speak, "--runs: %s: cannot read: %s", path, strerror(errno));
    char *line = NULL;
    size_t lcap = 0;
    int lineno = 0, rc = OPTIONS_RUN;
    while (rc == OPTIONS_RUN && getline(&line, &lcap, f) > 0) {
        lineno++;
        char **words;
        int n;
        char err[512];
        if (split_line(line, &words, &n, err, sizeof err) < 0) {
            rc = bad(speak, "%s, line %d: %s", path, lineno, err);
            break;
        }
        if (n == 0) {
            free(words);
            continue;
        }
        OccList opts = {0};
        for (int i = 0; i < n && rc == OPTIONS_RUN; i++) {
            Occ o;
            if (take_option(words, n, &i, &o, err, sizeof err) < 0) {
                rc = bad(speak, "%s, line %d: %s", path, lineno, err);
                break;
            }
            /* the command line's options apply to every run: a parameter
             * there and in a line is a contradiction; another option given
             * on the command line replaces the line's */
            int on_cl = 0;
            for (int k = 0; k < cl->n; k++)
                on_cl |= cl->v[k].spec == o.spec ||
                         (o.spec->param != PARAM_NONE && cl->v[k].spec->param == o.spec->param);
            if (on_cl && o.spec->param != PARAM_NONE)
                rc = bad(speak, "%s, line %d: --%s is also on the command line: give it in one "
                                "place",
                         path, lineno, o.spec->name);
            else if (!on_cl)
                occ_push(&opts, o);
        }
        free(words); /* the words themselves stay: the options point into them */
        for (int k = 0; k < cl->n; k++)
            occ_push(&opts, cl->v[k]);
        if (rc == OPTIONS_RUN && sc->nruns >= MAX_RUNS)
            rc = bad(speak, "%s: more than %d runs", path, MAX_RUNS);
        if (rc == OPTIONS_RUN)
            add_run(sc, cap, &opts);
        free(opts.v);
    }
    free(line);
    fclose(f);
    if (rc == OPTIONS_RUN && sc->nruns == 0)
        rc = bad(speak, "%s lists no runs", path);
    return rc;
}

/* The Cartesian product of the parameters given several times, the last
 * varying fastest, each with the options given once. */
static int make_grid(SweepConfig *sc, const OccList *cl, int *cap, int speak)
{
    int count[PARAM_COUNT] = {0};
    for (int k = 0; k < cl->n; k++)
        if (cl->v[k].spec->param != PARAM_NONE)
            count[cl->v[k].spec->param]++;
    RunParam axes[PARAM_COUNT];
    int naxes = 0;
    long total = 1;
    for (int k = 0; k < cl->n; k++) {
        RunParam p = cl->v[k].spec->param;
        int seen = 0;
        for (int a = 0; a < naxes; a++)
            seen |= axes[a] == p;
        if (p != PARAM_NONE && count[p] > 1 && !seen) {
            axes[naxes++] = p;
            total *= count[p];
            if (total > MAX_RUNS)
                return bad(speak, "more than %d runs: that is not meant", MAX_RUNS);
        }
    }
    for (long c = 0; c < total; c++) {
        OccList opts = {0};
        for (int k = 0; k < cl->n; k++)
            if (cl->v[k].spec->param == PARAM_NONE || count[cl->v[k].spec->param] == 1)
                occ_push(&opts, cl->v[k]);
        long rest = c;
        Occ chosen[PARAM_COUNT];
        for (int a = naxes - 1; a >= 0; a--) { /* combination c in mixed radix */
            int pick = (int)(rest % count[axes[a]]);
            rest /= count[axes[a]];
            for (int k = 0; k < cl->n; k++) /* the pick-th value given for the axis */
                if (cl->v[k].spec->param == axes[a] && pick-- == 0)
                    chosen[a] = cl->v[k];
        }
        for (int a = 0; a < naxes; a++)
            occ_push(&opts, chosen[a]);
        add_run(sc, cap, &opts);
        free(opts.v);
    }
    return OPTIONS_RUN;
}

int sweep_parse(SweepConfig *sc, int argc, char **argv, int speak)
{
    memset(sc, 0, sizeof *sc);
    sc->index = -1;
    OccList cl = {0};
    char err[512];
    const char *group = NULL, *index = NULL;
    for (int i = 1; i < argc; i++) {
        const char *w = argv[i];
        if (strcmp(w, "-h") == 0 || strcmp(w, "--help") == 0) {
            if (speak)
                sweep_usage(stdout);
            return OPTIONS_EXIT_OK;
        }
        if (w[0] != '-' || !w[1]) {
            if (sc->dir)
                return bad(speak, "unexpected argument '%s' (one EXPERIMENT-DIR only)", w);
            sc->dir = w;
            continue;
        }
        int *flag = strcmp(w, "--resume") == 0  ? &sc->resume
                    : strcmp(w, "--table") == 0 ? &sc->table_only
                    : strcmp(w, "--list") == 0  ? &sc->list_only
                                                : NULL;
        if (flag) {
            *flag = 1;
            continue;
        }
        /* the sweep's own options with a value: --runs FILE or --runs=FILE ... */
        const char *own[] = {"--group-size", "--runs", "--index"};
        const char **to[] = {&group, &sc->runs_file, &index};
        int k = 0;
        while (k < 3 && strncmp(w, own[k], strlen(own[k])) != 0)
            k++;
        if (k < 3 && (w[strlen(own[k])] == '\0' || w[strlen(own[k])] == '=')) {
            if (w[strlen(own[k])] == '=')
                *to[k] = w + strlen(own[k]) + 1;
            else if (i + 1 < argc)
                *to[k] = argv[++i];
            else
                return bad(speak, "%s: needs a value", own[k]);
            if (!**to[k])
                return bad(speak, "%s: expected a value, got ''", own[k]);
            continue;
        }
        Occ o;
        if (take_option(argv, argc, &i, &o, err, sizeof err) < 0)
            return bad(speak, "%s", err);
        occ_push(&cl, o);
    }
    if (!sc->dir)
        return bad(speak, "expected the experiment's directory: dpcnn sweep EXPERIMENT-DIR ...");
    unsigned long long v;
    if (group && options_parse_whole(group, 1, 1 << 20, &v) < 0)
        return bad(speak, "--group-size: expected a whole number >= 1, got '%s'", group);
    sc->group_size = group ? (int)v : 0;
    if (index && options_parse_whole(index, 0, MAX_RUNS, &v) < 0)
        return bad(speak, "--index: expected a whole number >= 0, got '%s'", index);
    sc->index = index ? (long)v : -1;

    /* The options given once that never change a bit: checked here, for all. */
    int count[PARAM_COUNT] = {0}, any_param = 0;
    OccList how = {0};
    for (int k = 0; k < cl.n; k++) {
        const OptionSpec *s = cl.v[k].spec;
        if (s->param != PARAM_NONE) {
            count[s->param]++;
            any_param = 1;
            continue;
        }
        occ_push(&how, cl.v[k]); /* given twice, the last counts (as for dpcnn) */
    }
    SweepRun probe = {0};
    probe.opts = how;
    TrainConfig defaults;
    train_config_defaults(&defaults);
    defaults.data_path = options_default_data();
    define_run(&probe, &defaults);
    if (!probe.ok)
        return bad(speak, "%s", probe.reason);
    sc->common = probe.cfg; /* its strings live on in probe.argv */

    int cap = 0, rc;
    char implicit[4200];
    snprintf(implicit, sizeof implicit, "%s/runs.txt", sc->dir);
    if (sc->runs_file) {
        for (int p = 0; p < PARAM_COUNT; p++)
            if (count[p] > 1)
                return bad(speak, "--runs and several values of %s: list the runs in one way",
                           options_param_name((RunParam)p));
        rc = read_runs_file(sc, sc->runs_file, &cl, &cap, speak);
    } else if (!any_param && fs_exists(implicit)) {
        rc = read_runs_file(sc, implicit, &cl, &cap, speak);
    } else if (!any_param && (sc->table_only || sc->list_only)) {
        return bad(speak, "%s has no runs.txt: not an experiment's directory (yet)", sc->dir);
    } else {
        rc = make_grid(sc, &cl, &cap, speak);
    }
    free(cl.v);
    if (rc != OPTIONS_RUN)
        return rc;
    for (int i = 0; i < sc->nruns; i++)
        define_run(&sc->runs[i], &defaults);
    if ((rc = name_runs(sc, speak)) != OPTIONS_RUN)
        return rc;
    for (int i = 0; i < sc->nruns; i++) {
        SweepRun *r = &sc->runs[i];
        char dir[4400];
        snprintf(dir, sizeof dir, "%s/%s", sc->dir, r->name);
        r->dir = xstrdup(dir);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        int q = 0;
        for (int k = 1; k < r->argc && q == 0; k++) {
            if (k > 1)
                fputc(' ', f);
            q = quote_word(f, r->argv[k]);
        }
        fclose(f);
        if (q < 0)
            return bad(speak, "run %s: a value holds a newline, or both kinds of quote: runs.txt "
                              "cannot hold it",
                       r->name);
        r->line = text;
    }
    if (sc->index >= sc->nruns)
        return bad(speak, "--index %ld: the experiment has %d runs (0 to %d)", sc->index,
                   sc->nruns, sc->nruns - 1);
    return OPTIONS_RUN;
}

void sweep_free(SweepConfig *sc)
{
    for (int i = 0; i < sc->nruns; i++) {
        SweepRun *r = &sc->runs[i];
        for (int k = 0; k < r->argc; k++)
            free(r->argv[k]);
        free(r->argv);
        for (int p = 0; p < PARAM_COUNT; p++)
            free(r->value[p]);
        free(r->opts.v);
        free(r->reason);
        free(r->name);
        free(r->dir);
        free(r->line);
    }
    free(sc->runs);
    sc->runs = NULL;
    sc->nruns = 0;
}

/* ------------------------------------------------------------ a run's state */

typedef enum { RUN_PENDING, RUN_INCOMPLETE, RUN_DONE, RUN_FAILED } RunStatus;
static const char *const status_names[] = {"pending", "incomplete", "done", "failed"};

typedef struct {
    int status;         /* RunStatus */
    int has_checkpoint; /* latest.h5 is there: a retry resumes from it */
    int has_files;      /* anything of an earlier attempt (a checkpoint, failed.txt) */
    int epochs_done;
} Outcome;

/* A whole small file into buf (its first line, without the newline); -1 if absent. */
static int read_small(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* Where a run stands, from its directory alone. reason (if not NULL) gets
 * why it failed. */
static void run_outcome(const SweepRun *r, Outcome *o, char *reason, size_t n)
{
    memset(o, 0, sizeof *o);
    if (reason)
        reason[0] = '\0';
    if (!r->ok) {
        o->status = RUN_FAILED;
        if (reason)
            snprintf(reason, n, "%s", r->reason);
        return;
    }
    char path[4500], why[ERR_MAX];
    snprintf(path, sizeof path, "%s/latest.h5", r->dir);
    o->has_checkpoint = fs_exists(path);
    if (o->has_checkpoint && checkpoint_epochs_done(path, &o->epochs_done) < 0)
        o->epochs_done = -1;
    snprintf(path, sizeof path, "%s/failed.txt", r->dir);
    const int failed = read_small(path, why, sizeof why) == 0;
    o->has_files = o->has_checkpoint || failed;
    if (failed) {
        o->status = RUN_FAILED;
        if (reason)
            snprintf(reason, n, "%s", why);
    } else if (o->has_checkpoint && o->epochs_done >= r->cfg.epochs) {
        o->status = RUN_DONE;
    } else {
        o->status = o->has_checkpoint ? RUN_INCOMPLETE : RUN_PENDING;
    }
}

/* ------------------------------------------------------------ the table */

/* A parameter or a figure as a JSON value: a number as it is, text quoted. */
static void json_value(FILE *f, const char *v)
{
    char *end;
    if (v && *v && (isdigit((unsigned char)*v) || *v == '-')) {
        strtod(v, &end);
        if (!*end && !strpbrk(v, "xXnNiI")) {
            fputs(v, f);
            return;
        }
    }
    if (!v) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void csv_value(FILE *f, const char *v)
{
    if (!v)
        return;
    if (!strpbrk(v, ",\"\n\r")) {
        fputs(v, f);
        return;
    }
    fputc('"', f);
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

/* The epoch figures of the table, in its column order; train_accuracy is
 * train_correct / train_samples, the others are metrics.jsonl's own text. */
static const char *const figures[] = {
    "epoch", "train_loss", "train_accuracy", "train_correct", "train_samples", "test_loss",
    "test_accuracy", "test_correct", "test_samples", "seconds", "samples_per_second",
};
enum { NFIG = sizeof figures / sizeof figures[0] };

typedef struct {
    char fig[NFIG][40];
} EpochRow;

/* The value text of "key": in one of dpcnn's metrics lines. */
static int json_number(const char *line, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    size_t len = strcspn(p, ",}");
    if (len == 0 || len >= n)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

/* The epoch records of a run's metrics.jsonl. */
static int read_epochs(const SweepRun *r, EpochRow **rows)
{
    char path[4500];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    *rows = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        if (!strstr(line, "\"type\":\"epoch\""))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            EpochRow *grown = XCALLOC(EpochRow, (size_t)cap);
            if (n)
                memcpy(grown, *rows, sizeof(EpochRow) * (size_t)n);
            free(*rows);
            *rows = grown;
        }
        EpochRow *e = &(*rows)[n];
        int ok = 1;
        for (int k = 0; k < NFIG; k++)
            if (strcmp(figures[k], "train_accuracy") != 0)
                ok &= json_number(line, figures[k], e->fig[k], sizeof e->fig[k]) == 0;
        if (!ok)
            continue; /* not one of dpcnn's lines: skipped */
        double c = strtod(e->fig[3], NULL), s = strtod(e->fig[4], NULL);
        options_format_real(e->fig[2], sizeof e->fig[2], s > 0 ? c / s : 0.0);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

typedef struct {
    Outcome o;
    char reason[ERR_MAX];
    EpochRow *rows;
    int nrows;
} RunTable;

static void write_rows(FILE *csv, FILE *jsonl, const SweepRun *r, const RunTable *t)
{
    for (int e = 0; e < (t->nrows ? t->nrows : 1); e++) {
        const EpochRow *row = t->nrows ? &t->rows[e] : NULL;
        const char *reason = t->o.status == RUN_FAILED ? t->reason : NULL;
        csv_value(csv, r->name);
        fputs("{\"run\":", jsonl);
        json_value(jsonl, r->name);
        for (int p = 0; p < PARAM_COUNT; p++) {
            fputc(',', csv);
            csv_value(csv, r->value[p]);
            fprintf(jsonl, ",\"%s\":", options_param_name((RunParam)p));
            json_value(jsonl, r->value[p]);
        }
        fprintf(csv, ",%s", status_names[t->o.status]);
        fprintf(jsonl, ",\"status\":\"%s\"", status_names[t->o.status]);
        for (int k = 0; k < NFIG; k++) {
            fputc(',', csv);
            csv_value(csv, row ? row->fig[k] : NULL);
            fprintf(jsonl, ",\"%s\":", figures[k]);
            json_value(jsonl, row ? row->fig[k] : NULL);
        }
        fputc(',', csv);
        csv_value(csv, reason);
        fputs(",\"reason\":", jsonl);
        json_value(jsonl, reason);
        fputs("\n", csv);
        fputs("}\n", jsonl);
    }
}

static double last_figure(const RunTable *t, int k)
{
    return t->nrows ? strtod(t->rows[t->nrows - 1].fig[k], NULL) : -1.0;
}

static const RunTable *g_sort_tables; /* for qsort's comparison */

/* By the last epoch's test accuracy, best first; runs without epochs last;
 * ties in the experiment's order. */
static int by_accuracy(const void *a, const void *b)
{
    const int i = *(const int *)a, j = *(const int *)b;
    const RunTable *x = &g_sort_tables[i], *y = &g_sort_tables[j];
    if (!x->nrows != !y->nrows)
        return x->nrows ? -1 : 1;
    const double ax = last_figure(x, 6), ay = last_figure(y, 6);
    if (ax != ay)
        return ax > ay ? -1 : 1;
    return i - j;
}

static void print_summary(const SweepConfig *sc, const RunTable *t, const int *which, int n)
{
    int count[4] = {0};
    for (int k = 0; k < n; k++)
        count[t[which[k]].o.status]++;
    printf("experiment %s: %d run%s:", sc->dir, n, n == 1 ? "" : "s");
    static const RunStatus shown[] = {RUN_DONE, RUN_INCOMPLETE, RUN_PENDING, RUN_FAILED};
    for (int k = 0, first = 1; k < 4; k++)
        if (count[shown[k]]) {
            printf("%s %d %s", first ? "" : ",", count[shown[k]], status_names[shown[k]]);
            first = 0;
        }
    printf("; sorted by the last epoch's test accuracy\n");
    int *order = XCALLOC(int, (size_t)n);
    memcpy(order, which, sizeof(int) * (size_t)n);
    g_sort_tables = t;
    qsort(order, (size_t)n, sizeof *order, by_accuracy);
    /* columns: the parameters that differ, then the figures */
    int width[PARAM_COUNT + 1];
    const int ncols = sc->nvarying ? sc->nvarying : 1;
    for (int c = 0; c < ncols; c++) {
        const char *head = sc->nvarying ? options_param_name(sc->varying[c]) : "run";
        width[c] = (int)strlen(head);
        for (int k = 0; k < n; k++) {
            const SweepRun *r = &sc->runs[order[k]];
            int w = (int)strlen(sc->nvarying ? r->value[sc->varying[c]] : r->name);
            width[c] = w > width[c] ? w : width[c];
        }
        printf("%s%-*s", c ? "  " : "  ", width[c], head);
    }
    printf("  epochs  train_loss  test_loss  test_accuracy  train_s  status\n");
    int nfailed = 0;
    for (int k = 0; k < n; k++) {
        const SweepRun *r = &sc->runs[order[k]];
        const RunTable *x = &t[order[k]];
        for (int c = 0; c < ncols; c++)
            printf("  %-*s", width[c], sc->nvarying ? r->value[sc->varying[c]] : r->name);
        char epochs[64];
        snprintf(epochs, sizeof epochs, "%d/%s", x->nrows, r->value[PARAM_EPOCHS]);
        double train_s = 0;
        for (int e = 0; e < x->nrows; e++)
            train_s += strtod(x->rows[e].fig[9], NULL);
        if (x->nrows)
            printf("  %6s  %10.4f  %9.4f  %13.4f  %7.1f  %s\n", epochs, last_figure(x, 1),
                   last_figure(x, 5), last_figure(x, 6), train_s, status_names[x->o.status]);
        else
            printf("  %6s  %10s  %9s  %13s  %7s  %s\n", epochs, "-", "-", "-", "-",
                   status_names[x->o.status]);
        nfailed += x->o.status == RUN_FAILED;
    }
    if (nfailed) {
        printf("failed:\n");
        for (int k = 0; k < n; k++)
            if (t[which[k]].o.status == RUN_FAILED)
                printf("  %s: %s\n", sc->runs[which[k]].name, t[which[k]].reason);
    }
    fflush(stdout);
    free(order);
}

/* experiment.csv and experiment.jsonl from the run directories, under a
 * lock (array tasks that end together take turns, and the last one's table
 * has every run), then the summary of the runs in `which` (all: NULL).
 * *status gets the exit status those runs make: 0 all done, 1 one failed,
 * 75 some not done. */
static int write_table(const SweepConfig *sc, const int *which, int nwhich, int *status)
{
    char path[4400], tmp[4400];
    snprintf(path, sizeof path, "%s/.experiment.lock", sc->dir);
    int lock;
    if (fs_lock_wait(path, &lock) < 0)
        return -1;
    RunTable *t = XCALLOC(RunTable, (size_t)sc->nruns);
    char *csv_text = NULL, *jsonl_text = NULL;
    size_t csv_len = 0, jsonl_len = 0;
    FILE *csv = open_memstream(&csv_text, &csv_len);
    FILE *jsonl = open_memstream(&jsonl_text, &jsonl_len);
    fputs("run", csv);
    for (int p = 0; p < PARAM_COUNT; p++)
        fprintf(csv, ",%s", options_param_name((RunParam)p));
    fputs(",status", csv);
    for (int k = 0; k < NFIG; k++)
        fprintf(csv, ",%s", figures[k]);
    fputs(",reason\n", csv);
    for (int i = 0; i < sc->nruns; i++) {
        run_outcome(&sc->runs[i], &t[i].o, t[i].reason, sizeof t[i].reason);
        t[i].nrows = read_epochs(&sc->runs[i], &t[i].rows);
        write_rows(csv, jsonl, &sc->runs[i], &t[i]);
    }
    fclose(csv);
    fclose(jsonl);
    snprintf(path, sizeof path, "%s/experiment.csv", sc->dir);
    int rc = fs_write_atomic(path, csv_text, csv_len);
    snprintf(tmp, sizeof tmp, "%s/experiment.jsonl", sc->dir);
    if (rc == 0)
        rc = fs_write_atomic(tmp, jsonl_text, jsonl_len);
    fs_unlock_dir(lock);
    free(csv_text);
    free(jsonl_text);
    int *all = NULL;
    if (!which) {
        all = XCALLOC(int, (size_t)sc->nruns);
        for (int i = 0; i < sc->nruns; i++)
            all[i] = i;
        which = all;
        nwhich = sc->nruns;
    }
    *status = DPCNN_EXIT_OK;
    for (int k = 0; k < nwhich; k++) {
        if (t[which[k]].o.status == RUN_FAILED)
            *status = DPCNN_EXIT_FAILURE;
        else if (t[which[k]].o.status != RUN_DONE && *status == DPCNN_EXIT_OK)
            *status = DPCNN_EXIT_STOPPED;
    }
    if (rc == 0) {
        print_summary(sc, t, which, nwhich);
        printf("table: %s/experiment.csv, %s/experiment.jsonl\n", sc->dir, sc->dir);
        fflush(stdout);
    }
    for (int i = 0; i < sc->nruns; i++)
        free(t[i].rows);
    free(t);
    free(all);
    return rc;
}

/* ------------------------------------------------------------ offline */

int sweep_offline(SweepConfig *sc)
{
    if (sc->list_only) {
        for (int i = 0; i < sc->nruns; i++) {
            Outcome o;
            run_outcome(&sc->runs[i], &o, NULL, 0);
            printf("%d %s %s\n", i, sc->runs[i].name, status_names[o.status]);
        }
        return DPCNN_EXIT_OK;
    }
    int status;
    if (write_table(sc, NULL, 0, &status) < 0) {
        msg_error("%s", err_get());
        return DPCNN_EXIT_FAILURE;
    }
    return DPCNN_EXIT_OK;
}

/* ------------------------------------------------------------ training */

/* World rank 0, before any run: the directory and runs.txt. */
static int prepare_experiment(const SweepConfig *sc)
{
    if (fs_make_dir(sc->dir) < 0)
        return -1;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fputs("# dpcnn sweep: the experiment's runs, one per line (a --runs file)\n", f);
    for (int i = 0; i < sc->nruns; i++)
        fprintf(f, "%s\n", sc->runs[i].line);
    fclose(f);
    char path[4400];
    snprintf(path, sizeof path, "%s/runs.txt", sc->dir);
    int rc = fs_write_atomic(path, text, len);
    free(text);
    return rc;
}

/* A group's rank 0, before a run: its directory, run.json; no failed.txt. */
static int prepare_run(const SweepConfig *sc, const SweepRun *r)
{
    if (fs_make_dir(r->dir) < 0)
        return -1;
    char path[4500];
    snprintf(path, sizeof path, "%s/failed.txt", r->dir);
    if (unlink(path) < 0 && errno != ENOENT)
        return err_set("%s: cannot remove: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fputs("{\"run\":", f);
    json_value(f, r->name);
    fputs(",\"experiment\":", f);
    json_value(f, sc->dir);
    fputs(",\"options\":", f);
    json_value(f, r->line);
    for (int p = 0; p < PARAM_COUNT; p++) {
        fprintf(f, ",\"%s\":", options_param_name((RunParam)p));
        json_value(f, r->value[p]);
    }
    fputs("}\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/run.json", r->dir);
    int rc = fs_write_atomic(path, text, len);
    free(text);
    return rc;
}

static void record_failure(const SweepRun *r, const char *reason)
{
    char path[4500];
    snprintf(path, sizeof path, "%s/failed.txt", r->dir);
    char text[ERR_MAX + 2];
    int n = snprintf(text, sizeof text, "%s\n", reason);
    if (fs_write_atomic(path, text, (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1)) < 0)
        msg_warn("cannot record the failure of %s: %s", r->name, err_get());
}

/* One run on the group: the run's own options, its directory, a resume from
 * its checkpoint if it has one. */
static int train_one(const SweepConfig *sc, const SweepRun *r, const Outcome *o, Dist *grp,
                     int many_groups, int nth, int total)
{
    int rc = dist_rank(grp) == 0 ? prepare_run(sc, r) : 0;
    if (dist_agree(grp, rc, r->dir) < 0) {
        if (dist_rank(grp) == 0)
            record_failure(r, err_get());
        return DPCNN_EXIT_FAILURE;
    }
    char **argv = XCALLOC(char *, (size_t)r->argc + 5);
    int argc = 0;
    for (int k = 0; k < r->argc; k++) {
        /* a resumed run has its weights: its --init is done with */
        if (o->has_checkpoint && strcmp(r->argv[k], "--init") == 0) {
            k++;
            continue;
        }
        argv[argc++] = r->argv[k];
    }
    argv[argc++] = "--checkpoint-dir";
    argv[argc++] = r->dir;
    if (o->has_checkpoint) {
        argv[argc++] = "--resume";
        argv[argc++] = r->dir;
    }
    TrainConfig cfg;
    int status = DPCNN_EXIT_FAILURE;
    if (options_parse(&cfg, argc, argv, 0) != OPTIONS_RUN) {
        /* checked in sweep_parse: cannot happen, unless with --init and --resume */
        if (dist_rank(grp) == 0)
            record_failure(r, err_get());
        free(argv);
        return status;
    }
    cfg.launched = sc->launched || many_groups;
    if (!cfg.quiet)
        msg_info("run %d of %d%s, on %d rank%s: dpcnn %s", nth, total,
                 o->has_checkpoint ? " (resumed)" : "", dist_size(grp),
                 dist_size(grp) == 1 ? "" : "s", r->line);
    status = train_run(&cfg, grp);
    if (status == DPCNN_EXIT_FAILURE && dist_rank(grp) == 0) {
        record_failure(r, err_get());
        /* shown even with --quiet: the error above may not name the run */
        msg_info("the run failed (recorded in %s/failed.txt); the others go on", r->dir);
    }
    free(argv);
    return status;
}

/* As many groups as there are runs to train, up to one per rank, all of one
 * size: the smallest divisor of the rank count with at most that many groups. */
static int choose_group_size(int ranks, int runs)
{
    int g = 1;
    while (g < ranks && (ranks % g != 0 || ranks / g > (runs > 0 ? runs : 1)))
        g++;
    return g;
}

int sweep_run(SweepConfig *sc, Dist *world)
{
    const int P = dist_size(world), me = dist_rank(world);
    const int n = sc->nruns;
    Outcome *o = XCALLOC(Outcome, (size_t)n);
    watchdog_beat("looking at the experiment's runs", 0);
    int rc = 0;
    if (me == 0) {
        rc = prepare_experiment(sc);
        for (int i = 0; i < n && rc == 0; i++)
            run_outcome(&sc->runs[i], &o[i], NULL, 0);
    }
    if (dist_agree(world, rc, sc->dir) < 0) {
        free(o);
        return DPCNN_EXIT_FAILURE;
    }
    dist_bcast(world, o, sizeof(Outcome) * (size_t)n, 0);

    /* The runs this job is for (one with --index), and those it trains. */
    const int first = sc->index >= 0 ? (int)sc->index : 0;
    const int last = sc->index >= 0 ? (int)sc->index + 1 : n;
    int *mine = XCALLOC(int, (size_t)n), *todo = XCALLOC(int, (size_t)n);
    int nmine = 0, ntodo = 0, status = DPCNN_EXIT_OK;
    for (int i = first; i < last; i++) {
        mine[nmine++] = i;
        if (!sc->resume && o[i].has_files) {
            if (me == 0)
                msg_error("%s holds a run already: add --resume to continue the experiment "
                          "(finished runs are skipped), or choose another directory",
                          sc->runs[i].dir);
            status = DPCNN_EXIT_USAGE;
            break;
        }
        if (sc->runs[i].ok && o[i].status != RUN_DONE)
            todo[ntodo++] = i;
        else if (me == 0 && o[i].status == RUN_DONE && !sc->common.quiet)
            msg_info("skipping %s: done (%d of %s epochs)", sc->runs[i].name, o[i].epochs_done,
                     sc->runs[i].value[PARAM_EPOCHS]);
    }
    int G = sc->group_size ? sc->group_size : choose_group_size(P, ntodo);
    if (status == DPCNN_EXIT_OK && P % G != 0) {
        if (me == 0)
            msg_error("--group-size %d does not divide the %d ranks", G, P);
        status = DPCNN_EXIT_USAGE;
    }
    if (status != DPCNN_EXIT_OK) {
        free(o);
        free(mine);
        free(todo);
        return status;
    }
    const int ngroups = P / G, g = me / G;
    if (me == 0 && !sc->common.quiet)
        msg_info("experiment %s: %d run%s, %d to train, in %d group%s of %d rank%s", sc->dir,
                 nmine, nmine == 1 ? "" : "s", ntodo, ngroups, ngroups == 1 ? "" : "s", G,
                 G == 1 ? "" : "s");

    /* Group g trains the runs g, g + ngroups, ... of todo: a fixed deal, so
     * which ranks train a run is known in advance (and never changes a bit). */
    Dist *grp = dist_split(world, g, me);
    msg_set_rank(dist_rank(grp), G);
    int flags[2] = {0, 0}; /* stopped, failed */
    for (int k = g; k < ntodo; k += ngroups) {
        const SweepRun *r = &sc->runs[todo[k]];
        int stop[1] = {stop_requested() != 0};
        dist_max_int(grp, stop, 1); /* all of the group, or none, starts the next run */
        if (stop[0]) {
            flags[0] = 1;
            break;
        }
        msg_set_tag(r->name);
        int st = train_one(sc, r, &o[todo[k]], grp, ngroups > 1, k + 1, ntodo);
        msg_set_tag(NULL);
        if (st == DPCNN_EXIT_STOPPED) {
            flags[0] = 1;
            break;
        }
        flags[1] |= st != DPCNN_EXIT_OK;
    }
    dist_finalize(grp);
    msg_set_rank(me, P);
    /* Every rank comes here, whatever its runs did; the groups that are done
     * wait for the others without a blocking collective. */
    dist_wait_all(world, "waiting for the other groups' runs");
    dist_max_int(world, flags, 2);
    int result[1] = {0};
    rc = 0;
    if (me == 0) {
        rc = write_table(sc, mine, nmine, &result[0]);
        if (flags[0])
            result[0] = DPCNN_EXIT_STOPPED;
        if (flags[0] && !sc->common.quiet)
            printf("stopped by a signal: the same command with --resume continues the "
                   "experiment\n");
    }
    if (dist_agree(world, rc, "the experiment's table") < 0)
        result[0] = DPCNN_EXIT_FAILURE;
    else
        dist_bcast(world, result, sizeof result, 0);
    free(o);
    free(mine);
    free(todo);
    return result[0];
}
