#!/bin/sh
# Checkpoints and resume: an interrupted run continues to the very same bits.
#  - 2 epochs straight = 1 epoch, then --resume for the second;
#  - a stop inside an epoch, resumed on another rank count;
#  - a real signal to a running multi-rank job: a complete checkpoint, exit
#    status 75, and the resumed run lands on the same bits;
#  - kill -9 of the whole job while a checkpoint is being written leaves
#    latest.h5 naming a complete checkpoint;
#  - damaged, foreign and mismatched checkpoints (another engine among them)
#    are refused with the reason, and leave the good ones as they were;
#  - checkpoints of formats 1 and 2 still load;
#  - dpcnn evaluate prints per-class accuracy and writes the confusion matrix.
. "${srcdir:-.}/tests/lib.sh"
# pkill kills a whole job below; its "|| true" there must not hide its absence.
command -v pkill >/dev/null || fail "pkill not found (apt-get install procps)"
ARGS="--data $DATA --threads 1 --limit 2000 --test-limit 300 --metrics-every 4"


# The uninterrupted reference: 3 epochs of 20 steps.
./dpcnn $ARGS --epochs 3 --checkpoint-dir "$T/straight" --quiet
[ "$(readlink "$T/straight/latest.h5")" = epoch-0003.h5 ] || fail "latest.h5 should name epoch-0003.h5"
grep -q '"type":"step"' "$T/straight/metrics.jsonl" || fail "no per-step records"

# 1 epoch, then the same command with --epochs 3 --resume.
./dpcnn $ARGS --epochs 1 --checkpoint-dir "$T/split" --quiet
./dpcnn $ARGS --epochs 3 --resume "$T/split" --quiet
same_run "$T/straight" "$T/split"
echo "resume at an epoch boundary: identical"

# Stop inside an epoch (a step checkpoint every 7 steps), resume from the
# middle of epoch 2 on 3 ranks, then finish on 2.
./dpcnn $ARGS --epochs 2 --checkpoint-every 7s --checkpoint-dir "$T/mid" --quiet
[ -e "$T/mid/step-00000028.h5" ] || fail "no step checkpoint"
rm "$T/mid/epoch-0002.h5"
mpirun -np 3 ./dpcnn $ARGS --epochs 2 --resume "$T/mid/step-00000028.h5" --quiet
mpirun -np 2 ./dpcnn $ARGS --epochs 3 --resume "$T/mid" --quiet
same_run "$T/straight" "$T/mid"
echo "resume inside an epoch, on other rank counts: identical"

