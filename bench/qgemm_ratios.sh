#!/usr/bin/env bash
# Runs sq-bench-qgemm with 1 and 2 threads and prints, per shape, GOP/s of
# every SQ kernel path and its ratio to OpenBLAS fp32 (the better of
# OPENBLAS_CORETYPE=SkylakeX and OpenBLAS' own choice of kernels), plus the
# GEMV weight bandwidth (warm in L3, cold from DRAM) next to a plain
# streaming read.
#
#   bench/qgemm_ratios.sh                 # uses build/bench/sq-bench-qgemm
#   SQ_BUILD_DIR=build-rt bench/qgemm_ratios.sh
#   THREADS="1" MIN_TIME=0.5 REPS=3 bench/qgemm_ratios.sh   # medians of 3
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SQ_BENCH_QGEMM:-${SQ_BUILD_DIR:-build}/bench/sq-bench-qgemm}
MIN_TIME=${MIN_TIME:-0.3}
THREADS=${THREADS:-1 2}
REPS=${REPS:-1}
REP_ARGS=()
if [ "$REPS" -gt 1 ]; then
  REP_ARGS=(--benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true)
fi
[ -x "$BIN" ] || {
  echo "qgemm_ratios: $BIN not found (configure with -DSQ_BUILD_BENCHMARKS=ON" \
    "and build sq-bench-qgemm)" >&2
  exit 1
}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for t in $THREADS; do
  echo "qgemm_ratios: running $t thread(s)..." >&2
  SQ_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t OPENBLAS_CORETYPE=SkylakeX \
    "$BIN" --benchmark_min_time="$MIN_TIME" --benchmark_format=json "${REP_ARGS[@]}" \
    >"$OUT/t$t.json"
  env -u OPENBLAS_CORETYPE SQ_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t \
    "$BIN" --benchmark_filter='^BLAS/' --benchmark_min_time="$MIN_TIME" \
    --benchmark_format=json "${REP_ARGS[@]}" >"$OUT/t$t-blasdefault.json"
done

python3 - "$OUT" $THREADS <<'EOF'
import json, sys, re
out, threads = sys.argv[1], sys.argv[2:]

def load(path):
    res = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        res[name] = b
    return res

for t in threads:
    r = load(f"{out}/t{t}.json")
    d = load(f"{out}/t{t}-blasdefault.json")
    paths = [p for p in ("amx", "avx512vnni", "avx2", "scalar")
             if any(k.startswith(f"QGemm/{p}/") for k in r)]
    shapes = []
    for k in r:
        m = re.match(r"BLAS/sgemm/(M\d+/K\d+/N\d+)$", k)
        if m:
            shapes.append(m.group(1))
    cols = [(p, a) for p in paths for a in ("a4", "a8")]
    print(f"\n== {t} thread(s): GOP/s (x = SQ / best OpenBLAS fp32) ==")
    head = f"{'shape':<20}{'BLAS SkX':>9}{'BLAS def':>9}"
    for p, a in cols:
        head += f"{p + '/' + a:>17}"
    print(head)
    for s in shapes:
        skx = r[f"BLAS/sgemm/{s}"]["GOP"]
        dflt = d.get(f"BLAS/sgemm/{s}", {}).get("GOP", 0.0)
        best = max(skx, dflt)
        line = f"{s:<20}{skx:>9.1f}{dflt:>9.1f}"
        for p, a in cols:
            b = r.get(f"QGemm/{p}/{a}/{s}")
            line += (f"{b['GOP']:>9.1f} {b['GOP'] / best:>5.2f}x"
                     if b else f"{'-':>17}")
        print(line)
    print(f"\n== {t} thread(s): GEMV (M = 1) weight bandwidth, GB/s ==")
    mem = r.get("MemRead/256MB", {}).get("GB", 0.0)
    print(f"streaming read (256 MB): {mem:.1f}")
    print(f"{'shape':<20}{'path':<12}{'warm (L3)':>10}{'cold':>8}"
          f"{'cold/read':>10}{'BLAS fp32':>10}")
    for s in shapes:
        if not s.startswith("M1/"):
            continue
        for p in paths:
            warm = r.get(f"QGemm/{p}/a4/{s}", {}).get("GB")
            cold = r.get(f"QGemmCold/{p}/a4/{s}", {}).get("GB")
            blas = r[f"BLAS/sgemm/{s}"].get("GB", 0.0)
            if warm is None:
                continue
            cs = f"{cold:>8.1f}{cold / mem:>9.0%} " if cold else f"{'-':>8}{'-':>10}"
            print(f"{s:<20}{p:<12}{warm:>10.1f}{cs}{blas:>10.1f}")
    for k, b in r.items():
        if k.startswith("Quantize/"):
            print(f"{k}: {b['real_time']:.1f} {b['time_unit']} per call")
EOF
