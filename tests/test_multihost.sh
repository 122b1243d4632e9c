#!/bin/sh
# dpcnn across hosts: three emulated hosts on this machine (network namespaces
# with their own hostnames, joined by a bridge, all inside a private user,
# mount, pid and network namespace: tests/multihost/hosts.sh), mpirun on h1,
# ranks on the others started through an ssh-like agent, TCP between hosts.
#  - 3 hosts x 1 rank and 3 hosts x 2 ranks (--map-by node), tutorial and bn:
#    every checkpoint and the metrics are byte-identical to a single process's;
#  - only rank 0 writes: a checkpoint directory that only h1 (rank 0's host)
#    can see and write works, for a run, a stop and a resume;
#  - SIGUSR1 to mpirun stops every rank after the same step with status 75,
#    and the resumed run (another rank count) lands on the same bits;
#  - one rank SIGSTOPped: the job ends within --hang-timeout + 10 s, and the
#    message names that rank and its host;
#  - h3 cut off silently mid-epoch (its bridge port detached): the job ends
#    within 30 s, non-zero, the message names h3, no process is left on any
#    host, latest.h5 names a complete checkpoint, and --resume on h1 and h2
#    (another rank count) ends bitwise identical to an uninterrupted run;
#  - every process of h3 SIGKILLed: the job ends within 10 s; resumed as above.
# Skipped (77, with the reason) where the namespaces cannot be made.
#
# MH_REPEAT=N repeats each fault N times and prints the medians (make
# check-multihost-long: 3, and the SIGSTOP case with the default --hang-timeout).
srcdir=${srcdir:-.}
. "$srcdir/tests/multihost/hosts.sh"
mh_enter "$0" "$@"
set -eu
mh_setup 3
. "$srcdir/tests/lib.sh"
REPEAT=${MH_REPEAT:-1}
LONG=${MH_LONG:-}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# Open MPI's runtime keepalive as launch/dpcnn-local and launch/dpcnn.sbatch
# set it (MPI_KEEPALIVE=5:2:3): a silent host is noticed in about 13 s.
KEEPALIVE="--mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3"
L31="-np 3 --host h1,h2,h3"
L32="-np 6 --host h1:2,h2:2,h3:2 --map-by node"
L21="-np 2 --host h1,h2"
L22="-np 4 --host h1:2,h2:2 --map-by node"
# 4 epochs of 20 steps, a step checkpoint every 7 steps (so faults mid-epoch
# leave one to resume from), a metrics record every 5 steps.
RUN="--data $DATA --threads 1 --limit 2000 --test-limit 300 --epochs 4 --checkpoint-every 7s --metrics-every 5 --quiet"

# complete DIR [clean]: latest.h5 loads, its digest checked; "clean": and no
# temporary file is left (a run that was killed may leave one: the next cleans it)
complete() {
    [ "${2:-}" != clean ] || ! ls -A "$1" | grep -q '\.tmp\.' || fail "$1: a temporary file was left behind"
    ./dpcnn evaluate "$1/latest.h5" --data "$DATA" --test-limit 100 >/dev/null 2>"$T/eval.err" ||
        { cat "$T/eval.err"; fail "$1/latest.h5 does not load"; }
}
# no_leftovers: no process on any host but its holder, within 5 s
no_leftovers() {
    i=0
    while [ -n "$(mh_pids h1)$(mh_pids h2)$(mh_pids h3)" ]; do
        i=$((i + 1))
        if [ $i -gt 50 ]; then
            for h in h1 h2 h3; do
                for p in $(mh_pids $h); do echo "$h: $p $(tr '\0' ' ' <"/proc/$p/cmdline")" >&2; done
            done
            fail "$1: processes left on the hosts (above)"
        fi
        sleep 0.1
    done
}
# rank_of PID: the MPI rank of a dpcnn process
rank_of() { tr '\0' '\n' <"/proc/$1/environ" | sed -n 's/^OMPI_COMM_WORLD_RANK=//p'; }
dpcnn_on() { # dpcnn_on HOST: its dpcnn processes
    for p in $(mh_pids "$1"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dpcnn ] && echo "$p"
    done
    return 0
}

