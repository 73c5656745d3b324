#!/usr/bin/env bash
# Installs what is missing, builds SQ, then shows it at work on the example
# model checked into examples/ (a tiny LLaMA-shaped model in the sq dialect):
# verify it, list its weights, round-trip it through MLIR bytecode and print
# its IR with the weight blobs elided.
#
# (The import of the bundled ONNX model, SpinQuant W4A4KV4 compilation,
# perplexity and generation join this script as those features land.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh

SQ_OPT=build/bin/sq-opt
MODEL=examples/tiny-llama.mlir
OUT=build/quickstart
mkdir -p "$OUT"

echo
echo "== 1. Weights of $MODEL (sq-opt --sq-weight-summary)"
"$SQ_OPT" "$MODEL" --sq-weight-summary -o /dev/null

echo
echo "== 2. Round trip through MLIR bytecode"
"$SQ_OPT" "$MODEL" --emit-bytecode -o "$OUT/tiny-llama.mlirbc"
"$SQ_OPT" "$OUT/tiny-llama.mlirbc" -o "$OUT/from-bytecode.mlir"
"$SQ_OPT" "$MODEL" -o "$OUT/from-text.mlir"
cmp -s "$OUT/from-bytecode.mlir" "$OUT/from-text.mlir"
echo "text $(stat -c %s "$MODEL") bytes -> bytecode $(stat -c %s "$OUT/tiny-llama.mlirbc") bytes -> identical IR back"

echo
echo "== 3. The model's first layer, weights elided (--mlir-elide-resource-strings-if-larger=64)"
"$SQ_OPT" "$MODEL" --mlir-elide-resource-strings-if-larger=64 | sed -n '1,32p'
echo "    ..."
echo
echo "Done. Try: $SQ_OPT --help | grep -A3 'sq-'   and   docs/reference/SQDialect.md"
