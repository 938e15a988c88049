#!/usr/bin/env python3
"""Turns a model.pattern.safetensors back into a dense PyTorch state_dict file (NumPy only).

    expand-pattern-file.py MODEL.pattern.safetensors OUT.safetensors [--compare MODEL.safetensors]

Every pattern layer W (tensors W.kept, W.patterns, W.pool, W.values; see the file's
'layout' metadata) becomes W [F, C, 3, 3] with zeros where the pattern or the kept-kernel
bitmap drops a weight; every other tensor is copied. With --compare, the result must equal
the dense model.safetensors of the same run tensor for tensor (exit 1 otherwise).
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8"), "U8": np.dtype("u1")}


def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n:]
    tensors = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        tensors[name] = np.frombuffer(body[a:b], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
    return tensors, meta


def write(path, tensors, meta):
    header, offset, blobs = {}, 0, []
    names = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64", np.dtype("u1"): "U8"}
    for name, t in tensors.items():
        b = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def expand(tensors, meta):
    layers = json.loads(meta["pattern_layers"])
    out = {k: v for k, v in tensors.items()}
    for name, info in layers.items():
        f, c = info["shape"][0], info["shape"][1]
        kept = np.unpackbits(out.pop(name + ".kept"), bitorder="little")[: f * c].astype(bool)
        patterns = out.pop(name + ".patterns").astype(int)
        pool = out.pop(name + ".pool").astype(bool)
        values = out.pop(name + ".values")
        taps = pool[patterns]  # [kept kernels, 9]
        dense = np.zeros((f * c, 9), dtype=np.float32)
        kernels = np.zeros((len(patterns), 9), dtype=np.float32)
        kernels[taps] = values  # row-major: kernel by kernel, taps in order
        dense[kept] = kernels
        out[name] = dense.reshape(f, c, 3, 3)
    return out


def main():
    args = sys.argv[1:]
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "--compare"):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    tensors, meta = read(args[0])
    if meta.get("format") != "clicktrain-pattern-1":
        sys.exit(f"{args[0]}: not a clicktrain pattern file (format {meta.get('format')!r})")
    dense = expand(tensors, meta)
    keep = {k: v for k, v in meta.items() if k not in ("format", "layout", "pattern_layers", "pruning")}
    keep["format"] = "pt"
    write(args[1], dense, keep)
    print(f"wrote {args[1]}: {len(dense)} tensors")
    if len(args) == 4:
        ref, _ = read(args[3])
        bad = sorted(set(ref) ^ set(dense)) + [k for k in ref if k in dense and not np.array_equal(ref[k], dense[k])]
        if bad:
            sys.exit(f"differs from {args[3]}: {bad[:5]}")
        print(f"equal to {args[3]}, tensor for tensor")


if __name__ == "__main__":
    main()
