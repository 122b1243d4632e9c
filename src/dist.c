#include "config.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dpcnn/dist.h"
#include "dpcnn/error.h"
#include "dpcnn/watchdog.h"

/* Naming the rank that went silent.
 *
 * A rank that is stopped (SIGSTOP, a swapped-out or frozen node), stuck in
 * the kernel (a dead file system) or on a host cut off from the network
 * neither fails nor answers: the others wait for it in their next collective,
 * and a blocking collective gives them no way to learn who is missing. So
 * every collective here is started nonblocking (MPI_Iallreduce ...) and
 * waited for by polling MPI_Test (wait_collective). Past the --hang-timeout
 * the waiting rank asks every other rank, by a small point-to-point message
 * on a communicator of its own (probe), whether it is there. Every rank
 * answers such a query from inside any of its own waits (it polls for queries
 * there), so within DIST_ANSWER_GRACE seconds every rank that is alive and
 * waiting has answered; the ranks that have not are the silent ones, and the
 * lowest-numbered rank that did answer names them and their hosts (every rank
 * learns every rank's host name at start-up) and ends the job with MPI_Abort.
 *
 * Nothing of this costs anything while the collectives complete: no message is
 * sent before a timeout, and the only extra work per collective is an
 * MPI_Test of the receive posted for queries. The polling spins for the first
 * DIST_SPIN_SECONDS, as a blocking call would, and then naps with growing
 * pauses (up to DIST_NAP_MAX): a rank that waits long, for a slow checkpoint
 * or a lost peer, leaves its core to others instead of spinning on it. The
 * watchdog thread (watchdog.c) still backs this up, and covers the calls that
 * cannot be made nonblocking (MPI_Init, MPI_Finalize, communicator creation). */
#define DIST_ANSWER_GRACE 2.0  /* seconds to collect the answers to a query */
#define DIST_SPIN_SECONDS 1e-3 /* poll without pause for this long */
#define DIST_NAP_MIN 10e-6     /* then nap this long, doubling ... */
#define DIST_NAP_MAX 250e-6    /* ... up to this */
#define DIST_HOST_MAX 64       /* a host name's bytes, NUL included (cut if longer) */

enum { NOTE_TAG = 11, NOTE_QUERY = 1, NOTE_ANSWER = 2 };

struct Dist {
    int local;      /* a world of one without MPI (a process no launcher started) */
    MPI_Comm comm;
    MPI_Comm node;  /* ranks sharing this node's memory */
    MPI_Comm probe; /* a duplicate of comm for queries and answers, never for data */
    int rank, size, local_size;
    int owns_mpi;   /* dist_init called MPI_Init */
    int owns_comm;  /* dist_split made comm */
    char *hosts;    /* DIST_HOST_MAX bytes per rank: every rank's host name */
    /* The receive always posted on probe for a query or an answer, and the
     * ranks known to be alive because they sent one. */
    MPI_Request note_req;
    int note_in; /* NOTE_QUERY or NOTE_ANSWER */
    char *answered;
    /* dist_shared_alloc's window (ranks all on one node) */
    int shm; /* 1 while there is one */
    MPI_Win shm_win;
};

static Dist *g_world; /* for the fatal hook */
static void shm_release(Dist *d);

static void report_mpi_error(int rc, const char *call, const char *file, int line)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    msg_error("MPI call failed at %s:%d: %s: %s", file, line, call, msg);
}

