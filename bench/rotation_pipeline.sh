#!/bin/bash
# Time and peak RSS of the rotation pipeline (--sq-fuse-norms,
# --spinquant-rotate, --sq-online-hadamard) on the LLaMA-2-7B-shaped
# synthetic model (bench/make_synthetic_llama.py: fp16 weights).
#
#   bench/rotation_pipeline.sh WORKDIR [LAYERS] [MODES] [WEIGHT_TYPES]
#
# LAYERS defaults to 32 (13.5 GB of fp16 weights; WORKDIR needs about 3x
# that on disk); MODES to "hadamard random"; WEIGHT_TYPES to "keep f32"
# (f32 output of a 32-layer model is 27 GB: more than this machine's RAM,
# skip it there). Prints one markdown table row per run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: bench/rotation_pipeline.sh WORKDIR [LAYERS] [MODES] [WEIGHT_TYPES]}
layers=${2:-32}
modes=${3:-hadamard random}
types=${4:-keep f32}
bin=$root/build/bin
model=$work/l$layers
mkdir -p "$work"
if [ ! -f "$model/model.onnx" ]; then
  /usr/bin/python3 "$root/bench/make_synthetic_llama.py" "$model" --layers "$layers" >&2
fi
if [ ! -f "$model.mlirbc" ]; then
  "$bin/sq-translate" --import-onnx "$model/model.onnx" --emit-bytecode -o "$model.mlirbc"
fi
in_bytes=$(stat -c %s "$model.mlirbc")
echo "| layers | mode | weight-type | input | output | wall time | peak RSS | peak RSS / input |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $modes; do
  for wt in $types; do
    out=$work/rotated.mlirbc
    rm -f "$out"
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$bin/sq-opt" "$model.mlirbc" \
      --sq-fuse-norms=weight-type=$wt \
      --spinquant-rotate="mode=$mode weight-type=$wt" \
      --sq-online-hadamard=weight-type=$wt --emit-bytecode -o "$out"
    read -r secs kb < "$work/time.txt"
    out_bytes=$(stat -c %s "$out")
    awk -v l="$layers" -v m="$mode" -v w="$wt" -v i="$in_bytes" -v o="$out_bytes" \
        -v s="$secs" -v k="$kb" 'BEGIN {
      printf "| %d | %s | %s | %.2f GB | %.2f GB | %.1f s | %.2f GB | %.2fx |\n",
             l, m, w, i / 1e9, o / 1e9, s, k * 1024 / 1e9, k * 1024 / i }'
    rm -f "$out"
  done
done
