#!/bin/sh
# make check's short chaos run: four interruptions of a small run, one of each
# kind (SIGKILL of mpirun, SIGKILL of a rank, SIGUSR1 to mpirun, SIGTERM to
# mpirun or a rank), at random moments, each resumed on a random rank count;
# the run ends bitwise identical to an uninterrupted one. The seed is printed
# in the log; CHAOS_SEED=N make check TESTS=tests/test_chaos.sh repeats it.
# make chaos runs 100 interruptions of a bigger run (tests/chaos.sh).
exec sh "${srcdir:-.}/tests/chaos.sh" -q -n 4 -r 4
