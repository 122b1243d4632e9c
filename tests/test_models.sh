#!/bin/sh
# Networks as data, end to end with real runs:
#  - --print-model for the built-ins, from the data or --input-shape;
#  - a wrong description is refused before any work, one message, nothing written;
#  - bn and a dropout network: bitwise-identical checkpoints and metrics at
#    1, 2, 3 and 4 ranks and across a resume inside an epoch;
#  - another network is refused by --resume and --init; evaluate takes the
#    network from the checkpoint;
#  - data of another shape: 3-channel 32x32 images with four named classes,
#    made by dpcnn-prepare from IDX files, trained with strides, padding,
#    pooling, dropout and --normalize;
#  - every built-in network learns: test accuracy above a floor.
. "${srcdir:-.}/tests/lib.sh"
command -v mpirun >/dev/null || fail "mpirun not found (apt-get install openmpi-bin)"
RUN="./dpcnn --data $DATA --threads 1"

accuracy() { # the last epoch's test accuracy in DIR/metrics.jsonl
    tail -1 "$1/metrics.jsonl" | sed 's/.*"test_accuracy":\([0-9.e-]*\).*/\1/'
}

# ------------------------------------------------------------ --print-model
./dpcnn --model bn --print-model --data "$DATA" >"$T/bn.txt"
cat "$T/bn.txt"
grep -q "^3 *BatchNorm2d(6) *6x12x12 *12" "$T/bn.txt" || fail "bn: no BatchNorm2d row"
grep -q "total.* 33,250 " "$T/bn.txt" || fail "bn: the parameter total is not 33,250"
grep -q "(10): BatchNorm1d(120, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)" \
    "$T/bn.txt" || fail "bn: no canonical description"
./dpcnn --model lenet5 --print-model --input-shape 1,28,28 | grep -q "total.* 61,706 " ||
    fail "lenet5: the parameter total is not 61,706"
./dpcnn --print-model --data "$DATA" | grep -q "^fc1 *Linear(192, 120) *120 *23,160 *46,080" ||
    fail "tutorial: no fc1 row"

# ------------------------------------------------- wrong descriptions refused
bad() { # bad FILE-CONTENT NEEDLE: refused with status 1 before any work
    printf '%s\n' "$1" >"$T/bad.txt"
    set +e
    $RUN --model "$T/bad.txt" --epochs 1 --limit 100 --test-limit 100 \
        --checkpoint-dir "$T/badrun" >"$T/out" 2>&1
    got=$?
    set -e
    echo "refused ($got): $(grep error "$T/out" | head -1)"
    [ "$got" -eq 1 ] || { cat "$T/out"; fail "status $got, expected 1"; }
    grep -qF -- "$2" "$T/out" || { cat "$T/out"; fail "message lacks '$2'"; }
    [ "$(grep -c error "$T/out")" -eq 1 ] || { cat "$T/out"; fail "not one message"; }
    [ ! -e "$T/badrun" ] || fail "a refused description wrote $T/badrun"
}
bad "Conv2d(1, 6, 5)
ReLU()
Linear(3456, 10)" "bad.txt, line 3: Linear(3456, 10): expects a flat input"
bad "Conv2d(3, 6, 5)" "line 1: Conv2d(3, 6, 5): expects 3 input channels, but the input has 1"
bad "Flatten()
Linear(784, 10, bais=True)" "line 2: Linear: unknown argument 'bais' (did you mean bias?)"
set +e
mpirun -np 2 $RUN --model nosuchnet --checkpoint-dir "$T/badrun" >"$T/out" 2>&1
got=$?
set -e
[ "$got" -eq 1 ] && grep -q "no such built-in network (tutorial, bn, lenet5) or file" "$T/out" ||
    { cat "$T/out"; fail "an unknown --model under mpirun: status $got"; }
[ "$(grep -c "no such built-in" "$T/out")" -eq 1 ] || fail "not one message from 2 ranks"

# ----------------------------------------- the same bits at any rank count
cat >"$T/drop.txt" <<'EOF'
# a dropout network: convolution with padding and stride, average pool, two dropouts
(features): Conv2d(1, 8, kernel_size=3, stride=2, padding=1)
ReLU()
AvgPool2d(2)
Flatten()
Dropout(p=0.3)
(hidden): Linear(392, 64)
ReLU()
Dropout(0.5)
(head): Linear(64, 10)
EOF
for model in bn "$T/drop.txt"; do
    name=$(basename "$model" .txt)
    for np in 1 2 3 4; do
        mpirun -np "$np" $RUN --model "$model" --epochs 2 --limit 1030 --test-limit 530 \
            --metrics-every 3 --checkpoint-dir "$T/$name$np" --quiet ||
            fail "$name at np=$np failed"
    done
    for np in 2 3 4; do
        same_run "$T/${name}1" "$T/$name$np"
    done
    # a stop inside an epoch (a step checkpoint), resumed on 3 ranks
    $RUN --model "$model" --epochs 1 --limit 1030 --test-limit 530 --metrics-every 3 \
        --checkpoint-every 4s --checkpoint-dir "$T/${name}r" --quiet
    mpirun -np 3 $RUN --model "$model" --epochs 2 --limit 1030 --test-limit 530 --metrics-every 3 \
        --resume "$T/${name}r/step-00000008.h5" --checkpoint-dir "$T/${name}r" --quiet
    same_run "$T/${name}1" "$T/${name}r"
    echo "$name: bitwise identical at 1, 2, 3 and 4 ranks and across a resume"
