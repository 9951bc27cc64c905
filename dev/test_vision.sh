#!/usr/bin/env bash
# The vision trainers' data and files, end to end (host backend):
#  - dev/data/cifar10.py --selftest: the official-file readers on fabricated
#    binary, python and archived batches, bad batches refused, the synthetic set
#  - bad input to train_vit and train_mamba_vit: each case must end with one
#    line on stderr that starts "error:" and names the file or flag at fault, a
#    non-zero exit that is not a crash, and no change to the output directories
#  - resume: a run restarted from its step-4 checkpoint (augmentation and
#    dropout on) prints the same step lines as the uninterrupted run and ends
#    with the same model file, byte for byte
# Needs train_vit and train_mamba_vit built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup

out=$($PYTHON dev/data/cifar10.py --selftest 2>&1); rc=$?
echo "$out" | grep -E '^(ok|FAIL) '
add_summary "cifar10.py --selftest" $rc "$out"

# small data: 200 train and 50 test images, and broken variants
$PYTHON dev/data/cifar10.py --synthetic --train-count 200 --test-count 50 --out "$W" --prefix s >/dev/null || abort "cannot write test data"
$PYTHON - "$W" <<'EOF' || abort "cannot write test data"
import sys
sys.path.insert(0, "dev/reference")
sys.dont_write_bytecode = True
import numpy as np
import formats
w = sys.argv[1]
labels, pixels, k = formats.read_images(f"{w}/s_train.bin")
formats.write_images(f"{w}/gray.bin", labels, pixels[:, :1].copy(), k)
formats.write_images(f"{w}/small.bin", labels, pixels[:, :, :28, :28].copy(), k)
formats.write_images(f"{w}/classes5.bin", labels % 5, pixels, 5)
formats.write_images(f"{w}/tiny.bin", labels[:4], pixels[:4], k)
data = bytearray(open(f"{w}/s_train.bin", "rb").read())
open(f"{w}/truncated.bin", "wb").write(data[:5000])
bad = bytearray(data); bad[0:4] = (12345).to_bytes(4, "little"); open(f"{w}/badmagic.bin", "wb").write(bad)
bad = bytearray(data); bad[1024 + 3073 * 7] = 10; open(f"{w}/badlabel.bin", "wb").write(bad)
formats.write_tokens(f"{w}/tokens.bin", np.arange(5000) % 65, 65)
open(f"{w}/empty.bin", "wb").close()
EOF

D="-i $W/s_train.bin -j $W/s_test.bin"
small="-b 8 -B 16 -v 0 -s 0"
vit="-L 1 -C 16 -H 2"
mvit="-L 1 -C 16"
./train_vit $D $small $vit -x 2 -o "$W/vit" >/dev/null 2>&1 || echo "setup: train_vit failed"
./train_mamba_vit $D $small $mvit -x 2 -o "$W/mvit" >/dev/null 2>&1 || echo "setup: train_mamba_vit failed"
mkdir -p "$W/trunc_ckpt" && head -c 5000 "$W/vit/ckpt_00000002.bin" > "$W/trunc_ckpt/ckpt_00000002.bin"

WATCH="vit mvit trunc_ckpt"  # expect: these run directories must not change

for T in train_vit train_mamba_vit; do
  S=$([ $T == train_vit ] && echo "$vit" || echo "$mvit")
  expect "$T missing train images" "$W/nope.bin" ./$T -i "$W/nope.bin" -j $W/s_test.bin $small $S
  expect "$T empty test images" "$W/empty.bin" ./$T -i $W/s_train.bin -j "$W/empty.bin" $small $S
  expect "$T truncated images" "$W/truncated.bin" ./$T -i "$W/truncated.bin" -j $W/s_test.bin $small $S
  expect "$T wrong magic" "$W/badmagic.bin" ./$T -i "$W/badmagic.bin" -j $W/s_test.bin $small $S
  expect "$T label out of range" "$W/badlabel.bin" ./$T -i "$W/badlabel.bin" -j $W/s_test.bin $small $S
  expect "$T tokens file as images" "$W/tokens.bin" ./$T -i "$W/tokens.bin" -j $W/s_test.bin $small $S
  expect "$T one-channel images" "$W/gray.bin" ./$T -i "$W/gray.bin" -j $W/s_test.bin $small $S
  expect "$T 28x28 images" "$W/small.bin" ./$T -i $W/s_train.bin -j "$W/small.bin" $small $S
  expect "$T train and test classes differ" "$W/classes5.bin" ./$T -i $W/s_train.bin -j "$W/classes5.bin" $small $S
  expect "$T batch larger than the train set" "-b" ./$T -i "$W/tiny.bin" -j $W/s_test.bin $small $S
  expect "$T unknown flag" "-t" ./$T $D $small $S -t 64
  expect "$T missing value" "-E" ./$T $D $small $S -E
  expect "$T zero batch" "-b" ./$T $D $small $S -b 0
  expect "$T patch size not dividing 32" "-P" ./$T $D $small $S -P 5
  expect "$T dropout out of range" "-D" ./$T $D $small $S -D 1.5
  expect "$T negative epochs" "-E" ./$T $D $small $S -E -1
  expect "$T not a number" "-R" ./$T $D $small $S -R wide
  expect "$T resume without -o" "-o" ./$T $D $small $S -y 1
  expect "$T resume from an empty directory" "-y" ./$T $D $small $S -o "$W/emptydir_$T" -y 1
