#!/usr/bin/env bash
# Configures (once) and builds SQ into build/. Tools land in build/bin/.
# Extra arguments are passed to cmake at configure time, e.g.
#   scripts/build.sh -DCMAKE_BUILD_TYPE=Debug
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${SQ_BUILD_DIR:-build}
MLIR_DIR=${MLIR_DIR:-/usr/lib/llvm-22/lib/cmake/mlir}

if [ ! -f "$BUILD_DIR/build.ninja" ] || [ $# -gt 0 ]; then
  [ $# -gt 0 ] && echo "build: configuring $BUILD_DIR with $*"
  cmake -G Ninja -S . -B "$BUILD_DIR" -DMLIR_DIR="$MLIR_DIR" "$@"
fi
cmake --build "$BUILD_DIR"
