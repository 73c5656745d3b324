#!/bin/sh
# emit_ptx.sh KERNELS.mlir SM OUT.ptx
#   Compiles the kernel library (Kernels.mlir) to PTX for sm_SM (80, 86, 89,
#   90, ...) with upstream MLIR passes and LLVM's NVPTX backend, through
#   sq-opt (build/bin/sq-opt, or $SQ_OPT). For SM >= 90 the kernels between
#   "// BEGIN sm80-only" and "// END sm80-only" (sq_qgemm_s4: there is no
#   int4 mma on sm_90) are left out. PTX ISA 8.0 (+ptx80), -O3.
set -eu
if [ $# -ne 3 ]; then
  echo "usage: $0 KERNELS.mlir SM OUT.ptx   (SM: 80, 86, 89, 90, ...)" >&2
  exit 2
fi
in=$1 sm=${2#sm_} out=$3
here=$(cd "$(dirname "$0")" && pwd)
opt=${SQ_OPT:-$here/../../../build/bin/sq-opt}
python=${PYTHON:-python3}
# libdevice (exp, cos, sin, pow) is linked from the CUDA toolkit; name it
# explicitly: MLIR only finds it through CUDA_HOME et al. otherwise.
cuda=${CUDA_HOME:-/usr/local/cuda}
libdevice=$cuda/nvvm/libdevice/libdevice.10.bc
if [ ! -f "$libdevice" ]; then
  echo "$0: no libdevice at $libdevice (set CUDA_HOME)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
if [ "$sm" -ge 90 ]; then
  sed '/\/\/ BEGIN sm80-only/,/\/\/ END sm80-only/d' "$in" > "$tmp/k.mlir"
else
  cp "$in" "$tmp/k.mlir"
fi
"$opt" "$tmp/k.mlir" \
  --nvvm-attach-target="chip=sm_$sm features=+ptx80 O=3 l=$libdevice" \
  --convert-scf-to-cf \
  --convert-gpu-to-nvvm \
  --convert-math-to-llvm --convert-arith-to-llvm --convert-cf-to-llvm \
  --reconcile-unrealized-casts \
  --gpu-module-to-binary="format=isa toolkit=$cuda" \
  -o "$tmp/bin.mlir"
"$python" "$here/extract_ptx.py" "$tmp/bin.mlir" > "$tmp/out.ptx"
mv "$tmp/out.ptx" "$out"
