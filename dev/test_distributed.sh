#!/usr/bin/env bash
# Data parallel training under mpirun (llmc/distributed.h), on the host
# backend's MPI collectives, 2 ranks of one OpenMP thread each:
#  - for train_gpt, train_mamba and train_mamba_vit: 2 ranks at -b B against
#    one process at -b 2B on the same data and init, 10 steps: every step's
#    train loss and the validation loss agree to LOSS_TOL, the parameters of
#    the final model files to PARAM_TOL (absolute); they differ only in the
#    order of the sums over the batch's rows (each rank sums its half, then
#    the halves are added), and the measured differences are printed
#  - 2-rank runs bit-identical run to run (step lines, model file)
#  - one rank under mpirun (every collective over one rank) bit-identical to
#    a run without mpirun
#  - the Mamba on images as tokens (-I: bits/dim) and on task files (loss and
#    accuracy over the positions with a target), 2 ranks against 1, as above
#  - ZeRO-1 (-z 1; -Z 1 for the vision trainers) against the plain
#    all-reduce: identical step lines, model file and checkpoint
#  - resume under 2 ranks (plain and ZeRO-1): 10 steps, then 10 more from the
#    checkpoint, print the steps of a 20-step run digit for digit and end
#    with its model file, byte for byte (constant learning rate, so that both
#    runs' schedules agree)
#  - bad setups: an evaluation batch that does not split over the ranks,
#    model files that differ between the ranks (parameters, shape), -b that
#    differs, a model file that only one rank cannot read: one "error:" line
#    (from rank 0 where every rank meets it), every rank ends, mpirun exits
#    non-zero, nothing hangs (each run under a time limit)
# Needs mpirun and the trainers built with MPI (USE_MPI=1, the default where
# mpicxx is found); without them it fails. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup

LOSS_TOL=1e-5   # train and validation losses as printed (6 decimals), absolute
PARAM_TOL=1e-5  # every parameter after 10 steps, absolute

if ! command -v mpirun >/dev/null || ! grep -q "MPI_Init" train_mamba 2>/dev/null; then
  abort "needs mpirun and the trainers built with MPI (OpenMPI's openmpi-bin and libopenmpi-dev, make USE_MPI=1)"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI may run as root
export OMPI_MCA_rmaps_base_oversubscribe=1  # 2 ranks on a machine of any core count
export OMP_NUM_THREADS=1
MPI="timeout 300 mpirun -q -np 2"
random_lm_data 3 20000 4000
$PYTHON dev/data/cifar10.py --synthetic --train-count 200 --test-count 64 --out "$W" --prefix s >/dev/null ||
  abort "cannot write test data"

# the largest absolute difference between the parameters of two model files; exit 1 above the tolerance
param_diff() {
  $PYTHON - "$1" "$2" "$3" <<'PY'
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
a, b, tol = formats.read_model(sys.argv[1])[2], formats.read_model(sys.argv[2])[2], float(sys.argv[3])
d = np.abs(a.astype(np.float64) - b.astype(np.float64))
print(f"max |dp| {d.max():.3e} over {a.size} parameters ({int((d > 0).sum())} differ)")
sys.exit(0 if a.size == b.size and d.max() <= tol else 1)
PY
}

# the losses of two runs' outputs (step lines' train loss, then val/test loss lines): the largest absolute difference
loss_diff() {
  $PYTHON - "$1" "$2" "$3" <<'PY'
import re, sys
def losses(path):
    out = []
    for line in open(path):
        m = re.match(r"step +\d+/\d+: train loss ([-\d.]+)", line) or re.search(r"(?:val|test) loss ([-\d.]+)", line)
        if m: out.append(float(m.group(1)))
    return out
a, b, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
d = max((abs(x - y) for x, y in zip(a, b)), default=float("inf"))
print(f"{len(a)} losses, max |dloss| {d:.1e}")
sys.exit(0 if len(a) == len(b) and len(a) > 10 and d <= tol else 1)
PY
}

