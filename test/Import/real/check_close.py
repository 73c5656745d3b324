#!/usr/bin/env python3
"""Reads bench/ort_runner.js's `compare` JSON on stdin and checks that SQ's
logits match onnxruntime's: max |sq - ort| / max |ort| <= TOLERANCE.

  ... | check_close.py TOLERANCE LABEL
"""
import json
import sys

tol, label = float(sys.argv[1]), sys.argv[2]
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
rel = r["rel_max_error"]
if not rel <= tol:
    print("%s: relative error %.3g above %.0e (max abs diff %.3g)" % (label, rel, tol, r["max_abs_diff"]))
    sys.exit(1)
print("%s: match (relative error within %.0e)" % (label, tol))