/* Check an MPI call; on failure, say where and what MPI says, then abort all. */
#define MPI_CHECK(d, call)                                                              \
    do {                                                                                \
        int rc_ = (call);                                                               \
        if (rc_ != MPI_SUCCESS) {                                                       \
            report_mpi_error(rc_, #call, __FILE__, __LINE__);                           \
            dist_abort((d), DPCNN_EXIT_FAILURE);                                        \
        }                                                                               \
    } while (0)

/* The same for a call that blocks until the other ranks take part and cannot
 * be made nonblocking (creating communicators): the watchdog thread knows
 * this rank is waiting. */
#define MPI_CHECK_BLOCKING(d, call)                                                     \
    do {                                                                                \
        watchdog_waiting(1);                                                            \
        MPI_CHECK(d, call);                                                             \
        watchdog_waiting(0);                                                            \
    } while (0)

static void wait_collective(Dist *d, MPI_Request *req, const char *call, const char *file,
                            int line);

/* Start a nonblocking collective, MPI_Ixxx(args..., &request), and wait for
 * it: COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, v, n, ...). */
#define COLLECTIVE(d, fn, ...)                                                          \
    do {                                                                                \
        MPI_Request req_;                                                               \
        MPI_CHECK(d, fn(__VA_ARGS__, &req_));                                           \
        wait_collective((d), &req_, #fn, __FILE__, __LINE__);                          \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap(double seconds)
{
    const long long ns = (long long)(seconds * 1e9);
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}

static const char *host_of(const Dist *d, int r)
{
    return d->hosts ? d->hosts + (size_t)r * DIST_HOST_MAX : "?";
}

static void post_note_receive(Dist *d)
{
    MPI_CHECK(d, MPI_Irecv(&d->note_in, 1, MPI_INT, MPI_ANY_SOURCE, NOTE_TAG, d->probe,
                           &d->note_req));
}

/* Answer a query that has come in, and note who sent one; returns 1 if a
 * note (query or answer) was taken. The answers go out nonblocking and are
 * never waited for: they are a few bytes (sent eagerly), and a query comes
 * only when the job is about to end. */
static int serve_notes(Dist *d)
{
    int got = 0;
    MPI_Status st;
    MPI_CHECK(d, MPI_Test(&d->note_req, &got, &st));
    if (!got)
        return 0;
    const int from = st.MPI_SOURCE;
    d->answered[from] = 1; /* a query is an answer too: its sender is alive */
    if (d->note_in == NOTE_QUERY) {
        static int answer = NOTE_ANSWER;
        MPI_Request r;
        MPI_CHECK(d, MPI_Isend(&answer, 1, MPI_INT, from, NOTE_TAG, d->probe, &r));
        MPI_CHECK(d, MPI_Request_free(&r));
    }
    post_note_receive(d);
    return 1;
}

/* "rank 2 on host h3" or "ranks 2, 5 on host h3 and rank 4 on host h2": the
 * ranks r with flag[r] == want, grouped by host in the order of their first rank. */
static void list_ranks(const Dist *d, const char *flag, int want, char *out, size_t n)
{
    char *done = XCALLOC(char, (size_t)d->size);
    size_t len = 0;
    out[0] = '\0';
    int groups = 0;
    for (int r = 0; r < d->size; r++) {
        if (done[r] || flag[r] != want)
            continue;
        int count = 0;
        for (int q = r; q < d->size; q++)
            count += !done[q] && flag[q] == want && strcmp(host_of(d, q), host_of(d, r)) == 0;
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s ", groups ? " and " : "",
                                count > 1 ? "ranks" : "rank");
        int first = 1;
        for (int q = r; q < d->size; q++)
            if (!done[q] && flag[q] == want && strcmp(host_of(d, q), host_of(d, r)) == 0) {
                len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%d",
                                        first ? "" : ", ", q);
                done[q] = 1;
                first = 0;
            }
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, " on host %s", host_of(d, r));
        groups++;
    }
    free(done);
}

/* This rank has waited --hang-timeout seconds in a collective: find out who
 * is silent, have one rank say so, and end the job. */
