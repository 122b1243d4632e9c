#!/bin/sh
# The command line, end to end: bad flags and bad paths get one clear message
# and the documented exit status, fast; a tiny real run writes what it should.
. "${srcdir:-.}/tests/lib.sh"

# expect STATUS NEEDLE CMD...: run CMD, check its exit status and that its
# stderr contains NEEDLE; print what it said.
expect() {
    want=$1 needle=$2; shift 2
    set +e
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    set -e
    echo "\$ $* -> $got: $(head -c 300 "$T/err" | tr '\n' ' ')"
    [ "$got" -eq "$want" ] || fail "exit status $got, expected $want"
    grep -qF -- "$needle" "$T/err" || fail "stderr lacks '$needle'"
}

# Bad flag values: status 2, a message naming the flag.
expect 2 "unknown option '--bogus'" ./dpcnn --bogus
expect 2 "--epochs: expected a whole number of epochs >= 0, got '-1'" ./dpcnn --epochs -1
expect 2 "--epochs: expected a whole number of epochs >= 0, got 'ten'" ./dpcnn --epochs ten
expect 2 "--batch-size: expected a whole number >= 1, got '0'" ./dpcnn --batch-size 0
expect 2 "--lr: expected a positive number, got 'nan'" ./dpcnn --lr nan
expect 2 "--lr: expected a positive number, got '-0.1'" ./dpcnn --lr -0.1
expect 2 "--threads: expected a whole number from 1 to 1024, got '0'" ./dpcnn --threads 0
expect 2 "--seed: expected a whole number >= 0, got '-3'" ./dpcnn --seed -3
expect 2 "--micro-batch: expected a whole number from 1 to 65536, got '1.5'" ./dpcnn --micro-batch 1.5
expect 2 "--epochs: needs a value" ./dpcnn --epochs
expect 2 "unexpected argument 'extra'" ./dpcnn extra
# Numbers are plain digits: no blanks, signs or trailing junk slip through
# (strtoll took ' 1' for 1, and the seed ' -1' for 2^64-1).
expect 2 "--epochs: expected a whole number of epochs >= 0, got ' 1'" ./dpcnn --epochs ' 1'
expect 2 "--seed: expected a whole number >= 0, got ' -1'" ./dpcnn --seed ' -1'
expect 2 "--seed: expected a whole number >= 0, got '+5'" ./dpcnn --seed +5
expect 2 "--batch-size: expected a whole number >= 1, got '100 '" ./dpcnn --batch-size '100 '
expect 2 "--limit: expected a whole number >= 1, got '0x10'" ./dpcnn --limit 0x10
expect 2 "--lr: expected a positive number, got ' 0.1'" ./dpcnn --lr ' 0.1'
expect 2 "--lr: expected a positive number, got '0x1p-4'" ./dpcnn --lr 0x1p-4
expect 2 "--hang-timeout: expected seconds >= 0, got ' 5'" ./dpcnn --hang-timeout ' 5'
expect 2 "--checkpoint-every: expected N epochs" ./dpcnn --checkpoint-every ' 5s'
expect 2 "--checkpoint-every: expected N epochs" ./dpcnn --checkpoint-every 5x
for flag in --checkpoint-dir --data --init --resume; do
    expect 2 "$flag: expected a" ./dpcnn "$flag" ''
done
expect 2 "expected a whole number >= 1, got ' 3'" ./dpcnn evaluate x.h5 --test-limit ' 3'
expect 2 "expected a file name, got ''" ./dpcnn evaluate x.h5 --csv ''

# --help documents every flag the parser knows (its table of options); --version answers.
./dpcnn --help >"$T/help"
flags=$(sed -n 's/^ *{"\([a-z-]*\)", [A-Z_]*, [01], PARAM_[A-Z_]*,.*/\1/p' "${srcdir:-.}/src/options.c")
[ "$(echo "$flags" | wc -w)" -ge 25 ] || fail "the option table of src/options.c was not found"
for flag in $flags; do
    grep -q -- "--$flag" "$T/help" || fail "--help does not document --$flag"
done
./dpcnn --version | grep -q "^dpcnn [0-9]" || fail "--version"
# ... and so does the man page, every flag of --help and of evaluate's and sweep's --help.
sed 's/\\-/-/g; s/\\f[BIRP]//g' "${srcdir:-.}/doc/dpcnn.1" >"$T/man"
./dpcnn evaluate --help >"$T/evalhelp"
./dpcnn sweep --help >"$T/sweephelp"
for flag in $(grep -o -- '--[a-z][a-z-]*' "$T/help" "$T/evalhelp" "$T/sweephelp" | cut -d: -f2 | sort -u); do
    grep -q -- "$flag" "$T/man" || fail "the man page does not document $flag"
done

# Bad paths: status 1 within seconds, one message.
expect 1 "no such file" ./dpcnn --data "$T/absent.h5"
printf 'not hdf5' >"$T/text.h5"
expect 1 "not an HDF5 file" ./dpcnn --data "$T/text.h5"
expect 1 "cannot create directory" ./dpcnn --data "$DATA" --limit 100 --test-limit 100 \
    --checkpoint-dir /dev/null/ckpt
