#!/usr/bin/env bash
# The GPU numbers of issue #10, on the machine's GPU:
#
#   1. GEMM: the kernel library's sq_qgemm_s4 (sm_80/86/89) and sq_qgemm_s8
#      vs cuBLAS bf16 on LLaMA-7B projection shapes, TOP/s and SQ/cuBLAS, the
#      M = 1 weight bandwidth vs the device's peak, and a check of sampled
#      outputs against the KernelABI.h formula (build/bench/gpu_gemm_bench,
#      on PTX emitted here by lib/Conversion/SQToNVVM/emit_ptx.sh).
#   2. Decode: a LLaMA-2-7B-shaped synthetic model (bench/make_synthetic_llama.py,
#      --layers 4 by default) compiled with sq-compile --target=nvptx --sm=SM
#      --rotate=hadamard (w4a4kv4), timed by bench/decode_bench.c through the
#      C API: ms/token against the bound weight bytes per token (from the
#      manifest, as decode_ratios.sh counts them) / peak bandwidth.
#
#   bench/gpu_ratios.sh [SM] [--layers N] [--decode N] [--repeats N]
#                       [--min-ms T] [--dry-run]
#
# SM (80, 86, 89, 90, ...): default nvidia-smi --query-gpu=compute_cap of
# device $SQ_CUDA_DEVICE (0), else what gpu_gemm_bench --probe reports. It is
# clamped to what sq-compile knows (80, 86, 89, 90; newer GPUs JIT the sm_90
# PTX). Tools: $SQ_BUILD_DIR (default build)/bench/gpu_gemm_bench
# (-DSQ_BUILD_BENCHMARKS=ON), bin/sq-opt, bin/sq-compile ($SQ_OPT, $SQ_COMPILE
# override). Nothing is built here except the PTX and, when
# build/bench-peers/decode_bench is missing, that small C program (as
# decode_ratios.sh does). The compiled model is cached under
# build/bench-peers/models/ ($SQ_BENCH_PEERS; the ONNX is deleted after the
# compile). Without a
# GPU the script prints what it skipped and exits 0; --dry-run prints the
# commands instead of running them. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
SM="" LAYERS=4 DECODE=32 PROMPT=16 REPEATS=5 MINMS=20 DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sm) SM=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --min-ms) MINMS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    [0-9]*) SM=$1; shift ;;
    *) echo "gpu_ratios.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
SM=${SM#sm_}
B=${SQ_BUILD_DIR:-build}
BENCH=$B/bench/gpu_gemm_bench
OPT=${SQ_OPT:-$B/bin/sq-opt}
SQC=${SQ_COMPILE:-$B/bin/sq-compile}
P=${SQ_BENCH_PEERS:-build/bench-peers}  # the cache decode_ratios.sh uses
M=$P/models
OUT=$B/bench-gpu
PY=/usr/bin/python3
log() { echo "[gpu_ratios] $*" >&2; }
run() {  # runs a command (logged), or prints it with --dry-run
  if [ "$DRY" = 1 ]; then echo "would run: $*"; else log "+ $*"; "$@"; fi
}

# --- the device ---------------------------------------------------------------
DEV=${SQ_CUDA_DEVICE:-0}
SMI_SM=""
if command -v nvidia-smi >/dev/null 2>&1; then
  SMI_SM=$(nvidia-smi -i "$DEV" --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
           head -1 | tr -d ' .' || true)
  [[ "$SMI_SM" =~ ^[0-9]+$ ]] || SMI_SM=""
fi
PROBE="" PEAK=0 NAME="" GPU=0 WHY=""
if [ -x "$BENCH" ]; then
  PROBE=$("$BENCH" --probe 2>&1 || true)
  case "$PROBE" in
    "gpu_gemm_bench: skipped:"*) WHY=${PROBE#gpu_gemm_bench: skipped: } ;;
    [0-9]*\ *) GPU=1; read -r PSM PEAK NAME <<< "$PROBE"; SM=${SM:-$PSM} ;;
    *) WHY="gpu_gemm_bench --probe: $PROBE" ;;
  esac
