#!/usr/bin/env bash
# Installs what is missing, builds into build/, runs every test suite (lit and
# gtest, through ctest) and ends with one line: "N passed, N failed".
# Exits non-zero if anything failed.
#
#   scripts/test.sh            the default suite
#   scripts/test.sh -R REGEX   only the ctest entries matching REGEX
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac

scripts/setup.sh || { echo "test.sh: setup failed" >&2; exit 1; }
scripts/build.sh || { echo "test.sh: build failed" >&2; exit 1; }

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
