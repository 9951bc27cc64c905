#!/usr/bin/env bash
# The synthetic tasks: the data (dev/data/synthetic.py: its self-tests, the
# same flags writing the same bytes, bad flags refused) and the LM trainers
# on task files (train_mamba, train_gpt, train_gpt_plus, train_hybrid): a few
# steps on tiny sets of both tasks, the validation line (val loss, accuracy
# in [0, 100], the share of whole sequences right for selective copying) and
# its log.jsonl line, a re-run bit-identical, a resume from a checkpoint
# continuing digit for digit, evaluation of a saved model at another length
# (the Mamba and the Transformer++ at a longer T; the GPT past its position
# table refused), and bad task files and flags refused with one error line.
# Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
out=$($PYTHON dev/data/synthetic.py --selftest 2>&1); rc=$?
echo "$out"
add_summary "synthetic.py --selftest" $rc "$out"
for task in copy induction; do
  for d in a b; do
    $PYTHON dev/data/synthetic.py --task $task --out "$W/$d" --train 64 --val 8 --test 8 --test-lengths 6-8 \
      --test-tokens 4096 > /dev/null || fail "$task: writing the sets failed"
  done
  if [ -n "$(ls "$W/a")" ] && diff -r "$W/a" "$W/b" > /dev/null; then
    ok "$task: the same flags write the same bytes ($(ls "$W/a" | wc -l) files)"
  else
    fail "$task: two writes differ"
  fi
  rm -rf "$W/a" "$W/b"
done
WATCH="c"  # the output directory must not appear
expect "selective copying with T below 2K" "T >= 2K" $PYTHON dev/data/synthetic.py --task copy --T 16 --K 16 --out "$W/c"

# ----------------------------------------------------------------------------
# the trainers on task files: selective copying (T 32, K 4, V 10) and induction
# heads (T 32, V 8; test sets at 32, 64 and 128)
T="$W/t"
$PYTHON dev/data/synthetic.py --task copy --out "$T" --T 32 --K 4 --V 10 --train 256 --val 12 --test 8 > /dev/null &&
$PYTHON dev/data/synthetic.py --task induction --out "$T" --T 32 --V 8 --train 256 --val 12 --test 8 \
  --test-lengths 5-7 --test-tokens 512 > /dev/null || abort "cannot write the task sets"

# the validation lines of a run's output: "val loss X | acc Y%" (and "| seq acc Z%" for copying), X finite,
# Y and Z numbers in [0, 100]; prints how many there are, nothing when one is malformed
val_lines_ok() {
  local seq=$1 file=$2
  $PYTHON - "$seq" "$file" <<'PY'
import math, re, sys
seq, lines = sys.argv[1] == "1", [l for l in open(sys.argv[2]) if l.startswith("val ")]
pattern = r"val loss (\S+) \| acc (\S+)%" + (r" \| seq acc (\S+)%" if seq else "") + "$"
ok = bool(lines)
for line in lines:
    m = re.match(pattern, line.strip())
    ok = ok and m is not None and math.isfinite(float(m.group(1))) and all(0 <= float(v) <= 100 for v in m.groups()[1:])
if ok:
    print(len(lines))
PY
}

shape_of() { case $1 in hybrid) echo "-A MA -C 16 -H 2";; mamba) echo "-L 1 -C 16";; *) echo "-L 1 -C 16 -H 2";; esac; }
for m in mamba gpt gpt_plus hybrid; do
  prog="./train_$m"
  args="-i $T/copy_train.bin -j $T/copy_val.bin $(shape_of $m) -b 4 -x 6 -v 3 -m 2 -n 3 -l 1e-2"
  $prog $args -o "$W/full_$m" > "$W/full_$m.txt" 2>&1 || fail "$m: training on selective copying failed: $(tail -n 1 "$W/full_$m.txt")"
  n=$(val_lines_ok 1 "$W/full_$m.txt")
  if [ "$n" = 3 ] && grep -q "^batch 4 x 32 .*selective copying: train 256 sequences, val 12" "$W/full_$m.txt"; then
    ok "$m: selective copying, 6 steps: 3 validation lines '$(grep '^val ' "$W/full_$m.txt" | tail -n 1)'"
  else
    fail "$m: validation lines malformed or missing:"; grep -E '^(val|batch)' "$W/full_$m.txt" | head -n 4
  fi
  if log_lines "$W/full_$m" | grep '"val_acc": [0-9.]*, "val_seq_acc": [0-9.]*' > /dev/null; then
    ok "$m: log.jsonl holds val_loss, val_acc and val_seq_acc"
  else
    fail "$m: log.jsonl lacks the accuracies"
  fi
  $prog $args -o "$W/again_$m" > "$W/again_$m.txt" 2>&1
  if diff -q <(step_lines < "$W/full_$m.txt"; grep '^val ' "$W/full_$m.txt") \
             <(step_lines < "$W/again_$m.txt"; grep '^val ' "$W/again_$m.txt") > /dev/null &&
     cmp -s "$W/full_$m/model.bin" "$W/again_$m/model.bin"; then
    ok "$m: a re-run prints the same losses and accuracies and writes the same model.bin"
  else
    fail "$m: a re-run differs"
  fi
  # resume: the run's directory as it was at its checkpoint of step 3, resumed to step 6
  mkdir "$W/cut_$m" && cp "$W/full_$m/ckpt_00000003.bin" "$W/full_$m/log.jsonl" "$W/cut_$m/"
  $prog $args -o "$W/cut_$m" -y 1 > "$W/resumed_$m.txt" 2>&1
  k=$(step_lines < "$W/resumed_$m.txt" | wc -l)
  if [ "$k" -eq 3 ] && diff -q <(step_lines < "$W/full_$m.txt" | tail -n 3; grep '^val ' "$W/full_$m.txt" | tail -n 2) \
                                 <(step_lines < "$W/resumed_$m.txt"; grep '^val ' "$W/resumed_$m.txt") > /dev/null &&
     cmp -s "$W/full_$m/model.bin" "$W/cut_$m/model.bin"; then
    ok "$m: resumed at step 3: steps 4-6 and their validations print as the uninterrupted run's; the same model.bin"
  else
    fail "$m: the resumed run differs ($k step lines):"
    diff <(step_lines < "$W/full_$m.txt" | tail -n 3) <(step_lines < "$W/resumed_$m.txt") | head -n 3
  fi