# stop_after_epoch1 SIGNAL DIR CMD...: start CMD in the background, send it SIGNAL
# once DIR/epoch-0001.h5 exists, and leave its exit status in $status.
stop_after_epoch1() {
    sig=$1 dir=$2
    shift 2
    "$@" >"$dir.log" 2>&1 &
    job=$!
    i=0
    while [ ! -e "$dir/epoch-0001.h5" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    kill -"$sig" "$job"
    set +e
    wait "$job"
    status=$?
    set -e
}

# A real signal to a running 2-rank job: SIGUSR1 (mpirun forwards it), sent
# once the first epoch is done. A bigger run, so the signal lands mid-run.
BIG="--data $DATA --threads 1 --limit 6000 --test-limit 300"
./dpcnn $BIG --epochs 4 --checkpoint-dir "$T/big" --quiet
stop_after_epoch1 USR1 "$T/sig" mpirun -np 2 ./dpcnn $BIG --epochs 4 --checkpoint-dir "$T/sig" --quiet
echo "SIGUSR1 to mpirun: exit status $status, latest.h5 -> $(readlink "$T/sig/latest.h5")"
[ "$status" -eq 75 ] || { cat "$T/sig.log"; fail "expected exit status 75"; }
grep -q "stopped by SIGUSR1" "$T/sig.log" || fail "no stop message"
[ "$(readlink "$T/sig/latest.h5")" != epoch-0004.h5 ] || fail "the signal came too late to test"
mpirun -np 4 ./dpcnn $BIG --epochs 4 --resume "$T/sig" --quiet
same_run "$T/big" "$T/sig"
echo "stopped by a signal, resumed on 4 ranks: identical"

# SIGTERM to a single process: the same stop.
stop_after_epoch1 TERM "$T/term" ./dpcnn $BIG --epochs 4 --checkpoint-dir "$T/term" --quiet
[ "$status" -eq 75 ] || fail "SIGTERM: expected exit status 75, got $status"
./dpcnn $BIG --epochs 4 --resume "$T/term" --quiet
same_run "$T/big" "$T/term"
echo "SIGTERM to one process, resumed: identical"

# The workstation launcher: ranks, oversubscription, and SIGTERM passed on as
# SIGUSR1 so the ranks stop together with a checkpoint.
LOCAL="${srcdir:-.}/launch/dpcnn-local"
DPCNN=$PWD/dpcnn sh "$LOCAL" -n 3 $ARGS --epochs 1 --checkpoint-dir "$T/local" --quiet 2>"$T/local.err"
grep -q "^+ mpirun -np 3 --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 " "$T/local.err" ||
    { cat "$T/local.err"; fail "dpcnn-local: mpirun runs without the runtime keepalive"; }
[ "$(readlink "$T/local/latest.h5")" = epoch-0001.h5 ] || fail "dpcnn-local: no checkpoint"
grep -q '"ranks":3' "$T/local/metrics.jsonl" || fail "dpcnn-local did not start 3 ranks"
DPCNN=$PWD/dpcnn stop_after_epoch1 TERM "$T/localsig" sh "$LOCAL" -n 2 $BIG --epochs 4 \
    --checkpoint-dir "$T/localsig" --quiet
[ "$status" -eq 75 ] || { cat "$T/localsig.log"; fail "dpcnn-local on SIGTERM: status $status, not 75"; }
DPCNN=$PWD/dpcnn sh "$LOCAL" -n 2 $BIG --epochs 4 --resume "$T/localsig" --quiet
same_run "$T/big" "$T/localsig"
echo "dpcnn-local: 3 ranks; SIGTERM stops the ranks with a checkpoint; resumed: identical"

# kill -9 of the whole job halfway through writing the step-10 checkpoint.
set +e
DPCNN_FAULT=killwrite@10:0 mpirun -np 2 ./dpcnn $ARGS --epochs 3 --checkpoint-every 5s \
    --checkpoint-dir "$T/crash" --quiet >"$T/crash.log" 2>&1
status=$?
set -e
[ "$status" -ne 0 ] || fail "the job survived its rank 0 being killed"
ls -A "$T/crash" | grep -q '\.tmp\.' || fail "the half-written file is missing: the fault did not fire"
[ "$(readlink "$T/crash/latest.h5")" = step-00000005.h5 ] ||
    fail "latest.h5 -> $(readlink "$T/crash/latest.h5"), expected step-00000005.h5"
./dpcnn evaluate "$T/crash/latest.h5" --data "$DATA" --test-limit 100 >/dev/null ||
    fail "latest.h5 does not load after the crash"
./dpcnn $ARGS --epochs 3 --resume "$T/crash" --quiet
ls -A "$T/crash" | grep -q '\.tmp\.' && fail "the stale temporary file was not cleaned up"
same_run "$T/straight" "$T/crash"
echo "killed while writing a checkpoint: latest.h5 complete, resumed: identical"

# And with no help from a fault hook: kill -9 every process of a job that
# checkpoints every step, at an arbitrary moment; latest.h5 must still load.
mpirun -np 2 ./dpcnn $BIG --epochs 50 --checkpoint-every 1s --keep 3 \
    --checkpoint-dir "$T/random" --quiet >/dev/null 2>&1 &
job=$!
i=0
while [ ! -e "$T/random/step-00000030.h5" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
pkill -KILL -f "checkpoint-dir $T/random" || true
wait "$job" || true
./dpcnn evaluate "$T/random/latest.h5" --data "$DATA" --test-limit 100 >/dev/null ||
    fail "latest.h5 does not load after kill -9"
[ "$(ls "$T/random" | grep -c '^step-')" -le 4 ] || fail "--keep 3 did not bound the files"
echo "kill -9 at a random moment: latest.h5 -> $(readlink "$T/random/latest.h5") loads"

# Refusals, each with its reason; the good checkpoints stay untouched.
sums_before=$(cksum "$T/straight"/*.h5)
cp "$T/straight/epoch-0002.h5" "$T/trunc.h5"
truncate -s 100000 "$T/trunc.h5"
expect_status 1 "trunc.h5" ./dpcnn $ARGS --epochs 3 --resume "$T/trunc.h5" --checkpoint-dir "$T/x1"
cp "$T/straight/epoch-0002.h5" "$T/flip.h5"
./tests/ckpt_edit "$T/flip.h5" flip
expect_status 1 "damaged: its contents do not match its digest" \
    ./dpcnn $ARGS --epochs 3 --resume "$T/flip.h5" --checkpoint-dir "$T/x2"
cp "$T/straight/epoch-0002.h5" "$T/shape.h5"
./tests/ckpt_edit "$T/shape.h5" reshape fc1.weight
expect_status 1 "fc1.weight has shape [7,3], expected [120,192]" \
    ./dpcnn $ARGS --epochs 3 --resume "$T/shape.h5" --checkpoint-dir "$T/x3"
cp "$T/straight/epoch-0002.h5" "$T/noopt.h5"
./tests/ckpt_edit "$T/noopt.h5" drop-optimizer
expect_status 1 "/optimizer is missing" ./dpcnn $ARGS --epochs 3 --resume "$T/noopt.h5" --checkpoint-dir "$T/x4"
expect_status 1 "not a dpcnn checkpoint" ./dpcnn $ARGS --epochs 3 --resume "$DATA" --checkpoint-dir "$T/x5"
expect_status 1 "was made from other data" ./dpcnn $ARGS --limit 1000 --epochs 3 --resume "$T/straight/epoch-0002.h5" \
    --checkpoint-dir "$T/x6"
expect_status 1 "was made with --seed 0, this run asks for 7" \
    ./dpcnn $ARGS --seed 7 --epochs 3 --resume "$T/straight/epoch-0002.h5" --checkpoint-dir "$T/x7"
expect_status 1 "add --override-hparams" \
    ./dpcnn $ARGS --batch-size 50 --epochs 3 --resume "$T/straight/epoch-0002.h5" --checkpoint-dir "$T/x8"
expect_status 1 "add --override-hparams" \
    ./dpcnn $ARGS --lr 0.02 --epochs 3 --resume "$T/straight" --checkpoint-dir "$T/x9"
expect_status 1 "was made with --kernels native, this run asks for openblas" \
    ./dpcnn $ARGS --kernels openblas --epochs 3 --resume "$T/straight" --checkpoint-dir "$T/x11"
[ "$(cksum "$T/straight"/*.h5)" = "$sums_before" ] || fail "a refused resume changed a checkpoint"
./dpcnn $ARGS --batch-size 50 --override-hparams --epochs 3 --resume "$T/straight/epoch-0002.h5" \
    --checkpoint-dir "$T/x10" --quiet || fail "--override-hparams at an epoch boundary"
echo "damaged and mismatched checkpoints refused"

# Wherever a checkpoint is read (evaluate, --init), a damaged or edited one is
# refused, not used: its digest is checked even when only weights are wanted,
# and a file that claims to be a dpcnn checkpoint without a digest is refused.
GOOD=$T/straight/epoch-0002.h5
edited() { # edited NAME ACTION...: a copy of GOOD with one edit
    name=$1; shift
    cp "$GOOD" "$T/$name.h5"
    ./tests/ckpt_edit "$T/$name.h5" "$@" || fail "ckpt_edit $*"
}
edited flipped flip
edited nodigest drop-attr digest
edited nanw nan conv2.weight
edited future set-int format_version 99
for use in evaluate init; do
    for case in "flipped:damaged: its contents do not match its digest" \
        "nodigest:not a complete dpcnn checkpoint: attribute digest is missing" \
        "nanw:damaged: its contents do not match its digest" \
        "future:checkpoint format 99 is newer than this dpcnn understands"; do
        file=$T/${case%%:*}.h5
        if [ "$use" = evaluate ]; then
            expect_status 1 "${case#*:}" ./dpcnn evaluate "$file" --data "$DATA" --test-limit 100
        else
            expect_status 1 "${case#*:}" ./dpcnn $ARGS --epochs 1 --init "$file" --checkpoint-dir "$T/i-$use"
        fi
    done
done
# A checkpoint of the tutorial network from before networks were data (format
# 1: no model attribute, its own digest text) still loads, whole and verified.
V1=${srcdir:-.}/tests/golden/v1-tutorial.h5
./dpcnn evaluate "$V1" --data "$DATA" --test-limit 500 >"$T/out" || { cat "$T/out"; fail "a format-1 checkpoint"; }
./dpcnn $ARGS --epochs 0 --init "$V1" --checkpoint-dir "$T/v1" --quiet || fail "--init from format 1"
./tests/ckpt_edit "$T/v1/epoch-0000.h5" same-weights "$V1" || fail "--init from format 1 changed the weights"
cp "$V1" "$T/v1flip.h5"
./tests/ckpt_edit "$T/v1flip.h5" flip
expect_status 1 "damaged: its contents do not match its digest" ./dpcnn evaluate "$T/v1flip.h5" --data "$DATA"
echo "format-1 checkpoints load, and their digests are checked"

# A format-2 checkpoint (from before the engine was recorded; this one was
# made with --kernels openblas) resumes under either engine; what the resumed
# run writes records its engine, and resumes under that one only.
V2=${srcdir:-.}/tests/golden/v2-small.h5
V2ARGS="$ARGS --model ${srcdir:-.}/tests/golden/v2-small.txt"
./dpcnn $V2ARGS --epochs 2 --resume "$V2" --checkpoint-dir "$T/v2n" --quiet ||
    fail "a format-2 checkpoint does not resume with the native kernels"
./dpcnn $V2ARGS --epochs 2 --kernels openblas --resume "$V2" --checkpoint-dir "$T/v2o" --quiet ||
    fail "a format-2 checkpoint does not resume with --kernels openblas"
expect_status 1 "was made with --kernels native, this run asks for openblas" \
    ./dpcnn $V2ARGS --epochs 3 --kernels openblas --resume "$T/v2n" --checkpoint-dir "$T/v2x"
./dpcnn $V2ARGS --epochs 3 --kernels openblas --resume "$T/v2o" --checkpoint-dir "$T/v2y" --quiet ||
    fail "a run resumed with --kernels openblas does not resume with it again"
echo "format-2 checkpoints resume under either engine; format 3 records it"

# A foreign weights file (a PyTorch state_dict written with h5py: tensors, no
# dpcnn marks) stays welcome, unless it holds a non-finite value.
edited foreign foreign
./dpcnn evaluate "$T/foreign.h5" --data "$DATA" --test-limit 100 >"$T/out" || fail "a foreign weights file"
./dpcnn $ARGS --epochs 1 --init "$T/foreign.h5" --checkpoint-dir "$T/i-foreign" --quiet ||
    fail "--init from a foreign weights file"
./tests/ckpt_edit "$T/foreign.h5" nan fc2.bias
expect_status 1 "tensor fc2.bias holds a non-finite value (nan at element 0)" \
    ./dpcnn evaluate "$T/foreign.h5" --data "$DATA" --test-limit 100
expect_status 1 "tensor fc2.bias holds a non-finite value" \
    ./dpcnn $ARGS --epochs 1 --init "$T/foreign.h5" --checkpoint-dir "$T/i-nan"
echo "evaluate and --init: damaged checkpoints refused, foreign weights welcome"

# A refusal keeps its reason whole, however long the path (the message used to
# be formatted into its own buffer, and cut at 512 bytes between ranks).
long=$T/$(printf 'd%.0s' $(seq 1 200))/$(printf 'e%.0s' $(seq 1 200))/$(printf 'f%.0s' $(seq 1 200))
mkdir -p "$long"
cp "$T/nodigest.h5" "$long/ckpt.h5"
expect_status 1 "$long/ckpt.h5: not a complete dpcnn checkpoint: attribute digest is missing" \
    mpirun -np 2 ./dpcnn $ARGS --epochs 3 --resume "$long/ckpt.h5" --checkpoint-dir "$T/x11"
grep -c "not a complete dpcnn checkpoint" "$T/out" | grep -qx 1 || fail "the reason is repeated"

# The model's results: per-class accuracy and the confusion matrix as CSV.
./dpcnn evaluate "$T/straight/latest.h5" --data "$DATA" --csv "$T/confusion.csv" >"$T/eval.txt"
cat "$T/eval.txt"
for class in "T-shirt/top" Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot"; do
    grep -q "^$class " "$T/eval.txt" || fail "no accuracy line for $class"
done
[ "$(wc -l <"$T/confusion.csv")" -eq 11 ] || fail "confusion.csv should have 11 lines"
total=$(tail -n +2 "$T/confusion.csv" | cut -d, -f2- | tr ',' '\n' | awk '{s += $1} END {print s}')
[ "$total" -eq 10000 ] || fail "the confusion matrix counts $total images, not 10000"
echo "test_resume: all passed"
