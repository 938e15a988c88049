#!/usr/bin/env bash
# Prepares, on this machine, what scripts/gpu-check.sh runs on a GPU machine that has no
# Swift, oneDNN or OpenBLAS: an AVX2 (haswell) clicktrain with the Swift runtime linked in,
# the shared libraries `ldd` lists for it (the C library and the GPU machine's own excepted),
# the first 20,000 Fashion-MNIST training images with the whole test set, and the CPU run
# the GPU's 3-epoch run is compared with. Everything goes into one xz archive under
# .build-gpu/package/ (git-ignored), kept under 60 MiB so that it travels to the GPU machine.
#
#   scripts/gpu-package.sh            # build, package, CPU reference run
#   then on the GPU machine: scripts/gpu-check.sh .build-gpu/package
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=.build-gpu/package
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
train_images=20000

CLICKTRAIN_TARGET_CPU=haswell swift build -c release --static-swift-stdlib --manifest-cache none \
  --build-path .build-gpu --product clicktrain
bin=.build-gpu/release/clicktrain
mkdir -p "$stage/bin" "$stage/lib" "$stage/data" "$pkg"
cp "$bin" "$stage/bin/"
strip "$stage/bin/clicktrain"
# Every library ldd resolves but glibc's own and the C++ runtime (newer on the GPU machine).
ldd "$bin" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done

# The data subset, as gzip IDX files in the layout clicktrain reads.
python3 - "$data" "$stage/data" "$train_images" <<'PY'
import gzip, shutil, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for kind, head in (("images-idx3-ubyte", 16), ("labels-idx1-ubyte", 8)):
    with gzip.open(f"{src}/train-{kind}.gz") as f:
        header = bytearray(f.read(head))
        per = 28 * 28 if head == 16 else 1
        body = f.read(n * per)
    struct.pack_into(">I", header, 4, n)
    with gzip.open(f"{dst}/train-{kind}.gz", "wb") as f:
        f.write(bytes(header) + body)
    shutil.copy(f"{src}/t10k-{kind}.gz", f"{dst}/t10k-{kind}.gz")
PY

# The CPU run the GPU run is compared with: same data, seed and settings.
rm -rf "$pkg/cpu-run"
"$bin" train --data "$stage/data" --epochs 3 --seed 1 --batch-size 128 --out "$pkg/cpu-run" | tail -n 2
cp "$pkg/cpu-run/metrics.jsonl" "$stage/cpu-metrics.jsonl"

tar -C "$stage" -cJf "$pkg/clicktrain-gpu.tar.xz" .
du -h "$pkg/clicktrain-gpu.tar.xz"
size=$(stat -c %s "$pkg/clicktrain-gpu.tar.xz")
[ "$size" -lt $((60 * 1024 * 1024)) ] || { echo "the package is over 60 MiB: too large to carry to the GPU machine"; exit 1; }
