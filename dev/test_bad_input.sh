#!/usr/bin/env bash
# Bad input to the trainers: each case must end with one line on stderr that
# starts "error:" and names the file or flag at fault, a non-zero exit that is
# not a crash (no signal), and no change to what was in the output directory.
# Uses small token files made here, so it needs no prepared data.
# Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup

# small data: 65 characters, 4000 train tokens, 1000 val tokens
$PYTHON - "$W" <<'EOF' || abort "cannot write test data"
import sys, os
sys.path.insert(0, "dev/reference")
sys.dont_write_bytecode = True
import numpy as np
import formats
w = sys.argv[1]
rng = np.random.default_rng(0)
vocab = [chr(c) for c in range(32, 97)]  # 65 one-byte tokens
formats.write_vocab(f"{w}/vocab.bin", vocab)
formats.write_vocab(f"{w}/vocab66.bin", vocab + ["~"])
formats.write_tokens(f"{w}/train.bin", rng.integers(0, 65, 4000), 65)
formats.write_tokens(f"{w}/val.bin", rng.integers(0, 65, 1000), 65)
formats.write_tokens(f"{w}/train66.bin", rng.integers(0, 66, 4000), 66)
formats.write_tokens(f"{w}/big.bin", rng.integers(0, 65, 60000), 65)
data = bytearray(open(f"{w}/train.bin", "rb").read())
open(f"{w}/truncated.bin", "wb").write(data[:3000])
bad = bytearray(data); bad[0:4] = (12345).to_bytes(4, "little"); open(f"{w}/badmagic.bin", "wb").write(bad)
bad = bytearray(data); bad[4:8] = (7).to_bytes(4, "little"); open(f"{w}/badversion.bin", "wb").write(bad)
bad = bytearray(data); bad[1024 + 2 * 100:1024 + 2 * 101] = (300).to_bytes(2, "little"); open(f"{w}/badtoken.bin", "wb").write(bad)
open(f"{w}/empty.bin", "wb").close()
formats.write_tokens(f"{w}/train5000.bin", rng.integers(0, 65, 5000), 65)
# images for the vision trainers: 40 train, 20 test, 3 x 32 x 32, 10 classes
formats.write_images(f"{w}/img_train.bin", rng.integers(0, 10, 40), rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8), 10)
formats.write_images(f"{w}/img_test.bin", rng.integers(0, 10, 20), rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), 10)
# a tokens file and an images file with an unused header slot set
for name, src, slot in [("tokens_slot9", "train.bin", 9), ("images_slot10", "img_train.bin", 10)]:
    bad = bytearray(open(f"{w}/{src}", "rb").read()); bad[4 * slot:4 * slot + 4] = (1).to_bytes(4, "little")
    open(f"{w}/{name}.bin", "wb").write(bad)
# files whose headers say a few KiB but that are 1 TiB long (sparse: no disk used)
for name, src in [("huge_tokens", "train.bin"), ("huge_images", "img_train.bin")]:
    with open(f"{w}/{name}.bin", "wb") as f:
        f.write(open(f"{w}/{src}", "rb").read(1024))
        f.truncate(1 << 40)
EOF

D="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin"
small="-b 2 -t 16 -v 0 -m 1 -g 0"
# reference runs that leave checkpoints and models behind
./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/gpt" >/dev/null 2>&1 || echo "setup: train_gpt failed"
./train_mamba $D $small -L 1 -C 16 -x 2 -o "$W/mamba" >/dev/null 2>&1 || echo "setup: train_mamba failed"
./train_hybrid $D $small -A MA -C 16 -H 2 -x 2 -o "$W/hybrid" >/dev/null 2>&1 || echo "setup: train_hybrid failed"
./train_mamba $D $small -M lti -L 1 -C 16 -x 2 -o "$W/mamba_lti" >/dev/null 2>&1 || echo "setup: train_mamba -M lti failed"
head -c 5000 "$W/gpt/ckpt_00000002.bin" > "$W/gpt_truncated_ckpt.bin"
head -c 3000 "$W/mamba/model.bin" > "$W/mamba_truncated_model.bin"
mkdir -p "$W/trunc_ckpt" && cp "$W/gpt_truncated_ckpt.bin" "$W/trunc_ckpt/ckpt_00000002.bin"

WATCH="gpt mamba mamba_lti hybrid trunc_ckpt plus"  # expect: these run directories must not change

