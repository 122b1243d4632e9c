#include "config.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpcnn/dist.h"
#include "dpcnn/error.h"
#include "dpcnn/watchdog.h"

struct Dist {
    int local;     /* a world of one without MPI (a process no launcher started) */
    MPI_Comm comm;
    MPI_Comm node; /* ranks sharing this node's memory */
    int rank, size, local_size;
    int owns_mpi;  /* dist_init called MPI_Init */
    int owns_comm; /* made by dist_split: freed with it */
};

static Dist *g_world; /* for the fatal hook */

/* Check an MPI call; on failure, say where and what MPI says, then abort all.
 * While it runs, the watchdog knows this rank is waiting for the others. */
#define MPI_CHECK(d, call)                                                              \
    do {                                                                                \
        watchdog_waiting(1);                                                            \
        int rc_ = (call);                                                               \
        watchdog_waiting(0);                                                            \
        if (rc_ != MPI_SUCCESS) {                                                       \
            char msg_[MPI_MAX_ERROR_STRING];                                            \
            int len_ = 0;                                                               \
            MPI_Error_string(rc_, msg_, &len_);                                         \
            msg_error("MPI call failed at %s:%d: %s: %s", __FILE__, __LINE__, #call, msg_); \
            dist_abort((d), DPCNN_EXIT_FAILURE);                                        \
        }                                                                               \
    } while (0)

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
    MPI_CHECK(d, MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                                     &d->node));
    MPI_Comm_set_errhandler(d->node, MPI_ERRORS_RETURN);
    MPI_CHECK(d, MPI_Comm_size(d->node, &d->local_size));
    return d;
}

/* A world of one rank that never calls MPI: every collective is the identity
 * (or a copy), and nothing is started. */
static Dist *make_local(void)
{
    Dist *d = XCALLOC(Dist, 1);
    d->local = 1;
    d->comm = d->node = MPI_COMM_NULL;
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
    MPI_CHECK(d, MPI_Comm_split(d->comm, color, key, &comm));
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
    MPI_Comm_free(&d->node);
    if (d->owns_comm)
        MPI_Comm_free(&d->comm);
    int owns = d->owns_mpi;
    if (g_world == d)
        g_world = NULL;
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
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
    MPI_CHECK(d, MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, d->comm));
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
    MPI_CHECK(d, MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, d->comm));
    if (d->rank == 0) {
        size_t total = 0;
        for (int r = 0; r < d->size; r++) {
            displ[r] = (int)total;
            total += (size_t)lens[r];
        }
        all = XCALLOC(char, total);
    }
    MPI_CHECK(d, MPI_Gatherv(mine, len, MPI_CHAR, all, lens, displ, MPI_CHAR, 0, d->comm));
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
    MPI_CHECK(d, MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT, MPI_MAX, d->comm));
}

void dist_sum_int64(Dist *d, int64_t *v, size_t n)
{
    if (d->local)
        return;
    /* MPI counts are int: reduce in slices for very large buffers. */
    const size_t slice = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += slice) {
        int cnt = (int)(n - off < slice ? n - off : slice);
        MPI_CHECK(d, MPI_Allreduce(MPI_IN_PLACE, v + off, cnt, MPI_INT64_T, MPI_SUM, d->comm));
    }
}

void dist_sum_float(Dist *d, float *v, size_t n)
{
    if (d->local)
        return;
    const size_t slice = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += slice) {
        int cnt = (int)(n - off < slice ? n - off : slice);
        MPI_CHECK(d, MPI_Allreduce(MPI_IN_PLACE, v + off, cnt, MPI_FLOAT, MPI_SUM, d->comm));
    }
}

void dist_bcast(Dist *d, void *buf, size_t bytes, int root)
{
    if (d->local)
        return;
    MPI_CHECK(d, MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, d->comm));
}

void dist_allgather_u64(Dist *d, uint64_t v, uint64_t *out)
{
    if (d->local) {
        out[0] = v;
        return;
    }
    MPI_CHECK(d, MPI_Allgather(&v, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, d->comm));
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
    MPI_CHECK(d, MPI_Alltoallv(send, scount, sdispl, rec, recv, rcount, rdispl, rec, d->comm));
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
    MPI_CHECK(d, MPI_Allgatherv(send, count, MPI_FLOAT, recv, counts, displs, MPI_FLOAT,
                                d->comm));
}

void dist_barrier(Dist *d)
{
    if (d->local)
        return;
    MPI_CHECK(d, MPI_Barrier(d->comm));
}

void dist_wait_all(Dist *d, const char *doing)
{
    if (d->local)
        return;
    MPI_Request req;
    MPI_CHECK(d, MPI_Ibarrier(d->comm, &req));
    for (int done = 0;;) {
        watchdog_beat(doing, 0); /* waiting for others that are busy is no hang */
        MPI_CHECK(d, MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
}
