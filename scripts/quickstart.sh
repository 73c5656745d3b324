#!/usr/bin/env bash
# Installs what is missing, builds SQ, then runs the small LLaMA bundled in
# models/stories260K (TinyStories, 260K parameters):
#   1. import its ONNX export into the sq dialect and list its weights;
#   2. generate text from "Once upon a time" with the reference executor;
#   3. measure its perplexity on a TinyStories excerpt;
#   4. rotate it (SpinQuant recipe with Hadamard rotations), quantize it to
#      W4A4KV4 and W8A8, and compare perplexities and generated text.
# (Learned rotations and the compiled model.so join this script as those
# features land.)
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
echo "== 3. Perplexity on $MODEL/tinystories_valid_head.txt (windows of 512 tokens, fp32)"
"$BIN/sq-run" "$MODEL/model.onnx" --tokenizer "sp:$MODEL/tok512.model" \
  --ppl "$MODEL/tinystories_valid_head.txt" --seqlen 512

echo
echo "== 4. SpinQuant: learned rotations + quantization (RTN; fake-quantized, run by the executor)"
echo "   R1/R2 are trained by Cayley SGD (100 steps) on the WikiText-2 excerpt compiled into SQ,"
echo "   tokenized with the model's tokenizer, under the quantization they will serve;"
echo "   the QuaRot-style Hadamard rotations (no training) are shown for comparison"
echo "   (at W8A8 there is little to learn: Hadamard only)."
for run in w8a8:hadamard w4a4kv4:hadamard w4a4kv4:learned; do
  spec=${run%%:*} mode=${run##*:}
  "$BIN/sq-opt" "$OUT/model.mlirbc" \
    --spinquant-rotate="mode=$mode tokenizer=sp:$MODEL/tok512.model quant=$spec" \
    --quantize=$spec --emit-bytecode -o "$OUT/model-$spec-$mode.mlirbc"
  printf '%-8s %-9s ' "$spec:" "$mode"
  "$BIN/sq-run" "$OUT/model-$spec-$mode.mlirbc" --tokenizer "sp:$MODEL/tok512.model" \
    --ppl "$MODEL/tinystories_valid_head.txt" --seqlen 512
done
cp "$OUT/model-w4a4kv4-learned.mlirbc" "$OUT/model-w4a4kv4.mlirbc"
echo "W4A4KV4 generation (a 260K-parameter model loses much at 4-bit activations; see docs/results.md):"
"$BIN/sq-run" "$OUT/model-w4a4kv4.mlirbc" --tokenizer "sp:$MODEL/tok512.model" \
  --generate "Once upon a time" -n 40

echo
echo "Done. The IR is in $OUT/model.mlirbc; try:"
echo "  $BIN/sq-opt $OUT/model.mlirbc --mlir-elide-resource-strings-if-larger=64 | less"
