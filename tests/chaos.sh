#!/bin/sh
# Chaos: random interruptions never change a bit.
#
# One training run goes through uninterrupted (the reference). Then the same
# run is interrupted again and again at random moments -- SIGKILL of mpirun,
# SIGKILL of one rank, SIGUSR1 to mpirun, SIGTERM to mpirun or to one rank --
# each time resumed (--resume DIR, the same command line otherwise) on a random
# rank count from 1 to 4, until it is complete. Every checkpoint both runs
# wrote must then be byte-identical, and metrics.jsonl identical once the
# timing fields and "ranks" are stripped. Before every resume no process of the
# interrupted one may be left; one that outlives its launcher by 20 s fails the
# test, as does a hang, a refused checkpoint or an unexpected exit status.
#
#   tests/chaos.sh [-n INTERRUPTIONS] [-r PER_RUN] [-s SEED] [-q]
#
#   -n  interruptions in all ($CHAOS_N, else 100)
#   -r  interruptions of one run before it may finish; more runs follow until
#       there have been -n in all (default 5)
#   -s  the seed of every random choice: the kinds, the moments, the rank
#       counts ($CHAOS_SEED, else a random one); printed first, so a failure is
#       reproduced by passing it again (the moments are real time, so the
#       outcome of a moment can still vary a little from one machine to another)
#   -q  the small run make check uses (2000 training, 300 test samples)
#
# The moments: a random delay after the start (start-up, training, evaluation,
# shutdown), a few ms after a random checkpoint still to come appears, or the
# next checkpoint write after a random delay, caught while its temporary file
# exists. Run from the build directory, like the other shell tests. CHAOS_KEEP=1 keeps
# the scratch directory; it is kept anyway when something failed.
. "${srcdir:-.}/tests/lib.sh"
command -v mpirun >/dev/null || fail "mpirun not found (apt-get install openmpi-bin)"
command -v pgrep >/dev/null || fail "pgrep not found (apt-get install procps)"
FAILED=
fail() { # as lib.sh's, but the scratch directory is kept for a look
    echo "FAIL: $*" >&2
    FAILED=1
    exit 1
}

N=${CHAOS_N:-100} PER_RUN=5 SEED=${CHAOS_SEED:-} QUICK=
while getopts n:r:s:q opt; do
    case $opt in
    n) N=$OPTARG ;;
    r) PER_RUN=$OPTARG ;;
    s) SEED=$OPTARG ;;
    q) QUICK=1 ;;
    *) fail "usage: tests/chaos.sh [-n INTERRUPTIONS] [-r PER_RUN] [-s SEED] [-q]" ;;
    esac
done
[ -n "$SEED" ] || SEED=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
for v in "$N" "$PER_RUN" "$SEED"; do
    case $v in '' | *[!0-9]*) fail "-n, -r and -s take whole numbers, got '$v'" ;; esac
done
[ "$PER_RUN" -ge 1 ] || fail "-r must be at least 1"

# The run. Step checkpoints at an interval that does not divide the epoch, so
# they fall at different places in every epoch; a per-step metrics record
# every few steps, so step records are compared too.
if [ -n "$QUICK" ]; then
    LIMIT=2000 TEST_LIMIT=300 EPOCHS=4 EVERY=7 METRICS=3
else
    LIMIT=12000 TEST_LIMIT=3000 EPOCHS=4 EVERY=25 METRICS=10
fi
SPE=$((LIMIT / 100)) # steps per epoch (batch 100, and LIMIT a multiple of it)
TOTAL=$((SPE * EPOCHS))
ARGS="--data $DATA --threads 1 --limit $LIMIT --test-limit $TEST_LIMIT --epochs $EPOCHS
 --checkpoint-every ${EVERY}s --metrics-every $METRICS"
FINAL=$(printf 'epoch-%04d.h5' "$EPOCHS")

# ------------------------------------------------------------ randomness

# rand N: R = a number in [0, N), from the seed alone. A 31-bit linear
# congruential generator (glibc's constants) in shell arithmetic, which is 64
# bits wide in dash and bash; its high 15 bits from two draws make 30.
RNG=$((SEED % 2147483648))
rand() {
    RNG=$(((RNG * 1103515245 + 12345) % 2147483648))
    R=$((RNG / 65536))
    RNG=$(((RNG * 1103515245 + 12345) % 2147483648))
    R=$(((R * 32768 + RNG / 65536) % $1))
}

