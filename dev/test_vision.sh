#!/usr/bin/env bash
# The vision trainers' data and files, end to end (host backend):
#  - dev/data/cifar10.py --selftest: the official-file readers on fabricated
#    binary, python and archived batches, bad batches refused, the synthetic set
#  - dev/data/fashion_mnist.py --selftest: the IDX reader on fabricated files
#  - bad input to train_vit and train_mamba_vit: each case must end with one
#    line on stderr that starts "error:" and names the file or flag at fault, a
#    non-zero exit that is not a crash, and no change to the output directories;
#    among them images of another shape than the model's, a patch size that
#    does not divide the images, a bad -M, -M against a model file's kind
#    (-e without -M takes the file's blocks), -M 2 at a width its headdim
#    does not divide
#  - images of another shape (1 x 28 x 28, Fashion-MNIST's): short runs of the
#    ViT, the Mamba-ViT, the bidirectional Mamba-ViT and the Mamba-2 ViT
#    (-M 2) at patch 4 and 7 whose
#    model files record the shape; a model file without the shape slots
#    (written before them) loads as 3 x 32 x 32
#  - resume: a run restarted from its step-4 checkpoint (augmentation and
#    dropout on) prints the same step lines as the uninterrupted run and ends
#    with the same model file, byte for byte (CIFAR's shape for the ViT and
#    the Mamba-ViT, 1 x 28 x 28 for the bidirectional and the Mamba-2 ones)
#  - the accuracy is real: a trained model's test accuracy as the trainer
#    prints it equals PyTorch's (dev/reference/interop.py eval --images) on
#    the same images, for each of the four models
#  - -W (the final evaluation's pooled features): bad paths refused before
#    any work (a missing directory, a directory, an existing file that is not
#    a features file, a path in -o); for each of the four models the file's
#    N x D is the test count x C, its rows are PyTorch's pooled features, and
#    the head on them scores the printed accuracy; -m 2 writes the first rows
#  - dev/frechet.py: its self-test (--check), a set against itself, files it
#    refuses; dev/plot.py --images --by-class's rows
# Needs train_vit and train_mamba_vit built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup

out=$($PYTHON dev/data/cifar10.py --selftest 2>&1); rc=$?
echo "$out" | grep -E '^(ok|FAIL) '
add_summary "cifar10.py --selftest" $rc "$out"
out=$($PYTHON dev/data/fashion_mnist.py --selftest 2>&1); rc=$?
echo "$out" | grep -E '^(ok|FAIL) '
add_summary "fashion_mnist.py --selftest" $rc "$out"

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
# one channel, 28 x 28 (Fashion-MNIST's shape): the mean of the channels, cut to the centre
tl, tp, _ = formats.read_images(f"{w}/s_test.bin")
gray = lambda p: p[:, :, 2:30, 2:30].mean(axis=1, keepdims=True).round().astype(np.uint8)
formats.write_images(f"{w}/g_train.bin", labels, gray(pixels), k)
formats.write_images(f"{w}/g_test.bin", tl, gray(tp), k)
EOF

D="-i $W/s_train.bin -j $W/s_test.bin"
small="-b 8 -B 16 -v 0 -s 0"
vit="-L 1 -C 16 -H 2"
mvit="-L 1 -C 16"
mvit2="-L 1 -C 32 -M 2"  # the Mamba-2 ViT: 2C divisible by its headdim 64
./train_vit $D $small $vit -x 2 -o "$W/vit" >/dev/null 2>&1 || echo "setup: train_vit failed"
./train_mamba_vit $D $small $mvit -x 2 -o "$W/mvit" >/dev/null 2>&1 || echo "setup: train_mamba_vit failed"
./train_mamba_vit $D $small $mvit -M bi -x 2 -o "$W/bivit" >/dev/null 2>&1 || echo "setup: train_mamba_vit -M bi failed"
./train_mamba_vit $D $small $mvit2 -x 2 -o "$W/v2vit" >/dev/null 2>&1 || echo "setup: train_mamba_vit -M 2 failed"
G="-i $W/g_train.bin -j $W/g_test.bin"
./train_vit $G $small $vit -x 2 -o "$W/gvit" >/dev/null 2>&1 || echo "setup: train_vit on 1 x 28 x 28 failed"
mkdir -p "$W/trunc_ckpt" && head -c 5000 "$W/vit/ckpt_00000002.bin" > "$W/trunc_ckpt/ckpt_00000002.bin"

