#!/usr/bin/env bash
# Builds the API documentation: the ClickTrain catalog (Sources/ClickTrain/ClickTrain.docc)
# and the six modules it re-exports, in one DocC archive whose articles link to the
# modules' symbol pages. DocC reads each module's symbols separately (re-exported symbols
# are not part of ClickTrain's own), hence the combined build.
# Extra arguments go to the plugin (e.g. --warnings-as-errors); the archive is printed last.
# Browse it with: swift package --disable-sandbox preview-documentation --target ClickTrain
set -euo pipefail
cd "$(dirname "$0")/.."
swift package generate-documentation --enable-experimental-combined-documentation \
  --target ClickTrain --target ClickTrainCore --target ClickTrainSparse --target ClickTrainNN \
  --target ClickTrainData --target ClickTrainPruning --target ClickTrainTraining "$@"