# The kinds are dealt from a shuffled deck of four, so that every four
# interruptions cover every kind (and make check's four cover all of them).
shuffle_kinds() {
    K0=kill-mpirun K1=kill-rank K2=usr1-mpirun K3=term
    i=3
    while [ $i -gt 0 ]; do
        rand $((i + 1))
        eval "a=\$K$i b=\$K$R"
        eval "K$i=\$b K$R=\$a"
        i=$((i - 1))
    done
}

# -------------------------------------------------------- the run's pieces

now_ms() { echo $(($(date +%s%N) / 1000000)); } # GNU date: %N is nanoseconds
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# Each process of a run carries "--checkpoint-dir DIR " on its command line
# (mpirun and every rank), and DIR is unique: that finds them all, also ranks
# that outlived a killed mpirun and were handed to init.
run_pids() { pgrep -f -- "--checkpoint-dir $DIR " || true; }

# launch NP MODE [--resume DIR]: start one piece of the run in the background;
# MODE is mpirun, or plain for a single dpcnn process without a launcher. LPID
# is mpirun's pid (dpcnn's when plain), START the time, LOG its output, and
# $RC receives the exit status. The status comes through a subshell, so the
# script can poll for it while it signals LPID.
PIECE=0
launch() {
    lnp=$1 lmode=$2
    shift 2
    PIECE=$((PIECE + 1))
    LOG=$(printf '%s.%02d.log' "$DIR" "$PIECE")
    if [ "$lmode" = plain ]; then
        set -- ./dpcnn --checkpoint-dir "$DIR" $ARGS "$@"
    else
        set -- mpirun -np "$lnp" ./dpcnn --checkpoint-dir "$DIR" $ARGS "$@"
    fi
    rm -f "$RC" "$PIDF"
    touch "$MARK" # a file newer than this one was written by this piece
    START=$(now_ms)
    (
        "$@" >"$LOG" 2>&1 &
        echo $! >"$PIDF.tmp" && mv "$PIDF.tmp" "$PIDF"
        st=0
        wait $! 2>/dev/null || st=$? # (dash reports a killed job on stderr)
        echo $st >"$RC.tmp" && mv "$RC.tmp" "$RC"
    ) &
    SUB=$!
    while [ ! -s "$PIDF" ]; do sleep 0.01; done
    LPID=$(cat "$PIDF") WHO_OF=
}
ended() { [ -s "$RC" ]; }

# wait_end SECONDS WHAT: wait for the piece to end and leave its exit status in
# STATUS; a piece still running after SECONDS is a hang: show it, end it, fail.
wait_end() {
    deadline=$(($(now_ms) + $1 * 1000))
    while ! ended; do
        if [ "$(now_ms)" -gt "$deadline" ]; then
            left=$(run_pids)
            echo "FAIL: hang: $2 still running after $1 s" >&2
            [ -z "$left" ] || ps -o pid,ppid,etime,stat,args -p "$(echo $left | tr ' ' ,)" >&2
            tail -20 "$LOG" >&2
            reproduce >&2
            [ -z "$left" ] || kill -9 $left 2>/dev/null || true
            FAILED=1
            exit 1
        fi
        sleep 0.05
    done
    STATUS=$(cat "$RC")
    wait "$SUB" || true
}

# no_survivors [SINCE]: wait until no process of the run is left. SURVIVED
# says whether one was still there once its launcher had ended, LINGER how
# long they took (ms) from SINCE (now_ms; default: now). A rank that outlives
# its launcher is left to end by itself (Open MPI's ranks notice a lost mpirun
# within about a second), but one still there after 20 s is a defect: show
# it, end it, fail.
no_survivors() {
    t0=${1:-$(now_ms)}
    SURVIVED=
    while :; do
        left=$(run_pids)
        [ -n "$left" ] || break
        SURVIVED=1
        if [ $(($(now_ms) - t0)) -gt 20000 ]; then
            echo "FAIL: processes of the interrupted run still alive 20 s after it ended:" >&2
            ps -o pid,ppid,etime,stat,args -p "$(echo $left | tr ' ' ,)" >&2
            reproduce >&2
            kill -9 $left 2>/dev/null || true
            FAILED=1
            exit 1
        fi
        sleep 0.05
    done
    LINGER=$(($(now_ms) - t0))
}