for T in train_gpt train_mamba; do
  expect "$T missing data file" "$W/nope.bin" ./$T -i "$W/nope.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T empty data file" "$W/empty.bin" ./$T -i "$W/empty.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T truncated data file" "$W/truncated.bin" ./$T -i "$W/truncated.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T wrong magic" "$W/badmagic.bin" ./$T -i "$W/badmagic.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T wrong version" "$W/badversion.bin" ./$T -i "$W/badversion.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T token out of range" "$W/badtoken.bin" ./$T -i "$W/badtoken.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T vocabulary not matching data" "$W/train66.bin" ./$T -i "$W/train66.bin" -j $W/val.bin -k $W/vocab.bin $small
  expect "$T data file given as vocabulary" "$W/train.bin" ./$T -i "$W/train.bin" -j $W/val.bin -k $W/train.bin $small
  expect "$T unknown flag" "-Z" ./$T $D $small -Z 3
  expect "$T missing value" "-b" ./$T $D -b
  expect "$T zero batch" "-b" ./$T $D $small -b 0
  expect "$T negative sequence length" "-t" ./$T $D $small -t -5
  expect "$T zero width" "-C" ./$T $D $small -C 0
  expect "$T not a number" "-l" ./$T $D $small -l fast
  expect "$T context longer than the data" "$W/val.bin" ./$T $D -b 2 -t 2000 -v 0 -g 0
  expect "$T resume without -o" "-o" ./$T $D $small -y 1
  expect "$T resume from an empty directory" "-y" ./$T $D $small -o "$W/emptydir_$T" -y 1
  expect "$T resume from a truncated checkpoint" "ckpt_00000002.bin" ./$T $D $small -L 1 -C 16 -o "$W/trunc_ckpt" -y 1
  expect "$T generate without a model" "-G" ./$T $D $small -G 1
  expect "$T negative dropout" "-D" ./$T $D $small -D -0.1
  expect "$T dropout of 1" "-D" ./$T $D $small -D 1
  expect "$T dropout not a number" "-D" ./$T $D $small -D half
  expect "$T train-set evaluation with -I" "-V" ./$T $D $small -V 1 -I 16
done
# activations past the memory there is (on the host backend, the machine's memory)
B="-i $W/big.bin -j $W/big.bin -k $W/vocab.bin -v 0 -g 0 -m 1"
expect "train_gpt batch that does not fit in memory" "-b" ./train_gpt $B -b 50 -t 1000 -L 1 -C 64 -H 64
expect "train_mamba batch that does not fit in memory" "-b" ./train_mamba $B -b 50 -t 1000 -L 64 -C 256
expect "model that does not fit in memory" "-L" ./train_mamba $B -b 1 -t 16 -L 1000 -C 1024
# checkpoints and models of another model or shape; vocabulary against a model
expect "gpt checkpoint into train_mamba" "ckpt_00000002.bin" ./train_mamba $D $small -L 1 -C 16 -o "$W/gpt" -y 1
expect "gpt checkpoint of another shape" "num_layers" ./train_gpt $D $small -L 2 -C 16 -H 2 -o "$W/gpt" -y 1
expect "mamba checkpoint of another width" "channels" ./train_mamba $D $small -L 1 -C 32 -o "$W/mamba" -y 1
expect "mamba model into train_gpt" "$W/mamba/model.bin" ./train_gpt $D $small -e "$W/mamba/model.bin"
expect "model vocabulary not matching" "$W/gpt/model.bin" ./train_gpt -i "$W/train66.bin" -j "$W/train66.bin" -k "$W/vocab66.bin" $small -e "$W/gpt/model.bin"
expect "context above the model's maximum" "-t" ./train_gpt $D -b 2 -t 32 -v 0 -g 0 -e "$W/gpt/model.bin"
expect "checkpoint given as a model file" "$W/gpt_truncated_ckpt.bin" ./train_gpt $D $small -e "$W/gpt_truncated_ckpt.bin"
expect "truncated model file" "$W/mamba_truncated_model.bin" ./train_mamba $D $small -e "$W/mamba_truncated_model.bin"
expect "prompt outside the vocabulary" "-P" ./train_mamba $D $small -G 1 -e "$W/mamba/model.bin" -P "caf{}"
expect "gpt model into train_mamba -G" "$W/gpt/model.bin" ./train_mamba $D -G 1 -e "$W/gpt/model.bin"
./train_gpt $B -b 1 -t 1024 -L 1 -C 64 -H 4 -x 0 -o "$W/gpt1024" >/dev/null 2>&1 || abort "setup: a GPT with 1024 positions"
expect "generation batch and cache that do not fit in memory" "-b" ./train_gpt $B -G 1 -e "$W/gpt1024/model.bin" -b 60000 -g 10
expect "windowed generation of several rows" "-W" ./train_mamba $D $small -G 1 -e "$W/mamba/model.bin" -W 1 -b 2

