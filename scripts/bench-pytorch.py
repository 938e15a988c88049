#!/usr/bin/env python3
"""Times the ClickTrain model zoo with PyTorch on the CPU, with the arguments and the
JSON output of `clicktrain bench`, so the two can be run side by side:

    clicktrain bench --model resnet20 --threads 2 --json
    python3 scripts/bench-pytorch.py --model resnet20 --threads 2
    python3 scripts/bench-pytorch.py --model resnet20 --threads 2 --channels-last

--channels-last runs PyTorch's faster CPU layout (NHWC); comparisons quote the faster of
the two. --breakdown adds `breakdown_ms`, the time per kind of work in a training step, from
torch.profiler over extra profiled steps (the keys of `clicktrain bench --breakdown`).

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
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format for the model and input")
    ap.add_argument("--breakdown", action="store_true", help="time per kind of work, from torch.profiler")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: eager mode on GPU 0, synchronised after every timed step or batch")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench-pytorch.py --device cuda: PyTorch sees no GPU")
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    c, h, w = (int(v) for v in a.input.lower().split("x"))
    torch.manual_seed(1)
    model = pytorch_models.make(a.model, c, h, a.classes).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, c, h, w, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.autograd.profiler.record_function("optimizer"):
            opt.step()

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
        sync()
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
            sync()
            if i >= a.warmup:
                inf.append(time.perf_counter() - t0)
    train, infer = statistics.median(step), statistics.median(inf)
    breakdown = None
    if a.breakdown:
        model.train()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(a.runs):
                train_step()
        breakdown = {k: 0.0 for k in KINDS}
        for e in prof.events():
            if e.cpu_parent is None:  # outermost events: disjoint, each counted once
                breakdown[kind_of(e.name)] += e.cpu_time_total / 1e3 / a.runs
    result = {
        "model": pytorch_models.canonical(a.model), "batch": a.batch, "input": f"{c}x{h}x{w}",
        "threads": a.threads, "framework": f"pytorch {torch.__version__}",
        "train_ms_per_step": train * 1e3, "infer_ms_per_batch": infer * 1e3,
        "images_per_s_train": a.batch / train, "images_per_s_infer": a.batch / infer,
        # On the GPU the step is timed whole (one synchronisation, at its end).
        "forward_ms": statistics.median(fwd) * 1e3 if a.device == "cpu" else None,
        "backward_ms": statistics.median(bwd) * 1e3 if a.device == "cpu" else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps_timed": a.runs,
        "layout": "channels_last" if a.channels_last else "nchw", "device": a.device,
    }
    if a.device == "cuda":
        result["device_name"] = torch.cuda.get_device_name(0)
        # PyTorch's default: TF32 tensor cores in cuDNN convolutions (ours use FP32 FMA).
        result["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    if breakdown is not None:
        result["breakdown_ms"] = breakdown
    print(json.dumps(result, sort_keys=True))


KINDS = ["conv_forward", "conv_backward", "batch_norm", "elementwise", "pooling", "linear", "loss", "optimizer",
         "methods", "other"]


def kind_of(name):
    """The kind of work of an outermost profiler event (a forward op, an autograd node, or
    the optimizer's region), named as `clicktrain bench --breakdown` names it."""
    n = name.lower()
    backward = "backward" in n
    if "conv" in n:
        return "conv_backward" if backward else "conv_forward"
    if "batch_norm" in n or "batchnorm" in n:
        return "batch_norm"
    if "optimizer" in n or "zero_grad" in n:
        return "optimizer"
    if any(k in n for k in ("cross_entropy", "log_softmax", "logsoftmax", "nll")):
        return "loss"
    if "pool" in n or "meanbackward" in n:
        return "pooling"
    if any(k in n for k in ("linear", "addmm", "tbackward", "mmbackward")):
        return "linear"
    if any(k in n for k in ("relu", "threshold", "add", "flatten", "view", "reshape")):
        return "elementwise"
    return "other"


if __name__ == "__main__":
    main()
