#!/usr/bin/env bash
# One table (issue #22): engine x shape x threads, with load seconds, prefill
# tokens/s at several prompt lengths, decode tokens/s after a short prompt,
# decode ms/token at long contexts, % of the bandwidth bound, peak RSS, and
# how busy the CPUs were before and after every run; SQ/peer ratio rows.
#
#   bench/ratios.sh [--shapes "llama2-7b llama3.2-1b llama3.1-8b"] [--layers N]
#                   [--threads "1 2"] [--engines "sq llama.cpp ort"]
#                   [--prompts "128 512 2048"] [--short-prompt 16] [--decode 32]
#                   [--long-decode 8] [--repeats 3] [--long-repeats 1]
#                   [--busy-max 15] [--out FILE] [--update-results [FILE]]
#                   [--dry-run]
#
# Engines (same random weights for the two peers; SQ's are its own draw of
# the same shape):
#   sq         sq-compile --rotate=hadamard --quantize=w4a4kv4 of
#              bench/make_synthetic_llama.py --shape S (fp16 ONNX, deleted once
#              compiled), timed by bench/decode_bench.c through the C API;
#              $SQ_COMPILE picks the compiler (default build/bin/sq-compile)
#   llama.cpp  Q4_0 GGUF of bench/make_q4_peers.py --shape S, npm
#              node-llama-cpp@3.22.1 (bench/llama_cpp_runner.mjs)
#   ort        onnxruntime-node@1.30.0, com.microsoft::MatMulNBits block 32
#              (the GGUF's int4 weights bit for bit; bench/ort_runner.js)
# Shapes: bench/llama_shapes.py. --layers N cuts every shape to N layers (quick
# runs); default: each shape's full depth (7B 32, 1B 16, 8B 32).
#
# Per shape x threads x engine, each run a fresh process:
#   one run of --short-prompt tokens + --decode tokens (--repeats, median):
#     decode tokens/s "after 16", load seconds (open from page cache), RSS;
#   one run per --prompts P of P tokens + --long-decode tokens (--long-repeats):
#     prefill tokens/s at P, decode ms/token at context P.
#   Peak RSS is the largest over the engine's runs (the longest context's).
#   % of bound = decode tok/s / (read GB/s at that thread count, from
#   bench/bandwidth.c, best variant / weight bytes per decoded token).
#   Before and after every run, busy(): % of CPU time not idle over 1 s
#   (other processes); an engine row whose runs saw more than --busy-max %
#   is marked "loaded".
# Output: a markdown section on stdout (or --out FILE); --update-results
# rewrites the part of docs/results.md (or FILE) between the lines
# <!-- ratios:begin --> and <!-- ratios:end -->. Raw runs are kept as JSON
# lines in build/bench-peers/ratios/RUN.jsonl. Everything generated or
# installed is cached under build/bench-peers/ (models in
# models/SHAPE-lLAYERS/), so a second run only measures. --dry-run prints
# the commands (generation, compilation, runs) and runs nothing.
# A benchmark, not a test: compare ratios; numbers on a loaded machine are
# marked, never gated on.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES="llama2-7b llama3.2-1b llama3.1-8b" LAYERS="" THREADS_LIST="1 2" ENGINES="sq llama.cpp ort"
PROMPTS="128 512 2048" SHORT=16 DECODE=32 LDECODE=8 REPEATS=3 LREPEATS=1 BUSYMAX=15
OUT="" UPDATE="" DRY=0
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes) SHAPES=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --threads) THREADS_LIST=$2; shift 2 ;;
    --engines) ENGINES=$2; shift 2 ;;
    --prompts) PROMPTS=$2; shift 2 ;;
    --short-prompt) SHORT=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --long-decode) LDECODE=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --long-repeats) LREPEATS=$2; shift 2 ;;
    --busy-max) BUSYMAX=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --update-results)
      if [ $# -gt 1 ] && [ "${2#--}" = "$2" ]; then UPDATE=$2; shift 2; else UPDATE=docs/results.md; shift; fi ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "ratios.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
for s in $SHAPES; do
  "$PY" -c "import sys; sys.path.insert(0, 'bench'); from llama_shapes import SHAPES; SHAPES['$s']" 2>/dev/null ||
    { echo "ratios.sh: unknown shape '$s' (bench/llama_shapes.py: llama2-7b llama3.2-1b llama3.1-8b)" >&2; exit 2; }
done
for e in $ENGINES; do
  case "$e" in sq|llama.cpp|ort) ;; *) echo "ratios.sh: unknown engine '$e' (sq llama.cpp ort)" >&2; exit 2 ;; esac
