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
EOF

D="-i $W/train.bin -j $W/val.bin -k $W/vocab.bin"
small="-b 2 -t 16 -v 0 -m 1 -g 0"
# reference runs that leave checkpoints and models behind
./train_gpt $D $small -L 1 -C 16 -H 2 -x 2 -o "$W/gpt" >/dev/null 2>&1 || echo "setup: train_gpt failed"
./train_mamba $D $small -L 1 -C 16 -x 2 -o "$W/mamba" >/dev/null 2>&1 || echo "setup: train_mamba failed"
./train_hybrid $D $small -A MA -C 16 -H 2 -x 2 -o "$W/hybrid" >/dev/null 2>&1 || echo "setup: train_hybrid failed"
head -c 5000 "$W/gpt/ckpt_00000002.bin" > "$W/gpt_truncated_ckpt.bin"
head -c 3000 "$W/mamba/model.bin" > "$W/mamba_truncated_model.bin"
mkdir -p "$W/trunc_ckpt" && cp "$W/gpt_truncated_ckpt.bin" "$W/trunc_ckpt/ckpt_00000002.bin"

WATCH="gpt mamba hybrid trunc_ckpt plus"  # expect: these run directories must not change

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

# the hybrid's layer pattern
expect "hybrid pattern with a bad letter" "-A" ./train_hybrid $D $small -A MAX
expect "hybrid empty pattern" "-A" ./train_hybrid $D $small -A ""
expect "hybrid pattern of too many layers" "-A" ./train_hybrid $D $small -A MAMAMAMAMAMAMAMA
expect "hybrid given -L" "-L" ./train_hybrid $D $small -L 2
expect "train_gpt given -A" "-A" ./train_gpt $D $small -A MA
expect "hybrid heads not dividing the width" "-H" ./train_hybrid $D $small -A MA -C 16 -H 3
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
