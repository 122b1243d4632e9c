#!/bin/sh
# make bench: dpcnn against the PyTorch reference, side by side on this machine.
#
# Each round runs, one after another (never at the same time):
#   PyTorch, 1 process, 1 thread    (tests/bench/pytorch_reference.py, Debian's python3-torch)
#   dpcnn,   1 process, 1 thread
#   dpcnn,   1 process, all cores' threads
#   dpcnn,   mpirun -np 2, 1 thread each
# and reads each one's own training throughput (samples per second over the
# training loop; data loading and evaluation are not counted by either). On a
# shared, noisy machine only ratios within a round mean much: the summary gives
# the median over rounds of each ratio to PyTorch.
#
# Usage: tests/bench/bench.sh [ROUNDS]   (env: EPOCHS, default 1; BENCH_DIR;
#        BENCH_CORETYPE, e.g. SkylakeX: the OpenBLAS kernel for both programs)
set -eu
if [ -n "${BENCH_CORETYPE:-}" ]; then
    export OPENBLAS_CORETYPE=$BENCH_CORETYPE
fi
rounds=${1:-3}
epochs=${EPOCHS:-1}
here=$(cd "$(dirname "$0")" && pwd)
dir=${BENCH_DIR:-$(mktemp -d /tmp/dpcnn-bench.XXXXXX)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cores=$(nproc)

[ -x ./dpcnn ] || { echo "bench: run from the build directory (./dpcnn not found)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
    echo "bench: needs Debian's python3-torch (apt-get install python3-torch)" >&2; exit 1; }

# mean samples_per_second over the epochs of a dpcnn run
dpcnn_sps() {
    sed -n 's/.*"samples_per_second":\([0-9.]*\).*/\1/p' "$1/metrics.jsonl" |
        awk '{s += $1; n++} END {printf "%.0f", s / n}'
}

echo "round pytorch_1t dpcnn_1t dpcnn_${cores}t dpcnn_np2 accuracy_pt accuracy_dpcnn" >"$dir/table"
r=1
while [ "$r" -le "$rounds" ]; do
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/pytorch_reference.py" --epochs "$epochs" \
        --threads 1 >"$dir/pt.log" 2>&1
    pt=$(sed -n 's/^RESULT samples_per_second=\([0-9.]*\).*/\1/p' "$dir/pt.log")
    pt_acc=$(sed -n 's/.*test_accuracy=\([0-9.]*\)$/\1/p' "$dir/pt.log" | tail -1)
    ./dpcnn --epochs "$epochs" --threads 1 --checkpoint-dir "$dir/d1" >"$dir/d1.log" 2>&1
    ./dpcnn --epochs "$epochs" --threads "$cores" --checkpoint-dir "$dir/dn" >"$dir/dn.log" 2>&1
    mpirun -np 2 ./dpcnn --epochs "$epochs" --threads 1 --checkpoint-dir "$dir/d2" >"$dir/d2.log" 2>&1
    acc=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$dir/d1/metrics.jsonl" | tail -1)
    acc=$(printf "%.4f" "$acc")
    echo "$r ${pt%.*} $(dpcnn_sps "$dir/d1") $(dpcnn_sps "$dir/dn") $(dpcnn_sps "$dir/d2") $pt_acc $acc" |
        tee -a "$dir/table"
    r=$((r + 1))
done
echo
column -t "$dir/table"
echo
# median over rounds of each configuration's ratio to PyTorch in the same round
for col in 3 4 5; do
    name=$(head -1 "$dir/table" | awk -v c=$col '{print $c}')
    tail -n +2 "$dir/table" | awk -v c=$col '{print $c / $2}' | sort -n |
        awk -v n="$name" '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
            printf "%-12s / pytorch_1t: median %.2f  (min %.2f, max %.2f, %d rounds)\n", n, m, v[1], v[NR], NR}'
done
echo "(figures: samples per second of training; OpenBLAS kernel ${OPENBLAS_CORETYPE:-as detected}; logs in $dir)"
