/* Stopping by signal: SIGTERM, SIGINT and SIGUSR1 ask for a stop at the next
 * step boundary (Slurm sends one before a time limit or a preemption; mpirun
 * forwards them). The ranks agree on it inside the step's own collective, so
 * all stop after the same step, write a checkpoint and exit 75. A second
 * signal of the same kind ends the process at once.
 *
 * main() installs the handlers before anything else, so a signal that comes
 * during start-up (MPI_Init alone takes a quarter of a second) is a stop
 * request too, never the default death with status 143. */
#ifndef DPCNN_STOP_H
#define DPCNN_STOP_H

void stop_install(void);
/* The signal that asked for a stop, or 0. */
int stop_requested(void);
const char *stop_signal_name(int sig);

#endif
