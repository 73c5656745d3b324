#!/usr/bin/env bash
# Runs the fuzz targets one after another:
#   test/fuzz/run.sh [SECONDS] [TARGET...]     (default 60 s, every target)
# Each target runs SECONDS in total on BUILD_DIR/fuzz/corpus/<target> (new
# inputs are added there), -rss_limit_mb=4096, -timeout=${SQ_FUZZ_TIMEOUT:-25}.
# A crash (or timeout / OOM) stops libFuzzer; the input is saved under
# BUILD_DIR/fuzz/artifacts/<target>/ and the target is restarted for the
# remaining time. One summary line per target:
#   <target>: <execs> execs in <s> s, cov <edges>, ft <features>, corpus <n>, crashes <k>
# Exits non-zero when any target crashed. SQ_BUILD_DIR picks the build
# (default build-fuzz); run make_corpora.sh first to seed the corpora.
# SQ_FUZZ_SEED=N fixes libFuzzer's seed (-seed=N; default: a random one),
# (the same first mutations on the same corpus; coverage, which steers the
# rest, differs between machines). A crashed target's line is followed by the
# sanitizer's error lines and first stack frames of its first three crashes.
# SQ_FUZZ_RESULTS=FILE also writes "PASS <target>" / "FAIL <target>" lines
# there (scripts/test.sh counts them).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${SQ_BUILD_DIR:-build-fuzz}
SECONDS_PER_TARGET=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  SECONDS_PER_TARGET=$1
  shift
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(manifest weights quantspec tokenizer hftokenizer rotation safetensors mlir onnx)
TIMEOUT=${SQ_FUZZ_TIMEOUT:-25}
SEED_ARGS=()
[ -n "${SQ_FUZZ_SEED:-}" ] && SEED_ARGS=(-seed="$SQ_FUZZ_SEED")
# ASan records no allocation/free stacks (25-30% more execs/s for the mlir
# and onnx targets; detection is the same). Rerun an artifact with the
# default options for the full report: build-fuzz/fuzz/sq-fuzz-<t> ARTIFACT.
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0}
FUZZ=$BUILD_DIR/fuzz
LOGS=$FUZZ/logs
mkdir -p "$LOGS"
RESULTS=${SQ_FUZZ_RESULTS:-}
[ -n "$RESULTS" ] && : >"$RESULTS"

total_crashes=0
for t in "${TARGETS[@]}"; do
  bin=$FUZZ/sq-fuzz-$t
  if [ ! -x "$bin" ]; then
    echo "$t: $bin not built (cmake --build $BUILD_DIR --target sq-fuzz-all)"
    [ -n "$RESULTS" ] && echo "FAIL $t" >>"$RESULTS"
    total_crashes=$((total_crashes + 1))
    continue
  fi
  corpus=$FUZZ/corpus/$t
  artifacts=$FUZZ/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$LOGS/$t.log
  : >"$log"
  execs=0 cov=0 ft=0 crashes=0 start=$(date +%s)
  reports=$(mktemp)
  while :; do
    left=$((SECONDS_PER_TARGET - ($(date +%s) - start)))
    [ $left -le 0 ] && break
    runlog=$(mktemp)
    "$bin" "${SEED_ARGS[@]}" -max_total_time=$left -rss_limit_mb=4096 -timeout="$TIMEOUT" \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" \
      >"$runlog" 2>&1
    rc=$?
    cat "$runlog" >>"$log"
    n=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$runlog" | tail -1 | grep -o '[0-9]*$')
    if [ -z "$n" ]; then # crashed before the final stats: the last status line
      n=$(grep -oE '^#[0-9]+' "$runlog" | tail -1 | tr -d '#')
    fi
    execs=$((execs + ${n:-0}))
    c=$(grep -oE ' cov: [0-9]+' "$runlog" | tail -1 | grep -oE '[0-9]+')
    f=$(grep -oE ' ft: [0-9]+' "$runlog" | tail -1 | grep -oE '[0-9]+')
    [ -n "$c" ] && [ "$c" -gt "$cov" ] && cov=$c
    [ -n "$f" ] && [ "$f" -gt "$ft" ] && ft=$f
    if [ $rc -ne 0 ] && [ $crashes -lt 3 ]; then
      # What a CI log must carry when the artifact is gone: the sanitizer's
      # error and summary lines and the first frames of the stack.
      awk '/ERROR: |runtime error: |SUMMARY: |ALARM: |out-of-memory/ && e < 3 { e++; print }
           /^ +#[0-9]+ 0x[0-9a-f]+ in / && f < 8 { f++; sub(/ \(BuildId: [0-9a-f]+\)/, ""); print }' \
        "$runlog" | sed 's/^/    | /' >>"$reports"
    fi
    rm -f "$runlog"
    [ $rc -eq 0 ] && break
    crashes=$((crashes + 1))
    if [ $crashes -ge 10 ]; then
      echo "$t: 10 crashes, giving up on this target" >>"$log"
      break
    fi
  done
  elapsed=$(($(date +%s) - start))
  echo "$t: $execs execs in $elapsed s, cov $cov, ft $ft, corpus $(ls "$corpus" | wc -l), crashes $crashes (log $log)"
  if [ $crashes -gt 0 ]; then
    ls "$artifacts" | sed 's/^/    artifact: /' | tail -5
    head -60 "$reports"
  fi
  rm -f "$reports"
  if [ -n "$RESULTS" ]; then
    if [ $crashes -eq 0 ] && [ "$execs" -gt 0 ]; then
      echo "PASS $t" >>"$RESULTS"
    else
      echo "FAIL $t" >>"$RESULTS"
    fi
  fi
  total_crashes=$((total_crashes + crashes))
done
if [ $total_crashes -gt 0 ]; then
  echo "fuzz: $total_crashes crash(es)"
  exit 1
fi
echo "fuzz: no crashes"
