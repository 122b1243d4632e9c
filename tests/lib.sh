# Shared by the shell tests: a scratch directory removed on exit, the data
# file, a failure helper, the environment Open MPI needs as root, and the
# comparison of two runs.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/dpcnn-test.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
DATA=${DPCNN_TEST_DATA:-data/fashion-mnist.h5}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
[ -r "$DATA" ] || fail "no data file $DATA: run make (needs dataset-fashion-mnist)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# The metrics without what may differ between equal runs: timing and the rank count.
strip_metrics() {
    sed -e 's/"seconds":[^,]*,//; s/"samples_per_second":[^,]*,//' \
        -e 's/"eval_seconds":[^,]*,//; s/"shard_seconds":[^,]*,//' \
        -e 's/"reduce_seconds":[^,]*,//; s/,"ranks":[0-9]*//' "$1"
}
# same_run REF DIR [GLOB]: every checkpoint of REF that GLOB names (epoch-*.h5,
# or *.h5 for the step checkpoints too; latest.h5, a link, aside) is
# byte-identical in DIR, and the metrics lines agree but for timing and the
# rank count
same_run() {
    for f in "$1"/${3:-epoch-*.h5}; do
        [ -L "$f" ] && continue
        cmp "$f" "$2/$(basename "$f")" || fail "$2/$(basename "$f") differs from $f"
    done
    strip_metrics "$1/metrics.jsonl" >"$T/ma"
    strip_metrics "$2/metrics.jsonl" >"$T/mb"
    cmp "$T/ma" "$T/mb" || { diff "$T/ma" "$T/mb" | head; fail "metrics differ: $1 vs $2"; }
}
# expect_status WANT NEEDLE CMD...: CMD exits with status WANT and its output
# (stdout and stderr, kept in $T/out) says NEEDLE
expect_status() {
    want=$1 needle=$2
    shift 2
    set +e
    "$@" >"$T/out" 2>&1
    got=$?
    set -e
    echo "\$ ... -> status $got: $(grep -m1 -F -- "$needle" "$T/out" || true)"
    [ "$got" -eq "$want" ] || { cat "$T/out"; fail "$*: status $got, not $want"; }
    grep -qF -- "$needle" "$T/out" || { cat "$T/out"; fail "$*: the output lacks '$needle'"; }
}
