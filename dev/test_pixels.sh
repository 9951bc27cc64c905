#!/usr/bin/env bash
# Images as long sequences, end to end (host backend):
#  - the language models on pixel tokens (-I 3072) from dev/data/cifar10.py
#    --pixels: a short run of train_mamba and of train_gpt validates every
#    test image (a last batch of fewer images included) and prints bits/dim
#    = val loss / ln 2 (also in log.jsonl); -G 1 writes whole generated
#    images to DIR/generated.bin, an images file of 3 x 32 x 32 records whose
#    values are the samples' tokens; the same seed writes the same file;
#    dev/plot.py --images draws it as a PNG grid
#  - one-channel 28 x 28 images (Fashion-MNIST's shape) as 784-token
#    sequences (-I 784), written by cifar10.write_pixels as
#    dev/data/fashion_mnist.py --pixels writes them: a short run of
#    train_mamba, and -G 1 images of 1 x 28 x 28
#  - bad input: -t other than the image length, a tokens file that is not
#    whole images, -G without -o, a model without the start token, -P
#  - the vision models at patch size 1 (-P 1: 1024 tokens of 3 values)
#    against the PyTorch reference (data/ref_vit_p1.bin,
#    data/ref_mamba_vit_p1.bin, written by make test), and a short -P 1 run
#    of each vision trainer whose model file records patch size 1
# Needs the four trainers, test_vit and test_mamba_vit built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup

$PYTHON dev/data/cifar10.py --synthetic --pixels --train-count 20 --test-count 10 --out "$W" --prefix s >/dev/null \
  || abort "cannot write test data"
P="-i $W/s_pixels_train.bin -j $W/s_pixels_test.bin -k $W/s_pixels_vocab.bin -I 3072"
$PYTHON - "$W" <<'EOF' || abort "cannot write test data"
import sys
sys.path.insert(0, "dev/reference")
sys.dont_write_bytecode = True
import numpy as np
import formats
w = sys.argv[1]
tokens, V = formats.read_tokens(f"{w}/s_pixels_test.bin")
formats.write_tokens(f"{w}/partial.bin", tokens[:3072 * 2 + 100], V)
EOF

# bits/dim = loss / ln 2, to 4 decimals (as printed)
check_bpd() {  # NAME OUTPUT
  local line loss bpd
  line=$(echo "$2" | grep '^final val loss')
  loss=$(echo "$line" | sed -E 's/^final val loss ([0-9.]+) .*/\1/')
  bpd=$(echo "$line" | sed -E 's/.*bits\/dim ([0-9.]+) .*/\1/')
  if [ -n "$line" ] && awk -v l="$loss" -v b="$bpd" 'BEGIN { d = l / log(2) - b; exit !(d < 6e-5 && d > -6e-5) }'; then
    ok "$1: final val loss $loss, bits/dim $bpd = loss / ln 2"
  else
    fail "$1: no final line with bits/dim = loss / ln 2: '$line'"
  fi
}

for T in train_mamba train_gpt; do
  S=$([ $T == train_gpt ] && echo "-L 1 -C 16 -H 2" || echo "-L 1 -C 16")
  out=$(./$T $P $S -b 3 -x 3 -v 0 -m 0 -o "$W/$T" 2>&1); rc=$?
  if [ $rc -eq 0 ] && echo "$out" | grep -q "images of 3072 tokens: 20 train, 10 val (all validated)"; then
    ok "$T -I 3072: trains on 20 images, validates all 10 (batches of 3, 3, 3, 1)"
  else
    fail "$T -I 3072: exit $rc: $(echo "$out" | tail -n 3)"
  fi
  check_bpd "$T" "$out"
  if grep -q '"val_bits_per_dim"' "$W/$T/log.jsonl" 2>/dev/null; then ok "$T: log.jsonl has val_bits_per_dim"; else fail "$T: log.jsonl lacks val_bits_per_dim"; fi

  for run in a b; do
    ./$T $P -G 1 -e "$W/$T/model.bin" -b 3 -K 20 -o "$W/${T}_gen_$run" >"$W/gen_out" 2>&1 || fail "$T -G 1: $(tail -n 1 "$W/gen_out")"
  done
  if grep -q "generated 3 images of 3072 tokens (3 x 32 x 32)" "$W/gen_out"; then ok "$T -G 1 -b 3: $(grep generated "$W/gen_out")"
  else fail "$T -G 1 -b 3: $(tail -n 2 "$W/gen_out")"; fi
  res=$($PYTHON - "$W/${T}_gen_a/generated.bin" "$W/${T}_gen_b/generated.bin" <<'EOF'
import sys
sys.path.insert(0, "dev/reference")
sys.dont_write_bytecode = True
import numpy as np
import formats
labels, pixels, k = formats.read_images(sys.argv[1])
_, again, _ = formats.read_images(sys.argv[2])
distinct = len({p.tobytes() for p in pixels})
ok = pixels.shape == (3, 3, 32, 32) and k == 1 and (labels == 0).all() and np.array_equal(pixels, again) and distinct == 3
print(("ok" if ok else "bad") + f" shape {pixels.shape}, {k} class, {distinct} distinct images, "
      f"same seed same file: {np.array_equal(pixels, again)}, values {pixels.min()}..{pixels.max()}")
EOF
)
  if [[ "$res" == ok* ]]; then ok "$T generated.bin: ${res#ok }"; else fail "$T generated.bin: $res"; fi