# ------------------------------------------------------------ the hosts
out=$(mh_mpirun $L32 sh -c 'echo "$OMPI_COMM_WORLD_RANK $(cat /proc/sys/kernel/hostname)"' | sort)
[ "$(echo "$out" | tr '\n' ' ')" = "0 h1 1 h2 2 h3 3 h1 4 h2 5 h3 " ] ||
    { echo "$out"; fail "the ranks are not on the hosts --map-by node puts them on"; }
echo "3 emulated hosts up; 6 ranks placed by node: $(echo "$out" | tr '\n' ' ')"

# ------------------------------------------------------ the same bits
# The references: one process, no launcher.
for m in tutorial bn; do
    ./dpcnn $RUN --model "$m" --checkpoint-dir "$T/ref-$m"
done
# The checkpoint directory of rank 0 only: h2 and h3 see an empty, read-only
# directory in its place, so a write (or a read) by any other rank would fail.
P=$TMPDIR/private
mh_private "$P" h2 h3
for m in tutorial bn; do
    for l in 31 32; do
        eval "layout=\$L$l"
        dir=$T/same-$m-$l
        [ "$l" = 32 ] && dir=$P/same-$m-$l
        start=$(now_ms)
        mh_mpirun $layout ./dpcnn $RUN --model "$m" --checkpoint-dir "$dir" >"$T/same.log" 2>&1 ||
            { cat "$T/same.log"; fail "$m on ${l%?} hosts x ${l#?} failed"; }
        same_run "$T/ref-$m" "$dir" "*.h5"
        echo "$m, ${l%?} hosts x ${l#?} rank(s)$([ "$l" = 32 ] && echo ", rank 0's private directory"): identical to one process ($(secs $(($(now_ms) - start))) s)"
    done
done
[ -z "$(mh_on h2 ls -A "$P")" ] && [ -z "$(mh_on h3 ls -A "$P")" ] || fail "h2 or h3 sees rank 0's directory"
ls "$P/same-bn-32/latest.h5" >/dev/null || fail "no checkpoint in the private directory"
sps() { sed -n 's/.*"type":"epoch".*"samples_per_second":\([0-9.]*\).*/\1/p' "$@" | median; }
echo "training samples/s (TCP over veth on shared cores: a correctness figure): one process" \
    "$(sps "$T/ref-tutorial/metrics.jsonl"), 3 hosts x 1 rank $(sps "$T/same-tutorial-31/metrics.jsonl")"
if [ -n "$LONG" ]; then
    # Start-up across hosts: --epochs 0 (start, read the data, write the first
    # checkpoint, stop), and one epoch of 12,000 samples; rounds taken in turn.
    up1= up3= upl= i=1
    while [ $i -le 3 ]; do
        s=$(now_ms)
        ./dpcnn --data "$DATA" --epochs 0 --quiet --checkpoint-dir "$T/up1-$i"
        up1="$up1 $(($(now_ms) - s))"
        s=$(now_ms)
        mh_mpirun -np 3 --host h1:3 ./dpcnn --data "$DATA" --epochs 0 --quiet --checkpoint-dir "$T/upl-$i"
        upl="$upl $(($(now_ms) - s))"
        s=$(now_ms)
        mh_mpirun $L31 ./dpcnn --data "$DATA" --epochs 0 --quiet --checkpoint-dir "$T/up3-$i"
        up3="$up3 $(($(now_ms) - s))"
        ./dpcnn --data "$DATA" --threads 1 --limit 12000 --quiet --checkpoint-dir "$T/sp1-$i"
        mh_mpirun $L31 ./dpcnn --data "$DATA" --threads 1 --limit 12000 --quiet --checkpoint-dir "$T/sp3-$i"
        i=$((i + 1))
    done
    echo "start-up to the end of --epochs 0, medians of 3: one process $(secs "$(echo "$up1" | median)") s," \
        "3 ranks on h1 $(secs "$(echo "$upl" | median)") s, 3 hosts x 1 rank $(secs "$(echo "$up3" | median)") s"
    echo "samples/s of one epoch of 12,000, medians of 3: one process $(sps "$T"/sp1-*/metrics.jsonl)," \
        "3 hosts x 1 rank $(sps "$T"/sp3-*/metrics.jsonl)"
fi