# the Mamba's mixer: -M against the kind of a model file or checkpoint (-e without -M takes the file's)
expect "-M lti with -e of a selective Mamba" "$W/mamba/model.bin" ./train_mamba $D $small -M lti -x 1 -e "$W/mamba/model.bin"
expect "-M selective with -e of an LTI Mamba" "$W/mamba_lti/model.bin" ./train_mamba $D $small -M selective -x 1 -e "$W/mamba_lti/model.bin"
expect "LTI Mamba checkpoint resumed without -M lti" "ckpt_00000002.bin" ./train_mamba $D $small -L 1 -C 16 -o "$W/mamba_lti" -y 1
expect "unknown mixer" "flag -M" ./train_mamba $D $small -M s6
# -U, the smallest dt of the initialization: a number in (0, 0.05], the random initialization's only
expect "-U 0" "flag -U" ./train_mamba $D $small -U 0
expect "-U above 0.05" "flag -U" ./train_mamba $D $small -U 0.2
expect "-U not a number" "flag -U" ./train_mamba $D $small -U small
expect "-U with -e" "flag -U" ./train_mamba $D $small -U 1e-9 -x 1 -e "$W/mamba/model.bin"
expect "-U to train_gpt" "-U" ./train_gpt $D $small -U 1e-9
# -R, state passing: 0 or 1; Mamba-1's mixers only; not resumable (the passed states are not in checkpoints)
expect "-R 2" "flag -R" ./train_mamba $D $small -R 2
expect "-R with -M 2" "flag -R" ./train_mamba $D $small -R 1 -M 2 -C 32
expect "-R with -y 1" "flag -R" ./train_mamba $D $small -L 1 -C 16 -R 1 -o "$W/mamba" -y 1 -x 9
expect "-R to train_gpt" "-R" ./train_gpt $D $small -R 1
# -Y, the dt stretch: G >= 1; the selective mixer only
expect "-Y below 1" "flag -Y" ./train_mamba $D $small -Y 0.5
expect "-Y not a number" "flag -Y" ./train_mamba $D $small -Y big
expect "-Y with -M lti" "flag -Y" ./train_mamba $D $small -Y 1e6 -M lti
expect "-Y with -M 2" "flag -Y" ./train_mamba $D $small -Y 1e6 -M 2 -C 32
expect "-Y to train_hybrid" "-Y" ./train_hybrid $D $small -Y 1e6
expect_ok "-e of an LTI Mamba without -M" "Mamba LTI" ./train_mamba $D $small -x 0 -e "$W/mamba_lti/model.bin"

# the hybrid's layer pattern
expect "hybrid pattern with a bad letter" "-A" ./train_hybrid $D $small -A MAX
expect "hybrid empty pattern" "-A" ./train_hybrid $D $small -A ""
expect "hybrid pattern of too many layers" "-A" ./train_hybrid $D $small -A MAMAMAMAMAMAMAMA
expect "hybrid given -L" "-L" ./train_hybrid $D $small -L 2
expect "train_gpt given -A" "-A" ./train_gpt $D $small -A MA
expect "hybrid heads not dividing the width" "-H" ./train_hybrid $D $small -A MA -C 16 -H 3
expect "hybrid Mamba-2 layers with a width not a multiple of 32" "-C" ./train_hybrid $D $small -A SA -C 16 -H 2
expect "hybrid pattern with S of too many layers" "-A" ./train_hybrid $D $small -A SMSMSMSMSMSMS
expect "hybrid checkpoint of another pattern" "pattern" ./train_hybrid $D $small -A AM -C 16 -H 2 -o "$W/hybrid" -y 1
expect "mamba model into train_hybrid" "$W/mamba/model.bin" ./train_hybrid $D $small -e "$W/mamba/model.bin"