WATCH="vit mvit bivit v2vit gvit trunc_ckpt"  # expect: these run directories must not change

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
for T in train_vit train_mamba_vit; do
  S=$([ $T == train_vit ] && echo "$vit" || echo "$mvit")
  expect "$T patch size not dividing 28" "flag -P" ./$T $G $small $S -P 8
  expect "$T patch size not dividing 28 names the images" "$W/g_train.bin" ./$T $G $small $S -P 5
  expect "$T crop padding past 28 x 28 images" "flag -d" ./$T $G $small $S -A 1 -d 28
done
expect "train_vit has no -M" "-M" ./train_vit $D $small $vit -M bi
expect "train_mamba_vit -M neither uni, bi nor 2" "flag -M" ./train_mamba_vit $D $small $mvit -M tri
expect "train_mamba_vit -M 2 at 2C not divisible by the headdim 64" "flag -C" ./train_mamba_vit $D $small $mvit -M 2
expect "3 x 32 x 32 model on 1 x 28 x 28 images" "$W/vit/model.bin" ./train_vit $G $small -e "$W/vit/model.bin" -x 0
expect "1 x 28 x 28 model on 3 x 32 x 32 images" "$W/gvit/model.bin" ./train_vit $D $small -e "$W/gvit/model.bin" -x 0
expect "1 x 28 x 28 test images for 3 x 32 x 32 train images" "$W/g_test.bin" ./train_vit -i $W/s_train.bin -j $W/g_test.bin $small $vit
expect "1 x 28 x 28 checkpoint resumed on 3 x 32 x 32 images" "ckpt_00000002.bin" ./train_vit $D $small $vit -o "$W/gvit" -y 1
expect "one-way Mamba-ViT model with -M bi" "$W/mvit/model.bin" ./train_mamba_vit $D $small -M bi -e "$W/mvit/model.bin" -x 0
expect "bidirectional model with -M uni" "$W/bivit/model.bin" ./train_mamba_vit $D $small -M uni -e "$W/bivit/model.bin" -x 0
expect "Mamba-2 ViT model with -M bi" "$W/v2vit/model.bin" ./train_mamba_vit $D $small -M bi -e "$W/v2vit/model.bin" -x 0
expect "one-way Mamba-ViT model with -M 2" "$W/mvit/model.bin" ./train_mamba_vit $D $small -M 2 -e "$W/mvit/model.bin" -x 0
expect "Mamba-2 ViT checkpoint resumed without -M 2" "ckpt_00000002.bin" ./train_mamba_vit $D $small -L 1 -C 32 -o "$W/v2vit" -y 1
expect_ok "bidirectional model without -M: the file's blocks" "bidirectional Mamba-ViT" ./train_mamba_vit $D $small -e "$W/bivit/model.bin" -x 0
expect_ok "Mamba-2 ViT model without -M: the file's blocks" "Mamba-2 ViT" ./train_mamba_vit $D $small -e "$W/v2vit/model.bin" -x 0
expect "one-way checkpoint resumed with -M bi" "ckpt_00000002.bin" ./train_mamba_vit $D $small $mvit -M bi -o "$W/mvit" -y 1
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
expect "-W into a missing directory" "flag -W: $W/nodir/f.bin" ./train_vit $D $small -e "$W/vit/model.bin" -x 0 -W "$W/nodir/f.bin"
expect "-W naming a directory" "flag -W: $W/mvit is a directory" ./train_mamba_vit $D $small -e "$W/mvit/model.bin" -x 0 -W "$W/mvit"
expect "-W over a model file" "flag -W: $W/vit/model.bin exists" ./train_vit $D $small -e "$W/vit/model.bin" -x 0 -W "$W/vit/model.bin"
expect "-W into the output directory" "output directory" ./train_vit $D $small -e "$W/vit/model.bin" -x 0 -o "$W/vit" -W "$W/vit/f.bin"

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