# caught SIG PID...: every PID is dpcnn itself (not a forked copy of its
# launcher not yet replaced by dpcnn) and catches SIG: its stop handlers are
# in place (neither Open MPI nor the libraries catch SIGUSR1 or SIGTERM).
caught() {
    cs=$1
    shift
    [ $# -gt 0 ] || return 1
    case $cs in USR1) bit=512 ;; TERM) bit=16384 ;; *) return 1 ;; esac
    for p in "$@"; do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dpcnn ] || return 1
        m=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)
        m=${m#"${m%????}"} # signals 1 to 16
        [ -n "$m" ] && [ $((0x$m & bit)) -ne 0 ] || return 1
    done
}

# latest_step: LATEST = what latest.h5 names (none without it), LSTEP the
# global step of that checkpoint (0 without one).
latest_step() {
    LATEST=$(readlink "$DIR/latest.h5" 2>/dev/null || echo none)
    case $LATEST in
    none) LSTEP=0 ;;
    epoch-*.h5) LSTEP=$((SPE * $(decimal "${LATEST#epoch-}"))) ;;
    step-*.h5) LSTEP=$(decimal "${LATEST#step-}") ;;
    *) flaw "latest.h5 names '$LATEST', not a checkpoint" && LSTEP=0 ;;
    esac
}
# decimal 0042.h5: 42 (without the zeros, which shell arithmetic reads as octal)
decimal() { echo "${1%.h5}" | sed 's/^0*//; s/^$/0/'; }
ckpt_name() { # ckpt_name STEP: the file a checkpoint after global step STEP goes to
    if [ $(($1 % SPE)) -eq 0 ]; then printf 'epoch-%04d.h5' $(($1 / SPE)); else printf 'step-%08d.h5' "$1"; fi
}

# find_victim: WHO, the process to signal: mpirun (or the plain dpcnn), or for a
# rank its own process, a child of mpirun with that rank in its environment
# (at start-up, wait for mpirun to start it; empty if the piece ends first).
find_victim() {
    WHO=$LPID
    [ "$target" = rank ] || return 0
    [ -z "$WHO_OF" ] || { WHO=$VICTIM; return 0; }
    WHO=
    while [ -z "$WHO" ] && ! ended; do
        for p in $(pgrep -P "$LPID" 2>/dev/null); do
            r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
            [ "$r" != "$victim_rank" ] || WHO=$p
        done
        [ -n "$WHO" ] || sleep 0.01
    done
    VICTIM=$WHO WHO_OF=$LPID # found once per piece
}

# A defect in this run: note it and go on; the run counts as failed.
flaw() {
    echo "      FLAW: $*"
    echo "run $RUN: $*" >>"$T/flaws"
    RUN_OK=
}

reproduce() {
    echo "reproduce with: CHAOS_SEED=$SEED tests/chaos.sh -n $N -r $PER_RUN${QUICK:+ -q} (run $RUN)"
}

cleanup() { # cleanup STATUS
    # end what is left of a run this script started (only after a failure)
    if [ -n "${DIR:-}" ]; then
        left=$(run_pids)
        [ -z "$left" ] || kill -9 $left 2>/dev/null || true
    fi
    if [ -n "$FAILED" ] || [ "$1" -ne 0 ] || [ -n "${CHAOS_KEEP:-}" ]; then
        echo "kept $T" >&2
    else
        rm -rf "$T"
    fi
}
trap 'cleanup $?' EXIT
trap 'FAILED=1; exit 1' INT TERM

RC=$T/rc PIDF=$T/pid MARK=$T/mark
# np_draw: NP, a rank count from 1 to 4, and MODE: a single rank runs half of
# the time as a plain process, without mpirun.
np_draw() {
    rand 4
    NP=$((R + 1)) MODE=mpirun
    rand 2
    [ "$NP" -gt 1 ] || [ "$R" -eq 0 ] || MODE=plain
}
np_label() { if [ "$2" = plain ]; then echo "1p"; else echo "$1"; fi; }

# ------------------------------------------------------------- reference

T_BEGIN=$(now_ms)
echo "chaos: seed $SEED, $N interruptions, up to $PER_RUN per run"
echo "chaos: $TOTAL steps ($EPOCHS epochs of $SPE), $LIMIT training and $TEST_LIMIT test samples," \
    "a checkpoint every $EVERY steps"
