#!/bin/sh
# make fuzz: run.sh SECONDS FUZZ_SRCDIR HARNESS...
# Runs each libFuzzer harness tests/fuzz/fuzz_HARNESS for about SECONDS, one
# at a time, from fresh seeds (fuzz_seeds), the corpus of earlier runs and the
# regression inputs (FUZZ_SRCDIR/regress/HARNESS), and prints per harness the
# cases run and what it found. libFuzzer runs in fork mode, so a finding does
# not end the run: every crash, leak, timeout and out-of-memory is kept.
# State lives in tests/fuzz/run/: corpus/ (kept between runs), seeds/,
# findings/HARNESS/ (crash-*, leak-*, timeout-*, oom-*, each with a .log of it
# replayed; once fixed, move the input to FUZZ_SRCDIR/regress/HARNESS/, which
# make check replays) and HARNESS.log. Exits 1 if anything was found.
set -eu
seconds=$1 src=$2
shift 2
W=tests/fuzz/run
rm -rf "$W/seeds"
mkdir -p "$W"
tests/fuzz/fuzz_seeds "$W/seeds"
# The harnesses write each input to a file: in memory when possible, and in a
# directory of their own (a crash leaves its files behind).
scratch=$(mktemp -d "$([ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/dpcnn-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
export TMPDIR="$scratch"
# Whole stacks through HDF5 (built without frame pointers); HDF5's own leaks
# on malformed files are suppressed (lsan.supp says which and why).
asan=fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions="$src/lsan.supp":print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
found=0
for h in "$@"; do
    F=$W/findings/$h
    mkdir -p "$W/corpus/$h" "$F"
    dirs="$W/corpus/$h $W/seeds/$h"
    [ -d "$src/regress/$h" ] && dirs="$dirs $src/regress/$h"
    # dpcnn's own readers (IDX, descriptions) must not allocate what a file merely claims: one
    # allocation above 2 GB is a finding. HDF5 sizes allocations by fields of
    # the file before checking them (21 GB from a 17 KB file), harmless while
    # untouched: there, up to 8 GB is allowed (more fails, as HDF5 copes with),
    # and memory really used above 2 GB (-rss_limit_mb) is the finding.
    if [ "$h" = idx ]; then
        opts= ASAN_OPTIONS=$asan
    elif [ "$h" = net ]; then
        opts="-dict=$src/net.dict" ASAN_OPTIONS=$asan
    else
        opts="-dict=$src/hdf5.dict -malloc_limit_mb=8192"
        ASAN_OPTIONS=$asan:allocator_may_return_null=1:max_allocation_size_mb=8192
    fi
    export ASAN_OPTIONS
    ls "$F" >"$scratch/before"
    echo "fuzz: $h: running for $seconds s (log in $W/$h.log)"
    set +e
    # shellcheck disable=SC2086 # opts and dirs are lists of words
    "tests/fuzz/fuzz_$h" -fork=1 -ignore_crashes=1 -max_total_time="$seconds" -timeout=20 \
        -rss_limit_mb=2048 -artifact_prefix="$F/" $opts $dirs >"$W/$h.log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^#\([0-9]*\): cov.*/\1/p' "$W/$h.log" | tail -n 1)
    counts=$(sed -n 's/.* oom\/timeout\/crash: \([0-9/]*\) .*/\1/p' "$W/$h.log" | tail -n 1)
    new=$(ls "$F" | grep -v '\.log$' | grep -vxF -f "$scratch/before" || true)
    echo "fuzz: $h: ${runs:-0} cases, corpus $(ls "$W/corpus/$h" | wc -l)," \
        "oom/timeout/crash ${counts:-0/0/0}${new:+, FOUND:}"
    [ "$rc" -eq 0 ] || { echo "fuzz: $h: libFuzzer ended with status $rc"; found=1; }
    # Each new input replayed alone for its report: the kind and the first
    # frames of dpcnn or HDF5. One line per kind, with how many inputs and the
    # smallest of them (inputs sorted by size; the input's path made FILE).
    : >"$scratch/kinds"
    # shellcheck disable=SC2086 # new is a list of file names
    for f in $(if [ -n "$new" ]; then cd "$F" && ls -S -r $new; fi); do
        found=1
        "tests/fuzz/fuzz_$h" -timeout=20 -rss_limit_mb=2048 $opts "$F/$f" >"$F/$f.log" 2>&1 || true
        what=$(grep -m 1 -E '^SUMMARY: |ERROR: libFuzzer: |contract broken' "$F/$f.log" |
            sed "s|$scratch/dpcnn-fuzz-input-[A-Za-z0-9]*|FILE|g" | cut -c1-160)
        where=$(grep -E '^ *#[0-9]+ .* in (H5|[a-z_]+ /)' "$F/$f.log" | grep -v LLVMFuzzer |
            head -n 3 | sed 's/.* in \([^ ]*\).*/\1/' | tr '\n' ' ')
        echo "${what:-no longer fails alone (see $W/$h.log)}${where:+ at $where}|$f" \
            >>"$scratch/kinds"
    done
    awk -F'|' '!($1 in n) { order[++k] = $1; first[$1] = $2 } { n[$1]++ }
        END { for (i = 1; i <= k; i++) printf "%d|%s|%s\n", n[order[i]], order[i], first[order[i]] }' \
        "$scratch/kinds" | sort -t'|' -k1,1nr | while IFS='|' read -r n kind example; do
        echo "fuzz: $h:   $n x $kind"
        echo "fuzz: $h:       e.g. $F/$example"
    done
done
exit $found