# ------------------------------------------------------------ the faults
# start_job DIR "MPIRUN OPTIONS" DPCNN OPTIONS...: the job in the background;
# JOB is mpirun's pid
start_job() {
    jdir=$1 opts=$2
    shift 2
    # shellcheck disable=SC2086
    mh_spawn h1 $MH_MPIRUN $opts ./dpcnn $RUN --checkpoint-dir "$jdir" "$@" >"$jdir.log" 2>&1
    JOB=$MH_PID
}
# wait_for FILE: until it exists (a checkpoint mid-epoch 2: the fault lands there)
wait_for() {
    i=0
    while [ ! -e "$1" ]; do
        i=$((i + 1))
        [ $i -lt 1200 ] || { cat "$jdir.log"; fail "no $1 after 60 s"; }
        kill -0 "$JOB" 2>/dev/null || { cat "$jdir.log"; fail "the job ended before the fault"; }
        sleep 0.05
    done
}
# end_job BOUND: wait for the job; STATUS and TOOK (ms since FAULT_AT) are set;
# a job still running BOUND + 20 s after the fault fails the test.
end_job() {
    ( sleep $(($1 + 20)); kill -KILL "$JOB" 2>/dev/null ) &
    guard=$!
    set +e
    wait "$JOB"
    STATUS=$?
    set -e
    TOOK=$(($(now_ms) - FAULT_AT))
    kill "$guard" 2>/dev/null || true
    wait "$guard" 2>/dev/null || true
}
not_finished() {
    [ "$(readlink "$1/latest.h5")" != epoch-0004.h5 ] || fail "$1: the fault came too late to test"
}

# resumed LABEL DIR LAYOUT MODEL: the run in DIR, resumed on LAYOUT, ends on
# the bits of the uninterrupted one and leaves a clean directory
resumed() {
    label=$1 d=$2 layout=$3 m=$4
    # shellcheck disable=SC2086 # a layout is a list of words
    mh_mpirun $layout ./dpcnn $RUN --model "$m" --resume "$d" >"$d.resume.log" 2>&1 ||
        { cat "$d.resume.log"; fail "$label: the resume failed"; }
    same_run "$T/ref-$m" "$d" "*.h5"
    complete "$d" clean
}

# stop_one DIR SECONDS: one rank on h3 stopped (SIGSTOP) mid-epoch: it neither
# fails nor answers. The others find it silent after --hang-timeout SECONDS
# ("default": dpcnn's own, 60) and name it and its host.
stop_one() {
    d=$1 ht=$2
    if [ "$ht" = default ]; then
        start_job "$d" "$L32"
        ht=60
    else
        start_job "$d" "$L32" --hang-timeout "$ht"
    fi
    wait_for "$d/step-00000028.h5"
    victim=$(dpcnn_on h3 | tail -1)
    vrank=$(rank_of "$victim")
    FAULT_AT=$(now_ms)
    kill -STOP "$victim"
    end_job $((ht + 10))
    [ "$STATUS" -ne 0 ] || fail "SIGSTOP: the job succeeded"
    [ "$TOOK" -le $(((ht + 10) * 1000)) ] ||
        { cat "$d.log"; fail "SIGSTOP: the job took $(secs "$TOOK") s to end (bound $ht + 10 s)"; }
    grep -q "rank $vrank on host h3 went silent" "$d.log" ||
        { cat "$d.log"; fail "SIGSTOP: the message does not name rank $vrank on host h3"; }
    complete "$d"
    no_leftovers "SIGSTOP"
    echo "rank $vrank on h3 SIGSTOPped, --hang-timeout $ht: status $STATUS after $(secs "$TOOK") s:" \
        "$(grep -o "rank $vrank on host h3 went silent" "$d.log")"
}