RUN=0 DIR=$T/ref
np_draw
launch "$NP" "$MODE"
# When the first and the last checkpoint appear: the start-up and the training
# time, from which the moments are scaled.
while [ ! -e "$DIR/epoch-0000.h5" ] && ! ended; do sleep 0.02; done
T_UP=$(($(now_ms) - START))
while [ ! -e "$DIR/$FINAL" ] && ! ended; do sleep 0.02; done
T_DONE=$(($(now_ms) - START))
wait_end 600 "the reference run"
[ "$STATUS" -eq 0 ] || { cat "$LOG"; fail "the reference run failed with status $STATUS"; }
[ "$(readlink "$DIR/latest.h5")" = "$FINAL" ] || fail "reference: latest.h5 does not name $FINAL"
grep -q '"type":"step"' "$DIR/metrics.jsonl" || fail "reference: no per-step records"
REF=$DIR
echo "chaos: reference on np $(np_label "$NP" "$MODE"): start-up $(secs $T_UP) s, last checkpoint" \
    "at $(secs $T_DONE) s, exit at $(secs $(($(now_ms) - START))) s"
printf '%4s  %3s  %-15s  %-46s  %-8s  %6s   %-16s  %s\n' "#" run kind moment np status \
    "latest.h5 after" note

# --------------------------------------------------------- interruptions