elif [ -n "$SMI_SM" ]; then
  GPU=1; SM=${SM:-$SMI_SM}
  WHY="$BENCH not built"
else
  WHY="no nvidia-smi, and $BENCH is not built (configure with -DSQ_BUILD_BENCHMARKS=ON)"
fi
[ -n "$SMI_SM" ] && SM=${SM:-$SMI_SM}
if [ "$GPU" = 0 ]; then
  if [ "$DRY" = 0 ]; then
    echo "gpu_ratios: skipped: no usable GPU ($WHY)"
    echo "gpu_ratios: skipped: GEMM benchmark (PTX, gpu_gemm_bench) and decode benchmark (sq-compile --target=nvptx, decode_bench)"
    exit 0
  fi
  echo "gpu_ratios: no usable GPU here ($WHY); dry run: the commands for sm_${SM:-80}"
  SM=${SM:-80}
fi
if [ "$SM" -lt 80 ]; then
  echo "gpu_ratios: skipped: sm_$SM: the kernels need sm_80 or newer (tensor-core mma, cp.async)"
  exit 0
fi
# What sq-compile (--sm) and the kernel library know; newer GPUs JIT sm_90 PTX.
if [ "$SM" -ge 90 ]; then CSM=90; elif [ "$SM" -ge 89 ]; then CSM=89
elif [ "$SM" -ge 86 ]; then CSM=86; else CSM=80; fi
[ "$CSM" = "$SM" ] || log "device sm_$SM: using PTX for sm_$CSM (JIT-compiled by the driver)"
echo "gpu_ratios: ${NAME:-device $DEV}, sm_$SM (PTX sm_$CSM), peak memory bandwidth ${PEAK} GB/s (0: unknown)"
RC=0

# --- 1. GEMM ------------------------------------------------------------------
PTX=$OUT/sq_kernels.sm_$CSM.ptx
KER=lib/Conversion/SQToNVVM/Kernels.mlir
echo
echo "== GEMM: sq_qgemm_s4/s8 vs cuBLAS bf16 =="
if [ ! -x "$OPT" ] && [ "$DRY" = 0 ]; then
  echo "GEMM: skipped: $OPT not built (needed by emit_ptx.sh)"
elif [ ! -x "$BENCH" ] && [ "$DRY" = 0 ]; then
  echo "GEMM: skipped: $BENCH not built (configure with -DSQ_BUILD_BENCHMARKS=ON, build target gpu_gemm_bench)"
else
  [ "$DRY" = 1 ] || mkdir -p "$OUT"
  if [ ! -f "$PTX" ] || [ "$KER" -nt "$PTX" ] || [ "$OPT" -nt "$PTX" ]; then
    run env SQ_OPT="$OPT" lib/Conversion/SQToNVVM/emit_ptx.sh "$KER" "$CSM" "$PTX"
  fi
  run "$BENCH" "$PTX" --min-ms "$MINMS" || RC=1
fi

# --- 2. decode ----------------------------------------------------------------
echo
echo "== decode: LLaMA-2-7B shape, $LAYERS layers, w4a4kv4, sq-compile --target=nvptx --sm=$CSM =="
if [ ! -x "$SQC" ] && [ "$DRY" = 0 ]; then
  echo "decode: skipped: $SQC not built"
  exit $RC
fi
CC=$(command -v clang-22 || command -v cc)
DB=$P/decode_bench
if [ ! -x "$DB" ] || [ bench/decode_bench.c -nt "$DB" ]; then
  [ "$DRY" = 1 ] || mkdir -p "$P"
  run "$CC" -O2 -march=native -Iinclude bench/decode_bench.c -o "$DB" -ldl
