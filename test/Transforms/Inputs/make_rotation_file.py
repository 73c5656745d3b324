"""Writes the rotation files of rotation-file.test (standard library only).

official.safetensors uses SpinQuant's key names with signed permutations
(orthogonal); the others are broken on purpose.
"""
import json
import struct
import sys


def write_raw(path, h, data=b""):
    h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)


def write(path, tensors, dtype="F32"):
    fmt, size = ("<%dd", 8) if dtype == "F64" else ("<%df", 4)
    header, data, offset = {}, b"", 0
    for name, (n, values) in tensors.items():
        raw = struct.pack(fmt % len(values), *values)
        header[name] = {"dtype": dtype, "shape": [n, n], "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    write_raw(path, json.dumps(header).encode(), data)


def signed_permutation(n, shift):
    m = [0.0] * (n * n)
    for i in range(n):
        m[i * n + (i + shift) % n] = -1.0 if i % 3 == 0 else 1.0
    return (n, m)


out = sys.argv[1]
official = {"model.R1.weight": signed_permutation(16, 5)}
for layer in range(2):
    official["model.layers.%d.self_attn.R2.weight" % layer] = signed_permutation(4, layer + 1)
write(out + "/official.safetensors", official)
write(out + "/no-r2.safetensors", {"R1": signed_permutation(16, 1)})
skewed = signed_permutation(16, 0)
skewed[1][1] = 0.5
write(out + "/skewed.safetensors", {"R1": skewed})
write(out + "/small.safetensors", {"R1": signed_permutation(8, 0)})
nan = signed_permutation(16, 0)
nan[1][17] = float("nan")
write(out + "/nan.safetensors", {"R1": nan})
# Learned R3: for every layer (a signed permutation: the float model is
# unchanged), for one layer of two, and a skewed one.
r3 = dict(official)
for layer in range(2):
    r3["layers.%d.R3" % layer] = signed_permutation(4, layer + 2)
write(out + "/r3.safetensors", r3)
partial = dict(official)
partial["layers.0.R3"] = signed_permutation(4, 1)
write(out + "/r3-partial.safetensors", partial)
skewed_r3 = dict(r3)
skewed_r3["layers.1.R3"] = (4, [0.5] * 16)
write(out + "/r3-skewed.safetensors", skewed_r3)
# 2^32 x 2^32: the element count overflows 64 bits (an empty data range).
write_raw(out + "/huge.safetensors",
          b'{"R1": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}')
# 100000 nested arrays (llvm::json::parse alone overflows the stack).
write_raw(out + "/deep.safetensors", b"[" * 100000 + b"]" * 100000)