DONE=0 MISSED=0 RUNS=0 RUNS_OK=0 MAX_LINGER=0 MID_WRITE=0 ORPHANED=0
N_KILL_MPIRUN=0 N_KILL_RANK=0 N_USR1=0 N_TERM_MPIRUN=0 N_TERM_RANK=0
SCALE=100 # percent of the reference's timing the moments are drawn over
COUNTS=
count() { COUNTS="$COUNTS
$1"; }

# interrupt: one piece of the run, interrupted. Draws the kind, its target,
# the moment and the next rank count, in this order, whatever happens (so a
# seed gives the same choices); starts the piece on NP ranks (MODE), delivers
# the signal, checks what it left, and sets NP and MODE for the next piece.
# COUNTED is empty when the run ended before the signal landed.
interrupt() {
    # a new deck every four interruptions (a missed one is dealt again)
    [ $((DONE % 4)) -ne 0 ] || [ "$DEALT_AT" = "$DONE" ] || { shuffle_kinds; DEALT_AT=$DONE; }
    eval "kind=\$K$((DONE % 4))"
    rand 2
    [ "$kind" != term ] || if [ "$R" -eq 0 ]; then kind=term-mpirun; else kind=term-rank; fi
    rand 12 # a multiple of 1, 2, 3 and 4: every rank as likely
    victim_rank=$((R % NP))
    rand 3
    how=$R # 0: a delay after the start; 1: after a checkpoint appears; 2: a write
    rand 1000
    u=$R
    rand 50
    extra=$R
    np_before=$(np_label "$NP" "$MODE")
    cur=$LSTEP

    case $kind in
    kill-*) sig=KILL ;;
    usr1-*) sig=USR1 ;;
    term-*) sig=TERM ;;
    esac
    target=${kind#*-}
    [ "$MODE" = plain ] && target=dpcnn
    label="SIG$sig $target"
    [ "$target" = rank ] && label="SIG$sig rank $victim_rank"

    if [ "$LATEST" = none ]; then launch "$NP" "$MODE"; else launch "$NP" "$MODE" --resume "$DIR"; fi
    if [ "$how" -eq 0 ]; then
        # anywhere from the start to a little past the expected end of this
        # piece: start-up, training, checkpoints, evaluation, shutdown
        est=$(((T_UP + (T_DONE - T_UP) * (TOTAL - cur) / TOTAL) * 11 * SCALE / 1000))
        ms=$((est * u / 1000))
        sleep "$(secs "$ms")"
        moment="t+$(secs "$ms")s"
    elif [ "$how" -eq 1 ]; then
        # a random checkpoint still to come (a step or an epoch one), then a
        # few ms: the moments around and just after a checkpoint write
        n=0 c=$((cur + 1))
        while [ $c -le $TOTAL ]; do
            if [ $((c % SPE)) -eq 0 ] || [ $((c % EVERY)) -eq 0 ]; then n=$((n + 1)); fi
            c=$((c + 1))
        done
        pick=$((u * n / 1000)) c=$cur
        while [ $pick -ge 0 ]; do
            c=$((c + 1))
            if [ $((c % SPE)) -eq 0 ] || [ $((c % EVERY)) -eq 0 ]; then pick=$((pick - 1)); fi
        done
        want=$(ckpt_name "$c")
        while ! [ "$DIR/$want" -nt "$MARK" ] && ! ended; do sleep 0.01; done
        sleep "$(secs "$extra")"
        moment="$want+${extra}ms"
    else
        # a random delay in the first half of the piece, then the next write
        # of a checkpoint (or of latest.h5), caught while its temporary file
        # exists: the shell's own glob, no process started per look
        est=$(((T_UP + (T_DONE - T_UP) * (TOTAL - cur) / TOTAL) * SCALE / 200))
        ms=$((est * u / 1000))
        sleep "$(secs "$ms")"
        find_victim
        seen=
        while [ -z "$seen" ] && ! ended; do
            # (newer than the start: not one a killed write left behind)
            for f in "$DIR"/.*.h5.tmp.*; do [ ! "$f" -nt "$MARK" ] || seen=${f##*/}; done
        done
        seen=${seen#.}
        moment="write of ${seen%.tmp.*}"
        [ -n "$seen" ] || moment="no write came"
        moment="$moment (t+$(secs "$ms")s)"
    fi
    find_victim
    # Were the stop handlers of every rank in place when the signal went?
    # (Not asked before a SIGKILL: the look takes some ms, a write less.)
    ranks_up=0 handlers=
    if [ "$sig" != KILL ]; then
        if [ "$MODE" = plain ]; then ranks=$LPID; else ranks=$(pgrep -P "$LPID" 2>/dev/null || true); fi
        ranks_up=$(echo $ranks | wc -w)
        [ "$ranks_up" -ne "$NP" ] || ! caught "$sig" $ranks || handlers=1
    fi
    at=$(($(now_ms) - START))
    sent=
    if [ -n "$WHO" ] && ! ended && kill -s "$sig" "$WHO" 2>/dev/null; then sent=1; fi
    t_sig=$(now_ms)
    latest_step
    at_kill=$LATEST # what latest.h5 named as the signal went
    if [ "$sig" = KILL ] && [ "$target" = rank ]; then
        wait_end 20 "the job after SIGKILL of one of its ranks"
    else
        wait_end 120 "the job after $label"
    fi
    took=$(($(now_ms) - t_sig))
    # (after SIGKILL of mpirun, from the kill: mpirun was gone at once)
    if [ "$kind" = kill-mpirun ]; then no_survivors "$t_sig"; else no_survivors; fi
    np_was=$NP mode_was=$MODE
    np_draw
    prev=$cur
    latest_step

    # What the piece left. A checkpoint it names must exist, and the run
    # never goes back: a resume starts at least where the last one did.
    note=
    add_note() { note="${note:+$note; }$*"; }
    [ "$LATEST" = none ] || [ -f "$DIR/$LATEST" ] || flaw "latest.h5 names $LATEST, which does not exist"
    [ "$LSTEP" -ge "$prev" ] || flaw "latest.h5 went back from step $prev to $LSTEP ($LATEST)"
    cut=
    for f in "$DIR"/.*.tmp.*; do [ ! "$f" -nt "$MARK" ] || cut="$cut ${f##*/}"; done # (this piece's)
    if [ -n "$cut" ]; then
        add_note "killed mid-write (left$cut)"
        MID_WRITE=$((MID_WRITE + 1))
    fi
    if grep -q "error: --resume" "$LOG"; then
        flaw "the checkpoint was refused: $(grep -m1 'error: --resume' "$LOG")"
    fi
    if [ -z "$sent" ] || { [ "$STATUS" -eq 0 ] && [ "$LATEST" = "$FINAL" ]; }; then
        # It did not interrupt anything: not counted. A time too late
        # shortens the next ones (the machine may run faster than during the
        # reference); an interruption lengthens them again.
        COUNTED= MISSED=$((MISSED + 1))
        if [ "$target" = mpirun ] && [ "$ranks_up" -eq 0 ] && [ -n "$sent" ]; then
            add_note "mpirun had started no rank yet and dropped the signal; the run went on to its end; not counted"
        else
            [ "$how" -eq 1 ] || [ "$SCALE" -le 20 ] || SCALE=$((SCALE * 3 / 4))
            if [ -z "$sent" ]; then
                add_note "too late: the run had ended; not counted"
            else
                add_note "too late: the run had done its last step (status 0); not counted"
            fi
        fi
    else
        COUNTED=1 DONE=$((DONE + 1))
        [ "$how" -eq 1 ] || [ "$SCALE" -ge 100 ] || SCALE=$((SCALE * 11 / 10 + 1))
        count "$label"
        case $kind in
        kill-mpirun) N_KILL_MPIRUN=$((N_KILL_MPIRUN + 1)) ;;
        kill-rank) N_KILL_RANK=$((N_KILL_RANK + 1)) ;;
        usr1-mpirun) N_USR1=$((N_USR1 + 1)) ;;
        term-mpirun) N_TERM_MPIRUN=$((N_TERM_MPIRUN + 1)) ;;
        term-rank) N_TERM_RANK=$((N_TERM_RANK + 1)) ;;
        esac
        case $STATUS in
        75)
            [ "$sig" != KILL ] || flaw "status 75 after SIGKILL"
            stop=$(grep -m1 "stopped by" "$LOG" || true)
            [ -n "$stop" ] || flaw "status 75 but no stop message"
            s=$(echo "$stop" | sed -n 's/.* after step \([0-9]*\);.*/\1/p')
            [ -z "$s" ] || [ "$LATEST" = "$(ckpt_name "$s")" ] ||
                flaw "stopped after step $s but latest.h5 names $LATEST"
            add_note "stopped after step $s"
            ;;
        0) flaw "status 0 but the run is not complete (latest.h5 -> $LATEST)" ;;
        *)
            case $kind in
            kill-mpirun) [ "$STATUS" -eq 137 ] || flaw "mpirun killed by SIGKILL, but status $STATUS" ;;
            kill-rank) add_note "job ended $(secs "$took") s after the kill" ;;
            term-mpirun)
                # mpirun's own 1 (it SIGKILLs the ranks 1 s after SIGTERM),
                # or any status if the signal came before the handlers (then
                # it killed a rank)
                if [ -n "$handlers" ] && [ "$STATUS" -ne 1 ]; then
                    flaw "SIGTERM to mpirun: status $STATUS, expected 75 or mpirun's 1"
                fi
                grep -q "stopped by" "$LOG" && add_note "the ranks stopped with a checkpoint"
                ;;
            *)
                if [ -n "$handlers" ]; then
                    flaw "$label after start-up: status $STATUS, expected 75"
                fi
                ;;
            esac
            [ "$sig" = KILL ] || [ -n "$handlers" ] ||
                add_note "$ranks_up of $np_was ranks up, not all catching SIG$sig (start-up or exit)"
            ;;
        esac
        [ "$LATEST" != "$FINAL" ] || add_note "the run reached its end all the same"
        if [ "$kind" = kill-mpirun ] && [ "$mode_was" != plain ] && [ -n "$SURVIVED" ]; then
            add_note "ranks outlived mpirun by $(secs "$LINGER") s"
            [ "$LINGER" -le "$MAX_LINGER" ] || MAX_LINGER=$LINGER
            if [ "$at_kill" != "$LATEST" ]; then
                # they trained on and wrote checkpoints with no launcher
                add_note "and trained on from $at_kill to $LATEST"
                ORPHANED=$((ORPHANED + 1))
            fi
        fi
    fi
    num=$DONE
    [ -n "$COUNTED" ] || num=-
    printf '%4s  %3d  %-15s  %-46s  %-2s -> %-2s  %4s   %-16s  %s\n' "$num" "$RUN" "$label" \
        "$moment (at $(secs "$at") s)" "$np_before" "$(np_label "$NP" "$MODE")" "$STATUS" \
        "$LATEST" "$note"
}

