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

# --help documents every flag the parser knows; --version answers.
./dpcnn --help >"$T/help"
for flag in $(sed -n 's/.*{"\([a-z-]*\)", [a-z_]*argument.*/\1/p' "${srcdir:-.}/src/options.c"); do
    grep -q -- "--$flag" "$T/help" || fail "--help does not document --$flag"
done
./dpcnn --version | grep -q "^dpcnn [0-9]" || fail "--version"
# ... and so does the man page, every flag of --help and of evaluate's --help.
sed 's/\\-/-/g; s/\\f[BIRP]//g' "${srcdir:-.}/doc/dpcnn.1" >"$T/man"
./dpcnn evaluate --help >"$T/evalhelp"
for flag in $(grep -o -- '--[a-z][a-z-]*' "$T/help" "$T/evalhelp" | cut -d: -f2 | sort -u); do
    grep -q -- "$flag" "$T/man" || fail "the man page does not document $flag"
done

# Bad paths: status 1 within seconds, one message.
expect 1 "no such file" ./dpcnn --data "$T/absent.h5"
printf 'not hdf5' >"$T/text.h5"
expect 1 "not an HDF5 file" ./dpcnn --data "$T/text.h5"
expect 1 "cannot create directory" ./dpcnn --data "$DATA" --limit 100 --test-limit 100 \
    --checkpoint-dir /dev/null/ckpt
expect 1 "--init: $T/absent.h5: cannot read: no such file" ./dpcnn --data "$DATA" --limit 100 \
    --test-limit 100 --init "$T/absent.h5" --checkpoint-dir "$T/c0"

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

# dpcnn-prepare: a bad input names the file, and leaves no output behind.
expect 1 "$T/nowhere/train-images-idx3-ubyte: cannot open" ./dpcnn-prepare -o "$T/p.h5" "$T/nowhere"
[ ! -e "$T/p.h5" ] || fail "dpcnn-prepare left an output behind"
echo "test_cli: all passed"