done

if $PYTHON -c "import matplotlib" 2>/dev/null; then
  $PYTHON dev/plot.py --images "$W/train_mamba_gen_a/generated.bin" "$W/s_test.bin" --labels generated,test \
    --out "$W/grid.png" >/dev/null 2>&1
  if [ "$(head -c 8 "$W/grid.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]; then
    ok "dev/plot.py --images: a PNG grid of generated and test images"
  else
    fail "dev/plot.py --images wrote no PNG"
  fi
else
  echo "(dev/plot.py --images not checked: no matplotlib)"
fi

# one-channel 28 x 28 images as 784 tokens (what make fashion-mnist-pixels writes)
$PYTHON - "$W" <<'EOF' || abort "cannot write test data"
import sys
sys.path.insert(0, "dev/reference"); sys.path.insert(0, "dev/data")
sys.dont_write_bytecode = True
import numpy as np
import cifar10, formats
labels, pixels, k = formats.read_images(f"{sys.argv[1]}/s_train.bin")
gray = pixels[:, :, 2:30, 2:30].mean(axis=1, keepdims=True).round().astype(np.uint8)
cifar10.write_pixels(sys.argv[1], "g", (labels[:12], gray[:12]), (labels[12:18], gray[12:18]))
EOF
G="-i $W/g_pixels_train.bin -j $W/g_pixels_test.bin -k $W/g_pixels_vocab.bin -I 784"
out=$(./train_mamba $G -L 1 -C 16 -b 3 -x 2 -v 0 -m 0 -o "$W/g_mamba" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "images of 784 tokens: 12 train, 6 val (all validated)"; then
  ok "train_mamba -I 784: one-channel 28 x 28 images, trains on 12, validates all 6"
else
  fail "train_mamba -I 784: exit $rc: $(echo "$out" | tail -n 3)"
fi
./train_mamba $G -G 1 -e "$W/g_mamba/model.bin" -b 2 -K 20 -o "$W/g_mamba_gen" >"$W/gen_out" 2>&1
shape=$($PYTHON -c "
import sys; sys.path.insert(0, 'dev/reference'); sys.dont_write_bytecode = True
import formats; print(formats.read_images('$W/g_mamba_gen/generated.bin')[1].shape)" 2>&1)
if [ "$shape" == "(2, 1, 28, 28)" ]; then ok "train_mamba -I 784 -G 1 -b 2: generated images of shape $shape"
else fail "train_mamba -I 784 -G 1: generated.bin '$shape': $(tail -n 1 "$W/gen_out")"; fi

# bad input
WATCH="train_mamba"
expect "-t other than the image length" "flag -t" ./train_mamba $P -t 100 -L 1 -C 16
expect "tokens that are not whole images" "$W/partial.bin" ./train_mamba $P -j "$W/partial.bin" -L 1 -C 16
expect "-G without -o" "flag -G" ./train_mamba $P -G 1 -e "$W/train_mamba/model.bin"
expect "a pixel model without -I" "vocabulary of 257" ./train_mamba -i $W/s_pixels_train.bin -j $W/s_pixels_test.bin \
  -k $W/s_pixels_vocab.bin -G 1 -e "$W/train_mamba/model.bin"
expect "-P with -I" "flag -P" ./train_mamba $P -P "12" -L 1 -C 16

# the vision models at patch size 1 against PyTorch
for V in vit mamba_vit; do
  ref=data/ref_${V}_p1.bin
  if [ ! -f $ref ]; then fail "$ref missing (make test writes it)"; continue; fi
  out=$(./test_$V $ref 2>&1); rc=$?
  echo "$out" | grep -E '^(FAIL|backend)'
  add_summary "test_$V $ref" $rc "$out"
done
for V in vit mamba_vit; do
  S=$([ $V == vit ] && echo "-L 1 -C 16 -H 2" || echo "-L 1 -C 16")
  out=$(./train_$V -i "$W/s_train.bin" -j "$W/s_test.bin" -P 1 $S -b 4 -B 5 -x 2 -v 0 -s 1 -o "$W/$V" 2>&1); rc=$?
  patch=$($PYTHON -c "
import sys; sys.path.insert(0, 'dev/reference'); sys.dont_write_bytecode = True
import formats; print(formats.read_model('$W/$V/model.bin')[1]['patch'])" 2>&1)
  if [ $rc -eq 0 ] && echo "$out" | grep -q "patch 1 (1024 x 3)" && [ "$patch" == "1" ]; then
    ok "train_$V -P 1: 1024 tokens of 3 values, model file patch size $patch"
  else
    fail "train_$V -P 1: exit $rc, model file patch '$patch': $(echo "$out" | tail -n 2)"
  fi
done
summary
