#!/bin/sh
# dpcnn sweep: an experiment's runs side by side in groups of ranks.
#  - a 2x2 grid (lr x batch size) under mpirun -np 4 in groups of 2: every run's
#    checkpoints and metrics are bitwise those of the run trained alone on one
#    rank, and the table has every run and epoch, with the runs' own figures;
#  - the same grid on 2 ranks (2 groups of 1), stopped by SIGUSR1 to mpirun while
#    it runs, then resumed: finished runs are not trained again, the interrupted
#    and the unstarted ones are, and every file ends identical;
#  - runs that fail (a refused value, a non-finite loss, a wrong network file)
#    are recorded with their reasons in the table, and the others are trained;
#  - one run alone (--index, as a Slurm array task trains it), --list, --table
#    rebuilt from the directories, and refused command lines.
. "${srcdir:-.}/tests/lib.sh"
GRID="--lr 0.01 --lr 0.005 --batch-size 50 --batch-size 100"
RUN="--data $DATA --threads 1 --limit 6000 --test-limit 300 --epochs 4"
NAMES="lr=0.01,batch_size=50 lr=0.01,batch_size=100 lr=0.005,batch_size=50 lr=0.005,batch_size=100"

# field KEY: the values of KEY in JSON lines on stdin, one per line
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"; }

# The references: each run trained alone on one rank.
for lr in 0.01 0.005; do
    for b in 50 100; do
        ./dpcnn $RUN --lr $lr --batch-size $b --checkpoint-dir "$T/ref/lr=$lr,batch_size=$b" --quiet
    done
done

# The grid on 4 ranks in 2 groups of 2.
mpirun -np 4 ./dpcnn sweep "$T/grid" $GRID $RUN --group-size 2 >"$T/grid.log" 2>&1 ||
    { cat "$T/grid.log"; fail "the grid failed"; }
grep -q "4 runs, 4 to train, in 2 groups of 2 ranks" "$T/grid.log" || fail "no groups of 2"
for name in $NAMES; do
    grep -q '"ranks":2' "$T/grid/$name/metrics.jsonl" || fail "$name was not trained on 2 ranks"
    same_run "$T/ref/$name" "$T/grid/$name"
    [ "$(grep -c "^\"$name\",.*,done,[1-4]," "$T/grid/experiment.csv")" -eq 4 ] ||
        fail "experiment.csv lacks epochs of $name"
    grep "\"run\":\"$name\"" "$T/grid/experiment.jsonl" | field test_loss >"$T/ta"
    grep '"type":"epoch"' "$T/ref/$name/metrics.jsonl" | field test_loss >"$T/tb"
    cmp -s "$T/ta" "$T/tb" || fail "the table's test losses of $name are not the run's"
done
[ "$(wc -l <"$T/grid/experiment.csv")" -eq 17 ] || fail "experiment.csv: not a header and 16 rows"
[ "$(wc -l <"$T/grid/experiment.jsonl")" -eq 16 ] || fail "experiment.jsonl: not 16 rows"
head -1 "$T/grid/experiment.csv" | grep -q '^run,epochs,batch_size,.*,lr,.*,status,epoch,train_loss,' ||
    fail "experiment.csv's header"
grep -q "sorted by the last epoch's test accuracy" "$T/grid.log" || fail "no summary"
grep -q '"options":"--data' "$T/grid/lr=0.01,batch_size=50/run.json" || fail "no run.json"
echo "2x2 grid on 4 ranks in groups of 2: every run identical to it alone on 1 rank; table complete"

# --table rebuilds the same table from the directories; --list numbers the runs.
mv "$T/grid/experiment.csv" "$T/grid.csv"
./dpcnn sweep "$T/grid" --table >"$T/table.log"
cmp "$T/grid.csv" "$T/grid/experiment.csv" || fail "--table made another table"
./dpcnn sweep "$T/grid" --list >"$T/list"
[ "$(sed -n 3p "$T/list")" = "2 lr=0.005,batch_size=50 done" ] || { cat "$T/list"; fail "--list"; }

