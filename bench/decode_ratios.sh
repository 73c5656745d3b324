#!/usr/bin/env bash
# Decode tokens/s of a LLaMA-2-7B-shaped layer stack (random weights, int4)
# against the memory-bandwidth bound and two peers, in one table (issue #9):
#
#   bound      = measured read bandwidth (bench/bandwidth.c, all threads)
#                / weight bytes read per decoded token (7 linears per layer +
#                LM head + norms; the embedding table is not read per token)
#   llama.cpp  = Q4_0 GGUF (bench/make_q4_peers.py), npm node-llama-cpp@3.22.1
#                prebuilt CPU binaries (bench/llama_cpp_runner.mjs)
#   ort        = onnxruntime-node@1.30.0, com.microsoft::MatMulNBits 4-bit
#                (same weights as the GGUF when --block 32; bench/ort_runner.js)
#   SQ         = build/bin/sq-compile (or $SQ_COMPILE) --rotate=hadamard --quantize=w4a4kv4 of
#                bench/make_synthetic_llama.py, timed by bench/decode_bench.c
#                through the C API (only if that sq-compile exists)
#
#   bench/decode_ratios.sh [--layers N] [--decode N] [--repeats N] [--block 32|128]
#                          [--threads N] [--rounds N]
#
# Defaults: 4 layers (~0.6 GB GGUF, ~0.85 GB ONNX, each generated once), 32
# decode tokens after a 16-token prompt, median of 5 repeats, all cores.
# Everything generated or installed is cached under build/bench-peers/, so a
# second run only measures. --rounds N repeats the whole measurement N times
# and keeps each engine's best round (the least disturbed by other processes;
# the table also prints how busy the CPUs were just before and after). A benchmark, not a test: the machine is shared
# and noisy, so read the ratios; never gate on them.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=4 DECODE=32 PROMPT=16 REPEATS=5 BLOCK=32 THREADS=$(nproc) ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) LAYERS=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --block) BLOCK=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "decode_ratios.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
P=build/bench-peers
M=$P/models
mkdir -p "$M"
PY=/usr/bin/python3
CC=$(command -v clang-22 || command -v cc)
log() { echo "[decode_ratios] $*" >&2; }
run() { "$@"; }
. bench/common.sh  # build_c, busy

# --- tools (cached) ---------------------------------------------------------
if ! "$PY" -c 'import numpy, onnx' 2>/dev/null; then
  log "installing python3-onnx python3-numpy (apt)"
  apt-get install -y python3-onnx python3-numpy >/dev/null
fi
NM=$P/npm/node_modules
if [ ! -d "$NM/node-llama-cpp" ] || [ ! -d "$NM/@node-llama-cpp/linux-x64" ] ||
   [ ! -d "$NM/onnxruntime-node" ]; then
  log "installing node-llama-cpp@3.22.1, @node-llama-cpp/linux-x64, onnxruntime-node@1.30.0 into $P/npm"
  # --ignore-scripts: the postinstall scripts try to download/build things;
  # --omit=optional: skips the CUDA/Vulkan/ARM binary packages (~650 MB).
  npm install --prefix "$P/npm" --ignore-scripts --omit=optional --no-audit --no-fund \
    node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 onnxruntime-node@1.30.0 >/dev/null
fi
export NODE_PATH=$PWD/$NM SQ_PEERS_NODE_MODULES=$PWD/$NM
build_c bench/bandwidth.c "$P/bandwidth" -O3 -march=native -pthread
build_c bench/decode_bench.c "$P/decode_bench" -O2 -march=native -Iinclude -ldl

# --- models (cached) --------------------------------------------------------
GGUF=$M/q4_0-l$LAYERS.gguf
ORTD=$M/matmulnbits-l$LAYERS-b$BLOCK
META=$M/q4-l$LAYERS-b$BLOCK.json
if [ ! -f "$META" ] || [ ! -f "$GGUF" ] || [ ! -f "$ORTD/model.onnx" ] ||
   [ bench/make_q4_peers.py -nt "$META" ]; then
  log "writing $GGUF and $ORTD ($LAYERS layers)"
  rm -rf "$GGUF" "$ORTD" "$META"
  "$PY" bench/make_q4_peers.py --gguf "$GGUF" --onnx "$ORTD" --layers "$LAYERS" --block "$BLOCK" \
    2>/dev/null > "$META.tmp"
  mv "$META.tmp" "$META"
fi

