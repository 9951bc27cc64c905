#!/usr/bin/env bash
# Fuzzes each file reader with libFuzzer under AddressSanitizer and
# UndefinedBehaviorSanitizer for FUZZ_SECONDS (default 60) each, starting
# from small valid files (tokens, vocabulary, task files, model files and checkpoints of
# format versions 2 and 1, reference state, images), and the loaders that
# read a file from disk, header first (the "files" target). Needs clang and
# libclang-rt-14-dev (Debian).
# Exits non-zero if any reader crashed; crash inputs are kept in build/fuzz/.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
SECONDS_EACH=${FUZZ_SECONDS:-60}
out=build/fuzz
mkdir -p "$out"
# (linked as the host backend's programs are: the readers' checks include the selective scan's limits)
blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fopenmp \
  -I/usr/include/x86_64-linux-gnu dev/fuzz/fuzz_readers.cpp -o "$out/fuzz_readers" \
  -L$blas -Wl,-rpath,$blas -lopenblas -lboost_context -lm || exit 1

# seed corpora: one small valid file of each kind
$PYTHON - "$out" <<'PY'
import os, struct, sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
out = sys.argv[1]
for t in ["tokens", "vocab", "task", "model", "checkpoint", "state", "images", "files"]:
    os.makedirs(f"{out}/corpus_{t}", exist_ok=True)
formats.write_tokens(f"{out}/corpus_tokens/seed", np.arange(50) % 5, 5)
formats.write_vocab(f"{out}/corpus_vocab/seed", ["a", "b", "\n", "é", "xyz"])
# the harness's expected GPT: maxT 8, V 5, L 1, H 1, C 4, F 8 (P 257); model files and
# checkpoints of format version 2 (checksums) and 1 (none)
config = {"maxT": 8, "V": 5, "L": 1, "H": 1, "C": 4, "F": 8, "P": 257}
params = np.linspace(-1, 1, 257, dtype=np.float32)
formats.write_model(f"{out}/corpus_model/seed", formats.KIND_GPT, config, params)
formats.write_checkpoint(f"{out}/corpus_checkpoint/seed", formats.KIND_GPT, config, 3, 12345, 67890, 2, 4, 1337, 50,
                         params, params / 10, np.abs(params) / 100)
for t in ["model", "checkpoint"]:
    data = bytearray(open(f"{out}/corpus_{t}/seed", "rb").read())
    header = np.frombuffer(bytes(data[:1024]), dtype="<i4").copy()
    header[1] = 1
    header[17:22] = 0
    open(f"{out}/corpus_{t}/seed_v1", "wb").write(header.tobytes() + bytes(data[1024:]))
s = np.zeros(256, dtype="<i4"); s[:13] = [formats.MAGIC_STATE, 1, 1, 8, 5, 1, 1, 4, 8, 10, 2, 3, 2]
rec = lambda name, dt, shape, data: name.encode().ljust(48, b"\0") + struct.pack("<6i", dt, len(shape), *(list(shape) + [0] * (4 - len(shape)))) + data
open(f"{out}/corpus_state/seed", "wb").write(s.tobytes() + rec("params", 0, [10], np.ones(10, "<f4").tobytes())
                                             + rec("inputs", 1, [2, 3], np.arange(6, dtype="<i4").tobytes()))
img = np.zeros(256, dtype="<i4"); img[:7] = [20261106, 1, 2, 3, 4, 4, 10]
open(f"{out}/corpus_images/seed", "wb").write(img.tobytes() + bytes([3] + list(range(48)) + [7] + list(range(48))))
# a task file: 3 sequences of 4 tokens, V 5, induction heads, 1 target each (65535 elsewhere)
task = np.zeros(256, dtype="<i4"); task[:7] = [20261107, 1, 3, 4, 5, 2, 1]
seqs = [[0, 4, 2, 4] + [65535, 65535, 65535, 2], [4, 1, 3, 4] + [65535, 65535, 65535, 1], [3, 4, 0, 4] + [65535] * 3 + [0]]
open(f"{out}/corpus_task/seed", "wb").write(task.tobytes() + np.array(seqs, dtype="<u2").tobytes())
for t in ["tokens", "vocab", "task", "model", "checkpoint", "images"]:  # the loaders that read a file's header first
    for name in os.listdir(f"{out}/corpus_{t}"):
        open(f"{out}/corpus_files/{t}_{name}", "wb").write(open(f"{out}/corpus_{t}/{name}", "rb").read())
PY

status=0
for t in tokens vocab task model checkpoint state images files; do
  echo "=== fuzzing the $t reader for $SECONDS_EACH s"
  FUZZ_TARGET=$t "$out/fuzz_readers" -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$out/crash_${t}_" "$out/corpus_$t" > "$out/$t.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
  if [ $rc -eq 0 ]; then echo "ok   $t: $runs inputs, no crash"; else echo "FAIL $t: exit $rc, see $out/$t.log"; tail -n 20 "$out/$t.log"; status=1; fi
done
rm -f "$out"/files_input_*.bin  # the files target's input, written anew for each
exit $status