# The grid on 2 ranks, stopped by SIGUSR1 as its third run starts, then resumed.
mpirun -np 2 ./dpcnn sweep "$T/stop" $GRID $RUN --quiet >"$T/stop.log" 2>&1 &
job=$!
third="$T/stop/lr=0.005,batch_size=50"
i=0
while [ ! -e "$third/epoch-0000.h5" ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i + 1)); done
kill -USR1 "$job"
set +e
wait "$job"
status=$?
set -e
[ "$status" -eq 75 ] || { cat "$T/stop.log"; fail "a stopped experiment: status $status, not 75"; }
grep -q "stopped by SIGUSR1" "$T/stop.log" || fail "no stop message"
first="$T/stop/lr=0.01,batch_size=50"
[ "$(readlink "$first/latest.h5")" = epoch-0004.h5 ] || fail "the first run should be done"
[ "$(readlink "$third/latest.h5")" != epoch-0004.h5 ] || fail "the signal came too late to test"
grep -q ',incomplete,' "$T/stop/experiment.csv" || fail "no incomplete run in the table"
before=$(stat -c '%y %n' "$first"/*.h5 "$first/metrics.jsonl")
mpirun -np 2 ./dpcnn sweep "$T/stop" $GRID $RUN --resume >"$T/resume.log" 2>&1 ||
    { cat "$T/resume.log"; fail "the resumed experiment failed"; }
grep -q "skipping lr=0.01,batch_size=50: done (4 of 4 epochs)" "$T/resume.log" ||
    fail "the finished run was not skipped"
grep -q "resuming $third/latest.h5" "$T/resume.log" || fail "the interrupted run was not resumed"
[ "$(stat -c '%y %n' "$first"/*.h5 "$first/metrics.jsonl")" = "$before" ] ||
    fail "the finished run was trained again"
for name in $NAMES; do same_run "$T/ref/$name" "$T/stop/$name"; done
strip_metrics "$T/grid/experiment.jsonl" >"$T/ja"
strip_metrics "$T/stop/experiment.jsonl" >"$T/jb"
cmp "$T/ja" "$T/jb" || fail "the resumed experiment's table differs from the uninterrupted one's"
echo "stopped by SIGUSR1, resumed: finished runs skipped, all identical, the same table"

# Failures: each recorded with its reason, the others trained.
printf 'Conv2d(1, 6, 5)\nLinear(100, 10)\n' >"$T/bad.txt"
cat >"$T/runs.txt" <<EOF
# the good run, and three that fail
--lr 0.01
--lr -1
--lr 1e30     # a non-finite loss at once
--model '$T/bad.txt'
EOF
set +e
mpirun -np 2 ./dpcnn sweep "$T/fail" --runs "$T/runs.txt" $RUN --batch-size 100 --quiet >"$T/fail.log" 2>&1
status=$?
set -e
[ "$status" -eq 1 ] || { cat "$T/fail.log"; fail "an experiment with failed runs: status $status, not 1"; }
CSV=$T/fail/experiment.csv
grep -q "^\"lr=-1,model=tutorial\",.*,failed,.*--lr: expected a positive number, got '-1'" "$CSV" ||
    fail "the refused value's reason is not in the table"
grep -q '^"lr=1e+30,model=tutorial",.*,failed,.*non-finite loss at step' "$CSV" ||
    fail "the non-finite loss is not in the table"
grep -q '^"lr=0.01,model=bad.txt",.*,failed,.*line 2: Linear(100, 10): expects a flat input' "$CSV" ||
    fail "the wrong network's reason is not in the table"
[ "$(grep -c '^"lr=0.01,model=tutorial",.*,done,' "$CSV")" -eq 4 ] || fail "the good run is not done"
same_run "$T/ref/lr=0.01,batch_size=100" "$T/fail/lr=0.01,model=tutorial"
echo "failed runs recorded with their reasons; the good one trained, identical"

# One run alone, as an array task trains it.
./dpcnn sweep "$T/one" $GRID $RUN --index 3 --quiet >"$T/one.log"
[ "$(ls "$T/one" | grep -c =)" -eq 1 ] || fail "--index trained more than one run"
same_run "$T/ref/lr=0.005,batch_size=100" "$T/one/lr=0.005,batch_size=100"
grep -q ',pending,' "$T/one/experiment.csv" || fail "the other runs should be pending"

# Refused command lines: status 2 and a reason, before any work.
expect_status 2 "expected the experiment's directory" ./dpcnn sweep --lr 0.01
expect_status 2 "--checkpoint-dir: not in a sweep" ./dpcnn sweep "$T/x" --checkpoint-dir "$T/y"
expect_status 2 "unknown option '--lrr'" ./dpcnn sweep "$T/x" --lrr 0.1
expect_status 2 "are the same run" ./dpcnn sweep "$T/x" --lr 0.01 --lr 0.010
expect_status 2 "holds a run already: add --resume" ./dpcnn sweep "$T/grid" $GRID $RUN
expect_status 2 "--group-size 3 does not divide the 4 ranks" mpirun -np 4 ./dpcnn sweep "$T/x" $GRID $RUN --group-size 3
expect_status 2 "--index 4: the experiment has 4 runs" ./dpcnn sweep "$T/x" $GRID --index 4
expect_status 2 "also on the command line" ./dpcnn sweep "$T/x" --runs "$T/runs.txt" --lr 0.1
echo "test_sweep: all passed"
