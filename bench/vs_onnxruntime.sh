#!/usr/bin/env bash
# SQ's reference executor against onnxruntime (npm onnxruntime-node, a real
# ONNX runtime) on the same ONNX files, in one script:
#   1. numeric cross-check: logits of the same 64 tokens;
#   2. speed: prefill and decode tokens/s, and SQ / onnxruntime ratios.
#
#   bench/vs_onnxruntime.sh               the models of ../shared/data
#   bench/vs_onnxruntime.sh --synthetic   also a 2-layer LLaMA-2-7B-shaped model
#
# Needs: build/ (scripts/build.sh), node + npm (onnxruntime-node is installed
# into build/ort on first use), /usr/bin/python3 with python3-onnx and
# python3-numpy for --synthetic. A benchmark, not a test: the machine is
# shared and noisy, so read the ratios, not the absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SQ_SHARED_DATA:-../shared/data}
ORT_DIR=build/ort
if [ ! -d "$ORT_DIR/node_modules/onnxruntime-node" ]; then
  npm install --prefix "$ORT_DIR" --ignore-scripts --no-audit --no-fund \
    onnxruntime-node@1.30.0 >/dev/null
fi
export NODE_PATH=$PWD/$ORT_DIR/node_modules
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
/usr/bin/python3 -c "import struct, random; random.seed(0); open('$TMP/tokens.bin','wb').write(struct.pack('<128i', *[random.randrange(256) for _ in range(128)]))"

MODELS=("$DATA/wiki2-byte-llama/model.onnx" "$DATA/stories260K-onnx/nocache/model.onnx"
        "$DATA/stories260K-onnx/kvcache/model.onnx")
if [ "${1:-}" = "--synthetic" ]; then
  /usr/bin/python3 bench/make_synthetic_llama.py "$TMP/synth" --layers 2 2>/dev/null
  MODELS+=("$TMP/synth/model.onnx")
fi
echo "== numeric cross-check of the import fixtures (16 tokens; fp16 models compute in fp16 in onnxruntime)"
/usr/bin/python3 -c "import struct; open('$TMP/tok32.bin','wb').write(struct.pack('<16i', *[(7*i+3) % 32 for i in range(16)]))"
for f in test/Import/Inputs/*.onnx; do
  build/bin/sq-run "$f" --tokens "$TMP/tok32.bin" --seqlen 16 --max-windows 1 \
    --logits-out "$TMP/sq.bin" >/dev/null
  printf '%-45s %s\n' "$(basename "$f")" \
    "$(node bench/ort_runner.js compare "$f" "$TMP/tok32.bin" 16 "$TMP/sq.bin" 2>&1 | tail -1)"
done
echo
echo "== models: logits of the same 64 tokens, then speed (median of 3)"
PROMPT=${PROMPT:-128}
DECODE=${DECODE:-32}
printf '%-45s %12s %14s %14s %8s %14s %14s %8s\n' model "rel. error" "sq prefill/s" "ort prefill/s" ratio \
  "sq decode/s" "ort decode/s" ratio
for m in "${MODELS[@]}"; do
  [ -f "$m" ] || { echo "skipping $m (not present)"; continue; }
  build/bin/sq-run "$m" --tokens "$TMP/tokens.bin" --seqlen 64 --max-windows 1 \
    --logits-out "$TMP/sq.bin" >/dev/null
  cmp=$(node bench/ort_runner.js compare "$m" "$TMP/tokens.bin" 64 "$TMP/sq.bin")
  sq=$(build/bin/sq-run "$m" --bench --prompt-len "$PROMPT" -n "$DECODE" --repeats 3)
  ort=$(node bench/ort_runner.js bench "$m" "$PROMPT" "$DECODE" 3)
  /usr/bin/python3 - "$m" "$cmp" "$sq" "$ort" <<'PY'
import json, sys
m, cmp, sq, ort = sys.argv[1], *map(json.loads, sys.argv[2:])
name = "/".join(m.split("/")[-3:])
od = ort["decode_tokens_per_s"]
print("%-45s %12.2e %14.0f %14.0f %8.2f %14.1f %14s %8s" % (
    name, cmp["rel_max_error"], sq["prefill_tokens_per_s"], ort["prefill_tokens_per_s"],
    sq["prefill_tokens_per_s"] / ort["prefill_tokens_per_s"], sq["decode_tokens_per_s"],
    "%.1f" % od if od else "n/a (no cache)",
    "%.2f" % (sq["decode_tokens_per_s"] / od) if od else "-"))
PY
done
