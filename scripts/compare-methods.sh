#!/usr/bin/env bash
# Runs dense, ClickTrain, prune-after-training and PruneTrain for several seeds with the
# same schedule, then prints the README's comparison table (mean ± standard deviation over
# the seeds of each method):
#
#   scripts/compare-methods.sh [--out DIR] [--epochs 10] [--seeds 1,2,3]
#       [--methods dense,clicktrain,pat,pat-full,prunetrain] [--finetune-epochs 5]
#       [--parallel] [-- extra clicktrain train options]
#
# ResNet-20 on Fashion-MNIST, cosine schedule from lr 0.1, batch 128; ClickTrain and PAT at
# 8x conv compression; PruneTrain with its automatic λ.
#
# PAT appears twice. `pat` prunes within the same epochs as the others (dense, then hard
# pruning and fine-tuning at the same epoch as ClickTrain). `pat-full` is its usual budget:
# the whole dense run, then pruning by magnitude at once and --finetune-epochs more epochs
# of fine-tuning from lr 0.01 (cosine); its wall time and training FLOPs include the dense
# run's.
#
# Wall times compare only runs under the same load: by default one run after another on
# all cores; with --parallel two runs side by side at one thread each (both cores busy all
# the time). A finished run is kept; an interrupted one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/compare; epochs=10; seeds=1; methods=dense,clicktrain,pat,prunetrain; finetune=5; parallel=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --finetune-epochs) finetune=$2; shift 2 ;;
    --parallel) parallel=1; shift ;;
    --) shift; break ;;
    *) echo "compare-methods.sh: unknown option $1 (see the comment at the top)" >&2; exit 1 ;;
  esac
done
extra=("$@")
swift build -c release --product clicktrain >/dev/null
bin=$PWD/.build/release/clicktrain
mkdir -p "$out"
threads=()
[ $parallel = 1 ] && threads=(--threads 1)

# run_one METHOD SEED: trains (or resumes, or keeps) $out/METHOD-eE-sSEED.
run_one() {
  local method=$1 seed=$2 dir="$out/$1-e$epochs-s$2"
  if [ -f "$dir/metrics.jsonl" ] && python3 -c "import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; \
      c=open(sys.argv[2]).read(); e=int(c.split('epochs:')[1].split()[0]); sys.exit(0 if m and m[-1]['epoch']==e else 1)" \
      "$dir/metrics.jsonl" "$dir/config.yaml" 2>/dev/null; then
    return 0
  fi
  if [ -f "$dir/checkpoint/state.safetensors" ]; then
    "$bin" train --resume "$dir" >"$dir.log" 2>&1
  elif [ "$method" = pat-full ]; then
    local dense="$out/dense-e$epochs-s$seed"
    "$bin" train --init "$dense/model.safetensors" --method pat --hard-prune-epoch 0 --epochs "$finetune" --lr 0.01 \
      --seed "$seed" --compression 8 "${threads[@]}" --out "$dir" "${extra[@]}" >"$dir.log" 2>&1
  else
    "$bin" train --model resnet20 --epochs "$epochs" --seed "$seed" --method "$method" --compression 8 \
      "${threads[@]}" --out "$dir" "${extra[@]}" >"$dir.log" 2>&1
  fi
  echo "done: $dir ($(tail -n 1 "$dir.log" | sed 's/^ *//'))"
}

# Dense runs first, pat-full last: it starts from the dense run of its seed.
jobs_list=()
for s in ${seeds//,/ }; do jobs_list+=("dense:$s"); done
for m in ${methods//,/ }; do
  case $m in dense|pat-full) continue ;; esac
  for s in ${seeds//,/ }; do jobs_list+=("$m:$s"); done
done
case ",$methods," in *,pat-full,*) for s in ${seeds//,/ }; do jobs_list+=("pat-full:$s"); done ;; esac
waited=0
for job in "${jobs_list[@]}"; do
  m=${job%%:*}; s=${job##*:}
  if [ "$m" = pat-full ] && [ $waited = 0 ]; then wait; waited=1; fi
  if [ $parallel = 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
    run_one "$m" "$s" &
  else
    run_one "$m" "$s"
  fi
done
wait

runs=()
for m in dense ${methods//,/ }; do
  for s in ${seeds//,/ }; do
    d="$out/$m-e$epochs-s$s"
    case " ${runs[*]} " in *" $d "*) ;; *) [ -d "$d" ] && runs+=("$d") ;; esac
  done
done
python3 scripts/comparison-table.py "${runs[@]}"
