#!/usr/bin/env python3
"""Prints a Markdown table comparing clicktrain run folders; the first is the dense
baseline. Every figure comes from the runs' metrics.jsonl and config.yaml.

    python3 scripts/comparison-table.py RUN_DENSE RUN_A [RUN_B ...]
"""
import json
import os
import sys


def load(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    cfg = {}
    with open(os.path.join(run, "config.yaml")) as f:
        for line in f:
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                cfg[k.strip()] = v.strip()
    return metrics, cfg


def main():
    runs = sys.argv[1:]
    if len(runs) < 2:
        sys.exit(__doc__)
    base_metrics, _ = load(runs[0])
    base_acc = base_metrics[-1]["test_acc"]
    print("| method | epochs | test accuracy | change vs dense | conv compression | training FLOPs saved | inference FLOPs saved | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        m, cfg = load(run)
        last = m[-1]
        tf = sum(e.get("train_flops", 0) for e in m)
        dtf = sum(e.get("dense_train_flops", 0) for e in m)
        inf, dinf = last.get("inference_flops"), last.get("dense_inference_flops")
        saved_train = f"{100 * (1 - tf / dtf):.1f}%" if dtf else "0%"
        saved_inf = f"{100 * (1 - inf / dinf):.1f}%" if dinf else "0%"
        minutes = sum(e["seconds"] for e in m) / 60
        label = cfg.get("method", "dense")
        share = cfg.get("prunetrain_penalty_share")
        if label == "prunetrain" and share and abs(float(share) - 0.2) > 1e-6:
            label += f" (λ share {float(share):g})"
        print(f"| {label} | {last['epoch']} | {100 * last['test_acc']:.2f}% "
              f"| {100 * (last['test_acc'] - base_acc):+.2f} | {last.get('conv_compression', 1):.2f}x "
              f"| {saved_train} | {saved_inf} | {minutes:.1f} min |")


if __name__ == "__main__":
    main()
