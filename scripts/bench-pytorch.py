#!/usr/bin/env python3
"""Times the ClickTrain model zoo with PyTorch on the CPU, with the arguments and the
JSON output of `clicktrain bench`, so the two can be run side by side:

    clicktrain bench --model resnet20 --threads 2 --json
    python3 scripts/bench-pytorch.py --model resnet20 --threads 2

Needs `pip install torch` (a benchmark companion, not a dependency of ClickTrain).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("bench-pytorch.py needs PyTorch: python3 -m venv .venv && .venv/bin/pip install torch")

import pytorch_models


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c, h, w = (int(v) for v in a.input.lower().split("x"))
    torch.manual_seed(1)
    model = pytorch_models.make(a.model, c, h, a.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, c, h, w)
    y = torch.arange(a.batch) % a.classes

    fwd, bwd, step = [], [], []
    model.train()
    for i in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= a.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            step.append(t3 - t0)
    model.eval()
    inf = []
    with torch.no_grad():
        for i in range(a.warmup + a.runs):
            t0 = time.perf_counter()
            model(x)
            if i >= a.warmup:
                inf.append(time.perf_counter() - t0)
    train, infer = statistics.median(step), statistics.median(inf)
    print(json.dumps({
        "model": pytorch_models.canonical(a.model), "batch": a.batch, "input": f"{c}x{h}x{w}",
        "threads": a.threads, "framework": f"pytorch {torch.__version__}",
        "train_ms_per_step": train * 1e3, "infer_ms_per_batch": infer * 1e3,
        "images_per_s_train": a.batch / train, "images_per_s_infer": a.batch / infer,
        "forward_ms": statistics.median(fwd) * 1e3, "backward_ms": statistics.median(bwd) * 1e3,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps_timed": a.runs,
    }, sort_keys=True))


if __name__ == "__main__":
    main()