# the GPT and the Transformer++ (train_gpt_plus): the same config slots, files of their own kind
./train_gpt_plus $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/plus" >/dev/null 2>&1 || echo "setup: train_gpt_plus failed"
expect "odd head size for rotary embeddings" "-C/-H" ./train_gpt_plus $D $small -C 18 -H 2
expect "plus model file into train_gpt" "$W/plus/model.bin" ./train_gpt $D $small -e "$W/plus/model.bin"
expect "plus checkpoint into train_gpt" "ckpt_00000002.bin" ./train_gpt $D $small -L 1 -C 16 -H 2 -o "$W/plus" -y 1
expect "gpt model file into train_gpt_plus" "$W/gpt/model.bin" ./train_gpt_plus $D $small -e "$W/gpt/model.bin"
expect "gpt checkpoint into train_gpt_plus" "ckpt_00000002.bin" ./train_gpt_plus $D $small -L 1 -C 16 -H 2 -o "$W/gpt" -y 1
expect "plus model into train_mamba" "$W/plus/model.bin" ./train_mamba $D $small -e "$W/plus/model.bin"
expect "fresh run into a directory with another run's checkpoints" "$W/gpt" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/gpt"

# ----------------------------------------------------------------------------
# Files refused whole, and runs that leave their output directory as they
# found it. Each case's name starts with its class:
#   header:    a slot outside the ranges the trainers run, or a file whose
#              size disagrees with its header (refused before it is read)
#   checksum:  a changed byte, a non-finite value, a seed or training data a
#              resume must match; files of format version 1 load with a warning
#   outputs:   what a run may write where; one run per directory
#   resume:    -y 1 with -x at or below the checkpoint's step; the last good
#              checkpoint named when a resume is refused
#   small:     messages (long, with control bytes) and flags (-E, -P -S, -A, -P)

# craft.py SRC DST VERSION EDIT...: a copy of a model file or checkpoint with
# header slots (SLOT=VALUE), floats after the header (f:INDEX=VALUE) or bytes
# after the header (b:OFFSET, one bit flipped) changed, written as VERSION 1
# (no checksums: slots 17..21 cleared), 2 (the checksums of SRC kept, so that
# the change reads as corruption) or 2s (checksums recomputed: a well-formed
# file that holds the change)
cat > "$W/craft.py" <<'PY'
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
src, dst, version, *edits = sys.argv[1:]
data = open(src, "rb").read()
header = np.frombuffer(data[:1024], dtype="<i4").copy()
body = bytearray(data[1024:])
for edit in edits:
    key, _, value = edit.partition("=")
    if key.startswith("f:"):
        floats = np.frombuffer(bytes(body), dtype="<f4").copy()
        floats[int(key[2:])] = float(value)
        body = bytearray(floats.tobytes())
    elif key.startswith("b:"):
        body[int(key[2:])] ^= 0x10
    else:
        header[int(key)] = int(value)
if version == "1":
    header[1] = 1
    header[17:22] = 0
else:
    header[1] = 2
    if version == "2s":
        formats._seal(header, bytes(body))
open(dst, "wb").write(header.tobytes() + bytes(body))
PY
craft() { $PYTHON "$W/craft.py" "$@" || abort "cannot craft $2"; }
# craft_run DIR SRC VERSION EDIT...: $W/DIR holding SRC (a checkpoint), crafted, as its step-2 checkpoint
craft_run() { local dir=$1; shift; mkdir -p "$W/$dir"; craft "$1" "$W/$dir/ckpt_00000002.bin" "${@:2}"; }

V="-i $W/img_train.bin -j $W/img_test.bin -b 8 -B 20 -v 0 -s 0 -m 1"
./train_vit $V -L 1 -C 16 -H 2 -x 2 -o "$W/vit" >/dev/null 2>&1 || echo "setup: train_vit failed"
./train_mamba_vit $V -L 1 -C 16 -x 2 -o "$W/mvit" >/dev/null 2>&1 || echo "setup: train_mamba_vit failed"
./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -r 7 -o "$W/gpt_b" >/dev/null 2>&1 || echo "setup: train_gpt -r 7 failed"
WATCH="gpt mamba hybrid plus vit mvit gpt_b"