# One run: interruptions until PER_RUN of them (or all N) have landed or the
# run is complete; then a last, uninterrupted piece finishes it, one more
# resume must say it is complete and change nothing, and the run must equal
# the reference.
DEALT_AT=-1
while [ "$DONE" -lt "$N" ]; do
    RUNS=$((RUNS + 1))
    RUN=$RUNS RUN_OK=1 PIECE=0 LATEST=none LSTEP=0
    DIR=$(printf '%s/run-%03d' "$T" "$RUN")
    np_draw
    here=0
    while [ "$here" -lt "$PER_RUN" ] && [ "$DONE" -lt "$N" ] && [ "$LATEST" != "$FINAL" ]; do
        interrupt
        [ -z "$COUNTED" ] || here=$((here + 1))
        [ "$MISSED" -le $((N + 20)) ] || fail "too many moments missed the run ($MISSED)"
    done
    if [ "$LATEST" != "$FINAL" ]; then
        # (with no checkpoint yet, the run starts again from scratch)
        if [ "$LATEST" = none ]; then launch "$NP" "$MODE"; else launch "$NP" "$MODE" --resume "$DIR"; fi
        wait_end 600 "the last, uninterrupted piece of run $RUN"
        no_survivors
        [ "$STATUS" -eq 0 ] || { tail -20 "$LOG"; flaw "the uninterrupted resume ended with status $STATUS"; }
        latest_step
        echo "         run $RUN finished on np $(np_label "$NP" "$MODE"): status $STATUS, latest.h5 -> $LATEST"
        np_draw
    fi
    sums=$(cd "$DIR" && cksum ./*.h5 metrics.jsonl 2>&1 || true)
    launch "$NP" "$MODE" --resume "$DIR"
    wait_end 120 "a resume of the complete run $RUN"
    no_survivors
    [ "$STATUS" -eq 0 ] || flaw "a resume of the complete run ended with status $STATUS"
    grep -q "already complete" "$LOG" || flaw "a resume of the complete run did not say so"
    [ "$sums" = "$(cd "$DIR" && cksum ./*.h5 metrics.jsonl 2>&1 || true)" ] ||
        flaw "a resume of the complete run changed its files"

    # The comparison: the final checkpoint, every checkpoint both runs wrote
    # (epoch ones, and step ones at the regular interval), the metrics.
    [ "$(readlink "$DIR/latest.h5")" = "$FINAL" ] || flaw "latest.h5 does not name $FINAL"
    same=0
    for f in "$REF"/*.h5; do
        b=${f##*/}
        [ "$b" != latest.h5 ] && [ -e "$DIR/$b" ] || continue
        if cmp -s "$f" "$DIR/$b"; then same=$((same + 1)); else flaw "$b differs from the reference"; fi
    done
    strip_metrics "$REF/metrics.jsonl" >"$T/m.ref"
    strip_metrics "$DIR/metrics.jsonl" >"$T/m.run"
    if ! cmp -s "$T/m.ref" "$T/m.run"; then
        diff "$T/m.ref" "$T/m.run" | head -5
        flaw "metrics.jsonl differs from the reference"
    fi
    ! ls -A "$DIR" | grep '\.tmp\.' >"$T/tmps" || flaw "temporary files left: $(tr '\n' ' ' <"$T/tmps")"
    if [ -n "$RUN_OK" ]; then
        RUNS_OK=$((RUNS_OK + 1))
        echo "         run $RUN: identical to the reference ($same checkpoints, $(wc -l <"$T/m.run") metrics lines)"
        rm -rf "$DIR" "$DIR".*.log # keep the disk use small over 100 interruptions
    else
        echo "         run $RUN: DIFFERS from the reference (kept in $DIR)"
        reproduce
    fi
