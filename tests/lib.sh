# Shared by the shell tests: a scratch directory removed on exit, the data
# file, a failure helper, and the environment Open MPI needs as root.
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