# header: slots (format version 1 files, which every build reads)
craft "$W/gpt/model.bin" "$W/h_gpt_heads0.bin" 1 6=0
expect "header: GPT model file with 0 heads" "$W/h_gpt_heads0.bin: num_heads" ./train_gpt $D $small -e "$W/h_gpt_heads0.bin"
craft "$W/gpt/model.bin" "$W/h_gpt_heads3.bin" 1 6=3
expect "header: GPT model file whose heads do not divide its width" "$W/h_gpt_heads3.bin: channels 16 are not divisible by num_heads 3" ./train_gpt $D $small -e "$W/h_gpt_heads3.bin"
craft "$W/gpt/model.bin" "$W/h_gpt_heads32.bin" 1 6=32
expect "header: GPT model file with more heads than channels" "$W/h_gpt_heads32.bin: channels 16 are not divisible by num_heads 32" ./train_gpt $D $small -G 1 -g 5 -e "$W/h_gpt_heads32.bin"
craft "$W/gpt/model.bin" "$W/h_gpt_maxt0.bin" 1 3=0
expect "header: GPT model file with max_seq_len 0" "$W/h_gpt_maxt0.bin: max_seq_len" ./train_gpt $D $small -G 1 -g 5 -e "$W/h_gpt_maxt0.bin"
craft "$W/gpt/model.bin" "$W/h_gpt_slot100.bin" 1 100=5
expect "header: model file with an unused slot set" "$W/h_gpt_slot100.bin: header[100]" ./train_gpt $D $small -x 0 -e "$W/h_gpt_slot100.bin"
craft "$W/gpt/model.bin" "$W/h_gpt_shape.bin" 1 5=64 6=2 7=4096
expect "header: model file whose slots make a far larger model than its parameters" "$W/h_gpt_shape.bin: num_params" ./train_gpt $D $small -e "$W/h_gpt_shape.bin"
craft "$W/plus/model.bin" "$W/h_plus_heads0.bin" 1 6=0
expect "header: Transformer++ model file with 0 heads" "$W/h_plus_heads0.bin: num_heads" ./train_gpt_plus $D $small -e "$W/h_plus_heads0.bin"
craft "$W/vit/model.bin" "$W/h_vit_heads0.bin" 1 6=0
expect "header: ViT model file with 0 heads" "$W/h_vit_heads0.bin: num_heads" ./train_vit $V -x 1 -e "$W/h_vit_heads0.bin"
craft "$W/mamba/model.bin" "$W/h_mamba_dstate17.bin" 1 7=17
expect "header: Mamba model file with d_state 17" "$W/h_mamba_dstate17.bin: d_state" ./train_mamba $D $small -e "$W/h_mamba_dstate17.bin"
craft "$W/mamba/model.bin" "$W/h_mamba_inner0.bin" 1 6=0
expect "header: Mamba model file with inner width 0" "$W/h_mamba_inner0.bin: inner" ./train_mamba $D $small -e "$W/h_mamba_inner0.bin"
craft "$W/mvit/model.bin" "$W/h_mvit_dstate0.bin" 1 8=0
expect "header: Mamba-ViT model file with d_state 0" "$W/h_mvit_dstate0.bin: d_state" ./train_mamba_vit $V -x 1 -e "$W/h_mvit_dstate0.bin"
craft "$W/hybrid/model.bin" "$W/h_hybrid_heads0.bin" 1 6=0
expect "header: hybrid model file with attention and 0 heads" "$W/h_hybrid_heads0.bin: num_heads" ./train_hybrid $D $small -e "$W/h_hybrid_heads0.bin"
craft_run h_rng0 "$W/gpt/ckpt_00000002.bin" 1 11=0 12=0
expect "header: checkpoint whose data generator state is 0" "header[11..12]" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 4 -o "$W/h_rng0" -y 1
craft_run h_slot30 "$W/gpt/ckpt_00000002.bin" 1 30=1
expect "header: checkpoint with an unused slot set" "ckpt_00000002.bin: header[30]" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 4 -o "$W/h_slot30" -y 1
expect "header: tokens file with an unused slot set" "$W/tokens_slot9.bin: header[9]" ./train_gpt -i "$W/tokens_slot9.bin" -j $W/val.bin -k $W/vocab.bin $small
expect "header: images file with an unused slot set" "$W/images_slot10.bin: header[10]" ./train_vit -i "$W/images_slot10.bin" -j $W/img_test.bin -b 8 -x 1
expect "header: 1 TiB tokens file whose header says 4000 tokens" "$W/huge_tokens.bin: header says 4000 tokens" ./train_gpt -i "$W/huge_tokens.bin" -j $W/val.bin -k $W/vocab.bin $small
expect "header: 1 TiB images file whose header says 40 images" "$W/huge_images.bin: header says 40 images" ./train_vit -i "$W/huge_images.bin" -j $W/img_test.bin -b 8 -x 1

