/* A watchdog against hangs. A rank that dies takes the job down (the launcher
 * sees it), but a rank that hangs (a stuck file system, a lost node, a bug)
 * would leave every other rank waiting in a collective forever. Each rank runs
 * a watchdog thread; the trainer beats it at every step, evaluation and
 * checkpoint. If no beat comes for the timeout, the thread says where this
 * rank was (computing, or waiting for the other ranks in a collective) and
 * ends the process; the launcher (mpirun, srun --kill-on-bad-exit) then ends
 * the rest. */
#ifndef DPCNN_WATCHDOG_H
#define DPCNN_WATCHDOG_H

/* Start watching (timeout in seconds; <= 0: no watchdog). */
void watchdog_start(double timeout);
void watchdog_stop(void);
/* Progress: what this rank is about to do, e.g. "step 120". */
void watchdog_beat(const char *doing, long long step);
/* The MPI module marks the time spent blocked in collectives. */
void watchdog_waiting(int waiting);

#endif
