#!/usr/bin/env bash
# Installs what is missing, builds SQ, then runs the small LLaMA bundled in
# models/stories260K (TinyStories, 260K parameters):
#   1. import its ONNX export into the sq dialect and list its weights;
#   2. generate text from "Once upon a time" with the reference executor;
#   3. compile it with sq-compile: the default recipe (SpinQuant's learned
#      rotations R1/R2 by Cayley SGD with learned equivalence scales and clip
#      ratios, R3 by search, online Hadamard R4, W4A4KV4 with int4 weights,
#      activations and KV cache) into model.so, and the float
#      model and QuaRot-style Hadamard rotations for comparison;
#   4. perplexity of each model.so on a TinyStories excerpt, and a short
#      generation from the W4A4KV4 model.so.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh

BIN=build/bin
MODEL=models/stories260K
OUT=build/quickstart
mkdir -p "$OUT"

echo
echo "== 1. Import $MODEL/model.onnx into the sq dialect"
"$BIN/sq-translate" --import-onnx "$MODEL/model.onnx" --emit-bytecode -o "$OUT/model.mlirbc"
"$BIN/sq-opt" "$OUT/model.mlirbc" --mlir-elide-resource-strings-if-larger=64 | sed -n 1p | cut -c1-400
"$BIN/sq-opt" "$OUT/model.mlirbc" --sq-weight-summary -o /dev/null 2>&1 | tail -1
echo "ops in the model (5 layers): $("$BIN/sq-opt" "$OUT/model.mlirbc" --mlir-elide-resource-strings-if-larger=64 |
  grep -oE 'sq\.(attention|rms_norm|linear|rope)' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"

echo
echo "== 2. Generate 40 tokens after \"Once upon a time\" (greedy)"
"$BIN/sq-run" "$OUT/model.mlirbc" --tokenizer "sp:$MODEL/tok512.model" \
  --generate "Once upon a time" -n 40

echo
echo "== 3. Compile with sq-compile (model.onnx -> model.so + model.so.weights)"
echo "   default recipe: R1/R2 learned by Cayley SGD (100 steps) with equivalence scales and clip"
echo "   ratios, R3 by search, on the WikiText-2"
echo "   excerpt compiled into SQ, read with the model's tokenizer; R4 online Hadamard; W4A4KV4 (RTN)"
TOK="sp:$MODEL/tok512.model"
time_it() { local t0=$SECONDS; "$@"; echo "   ($((SECONDS - t0)) s)"; }
time_it "$BIN/sq-compile" "$MODEL/model.onnx" --tokenizer "$TOK" -o "$OUT/model.so"
echo "   for comparison: the float model, and W4A4KV4 with Hadamard rotations (no training)"
"$BIN/sq-compile" "$MODEL/model.onnx" --rotate=none --quantize=none -o "$OUT/model-fp.so"
"$BIN/sq-compile" "$MODEL/model.onnx" --rotate=hadamard -o "$OUT/model-hadamard.so"
ls -l "$OUT"/model*.so "$OUT"/model*.so.weights | awk '{print "   " $5 " bytes  " $9}'

echo
echo "== 4. Perplexity on $MODEL/tinystories_valid_head.txt (windows of 512 tokens)"
for so in model-fp model-hadamard model; do
  case $so in
    model-fp) label="fp32";;
    model-hadamard) label="W4A4KV4, Hadamard";;
    model) label="W4A4KV4, learned";;
  esac
  printf '%-30s ' "$label:"
  "$BIN/sq-run" "$OUT/$so.so" --tokenizer "$TOK" \
    --ppl "$MODEL/tinystories_valid_head.txt" --seqlen 512
done
echo "W4A4KV4 generation from model.so (a 260K-parameter model loses much at 4-bit activations;"
echo "see docs/results.md):"
"$BIN/sq-run" "$OUT/model.so" --tokenizer "$TOK" --generate "Once upon a time" -n 40
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  echo "The same model.so from Python (python/sq, ctypes):"
  /usr/bin/python3 -c "
import sys; sys.path.insert(0, 'python')
import sq
m = sq.Model('$OUT/model.so')
print('  ', m.description)
print('   logits of 3 tokens:', m.logits([1, 403, 407]).shape)"
fi

echo
echo "Done. The IR is in $OUT/model.mlirbc, the compiled model in $OUT/model.so; try:"
echo "  $BIN/sq-opt $OUT/model.mlirbc --mlir-elide-resource-strings-if-larger=64 | less"
echo "  $BIN/sq-run $OUT/model.so --tokenizer $TOK --generate \"One day\" -n 60"
