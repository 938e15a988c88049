#!/usr/bin/env bash
# The ablation: which choices take ClickTrain from the published algorithm's accuracy
# loss to ours. ResNet-20 on Fashion-MNIST, 10 epochs, seed 1 (same data order as
# scripts/compare-methods.sh, whose dense and clicktrain runs are the two ends):
#
#   scripts/ablation.sh [OUT_DIR] [LANE] [THREADS]
#
# published       the published algorithm (scripts/configs/resnet20-published.yaml):
#                 generic 4-pattern pool, 55/65/75 % connectivity, step LR at epochs 3 and 7
# dense-step      dense with that step schedule (the published run's reference)
# ours-generic    ours (cosine, ratios from --compression 8) with the generic pool
# ours-ratios     ours with the published 55/65/75 % ratios instead of the derived ones
# ours-step       ours with the published step schedule
#
# Choice and hard-pruning epochs are 3 and 7 in every run (61/190 and 141/190 of 10 epochs
# rounded down, the same as the published 32 % and 74 %). LANE (a or b or all) splits the
# runs over two processes; a run already finished is skipped, a stopped one resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/ablation}
lane=${2:-all}
threads=${3:-0}
bin=${CLICKTRAIN:-.build/release/clicktrain}
[ -x "$bin" ] || swift build -c release --product clicktrain >/dev/null
mkdir -p "$out"
tflag=(); [ "$threads" != 0 ] && tflag=(--threads "$threads")
published=scripts/configs/resnet20-published.yaml
ratios=$(mktemp); grep -v -E '^(schedule|gamma|pattern_pool|num_patterns):' "$published" > "$ratios"
run() {  # name, args...
  local name=$1; shift
  local dir="$out/$name"
  if [ -f "$dir/model.safetensors" ]; then return; fi
  if [ -f "$dir/checkpoint/state.safetensors" ]; then "$bin" train --resume "$dir" "${tflag[@]}"
  else "$bin" train --seed 1 --epochs 10 --out "$dir" "${tflag[@]}" "$@"; fi
}
if [ "$lane" = a ] || [ "$lane" = all ]; then
  run published --config "$published"
  run dense-step --method dense --lr-schedule step --milestones 3,7
  run ours-generic --method clicktrain --compression 8 --pattern-pool generic
fi
if [ "$lane" = b ] || [ "$lane" = all ]; then
  run ours-step --method clicktrain --compression 8 --lr-schedule step --milestones 3,7
  run ours-ratios --config "$ratios" --lr-schedule cosine
fi
rm -f "$ratios"
