#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that the build (Open MPI included), `clicktrain train` (Fashion-MNIST
# from Debian's dataset-fashion-mnist) and `swift test` need, when they are missing.
# Runs apt-get as root directly, else through sudo. Swift itself is not a Debian package
# here: the script only checks that a Swift 6 toolchain is on PATH.
#
#   scripts/install-deps.sh && swift build -c release && .build/release/clicktrain train
#   scripts/install-deps.sh && swift test -c release
set -euo pipefail

packages=(libopenblas-dev libdnnl-dev zlib1g-dev libopenmpi-dev openmpi-bin dataset-fashion-mnist)

if ! command -v swift >/dev/null 2>&1; then
  echo "install-deps.sh: no Swift toolchain on PATH; install Swift 6 and put its usr/bin on PATH" >&2
  exit 1
fi
major=$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9][0-9]*\)\..*/\1/p' | head -n 1)
if [ -n "$major" ] && [ "$major" -lt 6 ]; then
  echo "install-deps.sh: Swift $major found on PATH; this package needs Swift 6 or later" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps.sh: missing ${missing[*]}, and there is no apt-get to install them (Debian/Ubuntu only)" >&2
  exit 1
fi
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-deps.sh: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
}
echo "install-deps.sh: installing ${missing[*]}"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
