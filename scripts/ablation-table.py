#!/usr/bin/env python3
"""Prints the ablation table: which choices take ClickTrain from the published
algorithm's accuracy loss to ours. Every figure comes from the runs' metrics.jsonl and
config.yaml (runs made by scripts/compare-methods.sh and scripts/ablation.sh).

    python3 scripts/ablation-table.py [COMPARE_DIR] [ABLATION_DIR]

COMPARE_DIR holds dense-e10-s1 and clicktrain-e10-s1 (cosine schedule), ABLATION_DIR
the runs of scripts/ablation.sh. A run still missing is listed as such.
"""
import json
import os
import sys


def load(run):
    """(metrics, config) of a finished run, else None. config.yaml is read with a small
    parser (top-level keys; a key's indented or '- ' lines are its value) so that no YAML
    package is needed."""
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    cfg, key = {}, None
    with open(os.path.join(run, "config.yaml")) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith((" ", "-")) and key:
                cfg[key] = (cfg[key] + " " + line.strip()).strip()
            elif ":" in line:
                key, v = line.split(":", 1)
                key = key.strip()
                cfg[key] = v.strip()
    if not metrics or metrics[-1]["epoch"] < int(cfg.get("epochs", 0)):
        return None
    cfg["has_ratios"] = cfg.get("prune_ratios", "") not in ("", "null", "{}")
    return metrics, cfg


def main():
    compare = sys.argv[1] if len(sys.argv) > 1 else "runs/compare"
    ablation = sys.argv[2] if len(sys.argv) > 2 else "runs/ablation"
    rows = [
        ("published algorithm", os.path.join(ablation, "published"), "dense, step LR", os.path.join(ablation, "dense-step")),
        ("ours, step LR", os.path.join(ablation, "ours-step"), "dense, step LR", os.path.join(ablation, "dense-step")),
        ("ours, generic pool", os.path.join(ablation, "ours-generic"), "dense, cosine", os.path.join(compare, "dense-e10-s1")),
        ("ours, published ratios", os.path.join(ablation, "ours-ratios"), "dense, cosine", os.path.join(compare, "dense-e10-s1")),
        ("ours", os.path.join(compare, "clicktrain-e10-s1"), "dense, cosine", os.path.join(compare, "dense-e10-s1")),
    ]
    print("| run | pattern pool | connectivity ratios | LR schedule | conv compression | test accuracy | reference (dense) | change |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run, ref_name, ref in rows:
        r, d = load(run), load(ref)
        if r is None:
            print(f"| {name} | | | | | not run yet ({run}) | | |")
            continue
        m, cfg = r
        acc = m[-1]["test_acc"]
        pool = f"{cfg.get('pattern_pool')} ({cfg.get('num_patterns')} patterns)"
        ratios = "55/65/75 % by stage" if cfg["has_ratios"] else f"from {float(cfg.get('compression', 0)):.0f}x, deeper more"
        sched = cfg.get("lr_schedule", "")
        if sched == "step":
            sched += " at epochs " + ",".join(v for v in cfg.get("schedule", "").replace("-", " ").split())
        ref_txt, change = "not run yet", ""
        if d is not None:
            ref_acc = d[0][-1]["test_acc"]
            ref_txt = f"{ref_name} {100 * ref_acc:.2f}%"
            change = f"{100 * (acc - ref_acc):+.2f}"
        print(f"| {name} | {pool} | {ratios} | {sched} | {m[-1].get('conv_compression', 1):.2f}x "
              f"| {100 * acc:.2f}% | {ref_txt} | {change} |")


if __name__ == "__main__":
    main()
