#!/usr/bin/env bash
# The one prepared check for a borrowed GPU machine. Such a machine gives
# about 15 minutes in all (its start included), at most 10 minutes a command;
# what comes back is the end of the output and the files under $OUT. So the
# check runs under one deadline that every stage respects, the most valuable
# results first, and writes its summary to $OUT as each result arrives.
#
# 1. Here, on a machine without a GPU (reference states, token data, a
#    small synthetic image set and a gzipped Fashion-MNIST subset; prints
#    the size to send, at most 64 MiB):
#      dev/gpu_check.sh --prepare
# 2. On the GPU machine, from the repository root, sending build/gpu_carry
#    along (the device tool: carry ["build/gpu_carry"], timeout_s 600):
#      dev/gpu_check.sh
#    Stages, each cut off by the deadline (GPU_CHECK_DEADLINE_S, default 540):
#      build      every program with nvcc for the GPU it finds (make -j)
#      tests      every test program on the GPU
#      nccl       train_mamba under `mpirun -np 1` (NCCL's collectives over one
#                 rank) against the single process: the same step lines
#      bench      ms and tokens/s (images/s) per step of every trainer (the
#                 Mamba-2 too) at the seed configuration, beside PyTorch on
#                 the same GPU; then the SSD playground (dev/cuda/ssd)
#      fashion    the ViT, the Mamba-ViT and the bidirectional Mamba-ViT at
#                 the seed widths on Fashion-MNIST (20,000 training images,
#                 patch 4, fixed steps): test accuracy on all 10,000 test
#                 images and ms per step
#      diffusion  train_diffusion's ViT and bidirectional Mamba denoisers at
#                 the seed widths on the Fashion-MNIST subset (2,000 steps):
#                 test loss, ms per step, 100 samples (DDIM 100) and their
#                 ms per image (the samples come back in $OUT)
#      synthetic  the Mamba paper's induction heads (data written here by
#                 dev/data/synthetic.py): a 2-layer Mamba trained as on the
#                 CPU (doc/results.md: -U 1e-9, then the dt stretch -Y 1e6) at
#                 T 256, evaluated at T 2^10 and 2^20 (in chunks, -d): loss,
#                 accuracy, time and peak memory of each
#      seed runs  train_mamba and train_gpt at the seed configuration for as
#                 long as the time left allows: val loss and ms per step
#      sanitizer  compute-sanitizer memcheck on test_gpt and test_mamba, when
#                 the device accepts it
#    $OUT/summary.txt has one line per result, appended as it comes, and is
#    printed last; $OUT/<stage>.log holds each stage's full output.
# 3. Optional, a second command for what does not fit the first:
#      GPU_CHECK_LONG=1 dev/gpu_check.sh
#    the full 5000-step seed runs of train_mamba and train_gpt, and ncu's
#    kernel times for two training steps of each.
#
# GPU_CHECK_DRY=1 rehearses the same stages on the host backend (CPU presets,
# few steps, no sanitizer), with the same deadline logic and $OUT files (a
# temporary folder when OUT is unset); dev/test_gpu_check.sh runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
CARRY=build/gpu_carry
TESTS="test_backend test_gpt test_gpt_plus test_mamba test_mamba2 test_hybrid test_vit test_mamba_vit test_diffusion test_generate test_attention test_augment test_pixels"
TRAINERS="train_gpt train_gpt_plus train_mamba train_hybrid train_vit train_mamba_vit train_diffusion"
IMAGES=gpu_check_synthetic  # the small synthetic image set: 4096 train, 1024 test images
FASHION=gpu_check_fashion   # Fashion-MNIST: the first 20,000 training images and all 10,000 test images
FASHION_TRAIN=20000

# the interpreter that has torch: $PYTHON, else python3 on PATH, else Debian's
for p in "${PYTHON:-}" python3 /usr/bin/python3; do
  if [ -n "$p" ] && "$p" -c "import torch" 2>/dev/null; then PYTHON=$p; break; fi
