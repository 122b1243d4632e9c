#!/bin/sh
# The plotting script turns metrics.jsonl, a confusion-matrix CSV and an
# experiment's table (dpcnn sweep) into PNGs.
. "${srcdir:-.}/tests/lib.sh"
command -v gnuplot >/dev/null || fail "gnuplot not found (apt-get install gnuplot-nox)"
./dpcnn --data "$DATA" --epochs 2 --limit 600 --test-limit 300 --checkpoint-dir "$T/run" --quiet
./dpcnn evaluate "$T/run/latest.h5" --data "$DATA" --test-limit 300 --csv "$T/confusion.csv" >/dev/null
PLOT="${srcdir:-.}/launch/dpcnn-plot"
sh "$PLOT" metrics "$T/run/metrics.jsonl" "$T/metrics.png"
sh "$PLOT" confusion "$T/confusion.csv" "$T/confusion.png"
# An experiment: its runs' curves in one picture, and the bars of their accuracies.
./dpcnn sweep "$T/exp" --lr 0.01 --lr 0.003 --epochs 2 --limit 600 --test-limit 300 --threads 1 \
    --quiet >/dev/null
sh "$PLOT" experiment "$T/exp"
mv "$T/exp/experiment-curves.png" "$T/curves.png"
mv "$T/exp/experiment-accuracy.png" "$T/accuracy.png"
for f in metrics confusion curves accuracy; do
    # a whole PNG: its 8-byte signature, its header chunk first and its end chunk
    # last (a truncated file lacks it); and a real picture is not tiny
    [ "$(head -c 16 "$T/$f.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a0000000d49484452 ] ||
        fail "$f.png does not start as a PNG"
    [ "$(tail -c 12 "$T/$f.png" | od -An -tx1 | tr -d ' \n')" = 0000000049454e44ae426082 ] ||
        fail "$f.png does not end as a PNG"
    [ "$(wc -c <"$T/$f.png")" -gt 10000 ] || fail "$f.png is suspiciously small"
done
set +e
sh "$PLOT" metrics "$T/absent.jsonl" 2>"$T/err"
status=$?
set -e
[ "$status" -ne 0 ] && grep -q "cannot read" "$T/err" || fail "a missing input must fail clearly"
echo "test_plot: all passed"
