#!/usr/bin/env bash
# The seed's overfitting experiment: does Mamba memorize sooner than a
# Transformer of the same size and data, and how much does dropout buy each?
# Trains the Mamba, the GPT and the Transformer++ each without dropout and
# with -D $DROP on the same data, evaluating the training set as the
# validation set is (-V 1, no dropout) at every validation, then draws train
# against val for every run (dev/plot.py --gap-only) and writes the table of
# best and final val losses into doc/overfit/.
#
# CPU budget (the default, a 2-core machine): the training set cut to its
# first $TRAIN_CHARS characters (dev/overfit/subset.py) so that a small
# model (L 2, C 96) sees it many times in $STEPS steps of 16 x 64 tokens and
# memorizes it within minutes; the full validation split, its first 8
# batches at every validation.
#
# On a GPU (or with SEED=1) it runs the seed's own configuration instead: the full
# training split, width C 512 (Mamba 5 layers, GPT and Transformer++ 4), the
# seed preset's batch 64 x 256 and learning rate, $STEPS steps (default 5000).
#
#   dev/overfit/run.sh                          # CPU budget, about 20 minutes on 2 shared cores
#   STEPS=400 dev/overfit/run.sh                # shorter
#   STEPS=5000 dev/overfit/run.sh               # on a GPU: the seed's C 512 runs (SEED=0 forces the CPU budget)
#
# Output: out/overfit/<run>/ (logs, models), doc/overfit/overfit.png and
# doc/overfit/table.md; OUT=dir and DOC=dir move them.
set -euo pipefail
cd "$(dirname "$0")/../.."

DROP=${DROP:-0.2}
OUT=${OUT:-out/overfit}
DOC=${DOC:-doc/overfit}
PYTHON=${PYTHON:-/usr/bin/python3}
mkdir -p "$OUT" "$DOC"

SEED=${SEED:-auto}  # auto: the seed's configuration where a GPU is visible, the CPU budget elsewhere
if [ "$SEED" = auto ]; then SEED=0; nvidia-smi -L >/dev/null 2>&1 && SEED=1; fi
if [ "$SEED" = 1 ]; then
    STEPS=${STEPS:-5000}
    TRAIN=data/tinyshakespeare_train.bin
    COMMON="-S seed -C 512 -x $STEPS -v 250 -m 20 -V 1 -g 0"
    declare -A SHAPE=([mamba]="-L 5" [gpt]="-L 4" [gpt_plus]="-L 4")
    BUDGET="seed configuration: full training split, C 512, batch 64 x 256, $STEPS steps"
    TITLE="overfitting, seed configuration: C 512, 64 x 256 tokens a step"
else
    STEPS=${STEPS:-800}
    TRAIN_CHARS=${TRAIN_CHARS:-20000}
    TRAIN=data/overfit_train_${TRAIN_CHARS}.bin
    [ -f "$TRAIN" ] || $PYTHON dev/overfit/subset.py data/tinyshakespeare_train.bin "$TRAIN" "$TRAIN_CHARS"
    COMMON="-S cpu -C 96 -b 16 -t 64 -x $STEPS -u 50 -l 3e-3 -v 50 -m 8 -V 1 -g 0"
    declare -A SHAPE=([mamba]="-L 2" [gpt]="-L 2" [gpt_plus]="-L 2")
    BUDGET="CPU budget: first $TRAIN_CHARS characters of the training split, L 2, C 96, batch 16 x 64, $STEPS steps"
    TITLE="overfitting on $TRAIN_CHARS training characters: L 2, C 96, 16 x 64 tokens a step"
fi
echo "overfit study: $BUDGET; dropout 0 and $DROP"

runs=() labels=()
start=$(date +%s)
for model in mamba gpt gpt_plus; do
    make -s "train_$model"
    for d in 0 "$DROP"; do
        name="${model}_d${d}"
        dir="$OUT/$name"
        rm -rf "$dir"
        t0=$(date +%s)
        "./train_$model" -i "$TRAIN" ${SHAPE[$model]} $COMMON -D "$d" -o "$dir" > "$OUT/$name.txt"
        grep '^final' "$OUT/$name.txt" | sed "s|^|$name: |"
        echo "$name: $(( $(date +%s) - t0 )) s"
        runs+=("$dir") labels+=("$model -D $d")
    done
done
echo "study wall time: $(( $(date +%s) - start )) s"
IFS=,
$PYTHON dev/plot.py "${runs[@]}" --labels "${labels[*]}" --gap-only --table "$DOC/table.md" --out "$DOC/overfit.png" \
    --title "$TITLE"
