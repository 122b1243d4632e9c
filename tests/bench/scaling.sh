#!/bin/sh
# make bench (part 2): data-parallel scaling and the cost of the exact reduction.
#
# Each round runs one after another, one thread per rank:
#   np=1, np=2 (exact reduction), np=2 (float reduction), np=4 (oversubscribed)
# and reads from metrics.jsonl the training samples per second, the time per
# step spent combining gradients (reduce_seconds / steps: the agreement, the
# fixed-point conversion and the MPI collectives) and the time to exchange the
# epoch's shards. Medians over rounds.
#
# Usage: tests/bench/scaling.sh [ROUNDS]   (env: EPOCHS, default 1)
set -eu
rounds=${1:-3}
epochs=${EPOCHS:-1}
dir=$(mktemp -d /tmp/dpcnn-scaling.XXXXXX)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
[ -x ./dpcnn ] || { echo "scaling: run from the build directory" >&2; exit 1; }

# field FILE KEY: mean of KEY over the epochs
field() {
    sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1" | awk '{s += $1; n++} END {printf "%.6f", s / n}'
}
steps=600 # 60,000 samples in global batches of 100

configs="np1 np2 np2float np4"
for c in $configs; do : >"$dir/$c.rows"; done
r=1
while [ "$r" -le "$rounds" ]; do
    for c in $configs; do
        case $c in
        np1) cmd="mpirun -np 1 ./dpcnn" ;;
        np2) cmd="mpirun -np 2 ./dpcnn" ;;
        np2float) cmd="mpirun -np 2 ./dpcnn --reduction float" ;;
        np4) cmd="mpirun -np 4 ./dpcnn" ;;
        esac
        $cmd --threads 1 --epochs "$epochs" --checkpoint-dir "$dir/$c" >"$dir/$c.log" 2>&1
        m="$dir/$c/metrics.jsonl"
        echo "$(field "$m" samples_per_second) $(field "$m" reduce_seconds) $(field "$m" shard_seconds)" >>"$dir/$c.rows"
    done
    r=$((r + 1))
done
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf "%-10s %12s %16s %14s\n" config samples/s "reduce ms/step" "shard ms/epoch"
for c in $configs; do
    sps=$(awk '{print $1}' "$dir/$c.rows" | median)
    red=$(awk -v s="$steps" '{print 1000 * $2 / s}' "$dir/$c.rows" | median)
    sh=$(awk '{print 1000 * $3}' "$dir/$c.rows" | median)
    printf "%-10s %12.0f %16.3f %14.1f\n" "$c" "$sps" "$red" "$sh"
done
np1=$(awk '{print $1}' "$dir/np1.rows" | median)
np2=$(awk '{print $1}' "$dir/np2.rows" | median)
awk -v a="$np2" -v b="$np1" 'BEGIN {printf "scaling np=2 / np=1: %.2f (2 cores)\n", a / b}'
for np in 1 4; do
    grep -o '"test_accuracy":[0-9.]*' "$dir/np$np/metrics.jsonl" | tail -1 | sed "s/^/np=$np final /"
done
echo "(logs in $dir)"
