#!/usr/bin/env python3
"""Checks that a model.safetensors written by `clicktrain train` opens with the Python
`safetensors` package (numpy framework) and holds exactly the state_dict of the same
model in PyTorch: names, shapes and dtypes (num_batches_tracked is int64).

    python3 scripts/check-safetensors.py RUN_DIR/model.safetensors

The expected state_dict comes from PyTorch itself when torch is installed
(scripts/pytorch_models.py), else from scripts/fixtures/state_dicts.json, which
dump-state-dict-shapes.py generated with PyTorch. Exits 1 with the differences.
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

try:
    from safetensors import safe_open
except ImportError:
    sys.exit("check-safetensors.py needs the safetensors and numpy packages: pip install safetensors numpy")


def expected_state_dict(model, c, s, k):
    try:
        import torch  # noqa: F401
        import pytorch_models
        m = pytorch_models.make(model, c, s, k)
        return [[n, list(t.shape), str(t.dtype).replace("torch.", "")] for n, t in m.state_dict().items()], "PyTorch"
    except ImportError:
        with open(os.path.join(here, "fixtures", "state_dicts.json")) as f:
            return json.load(f)[f"{model}-{c}x{s}x{s}-{k}"], "fixtures/state_dicts.json (from PyTorch)"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        got = {n: (list(f.get_tensor(n).shape), str(f.get_tensor(n).dtype)) for n in f.keys()}
    c, s, _ = (int(v) for v in meta["input"].split("x"))
    want, source = expected_state_dict(meta["model"], c, s, int(meta["classes"]))
    problems = []
    for name, shape, dtype in want:
        if name not in got:
            problems.append(f"missing {name}")
            continue
        gshape, gdtype = got.pop(name)
        if gshape != shape:
            problems.append(f"{name}: shape {gshape}, PyTorch has {shape}")
        if gdtype != dtype:
            problems.append(f"{name}: dtype {gdtype}, PyTorch has {dtype}")
    problems += [f"unexpected {n}" for n in got]
    if problems:
        print(f"{path}: {len(problems)} differences from {meta['model']} in {source}:")
        print("\n".join("  " + p for p in problems))
        sys.exit(1)
    print(f"{path}: opens with safetensors (numpy); {len(want)} tensors match {meta['model']} "
          f"({meta['input']}) in {source}")


if __name__ == "__main__":
    main()
