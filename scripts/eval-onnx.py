#!/usr/bin/env python3
"""Test accuracy of an exported ONNX model on Fashion-MNIST (or MNIST) under onnxruntime.

    eval-onnx.py MODEL.onnx [DATA_DIR]    (default /usr/share/datasets/fashion-mnist)

Reads the IDX test files (raw or .gz), feeds pixels / 255 as `input` and prints the accuracy
as `clicktrain eval` does, for comparing the two.
"""
import gzip
import os
import sys

import numpy as np
import onnxruntime as ort


def idx(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            raw = gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
            rank = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)
    sys.exit(f"missing {path}[.gz]")


def main():
    model = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    images = idx(os.path.join(data, "t10k-images-idx3-ubyte")).astype(np.float32)[:, None] / 255
    labels = idx(os.path.join(data, "t10k-labels-idx1-ubyte"))
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(images), 500):
        logits = session.run(["logits"], {"input": images[i:i + 500]})[0]
        correct += int((logits.argmax(1) == labels[i:i + 500]).sum())
    print(f"{os.path.basename(model)}: accuracy {100 * correct / len(images):.2f}% on {len(images)} test images")


if __name__ == "__main__":
    main()
