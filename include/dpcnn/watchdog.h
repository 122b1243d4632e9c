/* A watchdog against hangs. A rank that dies takes the job down (the launcher
 * sees it), but a rank that hangs (a stuck file system, a stopped process, a
 * lost node, a bug) would leave every other rank waiting in a collective
 * forever. Each rank runs a watchdog thread; the trainer beats it at every
 * step, evaluation and checkpoint. If no beat comes for the timeout, the
 * thread says where this rank (and its host) was and ends the process; the
 * launcher (mpirun, srun --kill-on-bad-exit) then ends the rest.
 *
 * A rank waiting in a collective is watched by the MPI module itself
 * (dist.c): at the timeout it asks the other ranks who is still there and
 * names the rank and host that went silent. The thread then gives it
 * WATCHDOG_WAIT_GRACE seconds more before it steps in. doc/scaling.md
 * ("When a node goes silent") has the design and the measurements behind the
 * default timeout. */
#ifndef DPCNN_WATCHDOG_H
#define DPCNN_WATCHDOG_H

/* What the MPI module needs at most to name a silent rank after the timeout:
 * its grace for answers (DIST_ANSWER_GRACE) plus the time to print and abort. */
#define WATCHDOG_WAIT_GRACE 5.0

/* Start watching (timeout in seconds; <= 0: no watchdog). */
void watchdog_start(double timeout);
void watchdog_stop(void);
/* The timeout watchdog_start was given (0: none). */
double watchdog_timeout(void);
/* Progress: what this rank is about to do, e.g. "step 120". */
void watchdog_beat(const char *doing, long long step);
/* Progress inside a long piece of work that the last beat named (a chunk of
 * the evaluation): any thread may tick. */
void watchdog_tick(void);
/* What the last beat said. */
const char *watchdog_doing(long long *step);
/* The MPI module marks the time spent blocked in collectives; entering a wait
 * counts as progress (the wait has its own deadline, in dist.c). */
void watchdog_waiting(int waiting);

#endif