done

# induction heads, then evaluation of the saved model at other lengths (-x 0)
for m in mamba gpt gpt_plus; do
  ./train_$m -i $T/induction_train.bin -j $T/induction_val.bin $(shape_of $m) -b 4 -x 4 -v 0 -o "$W/ind_$m" \
    > "$W/ind_$m.txt" 2>&1 || fail "$m: training on induction heads failed: $(tail -n 1 "$W/ind_$m.txt")"
  if [ "$(val_lines_ok 0 "$W/ind_$m.txt")" = 1 ]; then
    ok "$m: induction heads: '$(grep '^val ' "$W/ind_$m.txt")'"
  else
    fail "$m: induction heads: validation line malformed: $(grep '^val ' "$W/ind_$m.txt")"
  fi
done
for m in mamba gpt_plus; do
  for len in 32 128; do
    ./train_$m -e "$W/ind_$m/model.bin" -j $T/induction_test_$len.bin -x 0 > "$W/eval_$m.txt" 2>&1
    if [ $? -eq 0 ] && [ "$(val_lines_ok 0 "$W/eval_$m.txt")" = 1 ] && grep -q "^batch [0-9]* x $len " "$W/eval_$m.txt"; then
      ok "$m: trained at 32, evaluated at $len: $(grep '^batch' "$W/eval_$m.txt" | cut -d'|' -f1)| $(grep '^val ' "$W/eval_$m.txt")"
    else
      fail "$m: evaluation at $len failed: $(tail -n 2 "$W/eval_$m.txt")"
    fi
  done
done
# the Mamba's chunked evaluation (-d: sequences longer than d positions run d at a time, each layer's state
# carried) against one pass over the same sequences (induction heads at 128, selective copying at 32): the
# same accuracies and the loss within 1e-5 (the printed loss has 6 decimals; the forwards differ only in fp32
# rounding, ~1e-7 relative)
score_of() { grep '^final val' "$1" | sed 's/ | [0-9.]* s | peak memory.*//'; }
for run in ind_mamba:induction_test_128:128:32 ind_mamba:induction_test_128:128:50 ind_mamba:induction_test_128:128:3 \
           full_mamba:copy_val:32:8 full_mamba:copy_val:32:5; do
  IFS=: read -r model set len d <<< "$run"
  eval_args="-e $W/$model/model.bin -j $T/$set.bin -x 0 -b 4 -m 0"
  ./train_mamba $eval_args > "$W/one_pass.txt" 2>&1
  ./train_mamba $eval_args -d $d > "$W/chunked.txt" 2>&1
  one=$(score_of "$W/one_pass.txt"); chunked=$(score_of "$W/chunked.txt")
  close=$(awk -v a="${one#final val loss }" -v b="${chunked#final val loss }" \
    'BEGIN { split(a, x, " "); split(b, y, " "); d = x[1] - y[1]; if (d < 0) d = -d;
             print (x[1] != "" && d <= 1e-5 && substr(a, index(a, "|")) == substr(b, index(b, "|"))) ? d : "no" }')
  if grep -q "^batch 4 x $len in chunks of $d " "$W/chunked.txt" && ! grep -q "in chunks" "$W/one_pass.txt" &&
     [ -n "$one" ] && [ "$close" != no ]; then
    ok "mamba: $set in chunks of $d as in one pass: '$chunked' (loss differs by $close)"
  else
    fail "mamba: $set in chunks of $d: '$chunked', one pass: '$one'"
  fi
