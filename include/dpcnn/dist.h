/* The MPI module: the only file that calls MPI.
 *
 * A Dist is a communicator plus what the rest of dpcnn needs to know about it.
 * A single process started without mpirun is a world of one rank and takes the
 * same path. Every MPI call is checked: MPI errors are returned, not fatal by
 * default, and a failed call ends the job through dist_abort with the place and
 * MPI's own text.
 *
 * Errors that every rank can see are decided together: dist_agree() is a
 * collective that tells every rank whether any rank failed, and prints each
 * distinct failure once (from rank 0, naming the ranks), so every rank takes
 * the same branch and exits with the same status.
 *
 * Every collective below waits at most the watchdog's --hang-timeout: a rank
 * that has waited that long finds out which ranks went silent (stopped, hung,
 * cut off), names them and their hosts, and ends the job (dist.c explains how;
 * doc/scaling.md, "When a node goes silent", measures it). */
#ifndef DPCNN_DIST_H
#define DPCNN_DIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

typedef struct Dist Dist;

/* MPI_Init_thread (funneled: only the main thread calls MPI) on the world,
 * for a process a launcher started (mpirun, srun); for one no launcher
 * started, a world of one rank without MPI at all. */
Dist *dist_init(int *argc, char ***argv, int launched);
/* A world of this process alone, without MPI (for tests). */
Dist *dist_self(void);
/* Collective over d: the ranks with the same color form a group, ordered by
 * key (MPI_Comm_split). The group is a world of its own for everything dpcnn
 * does with it (its rank 0 writes, its collectives and its agreed errors are
 * its own), so a run trained on it gives the same bits as on a world of that
 * size; it shares its nodes' cores with the rest of the job, so its local size
 * is d's. Freed with dist_finalize. */
Dist *dist_split(Dist *d, int color, int key);
void dist_finalize(Dist *d);
noreturn void dist_abort(Dist *d, int status);

int dist_rank(const Dist *d);
int dist_size(const Dist *d);
/* Ranks on this node (MPI_Comm_split_type shared memory). */
int dist_local_size(const Dist *d);
double dist_wtime(void);

/* Collective. rc < 0 on this rank means it failed with err_get() as the cause.
 * Returns 0 if no rank failed, else -1 on every rank; rank 0 prints the
 * distinct messages ("rank 1: ..." or "ranks 0-3: ..."), prefixed with what,
 * and keeps the first as its err_get(). */
int dist_agree(Dist *d, int rc, const char *what);

/* MAX of n ints on every rank; also a dist_shared_sync for the window. */
void dist_max_int(Dist *d, int *v, int n);
void dist_sum_int64(Dist *d, int64_t *v, size_t n);
/* Memory the ranks of one node share: a segment of `bytes` per rank (the
 * sizes may differ), collective. 0, with seg[q] the address of rank q's
 * segment for every rank q (seg has dist_size entries), or -1 and nothing
 * made where there is nothing to share (one rank), the ranks do not all share
 * one node, or the window cannot be made. One per Dist: another call replaces
 * it; dist_finalize frees it. dist_shared_sync is a barrier that orders the
 * segments: what any rank stored before it, every rank can load after it. */
int dist_shared_alloc(Dist *d, size_t bytes, void **seg);
void dist_shared_sync(Dist *d);
void dist_sum_float(Dist *d, float *v, size_t n);
void dist_bcast(Dist *d, void *buf, size_t bytes, int root);
/* out[r] = v from rank r, for every rank r. */
void dist_allgather_u64(Dist *d, uint64_t v, uint64_t *out);
/* Records of rec_bytes bytes: send[sdispl[r] .. + scount[r]) goes to rank r;
 * rank r's records land at recv[rdispl[r] ..). Counts are in records. */
void dist_alltoallv(Dist *d, const void *send, const int *scount, const int *sdispl,
                    void *recv, const int *rcount, const int *rdispl, size_t rec_bytes);
/* recv[displs[r] ...] = rank r's counts[r] floats, for every rank r. */
void dist_allgatherv_float(Dist *d, const float *send, int count, float *recv, const int *counts,
                           const int *displs);
void dist_barrier(Dist *d);
/* A barrier for as long as the slowest rank takes (a sweep's groups that are
 * done wait for those still training): it polls, beating the watchdog with
 * doing, instead of blocking in MPI_Barrier. */
void dist_wait_all(Dist *d, const char *doing);

#endif
