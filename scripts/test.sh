#!/usr/bin/env bash
# Installs what is missing, builds into build/, runs every test suite (lit and
# gtest, through ctest) and ends with one line: "N passed, N failed".
# Exits non-zero if anything failed.
#
#   scripts/test.sh            the default suite, in build/
#   scripts/test.sh --asan     the same suite built with AddressSanitizer and
#                              UndefinedBehaviorSanitizer, in build-asan/
#   scripts/test.sh [--asan] -R REGEX   only the ctest entries matching REGEX
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD_ARGS=()
case "${1:-}" in
  -h|--help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  --asan)
    shift
    export SQ_BUILD_DIR=${SQ_BUILD_DIR:-build-asan}
    # LLVM's own sanitizer switch; our code is instrumented, the packaged
    # LLVM/MLIR libraries are not. Leak checking is off: MLIR keeps
    # process-lifetime registries on purpose.
    if [ ! -f "$SQ_BUILD_DIR/build.ninja" ]; then
      BUILD_ARGS=(-DLLVM_USE_SANITIZER="Address;Undefined" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
    fi
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    ;;
esac

scripts/setup.sh || { echo "test.sh: setup failed" >&2; exit 1; }
scripts/build.sh "${BUILD_ARGS[@]}" || { echo "test.sh: build failed" >&2; exit 1; }

BUILD_DIR=${SQ_BUILD_DIR:-build}
rm -f "$BUILD_DIR/test/lit-results.json" "$BUILD_DIR/ctest-results.xml"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" \
  --output-junit "$PWD/$BUILD_DIR/ctest-results.xml" "$@"
ctest_status=$?

# Count individual cases: gtest cases are ctest entries of their own; the lit
# suite is one ctest entry whose cases are in lit-results.json.
python3 scripts/count_results.py "$BUILD_DIR/ctest-results.xml" \
  "$BUILD_DIR/test/lit-results.json"
count_status=$?
if [ $ctest_status -ne 0 ] || [ $count_status -ne 0 ]; then
  exit 1
fi