times_usr1= times_stop= times_cut= times_kill=
r=1
while [ "$r" -le "$REPEAT" ]; do
    # SIGUSR1 to mpirun on h1: mpirun passes it to every rank on every host; they
    # agree inside the step's collective, so all stop after the same step,
    # checkpoint, and exit 75. In rank 0's private directory, resumed there on
    # 3 hosts x 2 ranks.
    d=$P/usr1-$r
    start_job "$d" "$L31"
    wait_for "$d/step-00000028.h5"
    FAULT_AT=$(now_ms)
    kill -USR1 "$JOB"
    end_job 10
    [ "$STATUS" -eq 75 ] || { cat "$d.log"; fail "SIGUSR1: status $STATUS, not 75"; }
    step=$(sed -n 's/.*stopped by SIGUSR1 after step \([0-9]*\).*/\1/p' "$d.log")
    [ -n "$step" ] || { cat "$d.log"; fail "SIGUSR1: no stop message"; }
    [ "$(readlink "$d/latest.h5")" = "$(printf 'step-%08d.h5' "$step")" ] || [ "$(readlink "$d/latest.h5")" = "$(printf 'epoch-%04d.h5' $((step / 20)))" ] ||
        fail "SIGUSR1: latest.h5 -> $(readlink "$d/latest.h5"), not the checkpoint of step $step"
    not_finished "$d"
    complete "$d" clean
    no_leftovers "SIGUSR1"
    resumed SIGUSR1 "$d" "$L32" tutorial
    echo "SIGUSR1 to mpirun: every rank stopped after step $step, status 75 after $(secs "$TOOK") s; resumed on 3 hosts x 2: identical"
    times_usr1="$times_usr1 $TOOK"

    stop_one "$T/stop-$r" 5
    times_stop="$times_stop $TOOK"

    # h3 cut off in the middle of epoch 2: nobody sees an error, packets vanish.
    # Open MPI's runtime keepalive notices it, ends the job and names the host.
    d=$T/cut-$r
    start_job "$d" "$KEEPALIVE $L32" --model bn
    wait_for "$d/step-00000028.h5"
    # ranks on different hosts talk over TCP between the hosts' addresses
    [ "$r" = 1 ] && { mh_on h3 ss -tnp | grep dpcnn | grep -q "$MH_SUBNET.3:.*$MH_SUBNET.[12]:" ||
        fail "no TCP connection between the dpcnn ranks of h3 and the other hosts"; }
    FAULT_AT=$(now_ms)
    mh_cut h3
    end_job 30
    [ "$STATUS" -ne 0 ] || fail "cut: the job succeeded"
    [ "$TOOK" -le 30000 ] || { cat "$d.log"; fail "cut: the job took $(secs "$TOOK") s to end (bound 30 s)"; }
    grep -q "on node h3" "$d.log" || { cat "$d.log"; fail "cut: the message does not name h3"; }
    no_leftovers "cut"
    mh_heal h3
    not_finished "$d"
    complete "$d"
    resumed cut "$d" "$L21" bn
    echo "h3 cut off: status $STATUS after $(secs "$TOOK") s ($(grep -o "Remote daemon.*on node h3" "$d.log" | tr -s ' ')), nothing left on any host; resumed on 2 hosts x 1: identical"
    times_cut="$times_cut $TOOK"

    # Every process of h3 SIGKILLed at once, as a host that dies would lose them.
    d=$T/kill-$r
    start_job "$d" "$L31"
    wait_for "$d/step-00000028.h5"
    victims=$(mh_pids h3)
    FAULT_AT=$(now_ms)
    # shellcheck disable=SC2086
    kill -KILL $victims
    end_job 10
    [ "$STATUS" -ne 0 ] || fail "kill: the job succeeded"
    [ "$TOOK" -le 10000 ] || { cat "$d.log"; fail "kill: the job took $(secs "$TOOK") s to end (bound 10 s)"; }
    no_leftovers "kill"
    not_finished "$d"
    complete "$d"
    resumed kill "$d" "$L22" tutorial
    echo "h3's processes SIGKILLed: status $STATUS after $(secs "$TOOK") s; resumed on 2 hosts x 2: identical"
    times_kill="$times_kill $TOOK"
    r=$((r + 1))
done
[ -z "$LONG" ] || stop_one "$T/stop-default" default
if [ "$REPEAT" -gt 1 ]; then
    echo "medians of $REPEAT, fault to the end of the job:" \
        "SIGUSR1 $(secs "$(echo "$times_usr1" | median)") s," \
        "SIGSTOP (--hang-timeout 5) $(secs "$(echo "$times_stop" | median)") s," \
        "cut off $(secs "$(echo "$times_cut" | median)") s," \
        "SIGKILL $(secs "$(echo "$times_kill" | median)") s"
fi
echo "test_multihost: all passed"