static noreturn void name_the_silent(Dist *d, double waited)
{
    static int query = NOTE_QUERY;
    d->answered[d->rank] = 1;
    for (int r = 0; r < d->size; r++) {
        if (r == d->rank)
            continue;
        MPI_Request req;
        MPI_CHECK(d, MPI_Isend(&query, 1, MPI_INT, r, NOTE_TAG, d->probe, &req));
        MPI_CHECK(d, MPI_Request_free(&req));
    }
    const double until = now() + DIST_ANSWER_GRACE;
    int alive;
    for (;;) {
        alive = 0;
        for (int r = 0; r < d->size; r++)
            alive += d->answered[r];
        if (alive == d->size || now() >= until)
            break;
        if (!serve_notes(d))
            nap(1e-3);
    }
    /* The lowest rank that is alive speaks; the others give it a moment. */
    int speaker = 0;
    while (!d->answered[speaker])
        speaker++;
    long long step;
    const char *doing = watchdog_doing(&step);
    if (speaker == d->rank) {
        char silent[4096];
        list_ranks(d, d->answered, 0, silent, sizeof silent);
        const int many = d->size - alive > 1;
        if (alive < d->size)
            msg_error("%s went silent: the other ranks have waited %.0f s for %s in a "
                      "collective (%s %lld), and %s not answer: a stopped or hung process, or "
                      "a host cut off from the network; ending the job (--hang-timeout)",
                      silent, waited, many ? "them" : "it", doing, step,
                      many ? "they do" : "it does");
        else
            msg_error("a collective (%s %lld) has not completed in %.0f s, though every rank "
                      "answers: the network is too slow for it, or broken; ending the job "
                      "(--hang-timeout)",
                      doing, step, waited);
    } else {
        nap(1.0);
    }
    dist_abort(d, DPCNN_EXIT_FAILURE);
}

/* Wait for a nonblocking collective, answering queries meanwhile; past the
 * hang timeout, name the silent ranks and end the job. */
static void wait_collective(Dist *d, MPI_Request *req, const char *call, const char *file,
                            int line)
{
    const double timeout = watchdog_timeout();
    double start = now(), last = start;
    double rest = 0;
    watchdog_waiting(1);
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            report_mpi_error(rc, call, file, line);
            dist_abort(d, DPCNN_EXIT_FAILURE);
        }
        if (done)
            break;
        if (d->size > 1)
            serve_notes(d);
        const double t = now();
        /* polls are at most DIST_NAP_MAX apart: a gap of a second is time
         * this rank was stopped (as in the watchdog), which is not waiting */
        if (t - last > 1.0)
            start += t - last;
        last = t;
        if (timeout > 0 && t - start >= timeout)
            name_the_silent(d, t - start);
        if (t - start > DIST_SPIN_SECONDS) {
            rest = rest == 0 ? DIST_NAP_MIN : rest * 2 < DIST_NAP_MAX ? rest * 2 : DIST_NAP_MAX;
            nap(rest);
        }
    }
    watchdog_waiting(0);
}

static void fatal_hook(int status)
{
    if (g_world && g_world->size > 1)
        MPI_Abort(g_world->comm, status);
}

static Dist *make(MPI_Comm comm)
{
    Dist *d = XCALLOC(Dist, 1);
    d->comm = comm;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_CHECK(d, MPI_Comm_rank(comm, &d->rank));
    MPI_CHECK(d, MPI_Comm_size(comm, &d->size));
    MPI_CHECK_BLOCKING(d, MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, d->rank,
                                              MPI_INFO_NULL, &d->node));
    MPI_Comm_set_errhandler(d->node, MPI_ERRORS_RETURN);
    MPI_CHECK(d, MPI_Comm_size(d->node, &d->local_size));
    MPI_CHECK_BLOCKING(d, MPI_Comm_dup(comm, &d->probe));
    MPI_Comm_set_errhandler(d->probe, MPI_ERRORS_RETURN);
    d->answered = XCALLOC(char, (size_t)d->size);
    post_note_receive(d);
    /* Every rank's host name, for the messages that name a rank. */
    char mine[DIST_HOST_MAX] = "?";
    if (gethostname(mine, sizeof mine) != 0)
        snprintf(mine, sizeof mine, "?");
    mine[DIST_HOST_MAX - 1] = '\0';
    char *hosts = XCALLOC(char, (size_t)d->size * DIST_HOST_MAX);
    COLLECTIVE(d, MPI_Iallgather, mine, DIST_HOST_MAX, MPI_CHAR, hosts, DIST_HOST_MAX, MPI_CHAR,
               comm);
    d->hosts = hosts;
    return d;
}