# images of another shape: each model at patch 4 and 7 on 1 x 28 x 28 images; the model
# file records the shape (header[24..26]) and its patch size
for P in 4 7; do
  for m in vit mamba_vit mamba_vit_bi mamba_vit2; do
    case $m in vit) T=train_vit; S="$vit";; mamba_vit) T=train_mamba_vit; S="$mvit";; mamba_vit2) T=train_mamba_vit; S="$mvit2";;
      *) T=train_mamba_vit; S="$mvit -M bi";; esac
    out=$(./$T $G -b 8 -B 16 -v 0 -s 1 $S -P $P -x 2 -o "$W/g_${m}_p$P" 2>&1); rc=$?
    rec=$($PYTHON -c "
import sys; sys.path.insert(0, 'dev/reference'); sys.dont_write_bytecode = True
import formats; k, c, _ = formats.read_model('$W/g_${m}_p$P/model.bin'); print(formats.KIND_NAMES[k], c['image'], c['patch'])" 2>&1)
    tokens=$(( (28 / P) * (28 / P) ))
    if [ $rc -eq 0 ] && echo "$out" | grep -q "patch $P ($tokens x $((P * P)))" && [ "$rec" == "$m (1, 28, 28) $P" ]; then
      ok "$T ${S##*-M }: 1 x 28 x 28 images at patch $P, $tokens tokens; model file: $rec"
    else
      fail "$T $S -P $P on 1 x 28 x 28: exit $rc, model file '$rec': $(echo "$out" | tail -n 2)"
    fi
  done
done

# a model file written before the image shape slots (header[24..26] 0 0 0) is a 3 x 32 x 32 model
$PYTHON - "$W/vit/model.bin" "$W/old_model.bin" <<'EOF3'
import sys
import struct
data = bytearray(open(sys.argv[1], "rb").read())
data[4:8] = struct.pack("<i", 1)  # format version 1: no checksums (header[20], [21]) and no image shape (header[24..26])
data[80:88] = bytes(8)
data[96:108] = bytes(12)
open(sys.argv[2], "wb").write(data)
EOF3
a=$(./train_vit $D $small -e "$W/vit/model.bin" -x 0 2>&1 | grep '^final'); b=$(./train_vit $D $small -e "$W/old_model.bin" -x 0 2>&1 | grep '^final')
image=$($PYTHON -c "
import sys; sys.path.insert(0, 'dev/reference'); sys.dont_write_bytecode = True
import formats; print(formats.read_model('$W/old_model.bin')[1]['image'])" 2>/dev/null)
if [ -n "$a" ] && [ "${a% |*}" == "${b% |*}" ] && [ "$image" == "(3, 32, 32)" ]; then
  ok "a model file without the image shape slots loads as 3 x 32 x 32 (trainer: ${b% |*}; formats.py: $image)"
else
  fail "a model file without the image shape slots: '$a' vs '$b', formats.py '$image'"
fi

# resume from a checkpoint: the same steps and the same model file as the uninterrupted run
for m in vit mamba_vit mamba_vit_bi mamba_vit2; do
  case $m in vit) T=train_vit; S="$D $vit";; mamba_vit) T=train_mamba_vit; S="$D $mvit";; mamba_vit2) T=train_mamba_vit; S="$G $mvit2";;
    *) T=train_mamba_vit; S="$G $mvit -M bi";; esac
  args="-b 8 -B 16 -x 12 -n 4 -v 1 -s 1 $S"
  ./$T $args -A 1 -D 0.1 -o "$W/full_$m" | step_lines > "$W/full_$m.txt"
  mkdir -p "$W/cut_$m" && cp "$W/full_$m/ckpt_00000004.bin" "$W/cut_$m/"
  ./$T $args -A 1 -D 0.1 -o "$W/cut_$m" -y 1 | step_lines > "$W/resumed_$m.txt"
  if [ "$(wc -l < "$W/resumed_$m.txt")" -eq 8 ] && diff -q <(tail -n 8 "$W/full_$m.txt") "$W/resumed_$m.txt" >/dev/null && \
     cmp -s "$W/full_$m/model.bin" "$W/cut_$m/model.bin"; then
    ok "$m: resumed at step 4 (augmentation, dropout on): steps 5..12 print the same losses, lr and norms; model.bin byte-identical"
  else
    fail "$m: the resumed run differs from the uninterrupted one:"
    diff <(tail -n 8 "$W/full_$m.txt") "$W/resumed_$m.txt" | head -n 4
  fi
done

