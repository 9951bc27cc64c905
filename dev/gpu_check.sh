#!/usr/bin/env bash
# One prepared check for a machine with a GPU, sized to finish in about 8
# minutes on an H200 (each part has its own time limit, and the long runs
# are skipped when the time is running out):
#   1. build every program with nvcc for that GPU (make -j);
#   2. every test program on the GPU;
#   3. compute-sanitizer memcheck, racecheck, initcheck and synccheck on the
#      four model test programs (their shapes are small already; each run is
#      cut off after SANITIZE_S seconds and reported as such);
#   4. time per kernel for a few steps of each trainer (nsys when present:
#      its CUDA kernel summary and the NVTX ranges);
#   5. tokens/s and images/s at the seed configs beside PyTorch eager on the
#      same GPU, and generation speed;
#   6. the full seed runs ./train_mamba and ./train_gpt (5000 steps, B 64,
#      T 256) with their final val loss and wall time (the seed: 1.463);
# then one summary table.
#   dev/gpu_check.sh                  on the GPU machine
#   GPU_CHECK_DRY=1 dev/gpu_check.sh  a rehearsal on a machine without a GPU:
#                                     the host backend, tiny step counts, no
#                                     sanitizer or nsys (tests the script)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
# the interpreter that has torch: Debian's /usr/bin/python3 if it does, else python3 on PATH
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3; /usr/bin/python3 -c "import torch" 2>/dev/null && PYTHON=/usr/bin/python3
fi
DRY=${GPU_CHECK_DRY:-0}
SANITIZE_S=${SANITIZE_S:-20}
BUDGET_S=${BUDGET_S:-480}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
summary=()
add() { summary+=("$1|$2"); }

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; mk() { make -s "$@"; }; SEED_STEPS=3; BENCH_STEPS=2
else
  nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader || { echo "no GPU visible"; exit 1; }
  CC=${GPU_COMPUTE_CAPABILITY:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)}
  DEVICE=cuda; mk() { make -s -j"$(nproc)" BACKEND=cuda GPU_COMPUTE_CAPABILITY="$CC" PYTHON="$PYTHON" "$@"; }
  SEED_STEPS=5000; BENCH_STEPS=20
fi
TESTS="test_backend test_gpt test_gpt_plus test_mamba test_augment test_vit test_mamba_vit test_generate test_attention test_hybrid test_pixels"

echo "=== 1. build"
[ "$DRY" = 1 ] || mk clean
mk $TESTS train_gpt train_gpt_plus train_mamba train_hybrid train_vit train_mamba_vit dev/cuda/selective_scan || { echo "build failed"; exit 1; }
mk data/ref_gpt.bin data/ref_gpt_plus.bin data/ref_mamba.bin data/ref_vit.bin data/ref_mamba_vit.bin data/ref_attention.bin data/ref_hybrid.bin data cifar-synthetic || exit 1
add "build" "ok, $(elapsed) s"

echo "=== 2. tests"
TEST_JOBS=1 dev/run_tests.sh $TESTS > build/gpu_check_tests.log 2>&1
grep -E "^FAIL" build/gpu_check_tests.log | head -20
add "tests" "$(tail -n 1 build/gpu_check_tests.log)"
./dev/cuda/selective_scan 64 256 512 16 | grep -E "forward|backward|FAIL|passed"

echo "=== 3. compute-sanitizer"
if [ "$DRY" = 0 ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck initcheck synccheck; do
    for t in test_gpt test_mamba test_vit test_mamba_vit; do
      log=build/sanitizer_${tool}_$t.log
      timeout "$SANITIZE_S" compute-sanitizer --tool "$tool" --error-exitcode 99 ./"$t" > "$log" 2>&1; rc=$?
      errs=$(grep -E "ERROR SUMMARY: [0-9]+" "$log" | tail -n 1 | sed 's/.*ERROR SUMMARY: \([0-9]*\).*/\1/')
      case $rc in
        124) res="cut off after ${SANITIZE_S} s, no error before (${errs:-?} in summary)";;
        0) res="0 errors";;
        *) res="exit $rc, ${errs:-?} errors: $(grep -m1 -E '=========  ?(Invalid|Race|Uninit|Barrier|.*error)' "$log" | cut -c1-100)";;
      esac
      echo "$tool $t: $res"; add "sanitizer $tool $t" "$res"
    done
  done
else
  echo "skipped (dry run or no compute-sanitizer)"; add "sanitizer" "skipped"
fi

