#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/error.h"

static int g_rank = 0;
static int g_size = 1;
static char g_tag[512]; /* "[lr=0.01] " while a sweep's group trains that run */
static void (*g_fatal_hook)(int) = NULL;
/* Long enough for two full paths and their reasons (PATH_MAX is 4096). */
static _Thread_local char t_err[ERR_MAX];

void msg_set_rank(int rank, int size)
{
    g_rank = rank;
    g_size = size;
}

int msg_rank(void) { return g_rank; }

void msg_set_tag(const char *run)
{
    if (run && *run)
        snprintf(g_tag, sizeof g_tag, "[%s] ", run);
    else
        g_tag[0] = '\0';
}

const char *msg_tag(void) { return g_tag; }

/* One message, written whole in one call: under mpirun the ranks' and the
 * launcher's lines must not interleave inside a message.
 * "dpcnn: [TAG] [rank R: ]KIND: MESSAGE\n" (the run's tag in a sweep; KIND
 * may be empty). */
static void emit(FILE *f, int tag_rank, const char *kind, const char *fmt, va_list ap)
{
    char msg[ERR_MAX], head[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (tag_rank && g_size > 1)
        snprintf(head, sizeof head, "dpcnn: %srank %d: ", g_tag, g_rank);
    else
        snprintf(head, sizeof head, "dpcnn: %s", g_tag);
    fprintf(f, "%s%s%s\n", head, kind, msg);
    fflush(f);
}

void msg_info(const char *fmt, ...)
{
    if (g_rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    char msg[ERR_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stdout, "%s%s\n", g_tag, msg);
    fflush(stdout);
}

void msg_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(stderr, 1, "warning: ", fmt, ap);
    va_end(ap);
}

void msg_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(stderr, 1, "error: ", fmt, ap);
    va_end(ap);
}

void msg_job_error(const char *fmt, ...)
{
    static _Thread_local char text[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    err_set("%s", text); /* the caller's reason, on every rank */
    if (g_rank != 0)
        return;
    fprintf(stderr, "dpcnn: %serror: %s\n", g_tag, text);
    fflush(stderr);
}

int err_set(const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers often pass err_get() itself
     * as an argument ("%s: %s", path, err_get()), and vsnprintf into its own
     * source is undefined behaviour (it garbled the message). */
    static _Thread_local char scratch[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(scratch, sizeof scratch, fmt, ap);
    va_end(ap);
    memcpy(t_err, scratch, sizeof t_err);
    return -1;
}

const char *err_get(void) { return t_err[0] ? t_err : "unknown error"; }

void err_set_fatal_hook(void (*hook)(int)) { g_fatal_hook = hook; }

void die_at(const char *file, int line, const char *fmt, ...)
{
    fflush(stdout);
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_size > 1)
        fprintf(stderr, "dpcnn: %srank %d: fatal: %s (%s:%d)\n", g_tag, g_rank, msg, file, line);
    else
        fprintf(stderr, "dpcnn: %sfatal: %s (%s:%d)\n", g_tag, msg, file, line);
    fflush(stderr);
    if (g_fatal_hook)
        g_fatal_hook(DPCNN_EXIT_FAILURE);
    exit(DPCNN_EXIT_FAILURE);
}

void *xcalloc(size_t count, size_t size)
{
    if (count == 0 || size == 0)
        count = size = 1;
    if (count > SIZE_MAX / size)
        DIE("allocation of %zu x %zu bytes overflows", count, size);
    size_t bytes = count * size;
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded);
    if (!p)
        DIE("out of memory allocating %zu bytes", bytes);
    memset(p, 0, rounded);
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xcalloc(n, 1);
    memcpy(p, s, n);
    return p;
}
