/* The process's compute resources, shared by training and evaluation. */
#ifndef DPCNN_RUNTIME_H
#define DPCNN_RUNTIME_H

#include "dpcnn/dist.h"

/* Worker threads for this rank: `asked` if > 0, else the cores this rank may
 * use (its affinity mask when a launcher bound it, else the node's cores
 * shared among the ranks on the node); never more than max_useful. */
int runtime_threads(int asked, Dist *d, int max_useful);

/* OpenBLAS single-threaded: dpcnn's threads each run whole micro-batches, so a
 * product's bits never depend on how many threads OpenBLAS splits it over. */
void runtime_blas_single(void);

/* Say which kernels run: dpcnn's own and their path (isa.h), or OpenBLAS and
 * its kernel, warning when that is the generic fallback on a CPU that could do
 * better and when ranks run different ones (collective then). */
void runtime_report_kernels(Dist *d, int threads);

/* Where start-up time goes: main marks the start, then each phase its end
 * (runtime_phase("MPI"), "data", ...); runtime_startup_text writes
 * "0.093 s: MPI 0.000, data 0.061, ..." (seconds since main's start, then
 * each phase's share). Rank-local and cheap; for the log line after the
 * first step. */
void runtime_mark_start(void);
void runtime_phase(const char *name);
void runtime_startup_text(char *buf, size_t n);

#endif
