#!/bin/sh
# Real multi-process runs through mpirun (oversubscribed: CI has 2 cores):
#  - the same bits at 1, 2, 3 and 4 ranks: checkpoints byte for byte, metrics
#    apart from the timing fields, with uneven splits and a short last batch;
#  - failures end the whole job fast, naming the rank: a corrupt chunk only
#    one rank reads, a rank killed with SIGKILL, a non-finite loss on one
#    rank, a drifted replica; none leaves a torn checkpoint behind;
#  - a job suspended (every rank stopped) for longer than its hang timeout
#    and resumed goes on to the same bits;
#  - a bad command line gives one message and status 2 from every rank.
. "${srcdir:-.}/tests/lib.sh"
command -v mpirun >/dev/null || fail "mpirun not found (apt-get install openmpi-bin)"
command -v pgrep >/dev/null || fail "pgrep not found (apt-get install procps)"
# On a 2-core machine four ranks share cores: keep each to one thread.
RUN="./dpcnn --data $DATA --threads 1"


# ---------------------------------------------------------------- same bits
# 1030 samples, batch 100 of 4 micro-batches of 25: 3 ranks get 2/1/1, and the
# last batch (30 samples: micro-batches of 25 and 5) leaves ranks empty.
for np in 1 2 3 4; do
    start=$(date +%s)
    mpirun -np "$np" $RUN --epochs 2 --limit 1030 --test-limit 530 \
        --checkpoint-dir "$T/np$np" >"$T/np$np.log" 2>&1 ||
        { cat "$T/np$np.log"; fail "np=$np run failed"; }
    echo "np=$np: $(grep '^epoch   2' "$T/np$np.log") ($(($(date +%s) - start)) s)"
done
for np in 2 3 4; do
    for f in epoch-0000.h5 epoch-0001.h5 epoch-0002.h5; do
        cmp "$T/np1/$f" "$T/np$np/$f" || fail "np=$np: $f differs from np=1"
    done
    strip_metrics "$T/np1/metrics.jsonl" >"$T/m1"
    strip_metrics "$T/np$np/metrics.jsonl" >"$T/m$np"
    cmp "$T/m1" "$T/m$np" || { diff "$T/m1" "$T/m$np"; fail "np=$np: metrics differ"; }
done
# The epoch's exchange in many small rounds (about 25 samples each) instead of one.
DPCNN_EXCHANGE_BYTES=20000 mpirun -np 3 $RUN --epochs 2 --limit 1030 --test-limit 530 \
    --checkpoint-dir "$T/rounds" >"$T/rounds.log" 2>&1 || { cat "$T/rounds.log"; fail "rounds run"; }
for f in epoch-0001.h5 epoch-0002.h5; do
    cmp "$T/np1/$f" "$T/rounds/$f" || fail "np=3 in exchange rounds of 20000 bytes: $f differs"
done
# Ranks on one node sum through a shared-memory window; with Open MPI's
# shared windows switched off (osc/sm), the sum falls back to MPI_Iallreduce:
# the job runs, to the same bits.
OMPI_MCA_osc=^sm mpirun -np 2 -x OMPI_MCA_osc $RUN --epochs 2 --limit 1030 --test-limit 530 \
    --checkpoint-dir "$T/noshm" >"$T/noshm.log" 2>&1 || { cat "$T/noshm.log"; fail "np=2 without shared windows"; }
for f in epoch-0001.h5 epoch-0002.h5; do
    cmp "$T/np1/$f" "$T/noshm/$f" || fail "np=2 without shared windows: $f differs from np=1"
done
# Threads split the micro-batches, the exact sums and Adam's update: the same
# bits with 2 and 3 threads in one process, and 2 ranks of 2 threads.
for th in 2 3; do
    ./dpcnn --data "$DATA" --threads "$th" --epochs 2 --limit 1030 --test-limit 530 \
        --checkpoint-dir "$T/th$th" >"$T/th$th.log" 2>&1 || { cat "$T/th$th.log"; fail "$th threads"; }
