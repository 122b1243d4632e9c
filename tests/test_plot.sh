#!/bin/sh
# The plotting script turns metrics.jsonl and a confusion-matrix CSV into PNGs.
. "${srcdir:-.}/tests/lib.sh"
command -v gnuplot >/dev/null || fail "gnuplot not found (apt-get install gnuplot-nox)"
./dpcnn --data "$DATA" --epochs 2 --limit 600 --test-limit 300 --checkpoint-dir "$T/run" --quiet
./dpcnn evaluate "$T/run/latest.h5" --data "$DATA" --test-limit 300 --csv "$T/confusion.csv" >/dev/null
PLOT="${srcdir:-.}/launch/dpcnn-plot"
sh "$PLOT" metrics "$T/run/metrics.jsonl" "$T/metrics.png"
sh "$PLOT" confusion "$T/confusion.csv" "$T/confusion.png"
for f in metrics confusion; do
    # a PNG starts with \211PNG, and a real picture is not tiny
    [ "$(head -c 4 "$T/$f.png" | tail -c 3)" = PNG ] || fail "$f.png is not a PNG"
    [ "$(wc -c <"$T/$f.png")" -gt 10000 ] || fail "$f.png is suspiciously small"
done
set +e
sh "$PLOT" metrics "$T/absent.jsonl" 2>"$T/err"
status=$?
set -e
[ "$status" -ne 0 ] && grep -q "cannot read" "$T/err" || fail "a missing input must fail clearly"
echo "test_plot: all passed"
