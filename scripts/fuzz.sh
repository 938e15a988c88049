#!/usr/bin/env bash
# Fuzzes one file reader with libFuzzer and AddressSanitizer:
#
#   scripts/fuzz.sh safetensors|idx|cifar|config SECONDS [libFuzzer options...]
#
# Starts from Fuzz/corpus/TARGET (the committed seeds) and Fuzz/regressions/TARGET (inputs
# that once crashed); new interesting inputs go to .build-fuzz/corpus/TARGET, crashes to
# .build-fuzz/crashes/. Copy a crash into Fuzz/regressions/TARGET once it is fixed: the
# test suite replays every file there.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh safetensors|idx|cifar|config SECONDS}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
shift 2
case "$target" in safetensors|idx|cifar|config) ;; *) echo "fuzz.sh: unknown target '$target'" >&2; exit 1 ;; esac

# Coverage instrumentation and libFuzzer without its main(): the binary's own entry point
# starts libFuzzer's driver (SwiftPM gives every executable a main of its own).
rt="$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/clang/lib/linux"
swift build -c release --product clicktrain-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
  -Xswiftc -D -Xswiftc FUZZING \
  -Xlinker "$rt/libclang_rt.fuzzer_no_main-x86_64.a" -Xlinker -lstdc++ >&2
mkdir -p ".build-fuzz/corpus/$target" .build-fuzz/crashes
SWIFT_BACKTRACE=enable=no CLICKTRAIN_FUZZ_TARGET=$target exec .build-fuzz/release/clicktrain-fuzz \
  -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
  -artifact_prefix=".build-fuzz/crashes/$target-" "$@" \
  ".build-fuzz/corpus/$target" "Fuzz/corpus/$target" "Fuzz/regressions/$target"