done
export PYTHON=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  set -e
  make -s ref-states data/tinyshakespeare_train.bin
  mkdir -p "$CARRY"
  [ -f "$CARRY/${IMAGES}_train.bin" ] ||
    "$PYTHON" dev/data/cifar10.py --synthetic --train-count 4096 --test-count 1024 --prefix $IMAGES --out "$CARRY" > /dev/null
  # Fashion-MNIST travels gzipped (the device has no Debian package): a subset, to stay within 64 MiB
  if [ ! -f "$CARRY/${FASHION}_train.bin.gz" ]; then
    "$PYTHON" dev/data/fashion_mnist.py --train-count $FASHION_TRAIN --prefix $FASHION --out "$CARRY" > /dev/null
    gzip -f "$CARRY/${FASHION}_train.bin" "$CARRY/${FASHION}_test.bin"
  fi
  # reference states up to 16 MiB travel; a larger one is written on the device (PyTorch there, seconds)
  for f in data/ref_*.bin; do
    if [ "$(stat -c %s "$f")" -le $((16 << 20)) ]; then cp "$f" "$CARRY/"; else echo "left for the device: $f"; fi
  done
  cp data/tinyshakespeare_train.bin data/tinyshakespeare_val.bin data/tinyshakespeare_vocab.bin "$CARRY/"
  kib=$(du -sk "$CARRY" | cut -f1)
  echo "prepared $CARRY: $(ls "$CARRY" | wc -l) files, $((kib / 1024)) MiB (the limit is 64 MiB)"
  [ "$kib" -le $((64 * 1024)) ] || { echo "error: $CARRY is over 64 MiB"; exit 1; }
  echo "send it with: carry [\"$CARRY\"], command: dev/gpu_check.sh, timeout_s 600"
  exit 0
fi

DRY=${GPU_CHECK_DRY:-0}
LONG=${GPU_CHECK_LONG:-0}
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-540}
RESERVE_S=5   # kept for the summary at the end
if [ -z "${OUT:-}" ]; then
  if [ "$DRY" = 1 ]; then OUT=$(mktemp -d); else OUT=build/gpu_check; fi
fi
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( DEADLINE_S - RESERVE_S - $(elapsed) )); }
# one summary line, in the file at once
note() { printf '%-30s %s\n' "$1" "$2" | tee -a "$SUMMARY"; }
# limited LIMIT LOG CMD...: CMD with at most LIMIT seconds and never past the
# deadline, its output appended to LOG; status 124 when cut off, 200 when no
# time was left to start it
limited() {
  local limit=$1 log=$2 l
  shift 2
  l=$(left)
  [ "$l" -lt "$limit" ] && limit=$l
  if [ "$limit" -lt 3 ]; then echo "(not started: $(left) s left) $*" >> "$log"; return 200; fi
  echo "\$ $*" >> "$log"
  timeout -k 5 "$limit" "$@" >> "$log" 2>&1
}
status_word() { case $1 in 0) echo ok;; 124) echo "cut off";; 200) echo "not started, no time left";; *) echo "exit $1";; esac; }
# the mean ms of a trainer's step lines after the first three (warmup); nan when none
mean_step_ms() {
  awk '/^step .*ms \|/ { for (i = 1; i <= NF; i++) if ($(i+1) == "ms") v = $i; n++; if (n > 3) { s += v; c++ } }
       END { if (c) printf "%.2f", s / c; else printf "nan" }' "$1"
}

echo "=== gpu_check: deadline ${DEADLINE_S} s, results in $OUT"
if [ "$DRY" = 1 ]; then
  note "machine" "dry run on the host backend ($(nproc) cores); python $PYTHON"
  MAKE=(make -s -j"$(nproc)")
  PRESET=cpu; BENCH_STEPS=2; SEED_STEPS=300
