#!/usr/bin/env python3
"""Writes scripts/fixtures/state_dicts.json: for each model of the zoo and each input
shape, the PyTorch state_dict names, shapes and dtypes of pytorch_models.py. The check
in check-safetensors.py compares clicktrain's model.safetensors with it, so CI needs no
PyTorch. Regenerate after changing a model (needs torch):

    python3 scripts/dump-state-dict-shapes.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_models  # noqa: E402

MODELS = ["lenet5", "resnet20", "resnet32", "resnet56", "resnet110", "vgg11", "vgg13", "vgg16", "resnet18", "resnet50"]
INPUTS = [(1, 28, 10), (3, 32, 10)]

out = {}
for name in MODELS:
    for c, s, k in INPUTS:
        m = pytorch_models.make(name, c, s, k)
        out[f"{name}-{c}x{s}x{s}-{k}"] = [[n, list(t.shape), str(t.dtype).replace("torch.", "")]
                                          for n, t in m.state_dict().items()]
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "state_dicts.json")
with open(path, "w") as f:
    json.dump(out, f, indent=0, sort_keys=True)
    f.write("\n")
print(f"wrote {path}: {len(out)} models")
