#!/bin/sh
# make check: the fuzz harnesses without libFuzzer (replay.c). Every seed
# (written now by fuzz_seeds) must be accepted, so the harnesses' success paths
# and round trips run; every regression input in tests/fuzz/regress/HARNESS/
# must pass the contract checks. A broken contract, a sanitizer report or a
# leak fails the test.
set -eu
R=${srcdir:-.}/tests/fuzz/regress
T=$(mktemp -d "${TMPDIR:-/tmp}/dpcnn-fuzz-replay.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
tests/fuzz/fuzz_seeds "$T/seeds"
# The limits of make fuzz (run.sh): an allocation above 2 GB fails the IDX
# replay; HDF5 may allocate up to 8 GB (more gets NULL, which it copes with);
# replay.c fails an input after which the process has used over 2 GB. Whole
# stacks, and HDF5's own leaks suppressed (lsan.supp).
ASAN_BASE=${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=${srcdir:-.}/tests/fuzz/lsan.supp:print_suppressions=0
UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1
TMPDIR=$T FUZZ_VERBOSE=1
export LSAN_OPTIONS UBSAN_OPTIONS TMPDIR FUZZ_VERBOSE
status=0
# replay NAME HARNESS FILE...: one process for all files, at most 5 minutes
# (a hang that comes back must fail the test, not stall it).
replay() {
    name=$1 h=$2
    shift 2
    if timeout 300 "tests/fuzz/replay_$h" "$@" >"$T/$name.log" 2>&1; then
        echo "PASS: $name: $# inputs"
    else
        echo "FAIL: $name (status $?):"
        cat "$T/$name.log"
        status=1
    fi
}
for h in idx dataset net checkpoint; do
    if [ "$h" = idx ] || [ "$h" = net ]; then
        ASAN_OPTIONS=$ASAN_BASE:max_allocation_size_mb=2048
    else
        ASAN_OPTIONS=$ASAN_BASE:max_allocation_size_mb=8192:allocator_may_return_null=1
    fi
    export ASAN_OPTIONS
    FUZZ_EXPECT_ACCEPT=1 replay "$h seeds" "$h" "$T/seeds/$h"/*
    set --
    if [ -d "$R/$h" ]; then
        for f in "$R/$h"/*; do
            [ -f "$f" ] && set -- "$@" "$f"
        done
    fi
    [ $# -eq 0 ] || replay "$h regressions" "$h" "$@"
done
exit $status