/* A world of one rank that never calls MPI: every collective is the identity
 * (or a copy), and nothing is started. */
static Dist *make_local(void)
{
    Dist *d = XCALLOC(Dist, 1);
    d->local = 1;
    d->comm = d->node = d->probe = MPI_COMM_NULL;
    d->size = d->local_size = 1;
    return d;
}

Dist *dist_init(int *argc, char ***argv, int launched)
{
    if (!launched) {
        /* Open MPI's singleton start (MPI_Init without a launcher) forks a
         * helper daemon and took 0.3 s, twice the rest of dpcnn's start-up;
         * a process alone needs none of it. */
        Dist *d = make_local();
        g_world = d;
        msg_set_rank(0, 1);
        return d;
    }
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "dpcnn: error: MPI_Init_thread failed\n");
        exit(DPCNN_EXIT_FAILURE);
    }
    Dist *d = make(MPI_COMM_WORLD);
    d->owns_mpi = 1;
    g_world = d;
    msg_set_rank(d->rank, d->size);
    err_set_fatal_hook(fatal_hook);
    if (provided < MPI_THREAD_FUNNELED)
        msg_warn("MPI provides thread level %d < FUNNELED; worker threads never call MPI, "
                 "continuing", provided);
    return d;
}

Dist *dist_self(void)
{
    return make_local();
}

Dist *dist_split(Dist *d, int color, int key)
{
    if (d->local)
        return make_local();
    MPI_Comm comm;
    MPI_CHECK_BLOCKING(d, MPI_Comm_split(d->comm, color, key, &comm));
    Dist *g = make(comm);
    g->owns_comm = 1;
    /* the group shares its nodes' cores with the rest of the job */
    g->local_size = d->local_size;
    return g;
}

void dist_finalize(Dist *d)
{
    if (!d)
        return;
    if (d->local) {
        if (g_world == d)
            g_world = NULL;
        free(d);
        return;
    }
    shm_release(d);
    MPI_Cancel(&d->note_req);
    MPI_Wait(&d->note_req, MPI_STATUS_IGNORE);
    MPI_Comm_free(&d->probe);
    MPI_Comm_free(&d->node);
    if (d->owns_comm)
        MPI_Comm_free(&d->comm);
    int owns = d->owns_mpi;
    if (g_world == d)
        g_world = NULL;
    free(d->hosts);
    free(d->answered);
    free(d);
    if (owns)
        MPI_Finalize();
}

void dist_abort(Dist *d, int status)
{
    fflush(stdout);
    fflush(stderr);
    if (d && d->size > 1)
        MPI_Abort(d->comm, status);
    exit(status);
}

int dist_rank(const Dist *d) { return d->rank; }
int dist_size(const Dist *d) { return d->size; }
int dist_local_size(const Dist *d) { return d->local_size; }

double dist_wtime(void)
{
    return now();
}