done
mpirun -np 2 ./dpcnn --data "$DATA" --threads 2 --epochs 2 --limit 1030 --test-limit 530 \
    --checkpoint-dir "$T/np2th2" >"$T/np2th2.log" 2>&1 || { cat "$T/np2th2.log"; fail "np=2 x 2 threads"; }
for run in th2 th3 np2th2; do
    for f in epoch-0001.h5 epoch-0002.h5; do
        cmp "$T/np1/$f" "$T/$run/$f" || fail "$run: $f differs from one rank of one thread"
    done
done
grep -q '"train_samples":1030,' "$T/np4/metrics.jsonl" || fail "train samples miscounted"
grep -q '"test_samples":530,' "$T/np4/metrics.jsonl" || fail "test samples miscounted"
grep -q '"ranks":4' "$T/np4/metrics.jsonl" || fail "ranks field"
# only rank 0 prints progress
[ "$(grep -c '^epoch   1' "$T/np4.log")" -eq 1 ] || fail "more than one rank printed progress"
echo "bitwise identical at 1, 2, 3 and 4 ranks, with 2 and 3 threads, and in exchange rounds"

# The float reduction trains too (its bits may depend on the rank count).
mpirun -np 2 $RUN --epochs 1 --limit 1030 --test-limit 530 --reduction float \
    --checkpoint-dir "$T/float" >"$T/float.log" 2>&1 || { cat "$T/float.log"; fail "float run"; }

# ----------------------------------------------------------- failing fast
# elapsed-bounded run: expect_fail SECONDS STATUS NEEDLE CMD...
expect_fail() {
    bound=$1 want=$2 needle=$3; shift 3
    start=$(date +%s)
    set +e
    timeout -s KILL $((bound + 30)) "$@" >"$T/out" 2>&1
    got=$?
    set -e
    took=$(($(date +%s) - start))
    echo "\$ ... -> status $got after ${took}s: $(grep -m1 -F -- "$needle" "$T/out" || true)"
    [ "$got" -ne 0 ] || fail "expected failure, got success"
    [ "$want" = any ] || [ "$got" -eq "$want" ] || { cat "$T/out"; fail "status $got, expected $want"; }
    [ "$took" -le "$bound" ] || fail "took ${took}s, bound ${bound}s"
    grep -qF -- "$needle" "$T/out" || { cat "$T/out"; fail "output lacks '$needle'"; }
}

# Every checkpoint left in a directory is complete: no temporaries, and each
# loads (dpcnn --init reads every tensor strictly, --epochs 0 trains nothing).
check_no_torn() {
    [ -d "$1" ] || return 0
    ls -A "$1" | grep -q '\.tmp\.' && fail "$1: a temporary file was left behind"
    for f in "$1"/epoch-*.h5; do
        [ -e "$f" ] || continue
        ./dpcnn --data "$DATA" --limit 100 --test-limit 100 --epochs 0 --init "$f" \
            --checkpoint-dir "$T/verify" >/dev/null 2>&1 || fail "$f does not load"
    done
}

# A corrupt chunk that only rank 1 reads: with 4000 samples on 2 ranks, rank 0
# holds samples 0-1999 (chunks 0 and 1), rank 1 holds 2000-3999 (chunks 2, 3).
cp "$DATA" "$T/corrupt.h5"
./tests/corrupt_chunk "$T/corrupt.h5" /train/images 3
expect_fail 30 1 "rank 1" mpirun -np 2 ./dpcnn --data "$T/corrupt.h5" --threads 1 \
    --limit 4000 --test-limit 100 --checkpoint-dir "$T/corrupt"
grep -q "samples 2000..3999" "$T/out" || fail "the message does not say which samples"
check_no_torn "$T/corrupt"

# A non-finite loss on one rank: everyone stops before the update, status 1.
DPCNN_FAULT=nan@3:1 expect_fail 30 1 "non-finite loss at step 3" \
    mpirun -np 2 $RUN --epochs 1 --limit 1000 --test-limit 100 --checkpoint-dir "$T/nan"