expect 1 "--init: $T/absent.h5: cannot read the weights file: no such file" ./dpcnn --data "$DATA" --limit 100 \
    --test-limit 100 --init "$T/absent.h5" --checkpoint-dir "$T/c0"

# A FIFO (or any file that is not a regular file) in place of an input is
# refused at once: opening it would block until the watchdog fired.
mkfifo "$T/fifo"
expect 1 "$T/fifo: the data file is not a regular file (a FIFO)" timeout 20 ./dpcnn --data "$T/fifo"
expect 1 "$T/fifo: the weights file is not a regular file (a FIFO)" timeout 20 ./dpcnn --data "$DATA" \
    --limit 100 --test-limit 100 --init "$T/fifo" --checkpoint-dir "$T/cf"
expect 1 "$T/fifo: the checkpoint is not a regular file (a FIFO)" timeout 20 ./dpcnn --data "$DATA" \
    --limit 100 --test-limit 100 --resume "$T/fifo" --checkpoint-dir "$T/cf"
expect 1 "$T/fifo: the weights file is not a regular file (a FIFO)" timeout 20 ./dpcnn evaluate \
    "$T/fifo" --data "$DATA"
expect 1 "$T/fifo: the IDX file is not a regular file (a FIFO)" timeout 20 ./dpcnn-prepare \
    -o "$T/p.h5" --train-images "$T/fifo" --train-labels "$T/fifo" --test-images "$T/fifo" \
    --test-labels "$T/fifo"

# Outputs written by rename never replace what is not a regular file.
ln -s "$T/elsewhere" "$T/link.h5"
expect 1 "$T/link.h5 exists and is not a regular file (a symbolic link)" ./dpcnn-prepare \
    -o "$T/link.h5"
[ ! -e "$T/elsewhere" ] && [ -L "$T/link.h5" ] || fail "dpcnn-prepare replaced a symbolic link"
expect 1 "/dev/null exists and is not a regular file (a device or socket)" ./dpcnn-prepare -o /dev/null
[ -c /dev/null ] || fail "/dev/null is no longer a device"

# A tiny real run: weights per epoch, metrics with the documented keys.
./dpcnn --data "$DATA" --epochs 2 --limit 600 --test-limit 300 --checkpoint-dir "$T/run" >"$T/log"
cat "$T/log"
for f in epoch-0000.h5 epoch-0001.h5 epoch-0002.h5 metrics.jsonl; do
    [ -s "$T/run/$f" ] || fail "missing $f"
done
[ "$(wc -l <"$T/run/metrics.jsonl")" -eq 2 ] || fail "metrics.jsonl should have 2 lines"
for key in epoch train_loss train_correct test_loss test_correct test_accuracy seconds \
    samples_per_second ranks; do
    grep -q "\"$key\":" "$T/run/metrics.jsonl" || fail "metrics.jsonl lacks $key"
done
ls -A "$T/run" | grep -q tmp && fail "a temporary file was left behind"

# --epochs 0 writes the initial weights only; --init continues from a file.
./dpcnn --data "$DATA" --epochs 0 --limit 100 --test-limit 100 --checkpoint-dir "$T/zero" >/dev/null
[ "$(ls "$T/zero" | grep -c '^epoch-')" -eq 1 ] || fail "--epochs 0 must write epoch-0000.h5 only"
./tests/ckpt_edit "$T/zero/epoch-0000.h5" same-weights "$T/run/epoch-0000.h5" ||
    fail "same seed, different initial weights"
./tests/ckpt_edit "$T/zero/epoch-0000.h5" same-weights "$T/run/epoch-0001.h5" &&
    fail "training did not change the weights"
./dpcnn --data "$DATA" --epochs 1 --limit 600 --test-limit 300 --init "$T/run/epoch-0001.h5" \
    --checkpoint-dir "$T/init" >/dev/null
./tests/ckpt_edit "$T/init/epoch-0000.h5" same-weights "$T/run/epoch-0001.h5" ||
    fail "--init did not start from the file"

# evaluate --csv: no symbolic link or device is replaced either.
expect 1 "$T/link.h5 exists and is not a regular file" ./dpcnn evaluate "$T/run/epoch-0002.h5" \
    --data "$DATA" --test-limit 100 --csv "$T/link.h5"
[ -L "$T/link.h5" ] || fail "evaluate --csv replaced a symbolic link"

# Two runs into one checkpoint directory: the second is refused, naming the
# first, while the first holds it; the first is untouched and finishes.
./dpcnn --data "$DATA" --epochs 200 --limit 2000 --test-limit 100 --threads 1 \
    --checkpoint-dir "$T/busy" --quiet &
