#!/usr/bin/env bash
# The GPU machine's check of --device cuda, in about 4 minutes, with the archive
# scripts/gpu-package.sh made (the machine has CUDA, cuDNN, cuBLAS, NVRTC and PyTorch, but
# no Swift):
#   1. the binary starts and loads the libraries; for LeNet-5, ResNet-20, ResNet-32 and
#      VGG-11 the GPU matches the CPU from the same weights on the same batch (inference
#      logits, the losses of two steps, every tensor's update, batch-norm statistics);
#   2. the training step and inference against PyTorch eager on the same GPU, alternated;
#   3. a 3-epoch Fashion-MNIST run on the GPU against the CPU run packaged with it;
#   4. a 3-epoch ClickTrain run on the GPU (8x conv compression at the end).
# Results go to $OUT (or a temporary folder); the last lines are a summary.
#
#   scripts/gpu-check.sh [.build-gpu/package]
set -uo pipefail
pkg=$(realpath "${1:-$(dirname "$0")/../.build-gpu/package}")
cd "$(dirname "$0")/.."
work=$(mktemp -d)
out=${OUT:-$work/out}
mkdir -p "$out"
tar -C "$work" -xJf "$pkg/clicktrain-gpu.tar.xz" || { echo "cannot unpack $pkg/clicktrain-gpu.tar.xz"; exit 1; }
# The carried libraries for clicktrain alone (not for python3, PyTorch or nvidia-smi).
libs="$work/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ct=(env "LD_LIBRARY_PATH=$libs" "$work/bin/clicktrain")
summary=$out/summary.txt
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
failed=0

echo "== 1. start, libraries, GPU against CPU"
if LD_LIBRARY_PATH=$libs ldd "$work/bin/clicktrain" | grep "not found"; then say "FAIL shared libraries missing"; exit 1; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
for spec in lenet5:1x28x28 resnet20:3x32x32 resnet32:3x32x32 vgg11:3x32x32; do
  model=${spec%%:*}
  if ! timeout 180 "${ct[@]}" bench --device cuda --model "$model" --input "${spec#*:}" --warmup 5 --runs 30 --json \
      > "$out/ours-$model-1.json" 2> "$out/ours-$model-1.err"; then
    say "FAIL $model: $(tail -n 3 "$out/ours-$model-1.err")"; failed=1
    # A library that does not load fails everything after it: stop before spending device time.
    if grep -q "cannot load" "$out/ours-$model-1.err"; then exit 1; fi
    continue
  fi
  python3 - "$out/ours-$model-1.json" <<'PY' | tee -a "$summary" || failed=1
import json, sys
r = json.load(open(sys.argv[1]))
loss = max(abs(a - b) for a, b in zip(r["loss_cpu"], r["loss_gpu"]))
ok = r["logits_rel_err"] <= 1e-4 and r["update_rel_err"] <= 1e-4 and r["running_stats_rel_err"] <= 1e-4 and loss <= 1e-4
where = f" (first differing layer {r['first_differing_layer']})" if r.get("first_differing_layer") else ""
print(f"{'ok  ' if ok else 'FAIL'} {r['model']}: logits {r['logits_rel_err']:.1e}{where}, update {r['update_rel_err']:.1e} "
      f"({r['update_worst']}), running stats {r['running_stats_rel_err']:.1e}, loss after one step "
      f"{r['loss_gpu'][1]:.6f} gpu / {r['loss_cpu'][1]:.6f} cpu ({loss:.1e}); step {r['train_ms_per_step']:.2f} ms")
sys.exit(0 if ok else 1)
PY
done

echo "== 2. against PyTorch eager on the same GPU, alternated"
for model in resnet20 resnet32; do
  for round in 1 2 3; do
    [ "$round" = 1 ] || timeout 120 "${ct[@]}" bench --device cuda --model "$model" --warmup 5 --runs 30 --json \
      > "$out/ours-$model-$round.json" 2>> "$out/ours-$model-$round.err"
    timeout 120 python3 scripts/bench-pytorch.py --device cuda --model "$model" --warmup 5 --runs 30 \
      > "$out/torch-$model-$round.json" 2> "$out/torch-$model-$round.err"
  done
  python3 - "$out" "$model" <<'PY' | tee -a "$summary"
