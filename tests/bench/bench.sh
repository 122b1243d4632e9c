#!/bin/sh
# make bench: dpcnn against PyTorch, side by side on this machine, and where
# dpcnn's time goes.
#
# Each round runs, one after another (never at the same time), one epoch of
# Fashion-MNIST's 60,000 training images each:
#   PyTorch (Debian's python3-torch), 1 process, 1 thread: tutorial, bn, lenet5
#   dpcnn, 1 process, 1 thread: the same three (BENCH_BASELINE=DIR: also the
#     dpcnn built in DIR, for a before-and-after in the same rounds)
#   dpcnn tutorial, 1 process, 2 threads; and mpirun -np 2, 1 thread each
#     (and the same two of the baseline's)
# and reads each one's own training throughput (samples per second over the
# training loop: data loading and evaluation are not counted by either).
# On a shared, noisy machine only ratios within a round mean much: the summary
# gives each ratio's median over the rounds (and its range).
#
# Then, once each:
#   the core's peak (fused multiply-adds on one thread) and the engine alone,
#     step by step, as a fraction of it (bench_model), on each path;
#   evaluation of the 10,000 test images and start-up to the first step (the
#     dpcnn runs' own figures, medians), with where start-up goes;
#   four epochs of the tutorial, each epoch's throughput (dpcnn, before, PyTorch);
#   peak RSS per rank at mpirun -np 4, and PyTorch's for the same training;
#   a family of wider networks, native kernels against OpenBLAS's.
#
# Usage: tests/bench/bench.sh [ROUNDS]   (default 5; env: BENCH_DIR,
#        BENCH_BASELINE, BENCH_CORETYPE (OPENBLAS_CORETYPE for both programs))
set -eu
if [ -n "${BENCH_CORETYPE:-}" ]; then
    export OPENBLAS_CORETYPE=$BENCH_CORETYPE
fi
rounds=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
dir=${BENCH_DIR:-$(mktemp -d /tmp/dpcnn-bench.XXXXXX)}
mkdir -p "$dir"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
base=${BENCH_BASELINE:-}

[ -x ./dpcnn ] || { echo "bench: run from the build directory (./dpcnn not found)" >&2; exit 1; }
for p in tests/bench/bench_model tests/bench/fma_peak; do
    [ -x "$p" ] || { echo "bench: $p not built (make bench builds it)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
    echo "bench: needs Debian's python3-torch (apt-get install python3-torch)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: needs GNU time for peak memory (apt-get install time)" >&2; exit 1; }
[ -z "$base" ] || [ -x "$base/dpcnn" ] || { echo "bench: $base/dpcnn not found" >&2; exit 1; }

models="tutorial bn lenet5"
# field FILE KEY: KEY's value in the last line of a metrics file that has it
field() { sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | tail -n 1; }
# median of the numbers on stdin, then "(min-max)"
median() {
    sort -g | awk '{v[NR] = $1} END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'
}
median_plain() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# dpcnn_run NAME LAUNCH BIN ARGS...: one epoch (LAUNCH: "" or an mpirun
# command, split into words); prints its samples per second
dpcnn_run() {
    name=$1 launch=$2 bin=$3
    shift 3
    rm -rf "$dir/$name.ckpt"
    # shellcheck disable=SC2086 # launch is a list of words
    $launch "$bin" --epochs 1 --checkpoint-dir "$dir/$name.ckpt" "$@" >"$dir/$name.log" 2>&1 ||
        { cat "$dir/$name.log" >&2; echo "bench: $name failed" >&2; exit 1; }
    field "$dir/$name.ckpt/metrics.jsonl" samples_per_second
}
# get ROWS KEY: KEY's values, one per round
get() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; }
# ratio ROWS A B: A / B per round
ratio() {
    get "$1" "$2" >"$dir/.a"
    get "$1" "$3" >"$dir/.b"
    paste -d' ' "$dir/.a" "$dir/.b" | awk '{print $1 / $2}'
}