SQC=${SQ_COMPILE:-build/bin/sq-compile}
SQNOTE=""
if [ -x "$SQC" ]; then
  SQD=$M/sq-l$LAYERS
  SO=$SQD/model.so
  mkdir -p "$SQD"
  FAILED=$SQD/compile.failed  # a failed compile is retried only when sq-compile changes
  if [ -f "$FAILED" ] && [ ! "$SQC" -nt "$FAILED" ]; then
    SQNOTE="SQ: sq-compile failed earlier (see $SQD/compile.log; retried when $SQC changes)"
  elif [ ! -f "$SO" ] || [ "$SQC" -nt "$SO" ] || [ bench/make_synthetic_llama.py -nt "$SO" ]; then
    log "compiling SQ model ($LAYERS layers; the fp16 ONNX is deleted afterwards)"
    rm -f "$SO" "$SO.weights"
    "$PY" bench/make_synthetic_llama.py "$SQD/onnx" --layers "$LAYERS" 2>/dev/null
    t0=$(date +%s)
    if ! "$SQC" "$SQD/onnx/model.onnx" -o "$SO" --rotate=hadamard --quantize=w4a4kv4 \
         > "$SQD/compile.log" 2>&1; then
      SQNOTE="SQ: sq-compile failed (tail of $SQD/compile.log: $(tail -1 "$SQD/compile.log" | cut -c1-120))"
      rm -f "$SO" "$SO.weights"
      touch "$FAILED"
    else
      rm -f "$FAILED"
      echo "compile seconds: $(( $(date +%s) - t0 ))" >> "$SQD/compile.log"
    fi
    rm -rf "$SQD/onnx"
  fi
else
  SQNOTE="SQ: sq-compile not built"
fi

# --- measurements -----------------------------------------------------------
sync  # let the writeback of freshly generated models finish before timing
BUSY0=$(busy)
BWS=() LLS=() ORTS=() SQS=()
for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS: bandwidth"
  BWS+=("$("$P/bandwidth" --threads "$THREADS" --json)")
  log "round $round/$ROUNDS: llama.cpp"
  LLS+=("$(node bench/llama_cpp_runner.mjs "$GGUF" --prompt "$PROMPT" --decode "$DECODE" \
             --repeats "$REPEATS" --threads "$THREADS")")
  log "round $round/$ROUNDS: onnxruntime"
  ORTS+=("$(ORT_NUM_THREADS=$THREADS node bench/ort_runner.js bench "$ORTD/model.onnx" "$PROMPT" "$DECODE" "$REPEATS")")
  if [ -n "${SO:-}" ] && [ -f "$SO" ] && [ -z "$SQNOTE" ]; then
    log "round $round/$ROUNDS: SQ"
    if J=$(SQ_NUM_THREADS=$THREADS "$P/decode_bench" "$SO" --prompt "$PROMPT" --decode "$DECODE" \
             --repeats "$REPEATS" --json 2> "$SQD/run.log"); then
      SQS+=("$J")
    else
      SQNOTE="SQ: decode_bench failed: $(tail -1 "$SQD/run.log" | cut -c1-160)"
    fi
  fi
done
BUSY1=$(busy)
join() { local IFS=,; echo "[$*]"; }
CHECK='{}'
if [ "$BLOCK" = 32 ]; then  # same weights: do the two peers compute the same logits?
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -c "import struct; open('$TMP/t.bin','wb').write(struct.pack('<8i', 1, 300, 1000, 5000, 31999, 7, 77, 777))"
  node bench/llama_cpp_runner.mjs "$GGUF" --tokens "$TMP/t.bin" --seqlen 8 --logits-out "$TMP/l.bin" >/dev/null
  CHECK=$(node bench/ort_runner.js compare "$ORTD/model.onnx" "$TMP/t.bin" 8 "$TMP/l.bin")
fi

"$PY" - "$LAYERS" "$THREADS" "$(join "${BWS[@]}")" "$(cat "$META")" "$(join "${LLS[@]}")" \
  "$(join "${ORTS[@]}")" "$(join "${SQS[@]}")" "$SQNOTE" "$CHECK" "$BUSY0" "$BUSY1" "${SO:-}" <<'PY'
import json, re, sys
layers, threads = int(sys.argv[1]), sys.argv[2]
bws, meta, lls, orts, sqs = (json.loads(a) for a in sys.argv[3:8])
sqnote, check, busy0, busy1 = sys.argv[8], json.loads(sys.argv[9]), sys.argv[10], sys.argv[11]
best = lambda runs: max(runs, key=lambda r: r["decode_tokens_per_s"]) if runs else None
bw = max(bws, key=lambda r: r["read_nt_gbs"])
ll, ort, sq = best(lls), best(orts), best(sqs)
gbs = bw["read_nt_gbs"]
print("decode, LLaMA-2-7B shape (hidden 4096, 32 heads, ffn 11008, vocab 32000), %d layers, "
      "batch 1, %d tokens after a %d-token prompt, %s threads, median of %d, best of %d round(s)"
      % (layers, ll["decode"], ll["prompt"], threads, ll["repeats"], len(lls)))
