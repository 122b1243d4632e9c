/* Errors and messages.
 *
 * Two kinds of failure:
 *  - recoverable: a function records a message with err_set() and returns -1.
 *    The caller decides what to do; with several ranks, the ranks agree on the
 *    outcome together (dist_agree) so every rank takes the same branch.
 *  - fatal: DIE() prints the place and the message and ends the process. Once
 *    MPI is up with more than one rank, the fatal hook calls MPI_Abort so no
 *    other rank is left waiting in a collective.
 *
 * Every message names the program, and the rank when there are several. */
#ifndef DPCNN_ERROR_H
#define DPCNN_ERROR_H

#include <stddef.h>
#include <stdnoreturn.h>

/* Exit statuses, documented in the man page and the README. */
enum {
    DPCNN_EXIT_OK = 0,
    DPCNN_EXIT_FAILURE = 1,  /* a runtime error: bad data, I/O, non-finite loss ... */
    DPCNN_EXIT_USAGE = 2,    /* a bad command line */
    DPCNN_EXIT_STOPPED = 75, /* stopped by a signal after writing a checkpoint: requeue */
};

/* Who is speaking: set once MPI knows the rank. size > 1 adds "rank R" to messages. */
void msg_set_rank(int rank, int size);
int msg_rank(void);
/* The run this process is training in an experiment (dpcnn sweep): every
 * message and progress line then starts with "[run] ". NULL or "": none. */
void msg_set_tag(const char *run);
const char *msg_tag(void); /* "[run] " or "" */

/* Informational output, rank 0 only; warnings from any rank, tagged with it. */
void msg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error message to stderr now, from this rank, tagged with it. */
void msg_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error of the whole job, which every rank knows: printed once, by rank 0,
 * and kept as err_get() on every rank (a sweep records it as the run's reason). */
void msg_job_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Recoverable errors: the last message, per thread. err_set returns -1 so
 * `return err_set(...)` reads naturally; its arguments may include err_get()
 * (to wrap the previous message). Messages are cut at ERR_MAX - 1 bytes. */
#define ERR_MAX 16384
int err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *err_get(void);

/* Fatal errors. The hook (set by the MPI module) runs after the message. */
void err_set_fatal_hook(void (*hook)(int status));
noreturn void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define DIE(...) die_at(__FILE__, __LINE__, __VA_ARGS__)

/* Allocation that cannot fail quietly. Zeroed, 64-byte aligned (cache line,
 * and wide enough for any vector unit). */
void *xcalloc(size_t count, size_t size);
#define XCALLOC(type, count) ((type *)xcalloc((count), sizeof(type)))
char *xstrdup(const char *s);

#endif