done
expect "train_mamba_vit has no heads" "-H" ./train_mamba_vit $D $small $mvit -H 2
expect "ViT channels not divisible by heads" "-C" ./train_vit $D $small -L 1 -C 18 -H 4
expect "fresh run into a directory with checkpoints" "-o" ./train_vit $D $small $vit -x 2 -o "$W/vit"
expect "truncated checkpoint" "ckpt_00000002.bin" ./train_vit $D $small $vit -o "$W/trunc_ckpt" -y 1
expect "vit checkpoint into train_mamba_vit" "ckpt_00000002.bin" ./train_mamba_vit $D $small $mvit -o "$W/vit" -y 1
expect "vit checkpoint of another width" "channels" ./train_vit $D $small -L 1 -C 32 -H 2 -o "$W/vit" -y 1
expect "checkpoint of another batch size" "-b" ./train_vit $D -b 4 -B 16 -v 0 -s 0 $vit -o "$W/vit" -y 1
expect "mamba_vit model into train_vit" "$W/mvit/model.bin" ./train_vit $D $small -e "$W/mvit/model.bin"
expect "model for 10 classes on 5-class data" "$W/vit/model.bin" ./train_vit -i "$W/classes5.bin" -j "$W/classes5.bin" $small -e "$W/vit/model.bin"
expect "batch that does not fit in memory" "-b" ./train_vit $D -b 200 -B 200 -v 0 -s 0 -L 64 -C 512 -H 2
expect "model that does not fit in memory" "-L" ./train_mamba_vit $D $small -L 70 -C 2048
expect "model past 2^31 parameters" "-L" ./train_mamba_vit $D $small -L 1000 -C 2048

# the ViT's starting positions: the 2D sin-cos table of dev/reference/vit.py
# (float32 sin and cos of the same double angles; 1e-6 allows one rounding
# of a value of magnitude <= 1), at patch 4 and at patch 1 with C = 18 (not a
# multiple of 4: its last two channels are 0)
for P in 4 1; do
  ./train_vit $D $small -L 1 -C 18 -H 2 -P $P -x 0 -o "$W/init_p$P" >/dev/null 2>&1 || echo "setup: train_vit -x 0 failed"
  out=$($PYTHON - "$W/init_p$P/model.bin" <<'EOF2' 2>&1
import sys
sys.path.insert(0, "dev/reference")
sys.dont_write_bytecode = True
import numpy as np
import common, formats, vit
kind, cfg, params = formats.read_model(sys.argv[1])
layout = formats.vit_param_layout(cfg["patch"], cfg["K"], cfg["L"], cfg["H"], cfg["C"], cfg["F"], cfg["image"])
got = common.unflatten(params, layout)["wpe"]
_, H, W = cfg["image"]
want = vit.sincos_positions(H // cfg["patch"], W // cfg["patch"], cfg["C"])
err = float(np.abs(got - want).max())
print(f"wpe {got.shape}: max |train_vit - sincos_positions| {err:.1e}, last two channels max {float(np.abs(got[:, 16:]).max()):.1e}")
sys.exit(0 if err <= 1e-6 and not got[:, 16:].any() and got[:, :16].std() > 0.5 else 1)
EOF2
  ); rc=$?
  [ $rc -eq 0 ] && ok "train_vit -P $P starts from the sin-cos positions: $out" || fail "train_vit -P $P starting positions: $out"
done

# the attention variant is fixed for the largest batch the activations are
# sized for: at patch 1 (T 1024) with 4 heads, the eval batch of 20 needs the
# tiled variant (20 x 4 x 1024^2 floats are over the materialized cap) while
# the training batch of 1 alone would pick the materialized one, whose
# (B,NH,T,T) buffers were never allocated (a heap overrun before the fix)
out=$(./train_vit -i $W/s_train.bin -j $W/s_test.bin -b 1 -B 20 -m 1 -v 0 -s 0 -P 1 -L 1 -C 64 -H 4 -x 1 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "^final test acc"; then
  ok "train_vit -P 1 -H 4 -b 1 -B 20: one attention variant for training and eval: $(echo "$out" | grep '^final')"
else
  fail "train_vit -P 1 -H 4 -b 1 -B 20: exit $rc: $(echo "$out" | tail -n 1)"
fi

# resume from a checkpoint: the same steps and the same model file as the uninterrupted run
for m in vit mamba_vit; do
  S=$([ $m == vit ] && echo "$vit" || echo "$mvit")
  args="$D -b 8 -B 16 -x 12 -n 4 -v 1 -s 1 $S"
  ./train_$m $args -o "$W/full_$m" | step_lines > "$W/full_$m.txt"
  mkdir -p "$W/cut_$m" && cp "$W/full_$m/ckpt_00000004.bin" "$W/cut_$m/"
  ./train_$m $args -o "$W/cut_$m" -y 1 | step_lines > "$W/resumed_$m.txt"
  if [ "$(wc -l < "$W/resumed_$m.txt")" -eq 8 ] && diff -q <(tail -n 8 "$W/full_$m.txt") "$W/resumed_$m.txt" >/dev/null && \
     cmp -s "$W/full_$m/model.bin" "$W/cut_$m/model.bin"; then
    ok "$m: resumed at step 4 (augmentation, dropout on): steps 5..12 print the same losses, lr and norms; model.bin byte-identical"
  else
    fail "$m: the resumed run differs from the uninterrupted one:"
    diff <(tail -n 8 "$W/full_$m.txt") "$W/resumed_$m.txt" | head -n 4
  fi
done

summary