int dist_agree(Dist *d, int rc, const char *what)
{
    int failed = rc < 0, any = failed;
    if (d->local) {
        if (!failed)
            return 0;
        char first[ERR_MAX];
        snprintf(first, sizeof first, "%s%s%s", what ? what : "", what ? ": " : "", err_get());
        msg_error("%s", first);
        err_set("%s", first);
        return -1;
    }
    COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, d->comm);
    if (!any)
        return 0;
    /* Messages of any length (a long path must not cut off the reason): the
     * lengths first, then the texts, each with its NUL. */
    const char *mine = failed ? err_get() : "";
    int len = (int)strlen(mine) + 1;
    int *lens = NULL, *displ = NULL;
    char *all = NULL;
    if (d->rank == 0) {
        lens = XCALLOC(int, (size_t)d->size);
        displ = XCALLOC(int, (size_t)d->size);
    }
    COLLECTIVE(d, MPI_Igather, &len, 1, MPI_INT, lens, 1, MPI_INT, 0, d->comm);
    if (d->rank == 0) {
        size_t total = 0;
        for (int r = 0; r < d->size; r++) {
            displ[r] = (int)total;
            total += (size_t)lens[r];
        }
        all = XCALLOC(char, total);
    }
    COLLECTIVE(d, MPI_Igatherv, mine, len, MPI_CHAR, all, lens, displ, MPI_CHAR, 0, d->comm);
    if (d->rank == 0) {
        /* One line per distinct message, naming the ranks that reported it;
         * the first is left in err_get() for rank 0's caller. */
        char first[ERR_MAX] = "";
        for (int r = 0; r < d->size; r++) {
            const char *m = all + displ[r];
            int seen = m[0] == '\0';
            for (int q = 0; q < r && !seen; q++)
                seen = strcmp(m, all + displ[q]) == 0;
            if (seen)
                continue;
            char ranks[256] = "";
            int count = 0;
            for (int q = r; q < d->size; q++)
                if (strcmp(m, all + displ[q]) == 0) {
                    size_t n = strlen(ranks);
                    if (n < sizeof ranks - 16)
                        snprintf(ranks + n, sizeof ranks - n, "%s%d", count ? "," : "", q);
                    count++;
                }
            if (!first[0])
                snprintf(first, sizeof first, "%s%s%s", what ? what : "", what ? ": " : "", m);
            if (d->size == 1)
                fprintf(stderr, "dpcnn: error: %s%s%s\n", what ? what : "", what ? ": " : "", m);
            else if (count == d->size)
                fprintf(stderr, "dpcnn: error (all ranks): %s%s%s\n", what ? what : "",
                        what ? ": " : "", m);
            else
                fprintf(stderr, "dpcnn: error (rank%s %s): %s%s%s\n", count > 1 ? "s" : "",
                        ranks, what ? what : "", what ? ": " : "", m);
        }
        fflush(stderr);
        err_set("%s", first);
        free(all);
        free(lens);
        free(displ);
    }
    return -1;
}

void dist_max_int(Dist *d, int *v, int n)
{
    if (d->local)
        return;
    if (d->shm == 1) /* a barrier for the shared window too (dist.h) */
        MPI_Win_sync(d->shm_win);
    COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, v, n, MPI_INT, MPI_MAX, d->comm);
    if (d->shm == 1)
        MPI_Win_sync(d->shm_win);
}

/* ---- Memory shared by the ranks of one node ----
 * One MPI shared-memory window per Dist, a segment per rank: the exact sum
 * of the gradients reads every rank's slots straight from it (step.c). The
 * barrier is nonblocking and polled like every collective here, so a silent
 * rank is still named; MPI_Win_sync on both sides of it orders the stores. */
static void shm_release(Dist *d)
{
    if (d->shm != 1)
        return;
    MPI_Win_unlock_all(d->shm_win);
    MPI_Win_free(&d->shm_win);
    d->shm = 0;
}

int dist_shared_alloc(Dist *d, size_t bytes, void **seg)
{
    if (d->local || d->size == 1)
        return -1;
    int node_size; /* (local_size is not it in a group of dist_split) */
    MPI_CHECK(d, MPI_Comm_size(d->node, &node_size));
    if (node_size != d->size)
        return -1;
    shm_release(d);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *mine = NULL;
    /* blocking, like communicator creation: the watchdog knows we wait */
    watchdog_waiting(1);
    int rc = MPI_Win_allocate_shared((MPI_Aint)(bytes > 0 ? bytes : 1), 1, info, d->comm, &mine,
                                     &d->shm_win);
    watchdog_waiting(0);
    MPI_Info_free(&info);
    int failed = rc != MPI_SUCCESS;
    COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, d->comm);
    if (failed) {
        if (rc == MPI_SUCCESS)
            MPI_Win_free(&d->shm_win);
        return -1;
    }
    for (int q = 0; q < d->size; q++) {
        MPI_Aint got;
        int unit;
        MPI_CHECK(d, MPI_Win_shared_query(d->shm_win, q, &got, &unit, &seg[q]));
    }
    MPI_CHECK(d, MPI_Win_lock_all(MPI_MODE_NOCHECK, d->shm_win));
    d->shm = 1;
    return 0;
}

