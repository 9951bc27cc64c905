#!/usr/bin/env bash
# train_diffusion end to end (host backend), on 1 x 12 x 12 images of 3
# classes, patch 2, for every denoiser (vit, mamba, bimamba, mamba2):
#   - a run resumed (-y 1) from its checkpoint at step 8 prints the
#     uninterrupted run's steps 9..12, digit for digit, and ends with the same
#     model.bin, byte for byte
#   - the step as a CUDA graph (STEP_GRAPH=1) prints the eager run's losses
#   - the model file sampled from (-e, -x 0, -G) writes one image per class
#     in class order, prints bits/dim (-N), and writes nothing else
# and bad flags and files: one "error:" line naming the flag or the file, and
# nothing written (-O checked before any work: never over a file that is not
# an images file). Needs train_diffusion built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
$PYTHON - "$W" <<'PY' || abort "cannot write test data"
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
rng = np.random.default_rng(5)
for name, n in (("train", 96), ("test", 20)):
    labels = rng.integers(0, 3, n)
    pixels = rng.integers(0, 60, (n, 1, 12, 12))
    for i, k in enumerate(labels):  # a bright band whose row depends on the class
        pixels[i, 0, 4 * k:4 * k + 4, :] += 180
    formats.write_images(f"{sys.argv[1]}/{name}.bin", labels, pixels.astype(np.uint8), 3)
formats.write_images(f"{sys.argv[1]}/small.bin", rng.integers(0, 3, 20), rng.integers(0, 256, (20, 1, 8, 8)).astype(np.uint8), 3)
PY
data="-i $W/train.bin -j $W/test.bin -P 2 -b 8 -B 8 -m 1 -s 1 -u 2"
for m in vit mamba bimamba mamba2; do
  shape="-M $m -L 2 -C 16"; [ $m = mamba2 ] && shape="-M mamba2 -L 1 -C 32"
  args="$data $shape -x 12 -n 4 -v 1"
  ./train_diffusion $args -o "$W/full_$m" > "$W/full_$m.out" 2>&1 || { fail "$m: the run failed: $(tail -n 1 "$W/full_$m.out")"; continue; }
  step_lines < "$W/full_$m.out" > "$W/full_$m.txt"
  mkdir -p "$W/cut_$m" && cp "$W/full_$m/ckpt_00000008.bin" "$W/cut_$m/"
  ./train_diffusion $args -o "$W/cut_$m" -y 1 | step_lines > "$W/resumed_$m.txt"
  if [ "$(wc -l < "$W/resumed_$m.txt")" -eq 4 ] && diff -q <(tail -n 4 "$W/full_$m.txt") "$W/resumed_$m.txt" >/dev/null &&
     cmp -s "$W/full_$m/model.bin" "$W/cut_$m/model.bin"; then
    ok "$m: resumed at step 8, the 4 steps print the uninterrupted run's ($(tail -n 1 "$W/resumed_$m.txt")); model.bin byte-identical"
  else
    fail "$m: the resumed run differs from the uninterrupted one:"
    diff <(tail -n 4 "$W/full_$m.txt") "$W/resumed_$m.txt" | head -n 3
  fi
  for g in 0 1; do
    STEP_GRAPH=$g ./train_diffusion $data $shape -x 5 -v 0 | step_lines > "$W/graph_${m}_$g.txt"
  done
  if [ "$(wc -l < "$W/graph_${m}_1.txt")" -eq 5 ] && diff -q "$W/graph_${m}_0.txt" "$W/graph_${m}_1.txt" >/dev/null; then
    ok "$m: the 5 steps as a CUDA graph print the eager steps' losses, lr and norms"
  else
    fail "$m: the graph run's steps differ from the eager run's"
  fi
  WATCH="full_$m"
  expect_ok "$m: sampling and bits/dim from the model file" "bits/dim" \
    ./train_diffusion $data -e "$W/full_$m/model.bin" -x 0 -G 1 -k 5 -O "$W/samples_$m.bin" -N 4
  $PYTHON - "$W/samples_$m.bin" <<'PY' && ok "$m: samples file: 3 images of 1 x 12 x 12, labels 0 1 2" || fail "$m: the samples file is not one image per class in order"
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import formats
labels, pixels, K = formats.read_images(sys.argv[1])
sys.exit(0 if list(labels) == [0, 1, 2] and pixels.shape == (3, 1, 12, 12) and K == 3 else 1)
PY
done

# bad flags and files
WATCH="full_vit"
expect "-M names no denoiser" "flag -M" ./train_diffusion $data -M transformer -x 1
expect "-K names no sampler" "flag -K" ./train_diffusion $data -K euler -x 1
expect "-k out of range" "flag -k" ./train_diffusion $data -k 0 -x 1
expect "-U out of range" "flag -U" ./train_diffusion $data -U 1.5 -x 1
expect "-G without a place for the samples" "flag -G" ./train_diffusion $data -G 2 -x 1
expect "-G from a model file into -o (an evaluation writes no output directory)" "flag -G" \
  ./train_diffusion $data -e "$W/full_vit/model.bin" -x 0 -o "$W/full_vit" -G 1
expect "-O over a model file" "not an images file" \
  ./train_diffusion $data -e "$W/full_vit/model.bin" -x 0 -G 1 -O "$W/full_vit/model.bin"
expect "-O in a missing directory" "flag -O" ./train_diffusion $data -G 1 -O "$W/nowhere/s.bin" -x 1
expect "-D (no dropout)" "flag -D" ./train_diffusion $data -D 0.1 -x 1
expect "-W (the classifiers' flag)" "flag -W" ./train_diffusion $data -W "$W/f.bin" -x 1
$PYTHON - "$W/cls.bin" <<'PY' || abort "cannot write a classifier model file"
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
cfg = dict(patch=2, K=3, L=1, H=2, C=8, F=16, image=(1, 12, 12))
P = formats.vit_num_params(2, 3, 1, 2, 8, 16, (1, 12, 12))
formats.write_model(sys.argv[1], formats.KIND_VIT, dict(cfg, P=P), np.zeros(P, dtype=np.float32))
PY
expect "-e a classifier's model file" "train_diffusion takes diffusion models" \
  ./train_diffusion $data -e "$W/cls.bin" -x 0
expect "-e with another -M" "flag -M" ./train_diffusion $data -e "$W/full_vit/model.bin" -M mamba -x 0
expect "-e with images of another shape" "a model for images of" \
  ./train_diffusion -i "$W/small.bin" -j "$W/small.bin" -b 8 -e "$W/full_vit/model.bin" -x 0
summary
