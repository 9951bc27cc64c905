#!/usr/bin/env bash
# PyTorch interop, both ways, for the GPT, the Mamba LM and the hybrid LM (the
# Transformer++, train_gpt_plus, and the Mamba-2, train_mamba -M 2, the first way):
#  1. the trainer trains 40 steps and writes model.bin and a checkpoint;
#     PyTorch (dev/reference/interop.py) loads each and must compute the
#     trainer's final val loss on the same batches;
#  2. PyTorch trains 40 steps and writes its model as a model file; the trainer
#     loads it (-e, -x 0) and must compute PyTorch's val loss, and writes it
#     back byte for byte.
#  3. on a task file (selective copying), the Mamba, its selection
#     ablation (-M lti) and the Mamba-2 (-M 2) trained 40 steps: PyTorch scores the model file as
#     the trainer's validation does (the loss over the target positions, and
#     the accuracy, which must be equal where no two logits are within 1e-4).
# Tolerance 1e-4 relative: the trainer computes in fp32, PyTorch in float64.
# Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
check() {  # name ours theirs
  if awk -v a="$2" -v b="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 1e-4 * (b < 0 ? -b : b)) }'; then
    ok "$1: trainer $2, PyTorch $3"
  else
    fail "$1: trainer '$2', PyTorch '$3'"
  fi
}
$PYTHON - "$W" <<'PY' || abort "cannot write test data"
import sys, os
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
w = sys.argv[1]; rng = np.random.default_rng(1)
formats.write_vocab(f"{w}/vocab.bin", [chr(c) for c in range(32, 97)])
# a learnable sequence: a fixed random walk over the 65 tokens, with noise
steps = rng.integers(1, 4, 7000); seq = np.cumsum(steps) % 65
noise = rng.random(7000) < 0.1; seq[noise] = rng.integers(0, 65, noise.sum())
formats.write_tokens(f"{w}/train.bin", seq[:5000], 65)
formats.write_tokens(f"{w}/val.bin", seq[5000:], 65)
PY
D="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin -b 4 -t 32 -v 0 -m 2 -g 0"
val_of() { sed -n 's/^final val loss \([0-9.eE+-]*\).*$/\1/p' | tail -n 1; }
torch_val() { $PYTHON dev/reference/interop.py eval "$1" --tokens "$W/val.bin" --B 4 --T 32 --batches 2 | sed -n 's/^val loss //p'; }

for m in gpt mamba hybrid; do
  shape="-L 2 -C 32"; [ $m = gpt ] && shape="$shape -H 4"; [ $m = hybrid ] && shape="-A MAF -C 32 -H 4"
  ours=$(./train_$m $D $shape -x 40 -l 3e-3 -o "$W/$m" | val_of)
  check "$m: model.bin written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/$m/model.bin")"
  check "$m: checkpoint written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/$m/ckpt_00000040.bin")"
  extra=""; [ $m = gpt ] && extra="--H 4 --maxT 32"; [ $m = hybrid ] && extra="--pattern MAF --H 4 --maxT 32"
  $PYTHON dev/reference/interop.py export --model $m --V 65 --L 2 --C 32 $extra --seed 3 --out "$W/$m.torch.bin" \
    --train-steps 40 --tokens "$W/train.bin" >/dev/null
  ours=$(./train_$m $D -x 0 -e "$W/$m.torch.bin" -o "$W/${m}_eval" | val_of)
  check "$m: PyTorch's model file loaded by the trainer (-e)" "$ours" "$(torch_val "$W/$m.torch.bin")"
  if cmp -s "$W/$m.torch.bin" "$W/${m}_eval/model.bin"; then
    ok "$m: the trainer writes PyTorch's model file back byte for byte"
  else
    fail "$m: the model file written back differs"
  fi
done
ours=$(./train_mamba $D -M 2 -N 16 -L 2 -C 32 -x 40 -l 3e-3 -o "$W/mamba2" | val_of)
check "mamba -M 2: model.bin written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/mamba2/model.bin")"
check "mamba -M 2: checkpoint written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/mamba2/ckpt_00000040.bin")"
ours=$(./train_gpt_plus $D -L 2 -C 32 -H 4 -x 40 -l 3e-3 -o "$W/plus" | val_of)
check "plus: model.bin written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/plus/model.bin")"
check "plus: checkpoint written by the trainer, loaded into PyTorch" "$ours" "$(torch_val "$W/plus/ckpt_00000040.bin")"

$PYTHON dev/data/synthetic.py --task copy --T 32 --K 4 --V 8 --train 512 --val 64 --test 8 --out "$W/task" >/dev/null \
  || abort "cannot write the task files"
for mixer in selective lti 2; do
  out=$(./train_mamba -i "$W/task/copy_train.bin" -j "$W/task/copy_val.bin" -L 2 -C 32 -M $mixer -b 8 -x 40 -l 5e-3 \
        -v 0 -m 0 -o "$W/task_$mixer" | grep '^final')
  theirs=$($PYTHON dev/reference/interop.py eval "$W/task_$mixer/model.bin" --task "$W/task/copy_val.bin")
  check "mamba -M $mixer, task file: val loss over the target positions" "$(echo "$out" | val_of)" \
    "$(echo "$theirs" | sed -n 's/^val loss \([0-9.]*\) .*$/\1/p')"
  acc=$(echo "$out" | sed -n 's/.*| acc \([0-9.]*\)%.*/\1/p')
  tacc=$(echo "$theirs" | sed -n 's/.*| acc \([0-9.]*\)%.*/\1/p')
  ties=$(echo "$theirs" | sed -n 's/.*near ties \([0-9]*\).*/\1/p')
  if [ -n "$acc" ] && [ "$acc" = "$tacc" ] && [ "$ties" = 0 ]; then
    ok "mamba -M $mixer, task file: accuracy $acc% on both sides (no near ties)"
  else
    fail "mamba -M $mixer, task file: accuracy trainer '$acc', PyTorch '$tacc' (near ties '$ties')"
  fi
done
summary