else
  gpu=$(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
  [ -n "$gpu" ] || { note "machine" "no GPU visible (nvidia-smi); GPU_CHECK_DRY=1 rehearses on the CPU"; exit 1; }
  CC=${GPU_COMPUTE_CAPABILITY:-$(echo "$gpu" | cut -d, -f2 | tr -d ' .')}
  note "machine" "$gpu; $(nproc) cores; python $PYTHON ($("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
  MAKE=(make -s -j"$(nproc)" BACKEND=cuda GPU_COMPUTE_CAPABILITY="$CC" PYTHON="$PYTHON")
  PRESET=seed; BENCH_STEPS=20; SEED_STEPS=5000
fi

echo "=== data"
mkdir -p data
[ -d "$CARRY" ] && cp -n "$CARRY"/*.bin data/ 2>/dev/null
for f in "$CARRY"/*.bin.gz; do
  [ -f "$f" ] && [ ! -f "data/$(basename "$f" .gz)" ] && gunzip -c "$f" > "data/$(basename "$f" .gz)"
done
limited 120 "$OUT/build.log" "${MAKE[@]}" ref-states data/tinyshakespeare_train.bin
rc=$?; note "data" "$(status_word $rc)$([ -d "$CARRY" ] && echo ", from $CARRY")"
if [ -f data/${IMAGES}_train.bin ]; then IMG=data/$IMAGES; else IMG=data/cifar10_synthetic; fi

echo "=== build"
t0=$(date +%s)
limited 300 "$OUT/build.log" "${MAKE[@]}" $TESTS $TRAINERS dev/cuda/ssd
rc=$?; note "build" "$(status_word $rc), $(( $(date +%s) - t0 )) s"
[ $rc = 0 ] || tail -n 20 "$OUT/build.log"

echo "=== tests"
for t in $TESTS; do
  t0=$(date +%s)
  limited 90 "$OUT/tests.log" ./$t
  rc=$?
  res=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$OUT/tests.log" | tail -n 1)
  [ $rc = 0 ] || res="$(status_word $rc)"
  note "$t" "$res ($(( $(date +%s) - t0 )) s)"
  [ $rc = 200 ] && break
done
grep -E '^FAIL' "$OUT/tests.log" | head -n 20

echo "=== data parallel smoke test (one rank under mpirun: NCCL on a GPU, MPI on the host)"
# mpirun -np 1 runs the data parallel code path (llmc/distributed.h) with its
# collectives over one rank; its step lines must be the single process's, digit for digit
log=$OUT/nccl.log
: > "$log"
if ! command -v mpirun > /dev/null || ! grep -q MPI_Init train_mamba 2>/dev/null; then
  note "nccl smoke" "skipped (no mpirun, or the trainers were built without MPI)"
else
  smoke="-S $PRESET -L 2 -b 8 -x 10 -v 0 -m 1 -g 0"
  limited 60 "$log" env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -q -np 1 ./train_mamba $smoke
  rc=$?
  limited 60 "$OUT/nccl_single.log" ./train_mamba $smoke
  steps() { grep -E '^step ' "$1" | sed 's/ | [0-9.]* ms | .*//'; }
  if [ $rc = 0 ] && [ "$(steps "$log" | wc -l)" = 10 ] && diff -q <(steps "$log") <(steps "$OUT/nccl_single.log") > /dev/null; then
    note "nccl smoke" "ok: mpirun -np 1 prints the single process's 10 step lines, digit for digit"
  else
    note "nccl smoke" "$(status_word $rc), step lines differ from the single process's (nccl.log, nccl_single.log)"
  fi
fi

echo "=== bench (preset $PRESET beside PyTorch on the same device)"
device=cpu; [ "$DRY" = 1 ] || device=cuda
# the seed configuration's shapes on a GPU; a small one in the rehearsal (the same on both sides)
if [ "$DRY" = 1 ]; then C=64; LM_L=2; VIS_L=2; T=64; else C=256; LM_L=4; VIS_L=6; T=256; fi
for m in gpt gpt_plus mamba mamba2 hybrid vit mamba_vit; do
  lm="-C $C -t $T -g 0 -m 1"
  prog=train_$m
  case $m in
    gpt) flags="$lm -L $LM_L -H 4 -F $((2 * C))"; torch_args="--model gpt --C $C --L $LM_L --H 4 --F $((2 * C)) --T $T"; unit=tok;;
    gpt_plus) flags="$lm -L $LM_L -H 4"; torch_args=""; unit=tok;;
    mamba) flags="$lm -L $((LM_L + 1))"; torch_args="--model mamba --C $C --L $((LM_L + 1)) --N 16 --T $T"; unit=tok;;
    mamba2) prog=train_mamba; flags="$lm -M 2 -L $((LM_L + 1))"
            torch_args="--model mamba2 --C $C --L $((LM_L + 1)) --N 64 --headdim 64 --T $T"; unit=tok;;
    hybrid) flags="$lm -A MAMA"; torch_args=""; unit=tok;;
    vit|mamba_vit) flags="-i ${IMG}_train.bin -j ${IMG}_test.bin -s 1 -m 1 -C $C -L $VIS_L"
                   torch_args="--model $m --C $C --L $VIS_L --dropout 0.1"; unit=images;;
  esac
  if [ "$DRY" = 1 ]; then b=4; else b=64; [ $unit = images ] && b=128; fi
  one=$OUT/.bench_one
  : > "$one"
  limited 60 "$one" ./$prog -S $PRESET -b $b -x $((BENCH_STEPS + 3)) -v 0 $flags
  rc=$?
  ours=$(mean_step_ms "$one")
  cat "$one" >> "$OUT/bench.log"
  per_step=$b; [ $unit = tok ] && per_step=$((b * T))
  line="ours $(status_word $rc) $ours ms"
  [ "$ours" != nan ] && line="$line ($(awk -v a="$ours" -v n=$per_step 'BEGIN { printf "%.0f", n / (a / 1000) }') $unit/s)"
  if [ -n "$torch_args" ] && [ "$ours" != nan ]; then
    : > "$one"
    limited 90 "$one" "$PYTHON" dev/bench_torch.py --device $device --B $b --steps $BENCH_STEPS --warmup 3 $torch_args
    torch=$(awk '/^torch_ms_per_step/ { print $2 }' "$one")
    cat "$one" >> "$OUT/bench.log"
    [ -n "$torch" ] && line="$line, torch $torch ms, ratio $(awk -v a="$ours" -v t="$torch" 'BEGIN { printf "%.2f", a / t }')"
  fi
  note "bench $m B$b" "$line"