# checksum: changed bytes and values (format version 2 files, the trainers' own)
craft "$W/gpt/model.bin" "$W/c_gpt_flip.bin" 2 b:4000
expect "checksum: GPT model file with one byte of its parameters changed" "$W/c_gpt_flip.bin: the checksum of the parameters does not match" ./train_gpt $D $small -x 0 -e "$W/c_gpt_flip.bin"
craft "$W/mamba/model.bin" "$W/c_mamba_flip.bin" 2 b:7
expect "checksum: Mamba model file with one byte changed, under -G" "$W/c_mamba_flip.bin: the checksum" ./train_mamba $D -G 1 -g 5 -e "$W/c_mamba_flip.bin"
P_MAMBA=$($PYTHON -c "import numpy as np; print(int(np.fromfile('$W/mamba/model.bin', '<i4', 256)[9]))")
craft_run c_mamba_moment "$W/mamba/ckpt_00000002.bin" 2 b:$((12 * P_MAMBA - 3))
expect "checksum: checkpoint with one byte of its second moments changed" "ckpt_00000002.bin: the checksum of the parameters and moments does not match" ./train_mamba $D $small -L 1 -C 16 -x 4 -o "$W/c_mamba_moment" -y 1
craft_run c_seed "$W/gpt/ckpt_00000002.bin" 2 17=8
expect "checksum: checkpoint whose seed slot was changed" "ckpt_00000002.bin: the header's checksum does not match" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 4 -o "$W/c_seed" -y 1
craft_run c_vit_seed "$W/vit/ckpt_00000002.bin" 2 13=8
expect "checksum: vision checkpoint whose seed slot was changed" "ckpt_00000002.bin: the header's checksum does not match" ./train_vit $V -L 1 -C 16 -H 2 -x 4 -o "$W/c_vit_seed" -y 1
craft "$W/gpt/model.bin" "$W/c_gpt_nan_v1.bin" 1 f:5=nan
expect "checksum: model file (version 1) with a NaN parameter, under -G" "$W/c_gpt_nan_v1.bin: parameter 5 of" ./train_gpt $D -t 16 -G 1 -g 5 -e "$W/c_gpt_nan_v1.bin"
craft "$W/gpt/model.bin" "$W/c_gpt_inf.bin" 2s f:9=inf
expect "checksum: well-formed model file with an infinite parameter" "$W/c_gpt_inf.bin: parameter 9 of" ./train_gpt $D $small -x 0 -e "$W/c_gpt_inf.bin"
cp -r "$W/gpt" "$W/c_rseed" && cp -r "$W/gpt" "$W/c_data"
WATCH="c_rseed c_data"
expect "checksum: resume with a seed other than the run's" "flag -r" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 4 -r 99 -o "$W/c_rseed" -y 1
expect "checksum: resume on other training data" "$W/train5000.bin" ./train_gpt -i "$W/train5000.bin" -j $W/val.bin -k $W/vocab.bin $small -L 1 -C 16 -H 2 -x 4 -o "$W/c_data" -y 1
WATCH="gpt mamba hybrid plus vit mvit gpt_b"
out=$($PYTHON -c "
import sys; sys.path.insert(0, 'dev/reference'); sys.dont_write_bytecode = True
import formats
formats.read_model('$W/c_gpt_flip.bin')" 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"checksum"* ]]; then ok "checksum: formats.read_model refuses the changed byte: $(echo "$out" | tail -n 1)"
else fail "checksum: formats.read_model on a changed byte: exit $rc: $(echo "$out" | tail -n 1)"; fi
craft "$W/gpt/model.bin" "$W/c_gpt_v1.bin" 1
expect_ok "checksum: a model file of format version 1 loads, with a warning" "warning: $W/c_gpt_v1.bin: a model file of format version 1" ./train_gpt $D $small -x 0 -e "$W/c_gpt_v1.bin"
craft_run c_v1run "$W/gpt/ckpt_00000002.bin" 1
expect_ok "checksum: a checkpoint of format version 1 resumes, with a warning" "warning: $W/c_v1run/ckpt_00000002.bin: a checkpoint of format version 1" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 4 -o "$W/c_v1run" -y 1

# outputs: runs that do not train write nothing into a directory that holds files: one with
# a run's checkpoints, one with an evaluation's model.bin and log.jsonl
expect_ok "outputs: -x 0 -e another model into a run's directory writes nothing there" "final val loss" ./train_gpt $D $small -x 0 -e "$W/gpt_b/model.bin" -o "$W/gpt"
expect_ok "outputs: a vision -x 0 -e into a run's directory writes nothing there" "final test acc" ./train_vit $V -x 0 -e "$W/vit/model.bin" -o "$W/vit"
./train_gpt $D $small -L 1 -C 16 -H 2 -x 0 -o "$W/evaldir" >/dev/null 2>&1 || echo "setup: train_gpt -x 0 -o failed"
./train_vit $V -L 1 -C 16 -H 2 -x 0 -o "$W/vit_evaldir" >/dev/null 2>&1 || echo "setup: train_vit -x 0 -o failed"
WATCH="evaldir vit_evaldir"
expect_ok "outputs: -x 0 -e another model into an evaluation's directory writes nothing there" "final val loss" ./train_gpt $D $small -x 0 -e "$W/gpt_b/model.bin" -o "$W/evaldir"
expect_ok "outputs: a vision -x 0 -e into an evaluation's directory writes nothing there" "final test acc" ./train_vit $V -x 0 -e "$W/vit/model.bin" -o "$W/vit_evaldir"
expect "outputs: evaluating a NaN model into an evaluation's directory" "$W/c_gpt_nan_v1.bin" ./train_gpt $D $small -x 0 -e "$W/c_gpt_nan_v1.bin" -o "$W/evaldir"
expect "outputs: a fresh run into a directory that holds an evaluation's files" "$W/evaldir" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/evaldir"
# one run per directory: a second run (fresh or resuming) refuses it while the first lives; a
# resume after a SIGKILL of the first takes the directory over
WATCH="gpt"
./train_gpt $D $small -L 1 -C 16 -H 2 -x 1000000 -n 1 -o "$W/busy" >/dev/null 2>&1 & busy=$!
for i in $(seq 1 400); do [ -f "$W/busy/ckpt_00000001.bin" ] && [ -s "$W/busy/run.lock" ] && break; sleep 0.05; done
expect "outputs: a second run on a directory a live run holds" "in use by another run (pid $busy" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/busy"
expect "outputs: a resume on a directory a live run holds" "in use by another run (pid $busy" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 3 -o "$W/busy" -y 1
kill -9 $busy 2>/dev/null; wait $busy 2>/dev/null
newest=$(ls "$W/busy" | sed -n 's/^ckpt_0*\([0-9]*\)\.bin$/\1/p' | sort -n | tail -n 1)
expect_ok "outputs: after a SIGKILL of the first run, a resume takes the directory over" "taking it over from pid $busy" ./train_gpt $D $small -L 1 -C 16 -H 2 -x $((${newest:-0} + 2)) -o "$W/busy" -y 1
[ ! -e "$W/busy/run.lock" ] && ok "outputs: the resumed run released the directory at its end" || fail "outputs: $W/busy/run.lock left behind"
# a resume that fails (it diverges: learning rate 10, weight decay 10) leaves every file it
# found as it was, but for lines appended to the log
./train_gpt $D $small -L 1 -C 16 -H 2 -x 3 -n 1 -o "$W/found" >/dev/null 2>&1 || echo "setup: train_gpt -n 1 failed"
(cd "$W/found" && md5sum ckpt_* model.bin > "$W/found.md5") && cp "$W/found/log.jsonl" "$W/found_log"
./train_gpt $D $small -L 1 -C 16 -H 2 -x 60 -l 10 -c 10 -n 1 -o "$W/found" -y 1 >/dev/null 2>"$W/err"; rc=$?
if [ $rc -eq 1 ] && grep -q "^error: step .*the last good checkpoint is" "$W/err" && (cd "$W/found" && md5sum --quiet -c "$W/found.md5") && \
   cmp -s "$W/found_log" <(head -c "$(stat -c %s "$W/found_log")" "$W/found/log.jsonl"); then
  ok "outputs: a resume that diverged left the checkpoints and model it found, and the log's lines: $(head -n 1 "$W/err")"
else
  fail "outputs: a failed resume changed what it found: exit $rc, '$(head -n 1 "$W/err")'"
fi

# resume: -x at or below the checkpoint's step; a checkpoint with a NaN parameter
cp -r "$W/gpt" "$W/r_x2" && cp -r "$W/gpt" "$W/r_x1" && cp -r "$W/vit" "$W/r_vit"
WATCH="r_x2 r_x1 r_vit"
expect "resume: -y 1 -x at the checkpoint's step" "flag -x" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/r_x2" -y 1
expect "resume: -y 1 -x below the checkpoint's step" "flag -x" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 1 -o "$W/r_x1" -y 1
expect "resume: vision -y 1 -x at the checkpoint's step" "flag -x" ./train_vit $V -L 1 -C 16 -H 2 -x 2 -o "$W/r_vit" -y 1
./train_gpt $D $small -L 1 -C 16 -H 2 -x 3 -n 1 -o "$W/r_nan" >/dev/null 2>&1 || echo "setup: train_gpt -n 1 failed"
craft "$W/r_nan/ckpt_00000003.bin" "$W/r_nan/ckpt_00000003.bin" 1 f:5=nan
WATCH="r_nan"
expect "resume: newest checkpoint with a NaN parameter names the last good one" "the last good checkpoint is $W/r_nan/ckpt_00000002.bin" ./train_gpt $D $small -L 1 -C 16 -H 2 -x 6 -o "$W/r_nan" -y 1

# small: messages and flags
WATCH="gpt vit hybrid"
long="$W/$(printf 'x/%.0s' $(seq 1 600))train.bin"
expect "small: a 1,200-byte path keeps its reason" "(No such file or directory)" ./train_gpt -i "$long" -j $W/val.bin -k $W/vocab.bin $small
expect "small: a newline in a path is escaped" 'bad\x0aname.bin' ./train_gpt -i "$W/bad"$'\n'"name.bin" -j $W/val.bin -k $W/vocab.bin $small
expect "small: an escape sequence in a flag is escaped" "'\\x1b[2J'" ./train_gpt $D $small -S $'\e[2J'
expect_ok "small: -E under the vision trainers' cpu preset" "1 epochs of 5 steps (5 steps)" ./train_vit $V -L 1 -C 16 -H 2 -E 1
expect "small: -x and -E together" "flags -x and -E" ./train_vit $V -L 1 -C 16 -H 2 -E 1 -x 3
expect_ok "small: a prompt that reads -S" "generated 5 tokens" ./train_gpt $D -t 16 -G 1 -P -S -g 5 -e "$W/gpt/model.bin"
expect "small: -A with -e of another pattern" "flag -A" ./train_hybrid $D $small -A AM -x 1 -e "$W/hybrid/model.bin"
expect "small: -P with -e of another patch size" "flag -P" ./train_vit $V -P 8 -x 1 -e "$W/vit/model.bin"
expect "small: -C with -e of another width" "flag -C: 32, but" ./train_vit $V -C 32 -x 1 -e "$W/vit/model.bin"
expect "small: -L with -e (Mamba-ViT) of another depth" "flag -L: 3, but" ./train_mamba_vit $V -L 3 -x 1 -e "$W/mvit/model.bin"

# a run that diverges (learning rate 10, weight decay 10: the weights grow
# 99-fold a step) must stop at the first non-finite loss or norm, keep the
# checkpoints written before, and write none after
for T in train_gpt train_mamba; do
  rm -rf "$W/nan_$T"
  ./$T $D $small -L 1 -C 16 -x 60 -l 10 -c 10 -n 1 -o "$W/nan_$T" >/dev/null 2>"$W/err"; rc=$?
  msg=$(head -n 1 "$W/err")
  last=$(ls "$W/nan_$T" | grep ckpt_ | sort | tail -n 1)
  stopped=$(echo "$msg" | sed -n 's/^error: step \([0-9]*\): .*/\1/p')
  if [ $rc -eq 1 ] && [ "$(wc -l < "$W/err")" -eq 1 ] && [ -n "$stopped" ] && [ -n "$last" ] && \
     [[ "$msg" == *"the last good checkpoint is $W/nan_$T/$last"* ]] && [ ! -f "$W/nan_$T/model.bin" ] && \
     [ "$(echo "$last" | sed 's/ckpt_0*\([0-9]*\).bin/\1/')" -lt "$stopped" ]; then
    ok "$T stops on divergence: $msg"
  else
    fail "$T divergence: exit $rc, '$msg', newest checkpoint '$last'"
  fi
done

summary
