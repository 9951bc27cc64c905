#!/usr/bin/env bash
# The training step as a CUDA graph (llmc/trainer.h): for every trainer
# (train_gpt, train_gpt_plus, train_mamba (also with -R 1 -Y 1e6), train_hybrid, train_vit,
# train_mamba_vit, train_mamba_vit -M bi and -M 2), 5 training steps with the step captured once and
# replayed (STEP_GRAPH=1) print the same losses, learning rates and norms as
# 5 eager steps (STEP_GRAPH=0), write the same log.jsonl (but for times) and
# end with a byte-identical model.bin. The learning rate changes every step
# (warmup), every run has dropout on (its masks keyed by the step) and the
# vision runs augmentation too, so a value frozen into the graph at capture
# shows. On the host backend HOST_PROFILE=1
# shows that the graph run's steps 2..5 each were one graph launch (the
# first step runs eagerly) and the eager run's none. Needs the six trainers
# built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
random_lm_data 3 20000 4000
$PYTHON dev/data/cifar10.py --synthetic --train-count 200 --test-count 50 --out "$W" --prefix s >/dev/null ||
  abort "cannot write test data"

lm="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -b 4 -t 32 -x 5 -u 3 -v 5 -m 1 -g 0 -D 0.1"
vision="-i $W/s_train.bin -j $W/s_test.bin -b 8 -B 16 -x 5 -u 3 -v 0 -m 1 -s 1 -D 0.1 -A 1"
# the graph launches of the steps of a run's HOST_PROFILE lines, one number a line
graph_launches() { sed -n 's/^host profile step [0-9]*: .* by \([0-9]*\) graph launches.*/\1/p' "$1" | tr '\n' ' '; }
for m in gpt plus mamba mamba_ry hybrid vit mamba_vit mamba_vit_bi mamba_vit2; do
  case $m in
    gpt) prog="./train_gpt"; args="$lm -L 2 -C 32" ;;
    plus) prog="./train_gpt_plus"; args="$lm -L 2 -C 32" ;;
    mamba) prog="./train_mamba"; args="$lm -L 2 -C 32" ;;
    mamba_ry) prog="./train_mamba"; args="$lm -L 2 -C 32 -R 1 -Y 1e6" ;;  # passed states, the dt stretch
    hybrid) prog="./train_hybrid"; args="$lm -A MAF -C 32" ;;
    vit) prog="./train_vit"; args="$vision -L 1 -C 16 -H 2" ;;
    mamba_vit) prog="./train_mamba_vit"; args="$vision -L 1 -C 16" ;;
    mamba_vit_bi) prog="./train_mamba_vit"; args="$vision -L 1 -C 16 -M bi" ;;
    mamba_vit2) prog="./train_mamba_vit"; args="$vision -L 1 -C 32 -M 2" ;;
  esac
  for g in 0 1; do
    STEP_GRAPH=$g HOST_PROFILE=1 $prog $args -o "$W/${m}_$g" > "$W/${m}_$g.out" 2> "$W/${m}_$g.err"
    echo $? > "$W/${m}_$g.rc"
    step_lines < "$W/${m}_$g.out" > "$W/${m}_$g.txt"
  done
  n=$(wc -l < "$W/${m}_1.txt")
  if [ "$(cat "$W/${m}_0.rc")" -ne 0 ] || [ "$(cat "$W/${m}_1.rc")" -ne 0 ]; then
    fail "$m: a run failed (exit $(cat "$W/${m}_0.rc") eager, $(cat "$W/${m}_1.rc") graph):"
    tail -n 3 "$W/${m}_0.err" "$W/${m}_1.err"
    continue
  fi
  if [ "$n" -eq 5 ] && diff -q "$W/${m}_0.txt" "$W/${m}_1.txt" >/dev/null; then
    ok "$m: the 5 steps with the graph print the eager steps' losses, lr and norms ($(tail -n 1 "$W/${m}_1.txt"))"
  else
    fail "$m: $n step lines with the graph; first difference from the eager run:"
    diff "$W/${m}_0.txt" "$W/${m}_1.txt" | head -n 3
  fi
  if diff -q <(sed 's/, "elapsed_s".*//; s/, "[a-z]*_per_s": [0-9.]*//' "$W/${m}_0/log.jsonl") \
             <(sed 's/, "elapsed_s".*//; s/, "[a-z]*_per_s": [0-9.]*//' "$W/${m}_1/log.jsonl") >/dev/null &&
     cmp -s "$W/${m}_0/model.bin" "$W/${m}_1/model.bin"; then
    ok "$m: log.jsonl the same (but for times), model.bin after 5 steps byte-identical"
  else
    fail "$m: log.jsonl or model.bin differ between the eager and the graph run"
  fi
  if grep -q '^backend host' "$W/${m}_1.out"; then
    eager=$(graph_launches "$W/${m}_0.err") graph=$(graph_launches "$W/${m}_1.err")
    if [ "$eager" == "0 0 0 0 0 " ] && [ "$graph" == "0 1 1 1 1 " ]; then
      ok "$m: graph launches per step: eager run $eager; graph run $graph"
    else
      fail "$m: graph launches per step: eager run '$eager' (want 0 0 0 0 0), graph run '$graph' (want 0 1 1 1 1)"
    fi
  fi
done
summary
