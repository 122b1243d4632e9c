#!/bin/sh
# The same bits on every x86-64 CPU: a short run of each network on each of
# dpcnn's kernel paths (AVX-512, AVX2 + FMA, plain C; DPCNN_ISA forces one)
# and under each OpenBLAS kernel (OPENBLAS_CORETYPE: native kernels never call
# OpenBLAS, so it must not matter) ends in byte-identical checkpoints and
# metrics. A path this CPU lacks is refused with a message, not run.
. "${srcdir:-.}/tests/lib.sh"
ARGS="--data $DATA --threads 1 --epochs 1 --limit 600 --test-limit 200 --metrics-every 2 --quiet"


printf 'Conv2d(1, 4, 3, stride=2, padding=1)\nReLU()\nAvgPool2d(2)\nFlatten()\nDropout(0.3)\nLinear(196, 32)\nReLU()\nBatchNorm1d(32)\nLinear(32, 10)\n' \
    >"$T/mixed.txt"
paths=""
for isa in avx512 avx2 generic; do
    if DPCNN_ISA=$isa ./dpcnn --data "$DATA" --epochs 0 --limit 100 --test-limit 100 \
        --checkpoint-dir "$T/probe-$isa" --quiet 2>"$T/err"; then
        paths="$paths $isa"
    else
        grep -q "this CPU lacks" "$T/err" || { cat "$T/err"; fail "DPCNN_ISA=$isa: no reason given"; }
        echo "DPCNN_ISA=$isa refused here: $(cat "$T/err")"
    fi
done
echo "kernel paths on this CPU:$paths"
case $paths in *generic*) ;; *) fail "the plain C path must run everywhere" ;; esac
for model in tutorial bn "$T/mixed.txt"; do
    name=$(basename "$model" .txt)
    ref=
    for isa in $paths; do
        start=$(date +%s)
        DPCNN_ISA=$isa ./dpcnn $ARGS --model "$model" --checkpoint-dir "$T/$name-$isa"
        echo "$name on $isa: $(($(date +%s) - start)) s"
        [ -n "$ref" ] && same_run "$T/$name-$ref" "$T/$name-$isa"
        ref=${ref:-$isa}
    done
    for core in Prescott Haswell SkylakeX; do
        OPENBLAS_CORETYPE=$core ./dpcnn $ARGS --model "$model" --checkpoint-dir "$T/$name-$core"
        same_run "$T/$name-$ref" "$T/$name-$core"
    done
    echo "$name: byte-identical on every path ($paths ) and under every OpenBLAS kernel"
done

# The checks: a name that is no path, and --kernels.
set +e
DPCNN_ISA=avx9 ./dpcnn --data "$DATA" --epochs 0 >"$T/out" 2>&1
got=$?
set -e
[ "$got" -eq 1 ] && grep -q "DPCNN_ISA=avx9: expected avx512, avx2 or generic" "$T/out" ||
    { cat "$T/out"; fail "DPCNN_ISA=avx9: status $got"; }
./dpcnn $ARGS --kernels openblas --model bn --checkpoint-dir "$T/blas" >/dev/null ||
    fail "--kernels openblas"
./dpcnn --data "$DATA" --kernels openblas --epochs 0 --limit 100 --test-limit 100 \
    --checkpoint-dir "$T/blas0" | grep -q "kernels: OpenBLAS" || fail "the start-up line names no engine"
echo "test_isa: all passed"
