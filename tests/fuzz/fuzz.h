/* Shared by the fuzz harnesses (fuzz_*.c) and their replay driver (replay.c).
 *
 * Each harness defines LLVMFuzzerTestOneInput: it hands the input bytes to a
 * reader as a file and checks the reader's contract, the same way in both
 * builds: with clang's libFuzzer (make fuzz) and with replay.c under the
 * ordinary compiler (make check replays tests/fuzz/regress and the seeds).
 *
 * The contract: a reader either succeeds with a fully validated result, or
 * returns -1 with a message that names the file (once); nothing else. A broken
 * contract aborts with the reason, so both builds report it as a crash. */
#ifndef DPCNN_FUZZ_H
#define DPCNN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not assert(): NDEBUG must not turn the checks off. */
#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz: contract broken at %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* The input as a file named like any other (HDF5 resolves the path, so a
 * memfd's /proc/self/fd/N will not do): slot k (0 or 1) is one file in $TMPDIR
 * (make fuzz points it at memory), rewritten by each call, removed at exit. */
const char *fuzz_file(int k, const uint8_t *data, size_t size);

/* Forget the last message, so a failure must set its own. */
void fuzz_clear_error(void);

/* rc is 0, or -1 with a message (err_get) that names the file, once. With
 * FUZZ_VERBOSE set, prints the outcome. */
void fuzz_check_outcome(int rc, const char *what, const char *path);

/* FUZZ_EXPECT_ACCEPT=1 (make check, for the seeds): the input is a valid file
 * and the harness must have found it accepted, or a harness that handed its
 * input over wrongly would pass every check vacuously. */
void fuzz_check_accepted(int accepted);

#endif
