#!/usr/bin/env python3
"""Pruned inference of `clicktrain` against PyTorch's dense inference of the same model,
measured in alternation: one long-lived `clicktrain bench --sparse --inference-only --serve`
process holds the pruned model; each pair times --runs batches of PyTorch in this process
and --runs batches of ours through that process, a tenth of a second apart (which goes
first alternates from pair to pair). Prints each pair and the median of the per-pair ratios
PyTorch / ours, which a machine whose speed drifts over seconds cannot skew much.

    python3 scripts/compare-inference.py --model resnet32 --threads 2 --pairs 20

Needs PyTorch (see bench-pytorch.py) and a release build of clicktrain.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
except ImportError:
    sys.exit("compare-inference.py needs PyTorch: python3 -m venv .venv && .venv/bin/pip install torch")

import pytorch_models


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compression", type=float, default=8.0)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5, help="timed batches per measurement (median)")
    ap.add_argument("--clicktrain", default=".build/release/clicktrain")
    a = ap.parse_args()
    if not os.access(a.clicktrain, os.X_OK):
        sys.exit(f"no clicktrain binary at {a.clicktrain}: swift build -c release first, or pass --clicktrain")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = pytorch_models.make(a.model, 3, 32, 10)
    x = torch.randn(a.batch, 3, 32, 32)
    # Fifteen training steps first, as `clicktrain bench --inference-only` does (both full
    # benchmarks train 13 before timing inference): with a fresh model's batch-norm
    # statistics the activations slow inference down (~390 against ~250 ms here).
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    y = torch.arange(a.batch) % 10
    for _ in range(15):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    ours_cmd = [a.clicktrain, "bench", "--model", a.model, "--batch", str(a.batch), "--threads", str(a.threads),
                "--sparse", "--compression", str(a.compression), "--inference-only", "--serve", "--runs", str(a.runs)]
    ours = subprocess.Popen(ours_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ours_ms():
        ours.stdin.write(f"{a.runs}\n")
        ours.stdin.flush()
        line = ours.stdout.readline()
        if not line:
            sys.exit(f"clicktrain ended early (exit {ours.wait()})")
        return json.loads(line)["sparse_infer_ms_per_batch"]

    def torch_ms():
        ts = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    ratios = []
    try:
        if json.loads(ours.stdout.readline() or "{}").get("ready") is not True:
            sys.exit(f"clicktrain did not start (exit {ours.wait()})")
        with torch.no_grad():
            for _ in range(3):
                model(x)
            for p in range(a.pairs):
                if p % 2 == 0:
                    t = torch_ms()
                    time.sleep(0.1)
                    o = ours_ms()
                else:
                    o = ours_ms()
                    time.sleep(0.1)
                    t = torch_ms()
                time.sleep(0.1)
                ratios.append(t / o)
                print(f"pair {p + 1}: PyTorch dense {t:.1f} ms, ours pruned {o:.1f} ms: {ratios[-1]:.2f}x", flush=True)
    finally:
        ours.stdin.close()
        ours.wait()
    print(f"median of {a.pairs} pairs: {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
