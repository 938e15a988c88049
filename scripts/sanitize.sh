#!/usr/bin/env bash
# Runs the kernel and layer tests under a sanitizer (release build, own scratch folder):
#
#   scripts/sanitize.sh [address|thread] [test filter]
#
# address (default): AddressSanitizer over the pattern-sparse and sparse-error kernels
# (raw pointers, padding slack), the dense kernels and the layers. thread: ThreadSanitizer
# over the same tests, whose kernels split work across threads.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
filter=${2:-"ClickTrainSparseTests|ClickTrainNNTests|ClickTrainCoreTests"}
case "$kind" in address|thread) ;; *) echo "sanitize.sh: address or thread, got '$kind'" >&2; exit 1 ;; esac
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}
swift test -c release --sanitize="$kind" --scratch-path ".build-$kind" --filter "$filter"