first=$!
i=0
while [ ! -e "$T/busy/epoch-0001.h5" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
expect 1 "$T/busy is in use by another dpcnn run (pid $first on $(hostname)" ./dpcnn --data "$DATA" \
    --epochs 1 --limit 100 --test-limit 100 --checkpoint-dir "$T/busy"
kill -USR1 "$first"
set +e
wait "$first"
status=$?
set -e
[ "$status" -eq 75 ] || fail "the first run, stopped by SIGUSR1, exited $status"
grep -q '"epoch":1,' "$T/busy/metrics.jsonl" || fail "the refused run changed the first run's metrics"
./dpcnn --data "$DATA" --epochs 1 --limit 100 --test-limit 100 --checkpoint-dir "$T/busy" \
    --quiet || fail "the directory stayed locked after its run ended"

# A full disk: one message and status 1 (it used to crash in HDF5's shutdown
# with a file left open), no temporary file, and latest.h5 still names a
# complete checkpoint. Small tmpfs mounts in a private mount namespace.
if [ "$(id -u)" -eq 0 ]; then ns="unshare --mount"; else ns="unshare --user --map-root-user --mount"; fi
mkdir -p "$T/full"
if $ns true 2>/dev/null; then
    for size in 256k 1200k; do
        set +e
        $ns sh -c 'mount -t tmpfs -o size=$1 tmpfs "$2/full" || exit 99
            ./dpcnn --data "$3" --epochs 5 --limit 500 --test-limit 100 --checkpoint-dir "$2/full/c" \
                >"$2/full.out" 2>&1
            echo $? >"$2/full.status"
            ls -A "$2/full/c" >"$2/full.ls"
            if [ -L "$2/full/c/latest.h5" ]; then
                ./dpcnn evaluate "$2/full/c/latest.h5" --data "$3" --test-limit 100 >/dev/null 2>&1
                echo $? >"$2/full.eval"
            fi' sh "$size" "$T" "$DATA"
        ns_status=$?
        set -e
        [ "$ns_status" -ne 99 ] || fail "cannot mount a tmpfs in a private mount namespace"
        got=$(cat "$T/full.status")
        echo "checkpoints on a $size tmpfs: status $got: $(grep error "$T/full.out" | head -1)"
        [ "$got" -eq 1 ] || { cat "$T/full.out"; fail "full disk: status $got, expected 1"; }
        grep -q "No space left on device" "$T/full.out" || fail "full disk: the message lacks the cause"
        grep -q "\.tmp\." "$T/full.ls" && fail "full disk: a temporary file was left behind"
        if [ "$size" = 1200k ]; then
            [ -s "$T/full.eval" ] || fail "full disk: no latest.h5 although two checkpoints fit"
            [ "$(cat "$T/full.eval")" -eq 0 ] || fail "full disk: latest.h5 does not load"
        fi
        rm -f "$T/full.eval"
    done
else
    echo "full-disk check skipped: no private mount namespace here (not root, no user namespaces)"
fi

# A stop signal at the very start (0.05 s in, while the data is still being
# read and verified: start-up takes about 0.07 s of a run of about a second)
# is a stop request like any other: a checkpoint and status 75, not death by 143.
early_stop() {
    ./dpcnn --data "$DATA" --epochs 1 --test-limit 100 --checkpoint-dir "$T/early" \
        --quiet >"$T/early.log" 2>&1 &
    pid=$!
    sleep 0.05
    kill -TERM "$pid" || fail "the run ended before the signal came"
    set +e
    wait "$pid"
    status=$?
    set -e
}
early_stop
echo "SIGTERM 0.05 s after start: status $status"
[ "$status" -eq 75 ] || { cat "$T/early.log"; fail "SIGTERM at start-up: status $status, expected 75"; }
./dpcnn evaluate "$T/early/latest.h5" --data "$DATA" --test-limit 100 >/dev/null ||
    fail "the checkpoint written on an early stop does not load"

# On a terminal (a pseudo-terminal here) a single process draws the live
# progress line ("\r\033[K"), not the plain lines of a batch log.
script -qec "./dpcnn --data $DATA --epochs 1 --limit 2000 --test-limit 100 --threads 1 \
    --checkpoint-dir $T/tty" /dev/null >"$T/tty.out" </dev/null
grep -q "$(printf '\r\033\\[K')epoch 1/1  step" "$T/tty.out" ||
    { cat -v "$T/tty.out"; fail "no live progress line on a terminal"; }

# A process no launcher started is a world of one without MPI: Open MPI's
# singleton start would fork a helper daemon (orted) as its child.
./dpcnn --data "$DATA" --epochs 1000 --limit 3000 --test-limit 100 --threads 1 --quiet \
    --checkpoint-dir "$T/alone" >"$T/alone.log" 2>&1 &
alone=$!
sleep 1
kids=$(pgrep -P "$alone" | tr '\n' ' ')
kill -TERM "$alone"
wait "$alone" || true
[ -z "$kids" ] || fail "a single process started child processes: $kids ($(ps -o comm= -p $kids))"
grep -q "stopped by SIGTERM" "$T/alone.log" || { cat "$T/alone.log"; fail "the lone run did not stop as asked"; }

# dpcnn-prepare: a bad input names the file, and leaves no output behind.
expect 1 "$T/nowhere/train-images-idx3-ubyte: cannot read the IDX file: no such file" ./dpcnn-prepare -o "$T/p.h5" "$T/nowhere"
[ ! -e "$T/p.h5" ] || fail "dpcnn-prepare left an output behind"
echo "test_cli: all passed"