done
for n in $THREADS_LIST $PROMPTS $SHORT $DECODE $LDECODE $REPEATS $LREPEATS ${LAYERS:-1}; do
  case "$n" in ''|*[!0-9]*|0) echo "ratios.sh: '$n' is not a positive integer" >&2; exit 2 ;; esac
done
if [ -n "$UPDATE" ] && { ! grep -qs '^<!-- ratios:begin -->' "$UPDATE" || ! grep -qs '^<!-- ratios:end -->' "$UPDATE"; }; then
  echo "ratios.sh: $UPDATE is missing or has no <!-- ratios:begin --> / <!-- ratios:end --> lines to rewrite" >&2; exit 2
fi
P=build/bench-peers
M=$P/models
CC=$(command -v clang-22 || command -v cc)
SQC=${SQ_COMPILE:-build/bin/sq-compile}
log() { echo "[ratios] $*" >&2; }
run() {  # run CMD...: print it, and run it unless --dry-run
  if [ "$DRY" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
. bench/common.sh  # build_c, busy
has() { case " $ENGINES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- tools (cached) ---------------------------------------------------------
NM=$P/npm/node_modules
if { has llama.cpp || has ort; } && { [ ! -d "$NM/node-llama-cpp" ] ||
     [ ! -d "$NM/@node-llama-cpp/linux-x64" ] || [ ! -d "$NM/onnxruntime-node" ]; }; then
  log "installing node-llama-cpp@3.22.1, @node-llama-cpp/linux-x64, onnxruntime-node@1.30.0 into $P/npm"
  run npm install --prefix "$P/npm" --ignore-scripts --omit=optional --no-audit --no-fund \
    node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 onnxruntime-node@1.30.0 >/dev/null
fi
export NODE_PATH=$PWD/$NM SQ_PEERS_NODE_MODULES=$PWD/$NM
mkdir -p "$M" "$P/ratios"
build_c bench/bandwidth.c "$P/bandwidth" -O3 -march=native -pthread
has sq && build_c bench/decode_bench.c "$P/decode_bench" -O2 -march=native -Iinclude -ldl

# --- models (cached per shape and layer count) ------------------------------
full_layers() { "$PY" -c "import sys; sys.path.insert(0, 'bench'); from llama_shapes import SHAPES; print(SHAPES['$1']['layers'])"; }
declare -A NOTE
for s in $SHAPES; do
  L=${LAYERS:-$(full_layers "$s")}
  D=$M/$s-l$L
  mkdir -p "$D"
  if { has llama.cpp || has ort; } &&
     { [ ! -f "$D/q4.json" ] || [ ! -f "$D/q4_0.gguf" ] || [ ! -f "$D/ort/model.onnx" ] ||
       [ bench/make_q4_peers.py -nt "$D/q4.json" ] || [ bench/llama_shapes.py -nt "$D/q4.json" ]; }; then
    log "writing the Q4_0 GGUF and the MatMulNBits ONNX of $s, $L layers, into $D"
    run rm -rf "$D/q4_0.gguf" "$D/ort" "$D/q4.json"
    if [ "$DRY" = 1 ]; then
      run "$PY" bench/make_q4_peers.py --shape "$s" --layers "$L" --gguf "$D/q4_0.gguf" --onnx "$D/ort" --block 32
    else
      "$PY" bench/make_q4_peers.py --shape "$s" --layers "$L" --gguf "$D/q4_0.gguf" --onnx "$D/ort" --block 32 \
        2> "$D/q4.log" > "$D/q4.json.tmp"
      mv "$D/q4.json.tmp" "$D/q4.json"
    fi
  fi
  if has sq; then
    SO=$D/sq/model.so
    if [ ! -x "$SQC" ]; then
      NOTE[$s]="SQ: $SQC not built"
    elif [ -f "$D/sq/compile.failed" ] && [ ! "$SQC" -nt "$D/sq/compile.failed" ]; then
      NOTE[$s]="SQ: sq-compile failed earlier (see $D/sq/compile.log; retried when $SQC changes)"
    elif [ ! -f "$SO" ] || [ "$SQC" -nt "$SO" ] || [ bench/make_synthetic_llama.py -nt "$SO" ] ||
         [ bench/llama_shapes.py -nt "$SO" ]; then
      log "compiling SQ $s, $L layers (the fp16 ONNX in $D/sq/onnx is deleted afterwards)"
      run mkdir -p "$D/sq"
      run rm -f "$SO" "$SO.weights"
      if [ "$DRY" = 1 ]; then
        run "$PY" bench/make_synthetic_llama.py "$D/sq/onnx" --shape "$s" --layers "$L"
        run "$SQC" "$D/sq/onnx/model.onnx" -o "$SO" --rotate=hadamard --quantize=w4a4kv4
      else
        "$PY" bench/make_synthetic_llama.py "$D/sq/onnx" --shape "$s" --layers "$L" 2> "$D/sq/gen.log"
        t0=$(date +%s)
        if /usr/bin/time -f "compile: %e s, peak RSS %M KB" "$SQC" "$D/sq/onnx/model.onnx" -o "$SO" \
             --rotate=hadamard --quantize=w4a4kv4 > "$D/sq/compile.log" 2>&1; then
          rm -f "$D/sq/compile.failed"
          log "compiled in $(( $(date +%s) - t0 )) s"
        else
          NOTE[$s]="SQ: sq-compile failed (tail of $D/sq/compile.log: $(tail -1 "$D/sq/compile.log" | cut -c1-120))"
          rm -f "$SO" "$SO.weights"
          touch "$D/sq/compile.failed"
        fi
      fi
      run rm -rf "$D/sq/onnx"
    fi
  fi
done

# --- measurements -----------------------------------------------------------
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
J=$P/ratios/$RUN_ID.jsonl
emit() {  # emit KEY=VALUE... JSON_OR_EMPTY: one line of $J
  local extra=$1; shift
  "$PY" -c 'import json, sys
d = dict(a.split("=", 1) for a in sys.argv[2:])
try:
    d["result"] = json.loads(sys.argv[1]) if sys.argv[1] else None
except ValueError:
    d["result"] = None; d["error"] = sys.argv[1][-300:]
print(json.dumps(d))' "$extra" "$@" >> "$J"
}
measure() {  # measure SHAPE LAYERS THREADS ENGINE KIND PROMPT DECODE REPEATS
  local s=$1 L=$2 t=$3 e=$4 kind=$5 p=$6 d=$7 r=$8 D=$M/$1-l$2 b0 b1 out rc=0
  local cmd
  case "$e" in
    sq) cmd=(env SQ_NUM_THREADS="$t" "$P/decode_bench" "$D/sq/model.so" --prompt "$p" --decode "$d" --repeats "$r" --json) ;;
    llama.cpp) cmd=(node bench/llama_cpp_runner.mjs "$D/q4_0.gguf" --prompt "$p" --decode "$d" --repeats "$r" --threads "$t") ;;
    ort) cmd=(env ORT_NUM_THREADS="$t" node bench/ort_runner.js bench "$D/ort/model.onnx" "$p" "$d" "$r") ;;
  esac
  if [ "$DRY" = 1 ]; then run "${cmd[@]}"; return; fi
  if [ "$e" = sq ] && [ -n "${NOTE[$s]:-}" ]; then
    emit "" shape="$s" layers="$L" threads="$t" engine="$e" kind="$kind" prompt="$p" error="${NOTE[$s]}"
    return
  fi
  log "$s L$L t$t $e: prompt $p, decode $d, repeats $r"
  b0=$(busy)
  out=$("${cmd[@]}" 2> "$P/ratios/last.err") || rc=$?
  b1=$(busy)
  if [ $rc != 0 ]; then out="$e exited $rc: $(tail -2 "$P/ratios/last.err" | tr '\n' ' ')"; fi
  emit "$out" shape="$s" layers="$L" threads="$t" engine="$e" kind="$kind" prompt="$p" busy0="$b0" busy1="$b1"
}

