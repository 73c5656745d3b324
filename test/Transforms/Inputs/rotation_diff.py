"""Compares two SQ rotation files (safetensors, F64 or F32; standard library only).

    rotation_diff.py A.safetensors B.safetensors [--tol T]

Prints the tensors' names, the largest |A - B| over all of them (max |dR|) and
which tensor holds it; exits 1 if the files do not hold the same tensors of
the same shapes, or if max |dR| exceeds T (when given).
"""
import json
import struct
import sys


def read(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        fmt, size = {"F64": ("d", 8), "F32": ("f", 4)}[t["dtype"]]
        count = (end - begin) // size
        out[name] = (tuple(t["shape"]), struct.unpack("<%d%s" % (count, fmt), body[begin:end]))
    return out


def main(argv):
    args = list(argv[1:])
    tol = None
    if "--tol" in args:
        i = args.index("--tol")
        tol = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = read(args[0]), read(args[1])
    if sorted(a) != sorted(b):
        print("different tensors: %s vs %s" % (sorted(a), sorted(b)))
        return 1
    worst, where = 0.0, ""
    for name in sorted(a):
        if a[name][0] != b[name][0]:
            print("%s: shape %s vs %s" % (name, a[name][0], b[name][0]))
            return 1
        d = max(abs(x - y) for x, y in zip(a[name][1], b[name][1]))
        if d >= worst:
            worst, where = d, name
    print("tensors: %s" % " ".join(sorted(a)))
    print("max |dR| %.3g (%s)" % (worst, where))
    if tol is not None and not worst <= tol:
        print("max |dR| exceeds %g" % tol)
        return 1
    print("within %g" % tol if tol is not None else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