done
rm -f "$OUT/.bench_one"
# the SSD playground: its checks and the times of the sequential and chunked kernels (seed widths; small in the rehearsal)
ssd_args=""; [ "$DRY" = 1 ] && ssd_args="2 64 2 64 64"
limited 30 "$OUT/ssd.log" ./dev/cuda/ssd $ssd_args
rc=$?
note "ssd playground" "$(status_word $rc): $(grep -E '^[0-9]+ passed' "$OUT/ssd.log"); $(grep -E '^sequential forward' "$OUT/ssd.log")"

echo "=== Fashion-MNIST (real images; in the rehearsal, a few steps on the synthetic set if it is absent)"
if [ -f data/${FASHION}_train.bin ]; then FM=data/$FASHION
elif [ -f data/fashion_mnist_train.bin ]; then FM=data/fashion_mnist
else FM=$IMG; fi
if [ "$DRY" = 1 ]; then FM_STEPS=30; FM_EVAL=2; else FM_STEPS=3000; FM_EVAL=0; fi  # -m: eval batches, 0 = all
for m in vit mamba_vit mamba_vit_bi; do
  log=$OUT/fashion_$m.log
  : > "$log"
  prog=train_$m; extra=""
  [ $m = mamba_vit_bi ] && { prog=train_mamba_vit; extra="-M bi"; }
  t0=$(date +%s)
  # the preset's widths, patch 4 (49 tokens of 28 x 28), the augmentation of doc/results.md
  limited 75 "$log" ./$prog -S $PRESET $extra -i ${FM}_train.bin -j ${FM}_test.bin -P 4 -x $FM_STEPS -v 0 -m $FM_EVAL -s 100 \
    -A 1 -f 1 -d 2 -R 0 -z 0 -w 0
  rc=$?
  acc=$(grep -E '^final test acc' "$log" | tail -n 1)
  note "fashion $m" "$(status_word $rc) after $(( $(date +%s) - t0 )) s, ${acc:-no final accuracy}, $(mean_step_ms "$log") ms/step"
done

echo "=== diffusion (train_diffusion at the seed widths on the Fashion-MNIST subset: the ViT and the bidirectional Mamba denoisers)"
if [ "$DRY" = 1 ]; then DF_STEPS=10; DF_SAMPLE="-G 1 -k 5"; else DF_STEPS=2000; DF_SAMPLE="-G 10"; fi
for m in vit bimamba; do
  log=$OUT/diffusion_$m.log
  : > "$log"
  t0=$(date +%s)
  limited 75 "$log" ./train_diffusion -S $PRESET -M $m -i ${FM}_train.bin -j ${FM}_test.bin -x $DF_STEPS -v 0 -m 2 -s 100 \
    $DF_SAMPLE -O "$OUT/diffusion_$m.bin"
  rc=$?
  loss=$(grep -E '^final test loss' "$log" | tail -n 1 | cut -d'|' -f1)
  sampled=$(grep -oE '[0-9.]+ ms per image' "$log" | tail -n 1)
  note "diffusion $m" "$(status_word $rc) after $(( $(date +%s) - t0 )) s, ${loss:-no final loss}, $(mean_step_ms "$log") ms/step, sampling ${sampled:-none}"
done