sync  # let the writeback of freshly generated models finish before timing
[ "$DRY" = 1 ] || : > "$J"
for t in $THREADS_LIST; do
  log "bandwidth, $t thread(s)"
  if [ "$DRY" = 1 ]; then run "$P/bandwidth" --threads "$t" --json
  else
    b0=$(busy); bw=$("$P/bandwidth" --threads "$t" --json); b1=$(busy)
    emit "$bw" kind=bandwidth threads="$t" busy0="$b0" busy1="$b1"
  fi
done
for s in $SHAPES; do
  L=${LAYERS:-$(full_layers "$s")}
  for t in $THREADS_LIST; do
    for e in $ENGINES; do
      measure "$s" "$L" "$t" "$e" short "$SHORT" "$DECODE" "$REPEATS"
      for p in $PROMPTS; do
        measure "$s" "$L" "$t" "$e" long "$p" "$LDECODE" "$LREPEATS"
      done
    done
  done
done
# Same weights: do the two peers compute the same logits? (8 tokens; as decode_ratios.sh)
if has llama.cpp && has ort; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -c "import struct; open('$TMP/t.bin','wb').write(struct.pack('<8i', 1, 300, 1000, 5000, 31999, 7, 77, 777))"
  for s in $SHAPES; do
    L=${LAYERS:-$(full_layers "$s")}
    D=$M/$s-l$L
    run node bench/llama_cpp_runner.mjs "$D/q4_0.gguf" --tokens "$TMP/t.bin" --seqlen 8 --logits-out "$TMP/l.bin" >/dev/null
    if [ "$DRY" = 1 ]; then
      run node bench/ort_runner.js compare "$D/ort/model.onnx" "$TMP/t.bin" 8 "$TMP/l.bin"
    else
      emit "$(node bench/ort_runner.js compare "$D/ort/model.onnx" "$TMP/t.bin" 8 "$TMP/l.bin" || true)" \
        kind=check shape="$s" layers="$L"
    fi
  done
fi
[ "$DRY" = 1 ] && exit 0

# --- the table --------------------------------------------------------------
CMDLINE="bench/ratios.sh $ARGS"
SECTION=$("$PY" bench/ratios_table.py "$J" --models "$M" --prompts "$PROMPTS" --short "$SHORT" \
          --decode "$DECODE" --long-decode "$LDECODE" --busy-max "$BUSYMAX" --command "$CMDLINE" --sq-compile "$(has sq && echo "$SQC")")
if [ -n "$OUT" ]; then printf '%s\n' "$SECTION" > "$OUT"; log "wrote $OUT"; fi
if [ -n "$UPDATE" ]; then
  "$PY" - "$UPDATE" "$SECTION" <<'PY'
import sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
b, e = "<!-- ratios:begin -->\n", "<!-- ratios:end -->"
i, j = text.index(b) + len(b), text.index(e)
open(path, "w").write(text[:i] + section.rstrip("\n") + "\n" + text[j:])
PY
  log "rewrote the ratios section of $UPDATE"
fi
[ -n "$OUT" ] || [ -n "$UPDATE" ] || printf '%s\n' "$SECTION"
log "raw runs: $J"