# The accuracy is real: the trainer's printed test accuracy and loss against PyTorch's on
# the same 50 test images, after 50 steps (12-20% where chance is 10%: what is tested is
# that the two agree) (dev/reference/interop.py eval, float64, from the trainer's
# model.bin). The counts of correct images must be equal; they may differ by one image
# only where PyTorch finds a near tie (two largest logits within 1e-4), which the
# trainer's float32 logits may order the other way round. Loss within 1e-4.
for m in vit mamba_vit mamba_vit_bi mamba_vit2; do
  case $m in vit) T=train_vit; S="$vit -P 7";; mamba_vit) T=train_mamba_vit; S="$mvit -P 4";; mamba_vit2) T=train_mamba_vit; S="$mvit2 -P 4";;
    *) T=train_mamba_vit; S="$mvit -P 4 -M bi";; esac
  line=$(./$T $G -b 8 -B 16 -v 0 -s 0 -l 1e-2 -u 10 $S -x 50 -o "$W/acc_$m" 2>&1 | grep '^final test acc')
  torch=$($PYTHON dev/reference/interop.py eval "$W/acc_$m/model.bin" --images "$W/g_test.bin" --B 16 2>&1)
  res=$(awk -v line="$line" -v torch="$torch" 'BEGIN {
    if (split(line, a, /[ %|]+/) < 7 || split(torch, b, /[ %|()\/]+/) < 10) { print "bad"; exit }
    # a: final test acc A test loss L ...; b: test acc A correct n test loss L near ties Z
    ta = a[4]; tl = a[7]; pc = b[4]; n = b[5]; pl = b[8]; near = b[11]
    tc = int(ta * n / 100 + 0.5); d = tc - pc; if (d < 0) d = -d
    dl = tl - pl; if (dl < 0) dl = -dl
    if (d == 0 && dl < 1e-4) print "ok equal: " tc "/" n " correct, loss " tl " vs " pl
    else if (d == 1 && near > 0 && dl < 1e-4) print "ok within one image (" tc " vs " pc " of " n "): a near tie in PyTorch (" near ")"
    else print "bad " tc " vs " pc " of " n ", loss " tl " vs " pl ", near ties " near }')
  if [[ "$res" == ok* ]]; then ok "$m: trainer's test accuracy against PyTorch's: ${res#ok }"
  else fail "$m: trainer '$line', PyTorch '$torch': $res"; fi
done

# -W: the pooled features of the final evaluation (llmc/vision_trainer.h), from the four trained
# models above on the 50 test images: the file holds N = 50 rows of D = the model's C; each row
# is PyTorch's pooled features of that image (float64, dev/reference/interop.py's model) to 1e-4
# absolute (2e-2 under HOST_TF32, as tf32_tolerance); the head on the file's features
# (argmax(x W^T + b) with the model file's head) scores the accuracy the trainer printed (off by
# one image only at a near tie, as above); with -m 2 (32 images) the rows are the first 32 of
# the full run's, bit for bit. Then dev/frechet.py on those files, and its self-test.
feats=""
for m in vit mamba_vit mamba_vit_bi mamba_vit2; do
  T=$([ $m == vit ] && echo train_vit || echo train_mamba_vit)
  line=$(./$T $G -B 16 -v 0 -s 0 -e "$W/acc_$m/model.bin" -x 0 -W "$W/feat_$m.bin" 2>&1 | grep '^final test acc')
  acc=${line#final test acc }; feats="$feats $W/acc_$m/model.bin $W/feat_$m.bin ${acc%%\%*}"
done
./train_vit $G -B 16 -m 2 -v 0 -s 0 -e "$W/acc_vit/model.bin" -x 0 -W "$W/feat_vit_m2.bin" >/dev/null 2>&1
out=$($PYTHON - "$W/g_test.bin" "$W/feat_vit_m2.bin" $feats <<'EOF4' 2>&1
import os, sys
sys.path.insert(0, "dev/reference"); sys.path.insert(0, "dev"); sys.dont_write_bytecode = True
import numpy as np, torch
import formats, frechet, interop
images, m2, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
labels, pixels, _ = formats.read_images(images)
tol = 2e-2 if os.environ.get("HOST_TF32", "0") != "0" else 1e-4
bad = 0
for i in range(0, len(rest), 3):
    model_path, feats, acc = rest[i], rest[i + 1], rest[i + 2]
    kind, cfg, _ = formats.read_model(model_path)
    x = frechet.read_features(feats)
    n, d = x.shape
    model = interop.load_model(model_path)
    acts = {}
    with torch.no_grad():
        model(torch.from_numpy(pixels[:n].astype(np.float32) * np.float32(1.0 / 255.0)).double(), None, acts)
    err = float(np.abs(x - acts["pooled"].numpy()).max())
    logits = x @ model.head.weight.detach().numpy().T + model.head.bias.detach().numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    near = int((top2[:, 1] - top2[:, 0] < interop.NEAR_TIE).sum())
    correct, printed = int((logits.argmax(axis=1) == labels[:n]).sum()), round(float(acc) * n / 100)
    good = n == len(labels) and d == cfg["C"] and err <= tol and (correct == printed or (abs(correct - printed) == 1 and near))
    bad += not good
    print(f"{'ok  ' if good else 'FAIL'} {formats.KIND_NAMES[kind]}: {n} x {d} features (C {cfg['C']}), max |trainer - "
          f"PyTorch| {err:.1e} (tol {tol:g}); head on them {correct}/{n} right, printed {acc}% ({printed})")
full, part = frechet.read_features(rest[1]), frechet.read_features(m2)
good = part.shape == (32, full.shape[1]) and np.array_equal(part, full[:32])
bad += not good
print(f"{'ok  ' if good else 'FAIL'} -m 2 -B 16: {part.shape[0]} rows, the first 32 of the full run's bit for bit: {good}")
sys.exit(1 if bad else 0)
EOF4
); rc=$?
while IFS= read -r l; do
  case "$l" in "ok   "*) ok "train -W: ${l#ok   }";; *) fail "train -W: ${l#FAIL }";; esac