done

# ---------------------------------------------------------------- summary

elapsed=$((($(now_ms) - T_BEGIN) / 1000))
kinds=$(echo "$COUNTS" | sed '/^$/d; s/ rank [0-9]*$/ rank/' | sort | uniq -c |
    awk '{n = $1; $1 = ""; printf "%s%s %d", sep, substr($0, 2), n; sep = ", "}')
echo "chaos: kinds: SIGKILL mpirun $N_KILL_MPIRUN, SIGKILL rank $N_KILL_RANK, SIGUSR1 mpirun $N_USR1," \
    "SIGTERM $((N_TERM_MPIRUN + N_TERM_RANK)) (mpirun $N_TERM_MPIRUN, rank $N_TERM_RANK);" \
    "by target, with a single rank run without mpirun as dpcnn:"
echo "chaos: $DONE interruptions ($kinds) in $RUNS runs, $MISSED more too late to count;" \
    "$MID_WRITE killed a checkpoint write; ranks outlived a killed mpirun by up to" \
    "$(secs "$MAX_LINGER") s and wrote checkpoints without it $ORPHANED times; $elapsed s"
if [ -s "$T/flaws" ]; then
    echo "chaos: FAILED: $((RUNS - RUNS_OK)) of $RUNS runs differ or misbehaved (seed $SEED):"
    sed 's/^/  /' "$T/flaws"
    reproduce
    FAILED=1
    exit 1
fi
echo "chaos: all $RUNS runs bitwise identical to the uninterrupted run (seed $SEED)"
