#!/usr/bin/env python3
"""Prints a Markdown table comparing clicktrain run folders, one row per method: the mean
± sample standard deviation over the runs of that method (its seeds). The first run's
method is the dense baseline the changes are measured against. Every figure comes from the
runs' metrics.jsonl and config.yaml.

A run started from another run's model (`init_weights`, as compare-methods.sh's full-budget
PAT starts from the dense run of its seed) is charged that run's wall time and training
FLOPs too.

    python3 scripts/comparison-table.py RUN_DENSE [RUN ...]
"""
import json
import os
import statistics
import sys


def load(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    cfg = {}
    with open(os.path.join(run, "config.yaml")) as f:
        for line in f:
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                cfg[k.strip()] = v.strip().strip("'\"")
    if not metrics:
        sys.exit(f"comparison-table.py: {run} has no finished epoch")
    return metrics, cfg


def figures(run):
    """Accuracy, compression, FLOPs and seconds of a run, with those of the run it started from."""
    m, cfg = load(run)
    last = m[-1]
    seconds = sum(e["seconds"] for e in m)
    tf = sum(e.get("train_flops", 0) for e in m)
    epochs = last["epoch"]
    label = cfg.get("method", "dense")
    share = cfg.get("prunetrain_penalty_share")
    if label == "prunetrain" and share and abs(float(share) - 0.2) > 1e-6:
        label += f" (λ share {float(share):g})"
    start = cfg.get("init_weights")
    hard = cfg.get("epoch_hard_prune_p_k")
    if label in ("clicktrain", "pat") and hard and not start:
        label += f", hard pruning after epoch {hard}"
    if start:
        pm, _ = load(os.path.dirname(start))
        seconds += sum(e["seconds"] for e in pm)
        tf += sum(e.get("train_flops", 0) for e in pm)
        label += f", full budget ({pm[-1]['epoch']} dense + {epochs} fine-tuning epochs)"
        epochs += pm[-1]["epoch"]
    inf, dinf = last.get("inference_flops"), last.get("dense_inference_flops")
    return label, {
        "epochs": epochs,
        "acc": 100 * last["test_acc"],
        "compression": last.get("conv_compression", 1),
        "train_flops": tf,
        "inference_saved": 100 * (1 - inf / dinf) if inf and dinf else 0.0,
        "minutes": seconds / 60,
    }


def pm(values, digits):
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main():
    runs = sys.argv[1:]
    if not runs:
        sys.exit(__doc__)
    groups = {}
    for run in runs:
        label, f = figures(run)
        groups.setdefault(label, []).append(f)
    base = next(iter(groups.values()))
    base_acc = statistics.mean(f["acc"] for f in base)
    base_flops = statistics.mean(f["train_flops"] for f in base)
    base_minutes = statistics.mean(f["minutes"] for f in base)
    print("| method | runs | epochs | test accuracy | change vs dense | conv compression "
          "| training FLOPs saved | inference FLOPs saved | wall time | vs dense |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, fs in groups.items():
        saved = [100 * (1 - f["train_flops"] / base_flops) if base_flops else 0.0 for f in fs]
        minutes = [f["minutes"] for f in fs]
        print(f"| {label} | {len(fs)} | {fs[0]['epochs']} | {pm([f['acc'] for f in fs], 2)}% "
              f"| {statistics.mean(f['acc'] for f in fs) - base_acc:+.2f} "
              f"| {statistics.mean(f['compression'] for f in fs):.2f}x | {pm(saved, 1)}% "
              f"| {statistics.mean(f['inference_saved'] for f in fs):.1f}% | {pm(minutes, 1)} min "
              f"| {statistics.mean(minutes) / base_minutes:.2f}x |")


if __name__ == "__main__":
    main()