import glob, json, statistics, sys
out, model = sys.argv[1], sys.argv[2]
def load(who):
    rs = []
    for p in sorted(glob.glob(f"{out}/{who}-{model}-*.json")):
        try: rs.append(json.load(open(p)))
        except Exception: pass
    return rs
ours, torch = load("ours"), load("torch")
if not ours or not torch:
    print(f"FAIL {model}: no timing ({len(ours)} ours, {len(torch)} pytorch)"); sys.exit(0)
o = statistics.median(r["train_ms_per_step"] for r in ours); t = statistics.median(r["train_ms_per_step"] for r in torch)
oi = statistics.median(r["infer_ms_per_batch"] for r in ours); ti = statistics.median(r["infer_ms_per_batch"] for r in torch)
print(f"{model} batch 128 on {ours[0]['device']}: train step ours {o:.2f} ms, pytorch {t:.2f} ms ({o / t:.2f}x, "
      f"target <= 0.7x); inference ours {oi:.2f} ms, pytorch {ti:.2f} ms ({oi / ti:.2f}x); "
      f"{len(ours)} and {len(torch)} runs, medians")
PY
  [ -s "$out/ours-$model-1.json" ] && [ -s "$out/torch-$model-1.json" ] || failed=1
done

echo "== 3. 3 epochs of Fashion-MNIST (20,000 training images) on the GPU"
start=$(date +%s)
rm -rf "$out/gpu-run" "$out/gpu-clicktrain"
timeout 300 "${ct[@]}" train --device cuda --data "$work/data" --epochs 3 --seed 1 --batch-size 128 --out "$out/gpu-run" \
  2>&1 | tail -n 5
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || { say "FAIL the GPU run exited with $rc"; failed=1; }
python3 - "$out/gpu-run/metrics.jsonl" "$work/cpu-metrics.jsonl" "$(( $(date +%s) - start ))" <<'PY' | tee -a "$summary" || failed=1
import json, sys
def last(p):
    try: m = [json.loads(l) for l in open(p) if l.strip()]
    except Exception: return None
    return m[-1] if len(m) == 3 else None
g, c = last(sys.argv[1]), last(sys.argv[2])
if g is None:
    print("FAIL the GPU run did not finish 3 epochs"); sys.exit(1)
d = 100 * (g["test_acc"] - c["test_acc"])
ok = abs(d) <= 0.3
print(f"{'ok  ' if ok else 'FAIL'} 3 epochs: gpu {100 * g['test_acc']:.2f}%, cpu {100 * c['test_acc']:.2f}% ({d:+.2f} points, "
      f"within 0.3?); gpu {g['images_per_s']:.0f} img/s, whole run {sys.argv[3]} s")
sys.exit(0 if ok else 1)
PY

echo "== 4. ClickTrain on the GPU: hooks on the CPU mid-step, hard pruning uploaded"
timeout 240 "${ct[@]}" train --device cuda --data "$work/data" --method clicktrain --epochs 3 --choose-epoch 1 \
  --hard-prune-epoch 2 --seed 1 --batch-size 128 --out "$out/gpu-clicktrain" 2>&1 | tail -n 4
python3 - "$out/gpu-clicktrain/metrics.jsonl" <<'PY' | tee -a "$summary" || failed=1
import json, sys
try: m = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except Exception: m = []
if len(m) != 3:
    print("FAIL the GPU ClickTrain run did not finish 3 epochs"); sys.exit(1)
ok = m[-1]["conv_compression"] >= 7.5 and m[-1]["test_acc"] > 0.5
print(f"{'ok  ' if ok else 'FAIL'} ClickTrain 3 epochs on the GPU: {100 * m[-1]['test_acc']:.2f}%, conv compression "
      f"{m[-1]['conv_compression']:.2f}x, {m[-1]['images_per_s']:.0f} img/s in the pruned epoch")
sys.exit(0 if ok else 1)
PY

echo "== summary"
cat "$summary"
exit $failed