print("CPU busy (all processes) just before/after the measurements: %s%% / %s%%%s" % (
    busy0, busy1, "  -- other work was running: numbers are low and noisy" if max(int(busy0), int(busy1)) > 15 else ""))
print("bandwidth: read %.1f GB/s (%d threads, kernel %s; 1 thread %.1f), triad %.1f GB/s (1 thread %.1f); "
      "bound = read GB/s / bytes per token"
      % (gbs, bw["threads"], bw.get("read_nt_variant", "scalar8"), bw["read_1t_gbs"], bw["triad_nt_gbs"],
         bw["triad_1t_gbs"]))
rows = []
sq_bytes, sq_head = None, ""
if sq:
    # Bytes per token from the manifest sq-compile embeds in model.so
    # ("weight SLOT BITS STORAGE ROWS COLS KERNELBLOCK NAME" lines, STORAGE 0
    # fp32, 1 f16, 2 bf16; lib/Runtime/ModelFormat.cpp):
    # every weight but the embedding table; fallback: the sidecar's size.
    try:
        text = open(sys.argv[12], "rb").read()
        man = text[text.index(b"sq-model "):].split(b"\0")[0].decode()
        ws = [l.split(" ", 7)[1:] for l in man.splitlines() if l.startswith("weight ")]
        nbytes = lambda b, st, r, c: r * ((c * b + 7) // 8) if b else r * c * (4 if st == 0 else 2)
        sq_bytes = sum(nbytes(int(b), int(st), int(r), int(c)) for _, b, st, r, c, _kb, n in ws
                       if "embed_tokens" not in n)
        fmt = lambda b, st: "int%s" % b if int(b) else ("fp32", "fp16", "bf16")[int(st)]
        sq_head = ",".join("%s %s" % (n, fmt(b, st)) for _, b, st, r, c, _kb, n in ws if "lm_head" in n)
        label = "SQ w4a4kv4 (manifest weights - embedding)"
    except (OSError, ValueError, IndexError):
        sq_bytes, label = sq["weights_file_bytes"], "SQ w4a4kv4 (bytes: weights sidecar size)"
    if sq_bytes <= 0:  # no sidecar: the Q4_0 bytes of the same shape
        sq_bytes, label = meta["gguf_bytes_per_token"], "SQ w4a4kv4 (bytes: Q4_0 of the shape)"
    rows.append((label, sq_bytes, sq["decode_tokens_per_s"]))
rows.append(("llama.cpp Q4_0 (%s)" % ",".join(b for b in ll["backend"] if b.startswith("lib")),
             meta["gguf_bytes_per_token"], ll["decode_tokens_per_s"]))
rows.append(("onnxruntime MatMulNBits b%d" % meta["onnx_block"], meta["onnx_bytes_per_token"],
             ort["decode_tokens_per_s"]))
print()
print("%-44s %12s %12s %12s %9s %9s" % ("engine", "MB/token", "bound tok/s", "tok/s", "ms/token", "of bound"))
for name, b, t in rows:
    bound = gbs * 1e9 / b
    print("%-44s %12.1f %12.2f %12.2f %9.1f %8.0f%%" % (name, b / 1e6, bound, t, 1000 / t, 100 * t / bound))
if not sq:
    print(sqnote)
else:
    print()
    bound = gbs * 1e9 / sq_bytes
    print("SQ/bound %.2f   SQ/llama.cpp %.2f   SQ/ort %.2f   (goal: SQ/bound >= 0.70)" % (
        sq["decode_tokens_per_s"] / bound, sq["decode_tokens_per_s"] / ll["decode_tokens_per_s"],
        sq["decode_tokens_per_s"] / ort["decode_tokens_per_s"]))
    print("SQ model: %s; weights file %.1f MB%s" % (sq.get("description", ""), sq["weights_file_bytes"] / 1e6,
          "; " + sq_head if sq_head else ""))
    if sqnote:
        print(sqnote)
if check:
    print("peer cross-check (same Q4_0 weights): ort vs llama.cpp logits, 8 tokens: rel. max error %.3g"
          % check["rel_max_error"])
PY