for m in gpt mamba mamba_vit; do
  prog="./train_$m" z="-z"
  if [ $m = mamba_vit ]; then
    args="-i $W/s_train.bin -j $W/s_test.bin -L 1 -C 32 -x 10 -s 1 -m 0 -B 32 -D 0 -P 8"
    z="-Z"
  else
    args="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -t 32 -L 2 -C 32 -x 10 -v 5 -m 2 -g 0"
  fi
  $prog $args -b 16 -o "$W/${m}_one" > "$W/${m}_one.txt" 2>&1 || fail "$m: the 1-process run failed"
  $MPI $prog $args -b 8 -o "$W/${m}_two" > "$W/${m}_two.txt" 2>&1 || fail "$m: the 2-rank run failed"
  $MPI $prog $args -b 8 -o "$W/${m}_again" > "$W/${m}_again.txt" 2>&1 || fail "$m: the second 2-rank run failed"
  $MPI $prog $args -b 8 $z 1 -o "$W/${m}_zero" > "$W/${m}_zero.txt" 2>&1 || fail "$m: the ZeRO-1 run failed"
  timeout 300 mpirun -q -np 1 $prog $args -b 16 -o "$W/${m}_rank" > "$W/${m}_rank.txt" 2>&1 || fail "$m: the 1-rank run failed"
  if [ "$(step_lines < "$W/${m}_one.txt" | wc -l)" -eq 10 ] &&
     diff -q <(step_lines < "$W/${m}_one.txt") <(step_lines < "$W/${m}_rank.txt") >/dev/null &&
     cmp -s "$W/${m}_one/model.bin" "$W/${m}_rank/model.bin"; then
    ok "$m: mpirun -np 1 (the data parallel path over one rank) against no mpirun: the same step lines and model file"
  else
    fail "$m: mpirun -np 1 differs from the run without mpirun"
  fi
  if out=$(loss_diff "$W/${m}_one.txt" "$W/${m}_two.txt" $LOSS_TOL); then
    ok "$m: 2 ranks at -b 8 against 1 at -b 16: $out (tolerance $LOSS_TOL)"
  else
    fail "$m: 2 ranks at -b 8 against 1 at -b 16: $out (tolerance $LOSS_TOL)"
  fi
  if out=$(param_diff "$W/${m}_one/model.bin" "$W/${m}_two/model.bin" $PARAM_TOL); then
    ok "$m: parameters after 10 steps, 2 ranks against 1: $out (tolerance $PARAM_TOL)"
  else
    fail "$m: parameters after 10 steps, 2 ranks against 1: $out (tolerance $PARAM_TOL)"
  fi
  n=$(step_lines < "$W/${m}_two.txt" | wc -l)
  if [ "$n" -eq 10 ] && diff -q <(step_lines < "$W/${m}_two.txt") <(step_lines < "$W/${m}_again.txt") >/dev/null &&
     cmp -s "$W/${m}_two/model.bin" "$W/${m}_again/model.bin"; then
    ok "$m: two 2-rank runs: the same $n step lines and model file, bit for bit"
  else
    fail "$m: two 2-rank runs differ ($n step lines)"
  fi
  if [ "$n" -eq 10 ] && diff -q <(step_lines < "$W/${m}_two.txt") <(step_lines < "$W/${m}_zero.txt") >/dev/null &&
     cmp -s "$W/${m}_two/model.bin" "$W/${m}_zero/model.bin" &&
     cmp -s "$W/${m}_two/ckpt_00000010.bin" "$W/${m}_zero/ckpt_00000010.bin"; then
    ok "$m: ZeRO-1 ($z 1) against the all-reduce: the same step lines, model file and checkpoint, bit for bit"
  else
    fail "$m: ZeRO-1 ($z 1) differs from the all-reduce"
  fi
  if ! grep -q "data parallel: 2 ranks x batch 8 = global batch 16" "$W/${m}_two.txt" || grep -q "^error" "$W/${m}_two.txt"; then
    fail "$m: the 2-rank run does not say it runs 2 ranks of batch 8"
  fi
done

# the other data the LM trainers read: images as tokens (-I, bits/dim over a global validation batch) and task
# files (the loss over the positions with a target: its mean and gradient scale count the targets of all ranks)
$PYTHON dev/data/synthetic.py --task copy --out "$W/task" --T 64 --K 4 --V 8 --train 256 --val 40 --test 8 \
  --test-lengths 6-6 --test-tokens 4096 > /dev/null || abort "cannot write task files"