done <<< "$out"
[ $rc -eq 0 ] || [ -n "$(echo "$out" | grep '^FAIL')" ] || fail "train -W check exited $rc"

# dev/frechet.py: a set against itself 0; the two kinds of features of one width against each other;
# files it must refuse (another width, not a features file, truncated, a single row)
./train_vit $G -B 1 -m 1 -v 0 -s 0 -e "$W/acc_vit/model.bin" -x 0 -W "$W/feat_one.bin" >/dev/null 2>&1
head -c 2000 "$W/feat_vit.bin" > "$W/feat_trunc.bin"
out=$($PYTHON dev/frechet.py "$W/feat_vit.bin" "$W/feat_vit.bin" 2>&1)
v=$(echo "$out" | awk '/^frechet / { print ($2 < 0 ? -$2 : $2) < 1e-3 ? "ok" : "bad" }')
[ "$v" == ok ] && [[ "$out" == *"(N1 50, N2 50, D 16)"* ]] && ok "frechet.py: a set against itself: $out" || fail "frechet.py against itself: $out"
out=$($PYTHON dev/frechet.py --json "$W/feat_mamba_vit.bin" "$W/feat_mamba_vit_bi.bin" 2>&1)
echo "$out" | $PYTHON -c 'import json, sys; r = json.load(sys.stdin); sys.exit(0 if r["frechet"] > 0 and r["n1"] == r["n2"] == 50 else 1)' 2>/dev/null &&
  ok "frechet.py --json, Mamba-ViT against bidirectional: $out" || fail "frechet.py --json: $out"
for c in "feat_vit.bin feat_mamba_vit2.bin:columns" "feat_vit.bin acc_vit/model.bin:not a features file" \
         "feat_trunc.bin feat_vit.bin:bytes" "feat_one.bin feat_vit.bin:1 rows"; do
  files=${c%%:*}; want=${c#*:}; read -r f1 f2 <<< "$files"
  out=$($PYTHON dev/frechet.py "$W/$f1" "$W/$f2" 2>&1); rc=$?
  [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && [[ "$out" == error:*"$want"* ]] && ok "frechet.py refuses: $out" ||
    fail "frechet.py $files: exit $rc: $out (wanted an error naming '$want')"
done
out=$($PYTHON dev/frechet.py --check 2>&1); rc=$?
echo "$out" | grep -E '^(ok|FAIL) '
add_summary "frechet.py --check" $rc "$out"

# dev/plot.py --images --by-class: row k holds the first --count images of class k in file order
# (blank after the last), and the PNG is written
if $PYTHON -c "import matplotlib" 2>/dev/null; then
  out=$($PYTHON - "$W/g_test.bin" <<'EOF5' 2>&1
import sys
sys.path.insert(0, "dev"); sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats, plot
labels, _, k = formats.read_images(sys.argv[1])
slots = plot.by_class(labels, k, 6).reshape(k, 6)
want = [list(np.nonzero(labels == c)[0][:6]) for c in range(k)]
want = np.array([w + [-1] * (6 - len(w)) for w in want])
print(f"{k} rows of 6, {int((slots < 0).sum())} blank" if np.array_equal(slots, want) else f"rows {slots.tolist()}, wanted {want.tolist()}")
sys.exit(0 if np.array_equal(slots, want) else 1)
EOF5
  ); rc=$?
  $PYTHON dev/plot.py --images "$W/g_test.bin" --by-class --count 6 --out "$W/by_class.png" >/dev/null 2>&1
  if [ $rc -eq 0 ] && [ "$(head -c 8 "$W/by_class.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]; then
    ok "dev/plot.py --images --by-class: $out, a PNG"
  else
    fail "dev/plot.py --images --by-class: $out (exit $rc)"
  fi
else
  echo "(dev/plot.py --by-class not checked: no matplotlib)"
fi

summary