done

# ------------------------------------- another network, refused or taken along
set +e
$RUN --model bn --epochs 3 --limit 1030 --test-limit 530 --resume "$T/drop1" >"$T/out" 2>&1
got=$?
set -e
[ "$got" -eq 1 ] && grep -q "holds another network" "$T/out" ||
    { cat "$T/out"; fail "--resume with another --model: status $got"; }
set +e
$RUN --epochs 1 --limit 100 --test-limit 100 --init "$T/bn1/epoch-0001.h5" \
    --checkpoint-dir "$T/x1" >"$T/out" 2>&1
got=$?
set -e
[ "$got" -eq 1 ] && grep -q "holds another network: it has '  (0): Conv2d" "$T/out" ||
    { cat "$T/out"; fail "--init from another network: status $got"; }
./dpcnn evaluate "$T/bn1/latest.h5" --data "$DATA" --test-limit 530 >"$T/eval.txt"
grep -q "test loss" "$T/eval.txt" || fail "evaluate could not take the network from the file"
$RUN --model bn --epochs 1 --limit 100 --test-limit 100 --init "$T/bn1/epoch-0002.h5" \
    --checkpoint-dir "$T/x2" --quiet || fail "--init from a checkpoint of the same network"
./tests/ckpt_edit "$T/x2/epoch-0000.h5" same-weights "$T/bn1/epoch-0002.h5" ||
    fail "--init did not take the weights and running statistics"

# ------------------------------------------------- data of another shape
mkdir -p "$T/idx"
./tests/make_idx "$T/idx" 3000 400 3 32 32 4
./dpcnn-prepare --class-names red,green,blue,gray -o "$T/rgb.h5" "$T/idx" | tee "$T/prep.txt"
grep -q "3000 train and 400 test images of 3x32x32, 4 classes" "$T/prep.txt" ||
    fail "dpcnn-prepare did not take 3x32x32 images"
cat >"$T/rgb.txt" <<'EOF'
Conv2d(3, 8, kernel_size=3, padding=1)
ReLU()
MaxPool2d(3, stride=2)
Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
ReLU()
AvgPool2d(2)
Flatten()
Dropout(p=0.25)
Linear(256, 32)
ReLU()
Linear(32, 4)
EOF
./dpcnn --data "$T/rgb.h5" --model "$T/rgb.txt" --normalize 0.3,0.2,0.3,0.2,0.3,0.2 \
    --epochs 3 --checkpoint-dir "$T/rgb" --threads 1 >"$T/rgb.log"
cat "$T/rgb.log"
grep -q "3x32x32" "$T/rgb.log" || fail "the start-up table lacks the input shape"
acc=$(accuracy "$T/rgb")
echo "3x32x32, 4 classes: test accuracy $acc after 3 epochs (chance 0.25)"
awk "BEGIN { exit !($acc > 0.9) }" || fail "the 3-channel network did not learn (accuracy $acc)"
./dpcnn evaluate "$T/rgb/latest.h5" --data "$T/rgb.h5" --csv "$T/rgb.csv" >"$T/eval.txt"
for c in red green blue gray; do
    grep -q "^$c " "$T/eval.txt" || fail "evaluate does not name class $c"
done
head -1 "$T/rgb.csv" | grep -qx 'true\\predicted,red,green,blue,gray' || fail "CSV header"
set +e
./dpcnn --data "$T/rgb.h5" --model "$T/rgb.txt" --normalize 0.3,0.2 --epochs 1 \
    --checkpoint-dir "$T/x3" >"$T/out" 2>&1
got=$?
set -e
[ "$got" -eq 1 ] && grep -q "2 values, but the data has 3 channels" "$T/out" ||
    { cat "$T/out"; fail "--normalize with one pair for 3 channels: status $got"; }

# ------------------------------------------------- every built-in learns
for model in tutorial bn lenet5; do
    $RUN --model "$model" --epochs 2 --limit 10000 --test-limit 2000 \
        --checkpoint-dir "$T/learn-$model" --quiet
    acc=$(accuracy "$T/learn-$model")
    echo "$model: test accuracy $acc after 2 epochs of 10,000 samples"
    awk "BEGIN { exit !($acc > 0.75) }" || fail "$model did not learn (accuracy $acc)"
done
echo "test_models: all passed"
