#!/usr/bin/env bash
# A run killed (SIGKILL) after a checkpoint and resumed with -y 1 prints the
# same losses as an uninterrupted run, digit for digit, ends with the same
# model file, byte for byte, and leaves a log that reads as the
# uninterrupted run's (host backend). For train_gpt, train_gpt_plus,
# train_mamba and train_hybrid. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
random_lm_data 2 20000 4000
for m in gpt gpt_plus mamba hybrid; do
  prog="./train_$m"
  shape="-L 2 -C 32"; [ $m = hybrid ] && shape="-A MAF -C 32"
  args="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -b 8 -t 64 $shape -x 100 -n 10 -v 50 -m 2 -g 20"
  $prog $args -o "$W/full_$m" | step_lines > "$W/full_$m.txt"
  $prog $args -o "$W/cut_$m" > /dev/null & pid=$!
  for i in $(seq 1 2000); do [ -f "$W/cut_$m/ckpt_00000020.bin" ] && break; sleep 0.005; done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  killed_at=$(ls "$W/cut_$m" | sed -n 's/^ckpt_0*\([0-9]*\)\.bin$/\1/p' | sort -n | tail -n 1)
  $prog $args -o "$W/cut_$m" -y 1 | step_lines > "$W/resumed_$m.txt"
  n=$(wc -l < "$W/resumed_$m.txt")
  if [ "$killed_at" != "" ] && [ "$killed_at" -lt 100 ] && [ "$n" -gt 0 ] && [ "$n" -eq $((100 - killed_at)) ] && \
     diff -q <(tail -n "$n" "$W/full_$m.txt") "$W/resumed_$m.txt" >/dev/null; then
    ok "$m: killed with its newest checkpoint at step $killed_at; the $n resumed steps print the same losses, lr and norms"
  else
    fail "$m: killed at checkpoint '$killed_at', $n resumed step lines; first difference:"
    diff <(tail -n "$n" "$W/full_$m.txt") "$W/resumed_$m.txt" | head -n 3
  fi
  if cmp -s "$W/full_$m/model.bin" "$W/cut_$m/model.bin"; then
    ok "$m: final model.bin byte-identical to the uninterrupted run's"
  else
    fail "$m: final model.bin differs from the uninterrupted run's"
  fi
  if [ -n "$(log_lines "$W/full_$m")" ] && diff -q <(log_lines "$W/full_$m") <(log_lines "$W/cut_$m") >/dev/null; then
    ok "$m: log.jsonl after the resume reads as the uninterrupted run's (but for times; the resumed lines replace those after the checkpoint)"
  else
    fail "$m: log.jsonl differs from the uninterrupted run's"
  fi
done
summary