void dist_shared_sync(Dist *d)
{
    if (d->local || d->size == 1)
        return;
    if (d->shm == 1)
        MPI_Win_sync(d->shm_win); /* this rank's stores, visible to the others */
    COLLECTIVE(d, MPI_Ibarrier, d->comm);
    if (d->shm == 1)
        MPI_Win_sync(d->shm_win); /* and theirs to this rank */
}

void dist_sum_int64(Dist *d, int64_t *v, size_t n)
{
    if (d->local || d->size == 1) /* a sum over one rank is what it holds */
        return;
    /* MPI counts are int: reduce in slices for very large buffers. */
    const size_t slice = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += slice) {
        int cnt = (int)(n - off < slice ? n - off : slice);
        COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, v + off, cnt, MPI_INT64_T, MPI_SUM, d->comm);
    }
}

void dist_sum_float(Dist *d, float *v, size_t n)
{
    if (d->local)
        return;
    const size_t slice = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += slice) {
        int cnt = (int)(n - off < slice ? n - off : slice);
        COLLECTIVE(d, MPI_Iallreduce, MPI_IN_PLACE, v + off, cnt, MPI_FLOAT, MPI_SUM, d->comm);
    }
}

void dist_bcast(Dist *d, void *buf, size_t bytes, int root)
{
    if (d->local)
        return;
    COLLECTIVE(d, MPI_Ibcast, buf, (int)bytes, MPI_BYTE, root, d->comm);
}

void dist_allgather_u64(Dist *d, uint64_t v, uint64_t *out)
{
    if (d->local) {
        out[0] = v;
        return;
    }
    COLLECTIVE(d, MPI_Iallgather, &v, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, d->comm);
}

void dist_alltoallv(Dist *d, const void *send, const int *scount, const int *sdispl,
                    void *recv, const int *rcount, const int *rdispl, size_t rec_bytes)
{
    if (d->local) {
        memcpy((char *)recv + (size_t)rdispl[0] * rec_bytes,
               (const char *)send + (size_t)sdispl[0] * rec_bytes, (size_t)rcount[0] * rec_bytes);
        (void)scount;
        return;
    }
    MPI_Datatype rec;
    MPI_CHECK(d, MPI_Type_contiguous((int)rec_bytes, MPI_BYTE, &rec));
    MPI_CHECK(d, MPI_Type_commit(&rec));
    COLLECTIVE(d, MPI_Ialltoallv, send, scount, sdispl, rec, recv, rcount, rdispl, rec, d->comm);
    MPI_Type_free(&rec);
}

void dist_allgatherv_float(Dist *d, const float *send, int count, float *recv, const int *counts,
                           const int *displs)
{
    if (d->local) {
        memcpy(recv + displs[0], send, sizeof(float) * (size_t)count);
        (void)counts;
        return;
    }
    COLLECTIVE(d, MPI_Iallgatherv, send, count, MPI_FLOAT, recv, counts, displs, MPI_FLOAT,
               d->comm);
}

void dist_barrier(Dist *d)
{
    if (d->local)
        return;
    COLLECTIVE(d, MPI_Ibarrier, d->comm);
}

void dist_wait_all(Dist *d, const char *doing)
{
    if (d->local)
        return;
    /* Not wait_collective: waiting here for groups that are still training
     * is no hang, however long. Queries are still answered. */
    MPI_Request req;
    MPI_CHECK(d, MPI_Ibarrier(d->comm, &req));
    for (int done = 0;;) {
        watchdog_beat(doing, 0);
        MPI_CHECK(d, MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done)
            return;
        if (d->size > 1)
            serve_notes(d);
        nap(20e-3);
    }
}