echo "bench: $rounds rounds, one after another, logs in $dir"
: >"$dir/rows"
: >"$dir/eval"
r=1
while [ "$r" -le "$rounds" ]; do
    line="round=$r"
    for m in $models; do
        OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/pytorch_reference.py" --model "$m" \
            --epochs 1 --threads 1 >"$dir/pt-$m.log" 2>&1 ||
            { cat "$dir/pt-$m.log"; echo "bench: PyTorch $m failed" >&2; exit 1; }
        pt=$(sed -n 's/^RESULT samples_per_second=\([0-9.]*\).*/\1/p' "$dir/pt-$m.log")
        line="$line pt_$m=$pt dpcnn_$m=$(dpcnn_run "d-$m" "" ./dpcnn --model "$m" --threads 1)"
        [ -z "$base" ] ||
            line="$line before_$m=$(dpcnn_run "b-$m" "" "$base/dpcnn" --model "$m" --threads 1)"
    done
    sed -n 's/.*start-up to the end of the first step \([0-9.]*\) s: \(.*\)/\1 \2/p' \
        "$dir/d-tutorial.log" >>"$dir/startup"
    field "$dir/d-tutorial.ckpt/metrics.jsonl" eval_seconds >>"$dir/eval"
    line="$line threads2=$(dpcnn_run t2 "" ./dpcnn --threads 2)"
    line="$line np2=$(dpcnn_run np2 "mpirun -np 2 --bind-to none" ./dpcnn --threads 1)"
    [ -z "$base" ] ||
        line="$line before_threads2=$(dpcnn_run b-t2 "" "$base/dpcnn" --threads 2) before_np2=$(
            dpcnn_run b-np2 "mpirun -np 2 --bind-to none" "$base/dpcnn" --threads 1)"
    echo "$line" | tee -a "$dir/rows"
    r=$((r + 1))
done

echo
echo "== training samples per second, one epoch; median over $rounds rounds (min-max) of the ratio in each round"
for m in $models; do
    printf "%-9s dpcnn / PyTorch, 1 thread each: %s   (dpcnn %s, PyTorch %s samples/s)\n" "$m" \
        "$(ratio "$dir/rows" "dpcnn_$m" "pt_$m" | median)" \
        "$(get "$dir/rows" "dpcnn_$m" | median_plain)" "$(get "$dir/rows" "pt_$m" | median_plain)"
    [ -z "$base" ] || printf "%-9s before (%s) / PyTorch: %s;  dpcnn / before: %s\n" "$m" "$base" \
        "$(ratio "$dir/rows" "before_$m" "pt_$m" | median)" \
        "$(ratio "$dir/rows" "dpcnn_$m" "before_$m" | median)"
done
printf "tutorial  2 threads / 1 thread: %s;  mpirun -np 2 / 1 rank: %s\n" \
    "$(ratio "$dir/rows" threads2 dpcnn_tutorial | median)" "$(ratio "$dir/rows" np2 dpcnn_tutorial | median)"
[ -z "$base" ] || printf "tutorial  before: 2 threads / 1 thread: %s;  mpirun -np 2 / 1 rank: %s\n" \
    "$(ratio "$dir/rows" before_threads2 before_tutorial | median)" \
    "$(ratio "$dir/rows" before_np2 before_tutorial | median)"

echo
echo "== the engine alone (forward and backward of micro-batches of 25, one thread, best of many)"
peak=$(tests/bench/fma_peak 2 | tee "$dir/peak" | sed -n 's/^peak \([0-9.]*\) .*/\1/p')
cat "$dir/peak"
tests/bench/bench_model 25 3 tutorial "$peak" | tee "$dir/engine-tutorial"
dense=$(sed -n 's/.*dense arithmetic \([0-9.]*\) MFLOP.*/\1/p' "$dir/engine-tutorial")
sps=$(get "$dir/rows" dpcnn_tutorial | median_plain)
awk -v s="$sps" -v f="$dense" -v p="$peak" 'BEGIN {
    printf "tutorial training at %.0f samples/s x %.3f MFLOP dense arithmetic = %.1f GFLOP/s = %.0f%% of the core'"'"'s %.1f\n",
        s, f, s * f / 1000, 100 * s * f / 1000 / p, p }'
for m in bn lenet5; do tests/bench/bench_model 25 2 "$m" "$peak" | head -n 2; done
for isa in avx512 avx2 generic; do
    DPCNN_ISA=$isa tests/bench/bench_model 25 2 tutorial 2>&1 | head -n 1
done

