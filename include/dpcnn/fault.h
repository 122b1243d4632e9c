/* Fault injection for the tests (doc/determinism.md), as jq keeps its error
 * injection apart from the code it exercises. DPCNN_FAULT=kind@step:rank:
 *   nan        a NaN weight before that step
 *   hang       stop making progress before it
 *   drift      a perturbed replica after it
 *   kill       SIGKILL itself after it
 *   killwrite  SIGKILL itself halfway through writing that step's checkpoint
 * Read once at start-up; unset, nothing is ever due. */
#ifndef DPCNN_FAULT_H
#define DPCNN_FAULT_H

#include <stdint.h>

void fault_read(void);
int fault_due(const char *kind, int64_t step, int rank);

#endif
