#!/usr/bin/env bash
# One prepared check for a machine with a GPU (under 8 minutes): build every
# program with nvcc for that GPU, run the tests there, then time each
# trainer at its seed config beside PyTorch on the same GPU and print one
# summary table. Usage: dev/gpu_check.sh  (GPU_COMPUTE_CAPABILITY=90 to force)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader || { echo "no GPU visible"; exit 1; }
CC=${GPU_COMPUTE_CAPABILITY:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)}
mk() { make -s BACKEND=cuda GPU_COMPUTE_CAPABILITY="$CC" PYTHON="$PYTHON" "$@"; }

echo "=== build (sm_$CC) and tests on the GPU"
mk clean
mk test_backend test_gpt test_gpt_plus train_gpt test_mamba train_mamba test_augment test_vit test_mamba_vit train_vit train_mamba_vit \
   test_generate test_attention dev/cuda/selective_scan || exit 1
mk data/ref_gpt.bin data/ref_gpt_plus.bin data/ref_mamba.bin data/ref_vit.bin data/ref_mamba_vit.bin data/ref_attention.bin data || exit 1
dev/run_tests.sh test_backend test_gpt test_gpt_plus test_mamba test_augment test_vit test_mamba_vit test_generate test_attention | grep -E "FAIL|passed"
./dev/cuda/selective_scan 64 256 512 16 | grep -E "forward|FAIL|passed"

echo "=== seed configs: ours beside PyTorch on this GPU"
rows=()
ms_of() { awk '/^step .*ms \|/ { for (i = 1; i <= NF; i++) if ($(i+1) == "ms") v = $i; n++; if (n > 3) { s += v; c++ } } END { printf "%.2f", s / c }'; }
gpt_ms=$(./train_gpt -S seed -b 64 -t 256 -x 23 -v 0 -m 1 -g 0 | ms_of)
gpt_torch=$($PYTHON dev/bench_torch.py --model gpt --device cuda --B 64 --T 256 --C 256 --L 4 --H 4 --F 512 --steps 20 --warmup 3 | awk '/^torch_ms_per_step/ {print $2}')
rows+=("gpt B64 T256 C256 L4|$gpt_ms|$gpt_torch")
mamba_ms=$(./train_mamba -S seed -b 64 -t 256 -x 23 -v 0 -m 1 -g 0 | ms_of)
mamba_torch=$($PYTHON dev/bench_torch.py --model mamba --device cuda --B 64 --T 256 --C 256 --L 5 --N 16 --steps 20 --warmup 3 | awk '/^torch_ms_per_step/ {print $2}')
rows+=("mamba B64 T256 C256 L5|$mamba_ms|$mamba_torch")

printf "\n%-28s %14s %14s %12s %12s\n" config "ours ms/step" "torch ms/step" "ours tok/s" "torch tok/s"
for r in "${rows[@]}"; do
  IFS='|' read -r name ours torch <<< "$r"
  awk -v n="$name" -v a="$ours" -v b="$torch" 'BEGIN { printf "%-28s %14.2f %14.2f %12.0f %12.0f\n", n, a, b, 64*256/(a/1000), 64*256/(b/1000) }'
done

echo "=== generation at the seed widths: tokens/s beside PyTorch on this GPU"
LENGTHS="256 4096" MAMBA_EXTRA="" BATCHES="1 16" dev/bench_generate

echo "=== vision, seed config (B 128, C 256, L 6): images/s beside PyTorch on this GPU"
STEPS=20 dev/bench_vision