echo "=== 4. time per kernel"
if [ "$DRY" = 0 ] && command -v nsys >/dev/null; then
  for m in gpt mamba; do
    nsys profile -o build/nsys_$m --force-overwrite true --trace cuda,nvtx ./train_$m -S seed -x 6 -v 0 -m 1 -g 0 > /dev/null 2>&1
    echo "--- train_$m, 6 steps: kernels by total time"
    nsys stats --report cuda_gpu_kern_sum --format csv build/nsys_$m.nsys-rep 2>/dev/null |
      awk -F, 'NR > 1 && n < 15 { gsub(/"/, ""); printf "%6.1f%% %10.0f us total %6s calls  %s\n", $1, $2 / 1000, $3, substr($9, 1, 60); n++ }'
    echo "--- train_$m: NVTX ranges"
    nsys stats --report nvtx_sum --format csv build/nsys_$m.nsys-rep 2>/dev/null |
      awk -F, 'NR > 1 && n < 15 { gsub(/"/, ""); printf "%6.1f%% %10.0f us total %6s calls  %s\n", $1, $2 / 1000, $3, $NF; n++ }'
  done
  add "kernel times" "nsys: build/nsys_gpt, build/nsys_mamba"
else
  echo "skipped (dry run or no nsys)"; add "kernel times" "skipped"
fi

echo "=== 5. seed configs beside PyTorch eager on this device"
# mean ms of the step lines after the first three (warmup)
ms_of() { awk '/^step .*ms \|/ { for (i = 1; i <= NF; i++) if ($(i+1) == "ms") v = $i; n++; if (n > 3) { s += v; c++ } }
               END { if (c) printf "%.2f", s / c; else printf "nan" }'; }
torch_ms() { $PYTHON dev/bench_torch.py --device "$DEVICE" --steps "$BENCH_STEPS" --warmup 3 "$@" | awk '/^torch_ms_per_step/ {print $2}'; }
bench_b=64; [ "$DRY" = 1 ] && bench_b=4
for m in gpt mamba; do
  if [ $m = gpt ]; then shape=(-C 256 -L 4 -H 4 -F 512); tshape=(--model gpt --C 256 --L 4 --H 4 --F 512)
  else shape=(-C 256 -L 5); tshape=(--model mamba --C 256 --L 5 --N 16); fi
  ours=$(./train_$m -S seed "${shape[@]}" -b $bench_b -t 256 -x $((BENCH_STEPS + 3)) -v 0 -m 1 -g 0 | ms_of)
  torch=$(torch_ms "${tshape[@]}" --B $bench_b --T 256)
  [ -n "$torch" ] || { echo "$m: PyTorch's step failed ($PYTHON dev/bench_torch.py)"; torch=nan; }
  line=$(awk -v a="$ours" -v b="$torch" -v n=$((bench_b * 256)) 'BEGIN { printf "ours %.2f ms (%.0f tok/s), torch %.2f ms (%.0f tok/s), ratio %.2f", a, n/(a/1000), b, n/(b/1000), a/b }')
  echo "$m B $bench_b T 256: $line"; add "$m B$bench_b T256 step" "$line"
done
if [ "$DRY" = 0 ]; then
  echo "--- generation"
  LENGTHS="256 4096" MAMBA_EXTRA="" BATCHES="1 16" WINDOW_MAX=256 dev/bench_generate
  echo "--- vision"
  STEPS=$BENCH_STEPS dev/bench_vision
fi

echo "=== 6. full seed runs"
for m in mamba gpt; do
  left=$(( BUDGET_S - $(elapsed) ))
  if [ "$DRY" = 0 ] && [ "$left" -lt 120 ]; then
    echo "train_$m: skipped, $left s of the budget left"; add "seed run $m" "skipped ($left s left)"; continue
  fi
  # the run is cut off when the budget is spent; its last step line says how far it got
  timeout $(( left > 60 ? left : 60 )) ./train_$m -S seed -x $SEED_STEPS -g 64 > build/gpu_check_seed_$m.log 2>&1
  final=$(grep -E "^final val loss" build/gpu_check_seed_$m.log)
  [ -n "$final" ] || final="cut off: $(grep -E '^step ' build/gpu_check_seed_$m.log | tail -n 1 | cut -c1-90)"
  echo "train_$m: $final"; add "seed run $m ($SEED_STEPS steps)" "$final"
done

echo
echo "=== summary ($(elapsed) s)"
for r in "${summary[@]}"; do IFS='|' read -r k v <<< "$r"; printf "%-34s %s\n" "$k" "$v"; done
