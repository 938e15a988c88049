#!/usr/bin/env python3
"""Runs an exported ONNX model in onnxruntime on a batch and compares its logits with ours.

    check-onnx.py MODEL.onnx INPUT.f32 EXPECTED.f32 N C H W CLASSES [TOLERANCE]

INPUT.f32 and EXPECTED.f32 hold raw little-endian float32 values: the batch [N, C, H, W]
(pixels in [0, 1]) and our logits [N, CLASSES]. Prints the largest absolute difference
and exits 1 when it exceeds TOLERANCE (default 1e-4).
"""
import sys

import numpy as np
import onnxruntime as ort


def main() -> int:
    if len(sys.argv) not in (9, 10):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    model, inp, exp = sys.argv[1:4]
    n, c, h, w, k = (int(v) for v in sys.argv[4:9])
    tol = float(sys.argv[9]) if len(sys.argv) == 10 else 1e-4
    x = np.fromfile(inp, dtype="<f4").reshape(n, c, h, w)
    expected = np.fromfile(exp, dtype="<f4").reshape(n, k)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != (["input"], ["logits"]):
        print(f"inputs/outputs are {names}, expected (['input'], ['logits'])", file=sys.stderr)
        return 1
    got = session.run(["logits"], {"input": x})[0]
    diff = float(np.max(np.abs(got - expected)))
    print(f"max abs difference {diff:.3g} (logits up to {float(np.max(np.abs(expected))):.3g})")
    return 0 if diff <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
