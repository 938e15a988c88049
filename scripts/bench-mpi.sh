#!/usr/bin/env bash
# Data-parallel throughput on this machine: ResNet-20 on Fashion-MNIST, 2 ranks x 1 thread
# (mpirun) against 1 process x 2 threads, alternated, training images per second of the
# same steps (evaluation excluded). Prints each round, the medians and their ratio.
#
#   scripts/bench-mpi.sh [rounds=3] [steps=150] [extra clicktrain train options...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; steps=${2:-150}; shift $(( $# < 2 ? $# : 2 ))
bin=$PWD/.build/release/clicktrain
[ -x "$bin" ] || { echo "bench-mpi.sh: build first (swift build -c release)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(train --model resnet20 --epochs 1 --max-steps-per-epoch "$steps" --batch-size 128 "$@")
rate() { python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['images_per_s'])" "$1/metrics.jsonl"; }
one=(); two=()
for r in $(seq "$rounds"); do
  "$bin" "${common[@]}" --threads 2 --out "$work/one-$r" >/dev/null
  mpirun --oversubscribe -np 2 "$bin" "${common[@]}" --out "$work/two-$r" >/dev/null
  one+=("$(rate "$work/one-$r")"); two+=("$(rate "$work/two-$r")")
  printf 'round %d: 1 rank x 2 threads %.0f img/s, 2 ranks x 1 thread %.0f img/s\n' "$r" "${one[-1]}" "${two[-1]}"
done
python3 - "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
one = statistics.median(map(float, sys.argv[1].split())); two = statistics.median(map(float, sys.argv[2].split()))
print("median: 1 rank x 2 threads %.0f img/s, 2 ranks x 1 thread %.0f img/s, ratio %.2f" % (one, two, two / one))
PY
