#!/usr/bin/python3
"""How much R3 matters for the 4-bit key cache of stories260K.

    /usr/bin/python3 bench/r3_candidates.py [--shared ../shared/data]
        [--build build] [--windows 16]

R1/R2 are the Hadamard rotations of seed 0 (--spinquant-rotate=mode=hadamard,
saved with save=); only R3, the rotation of Q and K after RoPE, changes:
none (identity), the online Hadamard (SQ's and SpinQuant's fixed R3), random
orthogonal matrices, and signed permutations of the Hadamard matrix (the
candidates of --spinquant-rotate's r3=search), the same R3 for every layer
(rotation files with layers.N.R3, mode=file). Each is quantized with
--quantize=w16a16k4v16 (4-bit keys only: nothing else is rounded) and
scored on the first --windows windows of 512 tokens of the TinyStories
excerpt. Also prints the split of the KV cache's error (4-bit keys, 4-bit
values, both) and the 4-bit activations alone, with the Hadamard R3. Prints
every command on stderr.
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np


def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def read_rotations(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = np.float64 if v["dtype"] == "F64" else np.float32
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(v["shape"])
    return out


def write_rotations(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        d = np.ascontiguousarray(v, dtype=np.float64).tobytes()
        header[k] = {"dtype": "F64", "shape": list(v.shape), "data_offsets": [off, off + len(d)]}
        off += len(d)
        blobs.append(d)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def sylvester(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared", "data"))
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    shared = os.path.abspath(args.shared)
    bin_ = os.path.join(args.build, "bin")
    work = os.path.join(args.build, "r3-candidates")
    os.makedirs(work, exist_ok=True)
    onnx = os.path.join(shared, "stories260K-onnx", "nocache", "model.onnx")
    if not os.path.exists(onnx):
        print("skipping: %s not present" % onnx, file=sys.stderr)
        return
    text = os.path.join(shared, "tinystories", "tinystories_valid_excerpt.txt")
    tok = "sp:" + os.path.join(shared, "llama2c", "tok512.model")
    base = os.path.join(work, "model.mlirbc")
    run([os.path.join(bin_, "sq-translate"), "--import-onnx", onnx, "--emit-bytecode", "-o", base])

    def ppl(rotate, spec):
        q = os.path.join(work, "q.mlirbc")
        cmd = [os.path.join(bin_, "sq-opt"), base, "--spinquant-rotate=" + rotate]
        if spec:
            cmd.append("--quantize=" + spec)
        run(cmd + ["--emit-bytecode", "-o", q])
        out = run([os.path.join(bin_, "sq-run"), q, "--ppl", text, "--tokenizer", tok,
                   "--seqlen", "512", "--max-windows", str(args.windows), "--json"])
        return json.loads(out)["ppl"]

    saved = os.path.join(work, "hadamard0.safetensors")
    fp = ppl("mode=hadamard seed=0 save=" + saved, None)
    print("FP (Hadamard R1/R2/R3/R4, seed 0): %.4f" % fp)
    for spec in ["w16a16k4v16", "w16a16k16v4", "w16a16kv4", "w16a4kv16"]:
        print("%-12s Hadamard R3: %.4f" % (spec, ppl("mode=hadamard seed=0", spec)))
    rot = {k: np.array(v, dtype=np.float64) for k, v in read_rotations(saved).items()}
    layers = sum(1 for k in rot if k.endswith(".R2"))
    d = rot["layers.0.R2"].shape[0]
    h = sylvester(d)
    rows = [("none (identity)", np.eye(d)), ("Hadamard (the online R3)", h)]
    rng = np.random.default_rng(1)
    for s in range(1, 5):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        rows.append(("random orthogonal %d" % s, q * np.sign(np.diag(r))))
    for s in range(1, 5):
        g = np.random.default_rng(s)
        rows.append(("signed permutation of H %d" % s,
                     np.diag(g.choice([-1.0, 1.0], d)) @ h[g.permutation(d)]))
    print("\n| R3 (every layer) | 4-bit keys only (w16a16k4v16) |\n|---|---|")
    for name, r3 in rows:
        t = dict(rot)
        for l in range(layers):
            t["layers.%d.R3" % l] = r3
        f = os.path.join(work, "r3.safetensors")
        write_rotations(f, t)
        print("| %s | %.4f |" % (name, ppl("mode=file path=" + f, "w16a16k4v16")), flush=True)


if __name__ == "__main__":
    main()
