#!/usr/bin/env bash
# Runs dense, ClickTrain, prune-after-training and PruneTrain with the same schedule and
# seed, then prints the README's comparison table:
#
#   scripts/compare-methods.sh [OUT_DIR] [EPOCHS] [SEED]
#
# ResNet-20 on Fashion-MNIST, cosine schedule from lr 0.1, batch 128; ClickTrain and PAT
# at 8x conv compression; PruneTrain with its automatic λ. Extra arguments after the
# third go to every `clicktrain train`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare}
epochs=${2:-10}
seed=${3:-1}
shift $(( $# < 3 ? $# : 3 )) || true
swift build -c release --product clicktrain >/dev/null
bin=.build/release/clicktrain
mkdir -p "$out"
for method in dense clicktrain pat prunetrain; do
  dir="$out/$method-e$epochs-s$seed"
  if [ -f "$dir/checkpoint/state.safetensors" ]; then
    "$bin" train --resume "$dir"
  else
    "$bin" train --model resnet20 --epochs "$epochs" --seed "$seed" --method "$method" --compression 8 --out "$dir" "$@"
  fi
done
python3 scripts/comparison-table.py "$out"/dense-e$epochs-s$seed "$out"/clicktrain-e$epochs-s$seed \
  "$out"/pat-e$epochs-s$seed "$out"/prunetrain-e$epochs-s$seed
