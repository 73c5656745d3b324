"""Checks that two runs' logits agree.

  compare_logits.py A.bin B.bin TOL   float32 logits files (sq-run
                                      --logits-out): max |A - B| <= TOL * max |B|
  compare_logits.py --ort JSON TOL    the output of bench/ort_runner.js compare:
                                      rel_max_error <= TOL
Prints "logits match" or what differs."""
import array
import json
import sys

if sys.argv[1] == "--ort":
    rel = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])["rel_max_error"]
    tol = float(sys.argv[3])
else:
    a, b = array.array("f"), array.array("f")
    a.frombytes(open(sys.argv[1], "rb").read())
    b.frombytes(open(sys.argv[2], "rb").read())
    tol = float(sys.argv[3])
    if len(a) != len(b) or not a:
        sys.exit("different or empty logits: %d vs %d values" % (len(a), len(b)))
    rel = max(abs(x - y) for x, y in zip(a, b)) / max(max(abs(y) for y in b), 1e-30)
print("logits match" if rel <= tol else "logits differ: relative error %.3g > %g" % (rel, tol))