for kind in images tasks; do
  if [ $kind = images ]; then
    args="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -I 100 -L 1 -C 16 -x 10 -v 5 -m 3"
  else
    args="-i $W/task/copy_train.bin -j $W/task/copy_val.bin -L 1 -C 16 -x 10 -v 5 -m 0 -l 5e-3"
  fi
  ./train_mamba $args -b 4 > "$W/${kind}_one.txt" 2>&1 || fail "$kind: the 1-process run failed"
  $MPI ./train_mamba $args -b 2 > "$W/${kind}_two.txt" 2>&1 || fail "$kind: the 2-rank run failed"
  if out=$(loss_diff "$W/${kind}_one.txt" "$W/${kind}_two.txt" $LOSS_TOL) &&
     diff -q <(grep -oE '(bits/dim|acc) [0-9.%]+' "$W/${kind}_one.txt") <(grep -oE '(bits/dim|acc) [0-9.%]+' "$W/${kind}_two.txt") >/dev/null; then
    ok "mamba on $kind: 2 ranks at -b 2 against 1 at -b 4: $out (tolerance $LOSS_TOL), the same $(grep -oE '(bits/dim|acc) ' "$W/${kind}_one.txt" | sort -u | tr -d ' ' | tr '\n' ' ')lines"
  else
    fail "mamba on $kind: 2 ranks at -b 2 against 1 at -b 4: $out, or bits/dim or accuracies differ"
  fi
done

# resume under 2 ranks: 10 steps and 10 more from the checkpoint against 20 steps; the learning rate is constant
# (no warmup, final fraction 1) so that the 10-step run's schedule is the 20-step run's
args="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -t 32 -L 2 -C 32 -v 0 -m 2 -g 0 -b 8 -u 0 -q 1 -n 10"
$MPI ./train_mamba $args -x 20 -o "$W/full" > "$W/full.txt" 2>&1 || fail "resume: the 20-step run failed"
for zero in 0 1; do
  $MPI ./train_mamba $args -x 10 -z $zero -o "$W/cut$zero" > /dev/null 2>&1 || fail "resume: the 10-step run failed"
  $MPI ./train_mamba $args -x 20 -z $zero -o "$W/cut$zero" -y 1 > "$W/resumed$zero.txt" 2>&1 || fail "resume failed"
  n=$(step_lines < "$W/resumed$zero.txt" | wc -l)
  if [ "$n" -eq 10 ] && diff -q <(step_lines < "$W/full.txt" | tail -n 10) <(step_lines < "$W/resumed$zero.txt") >/dev/null &&
     cmp -s "$W/full/model.bin" "$W/cut$zero/model.bin"; then
    ok "resume under 2 ranks (-z $zero): steps 11-20 print as the 20-step run's, and the model file is its, byte for byte"
  else
    fail "resume under 2 ranks (-z $zero): $n resumed step lines, or the model file differs"
  fi
done

# bad setups: one error line, every rank ends, mpirun's exit non-zero; a run that hangs is killed (exit 137,
# which expect counts as a failure)
BAD="timeout -s KILL 120 mpirun -q"
WATCH="init1 init2"  # the model files the runs read stay as they were
for seed in 1 2; do ./train_mamba -i $W/train.bin -j $W/val.bin -k $W/vocab.bin -t 32 -L 2 -C 32 -x 0 -r $seed -m 1 \
  -o "$W/init$seed" > /dev/null 2>&1 || abort "cannot write the model files"; done
./train_mamba -i $W/train.bin -j $W/val.bin -k $W/vocab.bin -t 32 -L 1 -C 32 -x 0 -m 1 -o "$W/init_l1" > /dev/null 2>&1 ||
  abort "cannot write the model files"
lm="./train_mamba -i $W/train.bin -j $W/val.bin -k $W/vocab.bin -t 32 -x 5 -m 1 -g 0"
expect "an evaluation batch the ranks do not split" "the evaluation batch 33 does not split evenly over 2 ranks" \
  $BAD -np 2 ./train_mamba_vit -i $W/s_train.bin -j $W/s_test.bin -L 1 -C 32 -x 2 -B 33 -b 4 -P 8
expect "model files whose parameters differ" "the 2 ranks differ in the model's parameters" \
  $BAD -np 1 $lm -b 8 -e "$W/init1/model.bin" : -np 1 $lm -b 8 -e "$W/init2/model.bin"
expect "model files of different shapes" "the 2 ranks differ in the model's kind or shape" \
  $BAD -np 1 $lm -b 8 -e "$W/init1/model.bin" : -np 1 $lm -b 8 -e "$W/init_l1/model.bin"
expect "a different -b on each rank" "the 2 ranks differ in the run's settings" \
  $BAD -np 1 $lm -b 8 -e "$W/init1/model.bin" : -np 1 $lm -b 4 -e "$W/init1/model.bin"
expect "a model file that only rank 1 cannot read" "error: rank 1: $W/missing.bin: cannot open" \
  $BAD -np 1 $lm -b 8 -e "$W/init1/model.bin" : -np 1 $lm -b 8 -e "$W/missing.bin"
summary