done
expect "gpt: -d (a Mamba flag)" "-d" ./train_gpt -e "$W/ind_gpt/model.bin" -j $T/induction_test_32.bin -x 0 -d 16
expect_ok "gpt: evaluated at its training length" "val loss" ./train_gpt -e "$W/ind_gpt/model.bin" -j $T/induction_test_32.bin -x 0
WATCH="ind_gpt"
expect "gpt: evaluation past its position table" "position table" \
  ./train_gpt -e "$W/ind_gpt/model.bin" -j $T/induction_test_64.bin -x 0
./train_hybrid -i $T/induction_train.bin -j $T/induction_val.bin -A MA -C 16 -H 2 -b 4 -x 1 -v 0 -o "$W/ind_hybrid" > /dev/null 2>&1
expect "hybrid with attention: evaluation past its position table" "position table" \
  ./train_hybrid -e "$W/ind_hybrid/model.bin" -j $T/induction_test_64.bin -x 0

# ----------------------------------------------------------------------------
# bad task files and flags: one error line naming the file (or flag), nothing written
$PYTHON - "$T" <<'PY' || abort "cannot write the bad task files"
import sys
import numpy as np
t = sys.argv[1]
good = open(f"{t}/copy_val.bin", "rb").read()  # 12 sequences of 32, V 10, K 4
header = np.frombuffer(good[:1024], dtype="<i4").copy()
body = np.frombuffer(good[1024:], dtype="<u2").copy().reshape(12, 2, 32)
def write(name, h=header, b=body, extra=b""):
    open(f"{t}/{name}.bin", "wb").write(h.astype("<i4").tobytes() + b.astype("<u2").tobytes() + extra)
def slot(i, v):
    h = header.copy(); h[i] = v; return h
def cell(s, row, pos, v):
    b = body.copy(); b[s, row, pos] = v; return b
open(f"{t}/truncated.bin", "wb").write(good[:-6])
open(f"{t}/short.bin", "wb").write(good[:100])
write("longer", extra=b"\0\0\0\0")
write("version", slot(1, 2))
write("zero_sequences", slot(2, 0))
write("negative_length", slot(3, -32))
write("zero_length", slot(3, 0))
write("vocab_zero", slot(4, 0))
write("task_unknown", slot(5, 3))
write("targets_slot", slot(6, 5))
write("unused_slot", slot(9, 1))
write("input_token", b=cell(2, 0, 5, 10))
write("target_token", b=cell(3, 1, 31, 12))
write("target_count", b=cell(4, 1, 3, 2))
write("magic", slot(0, 20261108))
PY
WATCH="bad"
copy="-i $T/copy_train.bin -j $T/copy_val.bin -L 1 -C 16 -b 2 -x 2 -o $W/bad"
for case in truncated:bytes short:too\ short longer:bytes version:version zero_sequences:sequences \
            negative_length:length zero_length:length vocab_zero:vocabulary task_unknown:task \
            targets_slot:targets unused_slot:header[9] input_token:input target_token:target \
            target_count:targets; do
  name=${case%%:*}; want=${case#*:}
  expect "task file: $name (as -j)" "$T/$name.bin" ./train_mamba -i $T/copy_train.bin -j $T/$name.bin -L 1 -C 16 -b 2 -x 2 -o "$W/bad"
  if ! grep -qF -- "$want" "$W/err"; then fail "task file: $name: the message does not say '$want'"; fi
done
expect "task file: truncated (as -i)" "$T/truncated.bin" ./train_gpt -i $T/truncated.bin -j $T/copy_val.bin -L 1 -C 16 -H 2 -b 2 -x 2 -o "$W/bad"
expect "task file: another magic (as -j)" "$T/magic.bin" ./train_gpt -i $T/copy_train.bin -j $T/magic.bin -L 1 -C 16 -H 2 -b 2 -x 2 -o "$W/bad"
random_lm_data 1 2000 500
expect "task file: tokens given as -i" "$T/copy_val.bin" ./train_mamba -i $W/train.bin -j $T/copy_val.bin -L 1 -C 16 -b 2 -x 2 -o "$W/bad"
expect "task files of two tasks" "$T/copy_val.bin" ./train_mamba -i $T/induction_train.bin -j $T/copy_val.bin -L 1 -C 16 -b 2 -x 2 -o "$W/bad"
expect "task file: another length from -t" "-t" ./train_mamba $copy -t 16
expect "task file: -G" "-G" ./train_mamba -j $T/copy_val.bin -e "$W/ind_mamba/model.bin" -G 1
expect "task file: a model of another vocabulary" "$T/copy_val.bin" ./train_mamba -e "$W/ind_mamba/model.bin" -j $T/copy_val.bin -x 0
if [ ! -e "$W/bad" ]; then
  ok "the refused runs left nothing behind (their output directory -o $W/bad was never made)"
else
  fail "a refused run made its output directory: $(ls -A "$W/bad")"
fi
expect_ok "task file: -t equal to the file's length" "val loss" ./train_mamba $copy -t 32 -o "$W/ok_t"
summary