fi
SQD=$M/sq-gpu-l$LAYERS-sm$CSM
SO=$SQD/model.so
if [ ! -f "$SO" ] || [ "$SQC" -nt "$SO" ] || [ bench/make_synthetic_llama.py -nt "$SO" ]; then
  [ "$DRY" = 1 ] || { mkdir -p "$SQD"; rm -f "$SO" "$SO.weights"; }
  # An ONNX left by an interrupted run (here or decode_ratios.sh) is reused.
  ONNX=""
  for d in "$SQD/onnx" "$M/sq-l$LAYERS/onnx"; do
    [ -f "$d/model.onnx" ] && [ -f "$d/model.onnx.data" ] && { ONNX=$d/model.onnx; break; }
  done
  if [ -z "$ONNX" ]; then
    ONNX=$SQD/onnx/model.onnx
    run "$PY" bench/make_synthetic_llama.py "$SQD/onnx" --layers "$LAYERS"
  fi
  [ "$DRY" = 1 ] || log "compiling (minutes; log in $SQD/compile.log)"
  if [ "$DRY" = 1 ]; then
    run "$SQC" "$ONNX" -o "$SO" --target=nvptx --sm="$CSM" --rotate=hadamard --quantize=w4a4kv4
  elif ! "$SQC" "$ONNX" -o "$SO" --target=nvptx --sm="$CSM" --rotate=hadamard \
         --quantize=w4a4kv4 > "$SQD/compile.log" 2>&1; then
    echo "decode: sq-compile failed: $(tail -1 "$SQD/compile.log" | cut -c1-160)"
    rm -f "$SO" "$SO.weights"
    exit 1
  fi
  [ "$DRY" = 1 ] || rm -rf "$SQD/onnx"
fi
if [ "$DRY" = 1 ]; then
  run "$DB" "$SO" --prompt "$PROMPT" --decode "$DECODE" --repeats "$REPEATS" --json
  exit 0
fi
if ! J=$("$DB" "$SO" --prompt "$PROMPT" --decode "$DECODE" --repeats "$REPEATS" --json \
          2> "$SQD/run.log"); then
  echo "decode: decode_bench failed: $(tail -1 "$SQD/run.log" | cut -c1-200)"
  exit 1
fi
"$PY" - "$J" "$SO" "$PEAK" "$LAYERS" <<'PY'
import json, re, sys
r, so, peak, layers = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
# Weight bytes per token from the manifest embedded in model.so ("weight SLOT
# BITS STORAGE ROWS COLS KERNELBLOCK NAME", STORAGE 0 fp32, 1 f16, 2 bf16): every weight
# but the embedding table, as decode_ratios.sh counts them.
text = open(so, "rb").read()
man = text[text.index(b"sq-model "):].split(b"\0")[0].decode()
ws = [l.split(" ", 7)[1:] for l in man.splitlines() if l.startswith("weight ")]
nbytes = lambda b, st, r, c: r * ((c * b + 7) // 8) if b else r * c * (4 if st == 0 else 2)
total = layer = 0
for _, b, st, rows, cols, _kb, name in ws:
    if "embed_tokens" in name:
        continue
    n = nbytes(int(b), int(st), int(rows), int(cols))
    total += n
    if re.search(r"layers[._]\d+[._]", name):
        layer += n
ms = r["ms_per_token"]
print("model: %s" % r.get("description", ""))
print("decode: %d tokens after a %d-token prompt, median of %d: %.3f ms/token (%.1f tokens/s)"
      % (r["decode"], r["prompt"], r["repeats"], ms, r["decode_tokens_per_s"]))
print("weights read per token (manifest, without the embedding): %.1f MB (%d layers: %.1f MB; rest %.1f MB)"
      % (total / 1e6, layers, layer / 1e6, (total - layer) / 1e6))
if peak > 0:
    bound = total / (peak * 1e9) * 1e3
    print("bandwidth bound: %.1f MB / %.0f GB/s = %.3f ms/token; measured %.2fx the bound (%.0f%% of the peak bandwidth)"
          % (total / 1e6, peak, bound, ms / bound, 100 * bound / ms))
    if layers and layers != 32:
        full = total - layer + layer * 32 / layers
        print("32 layers (LLaMA-2-7B) at the same layer size: %.2f GB per token, bound %.2f ms/token"
              % (full / 1e9, full / (peak * 1e9) * 1e3))
else:
    print("bandwidth bound: unknown (no peak bandwidth from the driver)")
PY
exit $RC
