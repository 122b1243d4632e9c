#!/bin/bash
# launch/dpcnn.sbatch against a real Slurm: a private single-node cluster on
# localhost (munged, slurmctld, slurmd from Debian's slurm-wlm and munge),
# started for this test and stopped again whatever happens.
#  - 2 tasks with srun --mpi=pmix, 4 tasks, and 2 under mpirun:
#    each job completes and leaves the same checkpoints as a run without Slurm;
#  - a job told to stop (the warning signal, through scancel --batch) checkpoints,
#    exits 75, requeues itself, resumes, and ends bitwise identical to a run that
#    was never interrupted;
#  - an experiment (dpcnn sweep) as a job array of 2 tasks, one run each: the
#    same runs, bit for bit, and the same table as the experiment under mpirun.
# Skipped (status 77, with the reason) where Slurm cannot be started.
set -eu
srcdir=${srcdir:-.}
T=$(mktemp -d /tmp/dpcnn-slurm.XXXXXX) # short: Unix socket paths live under it
chmod 755 "$T"                          # munged (user munge) must reach its socket
SD=$T/c
cleanup() {
    "$srcdir/tests/slurm/slurm-down.sh" "$SD" >/dev/null 2>&1 || true
    [ -n "${KEEP_SLURM_TEST:-}" ] || rm -rf "$T"
}
trap cleanup EXIT INT TERM
fail() {
    echo "FAIL: $*" >&2
    for f in "$T"/job-*.out; do [ -e "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
    exit 1
}
DATA=${DPCNN_TEST_DATA:-$PWD/data/fashion-mnist.h5}
[ -r "$DATA" ] || fail "no data file $DATA"
for p in sbatch srun slurmctld slurmd munged; do
    command -v "$p" >/dev/null || { echo "SKIP: $p not found (apt-get install slurm-wlm munge libpmix-dev)"; exit 77; }
done

set +e
# 4 CPUs declared on this 2-core node (config_overrides), so 4 tasks fit a node
# as they would on a real one; the ranks then share the cores.
SLURM_UP_CPUS=4 "$srcdir/tests/slurm/slurm-up.sh" "$SD" >"$T/up.out" 2>"$T/up.err"
up=$?
set -e
if [ "$up" -eq 77 ]; then
    echo "SKIP: Slurm cannot be started here: $(grep SKIP "$T/up.err" | head -1)"
    exit 77
fi
[ "$up" -eq 0 ] || { cat "$T/up.err"; fail "slurm-up.sh failed ($up)"; }
export SLURM_CONF=$SD/slurm.conf
echo "a single-node Slurm is up: $(sinfo -h -o '%N %c CPUs %T')"

# Jobs run as root here; Open MPI's mpirun wants these (srun does not).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export DPCNN=$PWD/dpcnn DATA
SBATCH=$srcdir/launch/dpcnn.sbatch
RUN="--epochs 2 --limit 1000 --test-limit 200 --quiet"

# wait_job ID SECONDS: poll until the job has ended; print its state and exit code
wait_job() {
    local id=$1 limit=$2 i=0 state
    while [ $i -lt $((limit * 5)) ]; do
        state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case $state in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
            echo "$state $(scontrol show job "$id" | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p')"
            return 0
            ;;
        esac
        sleep 0.2
        i=$((i + 1))
    done
    echo "TIMEOUT-WAITING $state"
}
submit() { # submit NAME [sbatch options] -- [dpcnn options]: print the job id
    local name=$1
    shift
    local opts=()
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    sbatch --parsable --job-name="$name" --output="$T/job-$name.out" --time=5 "${opts[@]}" \
        "$SBATCH" "$@"
}

# The reference: the same runs without Slurm.
./dpcnn --data "$DATA" --threads 1 $RUN --checkpoint-dir "$T/ref"
BIG="--epochs 4 --limit 6000 --test-limit 200 --quiet"
./dpcnn --data "$DATA" --threads 1 $BIG --checkpoint-dir "$T/bigref"

same() { # same DIR_REF DIR: every epoch checkpoint identical
    for f in "$1"/epoch-*.h5; do
        cmp -s "$f" "$2/$(basename "$f")" || fail "$2/$(basename "$f") differs from the run without Slurm"
    done
}

for spec in "srun2:-n 2 --ntasks-per-node=2" "srun4:-n 4 --ntasks-per-node=4" \
    "mpirun2:-n 2 --ntasks-per-node=2"; do
    name=${spec%%:*}
    launcher=srun
    [ "$name" = mpirun2 ] && launcher=mpirun
    start=$(date +%s)
    # shellcheck disable=SC2086
    id=$(CKPT_DIR=$T/$name LAUNCHER=$launcher submit "$name" ${spec#*:} -- $RUN)
    result=$(wait_job "$id" 120)
    echo "job $id ($name): $result after $(($(date +%s) - start)) s"
    [ "$result" = "COMPLETED 0:0" ] || fail "job $name: $result"
    grep -q "hosts: " "$T/job-$name.out" || fail "the script did not print the hosts"
    grep -q "command: .*dpcnn" "$T/job-$name.out" || fail "the script did not print the command"
    [ "$launcher" = srun ] || grep -q "command: mpirun --mca oob_tcp_keepalive_time 5 .*probes 3 " \
        "$T/job-$name.out" || fail "mpirun runs without the runtime keepalive"
    [ "$(grep -c '"type":"epoch"' "$T/$name/metrics.jsonl")" -eq 2 ] || fail "$name: metrics.jsonl"
    tasks=$(echo "$spec" | sed 's/.*-n \([0-9]*\).*/\1/')
    grep -q "\"ranks\":$tasks" "$T/$name/metrics.jsonl" || fail "$name: not $tasks ranks"
    same "$T/ref" "$T/$name"
done
echo "2 tasks (srun), 4 tasks (srun), 2 tasks (mpirun): identical to the run without Slurm"

# Preemption: the warning signal goes to the batch shell (as --signal=B:USR1@N
# would send it), which passes it to the ranks; dpcnn checkpoints and exits 75,
# the job requeues itself and the next run resumes.
start=$(date +%s)
id=$(CKPT_DIR=$T/pre submit pre -n 2 --ntasks-per-node=2 -- $BIG)
i=0
while [ ! -e "$T/pre/epoch-0001.h5" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -e "$T/pre/epoch-0001.h5" ] || fail "the job did not get going"
scancel --batch --signal=USR1 "$id"
# it must requeue (restart count 1) and then complete
i=0
while [ $i -lt 600 ]; do
    restarts=$(scontrol show job "$id" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
    [ "${restarts:-0}" -ge 1 ] && break
    sleep 0.2
    i=$((i + 1))
done
[ "${restarts:-0}" -ge 1 ] || fail "the job was not requeued"
result=$(wait_job "$id" 180)
echo "job $id (pre): $result after $(($(date +%s) - start)) s, restarts $restarts"
[ "$result" = "COMPLETED 0:0" ] || fail "preempted job: $result"
grep -q "dpcnn exited with status 75" "$T/job-pre.out" || fail "no exit status 75 before the requeue"
grep -q "resuming from" "$T/job-pre.out" || fail "the requeued run did not resume"
same "$T/bigref" "$T/pre"
echo "stopped by the warning signal, requeued, resumed: identical to the uninterrupted run"

# An experiment as a job array: one array task per run (2 ranks each), the same
# layout and the same table as the experiment trained by one mpirun in groups.
SWEEP="--lr 0.01 --lr 0.005 --epochs 2 --limit 1000 --test-limit 200 --quiet"
DPCNN_DATA=$DATA mpirun -np 2 ./dpcnn sweep "$T/sweep-mpirun" $SWEEP >"$T/sweep-mpirun.out" ||
    { cat "$T/sweep-mpirun.out"; fail "the experiment under mpirun"; }
start=$(date +%s)
id=$(sbatch --parsable --job-name=sweep --output="$T/job-sweep-%a.out" --time=5 --array=0-1 \
    -n 2 --ntasks-per-node=2 "$SBATCH" sweep "$T/sweep-array" $SWEEP)
i=0
while [ $i -lt 600 ]; do # until no task of the array waits or runs
    states=$(scontrol -o show job "$id" 2>/dev/null | sed -n 's/.* JobState=\([A-Z_]*\) .*/\1/p')
    echo "$states" | grep -qvE '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)$' || break
    sleep 0.2
    i=$((i + 1))
done
results=$(scontrol -o show job "$id" | sed -n 's/.* JobState=\([A-Z_]*\) .* ExitCode=\([0-9:]*\) .*/\1 \2/p' | sort | uniq -c)
echo "array job $id: $(echo "$results" | tr '\n' ' ')after $(($(date +%s) - start)) s"
[ "$(echo "$results" | sed 's/^ *//')" = "2 COMPLETED 0:0" ] || fail "array tasks: $results"
grep -q "experiment $T/sweep-array: run 1 (array task)" "$T/job-sweep-1.out" ||
    fail "array task 1 did not train run 1"
for run in lr=0.01 lr=0.005; do
    same "$T/sweep-mpirun/$run" "$T/sweep-array/$run"
    grep -q '"ranks":2' "$T/sweep-array/$run/metrics.jsonl" || fail "$run: not trained on the task's 2 ranks"
done
untimed() { sed 's/"seconds":[^,]*,"samples_per_second":[^,]*,//' "$1"; }
untimed "$T/sweep-mpirun/experiment.jsonl" >"$T/table-mpirun"
untimed "$T/sweep-array/experiment.jsonl" >"$T/table-array"
cmp "$T/table-mpirun" "$T/table-array" || { diff "$T/table-mpirun" "$T/table-array"; fail "the tables differ"; }
[ "$(grep -c ',"status":"done",' "$T/table-array")" -eq 4 ] || fail "the array's table lacks runs"
echo "an experiment as a job array of 2 tasks: identical runs and table to the mpirun mode's"

# Outside an allocation the script refuses to run.
set +e
env -u SLURM_JOB_ID "$SBATCH" --epochs 1 >"$T/out" 2>&1
status=$?
set -e
[ "$status" -ne 0 ] && grep -q "not inside a Slurm allocation" "$T/out" || fail "ran outside an allocation"
echo "test_slurm: all passed"
