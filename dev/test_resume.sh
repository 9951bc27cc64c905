#!/usr/bin/env bash
# A run killed (SIGKILL) after a checkpoint and resumed with -y 1 prints the
# same losses as an uninterrupted run, digit for digit, ends with the same
# model file, byte for byte, and leaves a log that reads as the
# uninterrupted run's (host backend). For train_gpt, train_gpt_plus,
# train_mamba and train_hybrid, each without dropout and with -D 0.2 (the
# masks resume: the checkpoint holds the run's seed and step), train_mamba
# with the dt stretch -Y (drawn from the same seed and step), and
# train_hybrid with a Mamba-2 (S) layer without dropout. Ends with
# "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
random_lm_data 2 20000 4000
for run in gpt gpt_plus mamba hybrid hybrid_s mamba_y gpt:0.2 gpt_plus:0.2 mamba:0.2 hybrid:0.2; do
  m=${run%%:*} drop=${run#*:}; [ "$drop" = "$run" ] && drop=0
  base=${m%_s}; base=${base%_y}
  prog="./train_$base"  # hybrid_s: train_hybrid with a Mamba-2 (S) layer; mamba_y: train_mamba -Y
  shape="-L 2 -C 32"; [ $m = hybrid ] && shape="-A MAF -C 32"; [ $m = hybrid_s ] && shape="-A SAF -C 32"
  args="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -b 8 -t 64 $shape -x 100 -n 10 -v 50 -m 2 -g 20"
  [ $m = mamba_y ] && args="$args -Y 1e6"
  if [ "$drop" != 0 ]; then args="$args -D $drop"; m="${m}_d$drop"; fi
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
  if [ "$drop" != 0 ] || [ $m = mamba_y ]; then  # dropout or the stretch took effect: other losses than the run without
    plain=${m%_d*}; plain=${plain%_y}
    if ! diff -q "$W/full_$plain.txt" "$W/full_$m.txt" >/dev/null; then
      ok "$m: the losses differ from the run without $([ $m = mamba_y ] && echo the stretch || echo dropout)"
    else
      fail "$m: printed the losses of the run without $([ $m = mamba_y ] && echo the stretch || echo dropout)"
    fi
  fi
done
summary