echo "=== synthetic tasks (induction heads at the Mamba paper's sizes; in the rehearsal, fewer steps and 2^14 for 2^20)"
SYN=$OUT/synthetic
if [ "$DRY" = 1 ]; then SYN_STEPS=20; SYN_TUNE=10; SYN_LONG=14; else SYN_STEPS=9000; SYN_TUNE=2000; SYN_LONG=20; fi
log=$OUT/synthetic.log
: > "$log"
t0=$(date +%s)
limited 20 "$log" "$PYTHON" dev/data/synthetic.py --task induction --out "$SYN" --T 256 --V 16 --train 8192 --val 64 \
  --test 16 --test-lengths 10-$SYN_LONG --test-tokens 4096
rc=$?
[ $rc = 0 ] && limited 45 "$log" ./train_mamba -S $PRESET -L 2 -C 64 -U 1e-9 -b 8 -l 1e-3 -u 200 -q 1 -x $SYN_STEPS \
  -v 0 -i "$SYN/induction_train.bin" -j "$SYN/induction_val.bin" -o "$SYN/learned"
rc=$?
# then the dt stretch (doc/results.md, synthetic tasks)
[ $rc = 0 ] && limited 20 "$log" ./train_mamba -S $PRESET -e "$SYN/learned/model.bin" -Y 1e6 -b 8 -l 3e-4 -u 100 -q 1 \
  -x $SYN_TUNE -v 0 -i "$SYN/induction_train.bin" -j "$SYN/induction_val.bin" -o "$SYN/model"
rc=$?
note "synthetic train" "$(status_word $rc) after $(( $(date +%s) - t0 )) s: $(grep -E '^final' "$log" | tail -n 1)"
for e in 10 $SYN_LONG; do
  [ -f "$SYN/model/model.bin" ] || break
  one=$OUT/.synthetic_one
  : > "$one"
  limited 15 "$one" ./train_mamba -S $PRESET -e "$SYN/model/model.bin" -j "$SYN/induction_test_$((1 << e)).bin" -x 0 -m 0
  rc=$?
  cat "$one" >> "$log"
  note "synthetic eval T 2^$e" "$(status_word $rc): $(grep -E '^batch' "$one" | cut -d'|' -f1)| $(grep -E '^final' "$one")"
done
rm -f "$OUT/.synthetic_one"

echo "=== seed runs"
for m in mamba gpt; do
  log=$OUT/seed_$m.log
  : > "$log"
  # half of what is left for the first, all but the sanitizer's minute for the second
  budget=$(( $(left) - 60 ))
  [ $m = mamba ] && budget=$(( budget / 2 ))
  [ "$LONG" = 1 ] && budget=$(left)
  t0=$(date +%s)
  limited $budget "$log" ./train_$m -S $PRESET -x $SEED_STEPS -v 250 -m 20 -g 0
  rc=$?
  val=$(grep -E '^val loss' "$log" | tail -n 1)
  step=$(grep -E '^step ' "$log" | tail -n 1 | sed -E 's/^step +([0-9]+\/[0-9]+).*/\1/')
  note "seed run $m" "$(status_word $rc) after $(( $(date +%s) - t0 )) s at step ${step:-0}: ${val:-no val loss yet}, $(mean_step_ms "$log") ms/step"
done

echo "=== sanitizer"
if [ "$DRY" = 1 ] || ! command -v compute-sanitizer > /dev/null; then
  note "sanitizer" "skipped ($([ "$DRY" = 1 ] && echo "dry run" || echo "no compute-sanitizer"))"
else
  for t in test_gpt test_mamba; do
    log=$OUT/sanitizer.log
    limited 60 "$log" compute-sanitizer --tool memcheck --error-exitcode 99 ./$t
    rc=$?
    if tail -n 30 "$log" | grep -qiE 'not supported|unable to|refused'; then res="the device refuses compute-sanitizer"
    else res="$(status_word $rc), $(grep -E 'ERROR SUMMARY' "$log" | tail -n 1)"; fi
    note "memcheck $t" "$res"
  done
fi

if [ "$LONG" = 1 ] && [ "$DRY" = 0 ] && command -v ncu > /dev/null; then
  echo "=== ncu"
  for m in mamba gpt; do
    limited 120 "$OUT/ncu.log" ncu --csv --metrics gpu__time_duration.sum ./train_$m -S seed -x 2 -v 0 -m 1 -g 0
    note "ncu $m" "$(status_word $?), kernel times in ncu.log"
  done
fi

echo
echo "=== summary ($(elapsed) s of ${DEADLINE_S})"
cat "$SUMMARY"