echo
echo "== evaluation and start-up, one rank (medians over the rounds' tutorial runs)"
printf "evaluation of the 10,000 test images: %s s\n" "$(median_plain <"$dir/eval")"
printf "start-up to the end of the first step: %s s\n" "$(awk '{print $1}' "$dir/startup" | median_plain)"
echo "  of which, in the last round: $(tail -n 1 "$dir/startup" | cut -d' ' -f2-)"
w0=$(date +%s%N)
./dpcnn --epochs 0 --checkpoint-dir "$dir/e0" >"$dir/e0.log" 2>&1
echo "  dpcnn --epochs 0, whole process: $(( ($(date +%s%N) - w0) / 1000000 )) ms of wall time"

echo
echo "== later epochs: tutorial, 1 thread, samples per second in each of 4 epochs (once each)"
# Units that stop firing leave Adam's state subnormal after an epoch or so;
# the rounds above time the first epoch only.
epochs4() { grep '"type":"epoch"' "$1" | sed -n 's/.*samples_per_second":\([0-9.]*\).*/\1/p' |
    awk '{printf " %.0f", $1}'; }
rm -rf "$dir/e4"
./dpcnn --epochs 4 --threads 1 --checkpoint-dir "$dir/e4" >"$dir/e4.log" 2>&1
echo "dpcnn:  $(epochs4 "$dir/e4/metrics.jsonl")"
if [ -n "$base" ]; then
    rm -rf "$dir/e4b"
    "$base/dpcnn" --epochs 4 --threads 1 --checkpoint-dir "$dir/e4b" >"$dir/e4b.log" 2>&1
    echo "before: $(epochs4 "$dir/e4b/metrics.jsonl")"
fi
OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/pytorch_reference.py" --epochs 4 --threads 1 \
    >"$dir/pt4.log" 2>&1
echo "PyTorch:$(sed -n 's/^epoch .*samples_per_second=\([0-9.]*\).*/\1/p' "$dir/pt4.log" | awk '{printf " %.0f", $1}')"

echo
echo "== peak resident memory"
rm -rf "$dir/rss4"
# each rank's figure in a file of its own (on one shared log the four lines
# could land in one another)
rm -f "$dir"/rss4.rank.*
# shellcheck disable=SC2016 # expanded by the rank's shell
mpirun -np 4 --bind-to none sh -c 'out=$1; shift; exec /usr/bin/time -f "rss %M" \
    -o "$out.$OMPI_COMM_WORLD_RANK" "$@"' sh "$dir/rss4.rank" ./dpcnn --epochs 1 --threads 1 \
    --checkpoint-dir "$dir/rss4" >"$dir/rss4.log" 2>&1
echo "dpcnn, mpirun -np 4: per rank $(cat "$dir"/rss4.rank.* | sed -n 's/^rss //p' | sort -n | tr '\n' ' ')KB"
OPENBLAS_NUM_THREADS=1 /usr/bin/time -f "rss %M" /usr/bin/python3 "$here/pytorch_reference.py" \
    --epochs 1 --threads 1 >"$dir/rsspt.log" 2>&1
echo "PyTorch, one process: $(sed -n 's/^rss //p' "$dir/rsspt.log") KB"

echo
echo "== wider networks: dpcnn's kernels against OpenBLAS's (engine alone, us per sample)"
printf "%-6s %10s %10s %8s\n" width native openblas ratio
for w in 6 16 32 64 128; do
    f="$dir/wide-$w.txt"
    printf 'Conv2d(1, %d, 5)\nReLU()\nMaxPool2d(2)\nConv2d(%d, %d, 5)\nReLU()\nMaxPool2d(2)\nFlatten()\nLinear(%d, %d)\nReLU()\nLinear(%d, 10)\n' \
        "$w" "$w" $((2 * w)) $((32 * w)) $((8 * w)) $((8 * w)) >"$f"
    n=$(tests/bench/bench_model 25 1.5 "$f" 0 native | sed -n 's/.*total \([0-9.]*\) us.*/\1/p')
    o=$(tests/bench/bench_model 25 1.5 "$f" 0 openblas | sed -n 's/.*total \([0-9.]*\) us.*/\1/p')
    awk -v w="$w" -v n="$n" -v o="$o" 'BEGIN {printf "%-6s %10.1f %10.1f %8.2f\n", w, n, o, o / n}'
done
echo "(conv1 1->w, conv2 w->2w, fc 32w->8w->10; ratio > 1: the native kernels are faster)"
echo "(OpenBLAS kernel ${OPENBLAS_CORETYPE:-as detected}; logs in $dir)"
