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
# As in make fuzz (run.sh): whole stacks, HDF5's own leaks suppressed. As with
# libFuzzer's -malloc_limit_mb=2048, an allocation above 2 GB fails the IDX
# replay (a reader trusting a size a header claims); HDF5, which may ask for
# absurd sizes on a corrupt file and copes when refused, gets NULL instead.
ASAN_BASE=${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=2048:fast_unwind_on_malloc=0
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
for h in idx dataset checkpoint; do
    ASAN_OPTIONS=$ASAN_BASE:allocator_may_return_null=$([ "$h" = idx ] && echo 0 || echo 1)
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