grep -q "seen on rank 1" "$T/out" || fail "the rank is not named"
check_no_torn "$T/nan"

# A replica that drifts: the next comparison stops the job and names it.
DPCNN_FAULT=drift@2:1 expect_fail 30 1 "rank(s) 1 differ" \
    mpirun -np 3 $RUN --epochs 1 --limit 1000 --test-limit 100 --check-every 4 \
    --checkpoint-dir "$T/drift"
check_no_torn "$T/drift"

# A rank killed with SIGKILL from outside, mid-run: the job ends promptly and
# no rank is left running.
mpirun -np 3 $RUN --epochs 1000 --limit 2000 --test-limit 100 \
    --checkpoint-dir "$T/kill" >"$T/kill.log" 2>&1 &
launcher=$!
i=0
while [ ! -e "$T/kill/epoch-0001.h5" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
victim=$(pgrep -P "$launcher" -x dpcnn | sed -n 2p)
[ -n "$victim" ] || fail "no rank to kill"
start=$(date +%s)
kill -9 "$victim"
set +e
wait "$launcher"
status=$?
set -e
took=$(($(date +%s) - start))
echo "killed rank pid $victim: mpirun exited $status after ${took}s"
[ "$status" -ne 0 ] || fail "the job succeeded after a rank was killed"
[ "$took" -le 20 ] || fail "the job took ${took}s to end after a rank was killed"
pgrep -f "checkpoint-dir $T/kill" >/dev/null && fail "ranks left running"
check_no_torn "$T/kill"

# A rank that hangs (neither dies nor answers): the watchdogs end the job, and
# the hung rank says where it was (computing) and on which host.
DPCNN_FAULT=hang@3:1 expect_fail 30 1 "no progress on this rank" \
    mpirun -np 2 $RUN --epochs 1 --limit 1000 --test-limit 100 --hang-timeout 3 \
    --checkpoint-dir "$T/hang"
grep -q "rank 1: error: no progress on this rank (host $(uname -n)) for .* (step 3, computing" "$T/out" ||
    { cat "$T/out"; fail "the hung rank does not say it was computing, and where"; }
check_no_torn "$T/hang"

# dpcnn evaluate has the same bound: one of three ranks stopped (SIGSTOP) as
# soon as it exists, wherever that finds it, and every rank ends. A rank is
# picked by its process name (-x): a child mpirun has forked but not yet made
# dpcnn still has mpirun's command line, which names dpcnn too (stopped there,
# it was never a rank, and mpirun waited for its launch for ever). What is
# timed is the ranks' end: with a rank stopped inside MPI_Init, Open MPI's
# mpirun (4.1, its PMIx server) now and then deadlocks in its own teardown
# after every rank has ended (a gdb stack: PMIx_server_finalize waiting on its
# progress thread, which waits on a lock); that is reported, not failed.
mpirun -np 3 ./dpcnn evaluate "$T/np1/epoch-0002.h5" --data "$DATA" --threads 1 \
    --hang-timeout 3 >"$T/evalstop.log" 2>&1 &
launcher=$!
i=0
victim=
while [ -z "$victim" ] && [ $i -lt 200 ]; do
    victim=$(pgrep -P "$launcher" -x dpcnn | sed -n 2p)
    [ -n "$victim" ] || sleep 0.02
    i=$((i + 1))
done
[ -n "$victim" ] || fail "no evaluating rank to stop"
kill -STOP "$victim"
vrank=$(tr '\0' '\n' <"/proc/$victim/environ" | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
start=$(date +%s)
ended=
while [ $(($(date +%s) - start)) -le 13 ]; do
    kill -0 "$launcher" 2>/dev/null || { ended=launcher; break; }
    # the launcher's children that are neither gone nor zombies
    live=$(ps -o stat= --ppid "$launcher" 2>/dev/null | grep -vc '^Z' || true)
    [ "$live" -eq 0 ] && { ended=ranks; break; }
    sleep 0.1
done
took=$(($(date +%s) - start))
[ -n "$ended" ] || { kill -KILL "$launcher" "$victim" 2>/dev/null; cat "$T/evalstop.log"
    fail "evaluate with a stopped rank: ranks still running after ${took}s (bound 3 + 10)"; }
status=
if [ "$ended" = ranks ]; then
    i=0
    while kill -0 "$launcher" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$launcher" 2>/dev/null; then
        echo "note: every rank ended after ${took}s, but mpirun did not return in 10 s more" \
            "(its own teardown: an Open MPI defect, not a rank's); killed"
        kill -KILL "$launcher" 2>/dev/null || true
        status=killed
    fi
fi
set +e
wait "$launcher"
[ -n "$status" ] || status=$?
set -e
kill -KILL "$victim" 2>/dev/null || true
echo "evaluate with a stopped rank: every rank ended after ${took}s, mpirun status $status"
[ "$status" != 0 ] || { cat "$T/evalstop.log"; fail "evaluate succeeded with a stopped rank"; }
# (stopped in a collective, it is named by the others; before MPI is up, the
# others' watchdogs speak for themselves)
grep -qE "rank $vrank on host $(uname -n) went silent|no progress on this rank" "$T/evalstop.log" ||
    { cat "$T/evalstop.log"; fail "no watchdog message"; }

# A suspended job goes on (scontrol suspend stops every rank, resume continues
# them): time a rank spends stopped is not a hang. In the middle of training
# one rank is stopped, and half a second later (the other one waiting for it
# in a collective by then) the other; both stay stopped for twice the hang
# timeout and are continued together. The run ends as the uninterrupted one
# does, bit for bit.
mpirun -np 2 $RUN --epochs 2 --test-limit 500 --hang-timeout 2 \
    --checkpoint-dir "$T/plain" >"$T/plain.log" 2>&1 || { cat "$T/plain.log"; fail "plain run"; }
mpirun -np 2 $RUN --epochs 2 --test-limit 500 --hang-timeout 2 \
    --checkpoint-dir "$T/susp" >"$T/susp.log" 2>&1 &
launcher=$!
i=0
ranks=
while [ "$(echo "$ranks" | wc -w)" -lt 2 ] && [ $i -lt 200 ]; do
    ranks=$(pgrep -P "$launcher" -x dpcnn | tr '\n' ' ')
    sleep 0.02
    i=$((i + 1))
done
# into the first epoch (start-up takes about 0.1 s, an epoch about 0.5 s)
sleep 0.4
first=${ranks%% *}
kill -STOP "$first"
sleep 0.5
kill -STOP $ranks
[ -e "$T/susp/epoch-0002.h5" ] && fail "the run ended before it was suspended"
sleep 4
kill -CONT $ranks
set +e
wait "$launcher"
status=$?
set -e
[ "$status" -eq 0 ] || { cat "$T/susp.log"; fail "a job suspended for 4 s (--hang-timeout 2) ended with status $status"; }
for f in epoch-0001.h5 epoch-0002.h5; do
    cmp "$T/plain/$f" "$T/susp/$f" || fail "suspended and resumed: $f differs"
done
echo "a job suspended for twice its hang timeout went on, to the same bits"

# Usage errors: every rank exits 2, one message.
set +e
mpirun -np 2 ./dpcnn --epochs x >"$T/out" 2>&1
status=$?
set -e
[ "$status" -eq 2 ] || { cat "$T/out"; fail "usage error under mpirun: status $status"; }
[ "$(grep -c "dpcnn: --epochs" "$T/out")" -eq 1 ] || { cat "$T/out"; fail "not one message"; }

# A missing data file: one message for all ranks, status 1.
expect_fail 30 1 "error (all ranks)" mpirun -np 2 ./dpcnn --data "$T/absent.h5"
[ "$(grep -c "absent.h5" "$T/out")" -eq 1 ] || { cat "$T/out"; fail "not one message"; }
echo "test_mpi: all passed"
