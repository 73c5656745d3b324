"""Writes a rotation file with identity R1/R2 and learned-scale tensors that
inject outliers function-preservingly (standard library only):

    make_scale_file.py OUT hidden head_dim kv_heads layers intermediate S

In every layer, channels 3 and 11 of the normalized stream into q/k/v and
channel 5 into gate/up are multiplied by S (the readers' columns by 1/S),
RoPE pair 0 of every KV head in k_proj by S (q_proj by 1/S), value dim 2
of every KV head by S (o_proj by 1/S) and intermediate channel 7 by S
(down_proj by 1/S): --sq-spinquant-rotate=mode=file folds them, the float
model is unchanged and its 4-bit quantization is not.
"""
import json
import struct
import sys

out = sys.argv[1]
hidden, d, kv, layers, inter = (int(v) for v in sys.argv[2:7])
big = float(sys.argv[7])


def eye(n):
    return [n, n], [1.0 if i == j else 0.0 for i in range(n) for j in range(n)]


def scale(n, hot):
    return [n], [big if i in hot else 1.0 for i in range(n)]


tensors = {"R1": eye(hidden)}
for l in range(layers):
    tensors["layers.%d.R2" % l] = eye(d)
    tensors["layers.%d.attn_input.scale" % l] = scale(hidden, {3, 11})
    tensors["layers.%d.mlp_input.scale" % l] = scale(hidden, {5})
    tensors["layers.%d.qk.scale" % l] = scale(kv * d // 2, {h * d // 2 for h in range(kv)})
    tensors["layers.%d.value.scale" % l] = scale(kv * d, {h * d + 2 for h in range(kv)})
    tensors["layers.%d.up.scale" % l] = scale(inter, {7})
header, data, offset = {}, b"", 0
for name, (shape, values) in tensors.items():
    raw = struct.pack("<%dd" % len(values), *values)
    header[name] = {"dtype": "F64", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    offset += len(raw)
    data += raw
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(out, "wb").write(struct.pack("<Q", len(h)) + h + data)
