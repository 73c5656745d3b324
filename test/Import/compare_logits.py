"""Compares two float32 logit files (sq-run --logits-out, bench/*.js).

    compare_logits.py GOT.bin WANT.bin TOL           exit 0 iff rel <= TOL
    compare_logits.py GOT.bin WANT.bin TOL --differ  exit 0 iff rel > TOL

rel = max |got - want| / max |want| (bench/ort_runner.js's measure).
Prints one line: "rel R (TOL): ok|FAIL".
"""
import struct
import sys


def floats(path):
    data = open(path, "rb").read()
    return struct.unpack("<%df" % (len(data) // 4), data)


got, want = floats(sys.argv[1]), floats(sys.argv[2])
tol, differ = float(sys.argv[3]), "--differ" in sys.argv[4:]
if len(got) != len(want):
    sys.exit("sizes differ: %d and %d floats" % (len(got), len(want)))
scale = max(abs(w) for w in want)
rel = max(abs(g - w) for g, w in zip(got, want)) / scale
ok = rel > tol if differ else rel <= tol
print("rel %.3g (%s %g): %s" % (rel, ">" if differ else "<=", tol,
                                "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
