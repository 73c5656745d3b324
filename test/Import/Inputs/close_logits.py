"""Compares two logits files (float32, as sq-run --logits-out writes them).

    close_logits.py A.bin B.bin TOL

Prints "logits agree: ..." when max |A - B| <= TOL * max |A| (the relative
error onnxruntime's comparisons use), else fails with both numbers.
"""
import array
import sys

a, b = array.array("f"), array.array("f")
a.frombytes(open(sys.argv[1], "rb").read())
b.frombytes(open(sys.argv[2], "rb").read())
tol = float(sys.argv[3])
if len(a) != len(b) or not a:
    sys.exit("sizes differ: %d vs %d floats" % (len(a), len(b)))
diff = max(abs(x - y) for x, y in zip(a, b))
scale = max(abs(x) for x in a)
rel = diff / scale
if not rel <= tol:
    sys.exit("logits differ: max |a - b| = %g, relative %g > %g" % (diff, rel, tol))
print("logits agree: %d values, relative error <= %g" % (len(a), tol))
