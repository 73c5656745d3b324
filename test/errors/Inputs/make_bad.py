#!/usr/bin/env python3
"""Writes the hostile inputs of the bad-input catalogue (test/errors/).

Plain Python (no onnx package): the ONNX protobufs are encoded by hand, so
every input is generated inside the RUN lines and nothing binary is checked
in.

    make_bad.py KIND OUT [ARGS...]

Kinds:
  huge-dims OUT              an embedding table declaring 2^24 x 2^24 floats
                             (4 PiB) with 16 bytes of raw data
  absurd-dims OUT            dims whose product overflows int64
  ext-huge OUT               external data at offset 2^63-1000 (past any
                             file; offset + length overflows int64)
  ext-length OUT             external data length 2^62 for a small shape
  kv-huge OUT                a KV-cache input of 2^40 heads x 2^40 head_dim
  deep-chain OUT N           a graph of N nodes in one chain (Identity after
                             the embedding), to check nothing recurses per
                             node
  deep-nesting OUT N         a node whose graph attribute nests N levels
                             deep (beyond protobuf's recursion limit of 100)
  patch-float IN OUT TENSOR INDEX VALUE
                             a copy of the model IN with element INDEX of
                             initializer TENSOR's raw data set to VALUE
                             (nan, inf, -inf or a number)
  truncate IN OUT N...        the first N bytes of IN, for each N, in OUT
                             with '@' replaced by N
  mlir-nan IN OUT NAME        textual IR IN with the first float of the
                             resource blob NAME set to NaN
  mlir-nesting OUT N         textual MLIR with N nested regions
  mlir-attr-nesting OUT N    textual MLIR with an attribute nested N deep
  mlir-affine-chain OUT N    textual MLIR with an affine map of N terms
  mlir-alias-chain OUT N     textual MLIR with N attribute aliases, each
                             nesting the one before
  mlir-alias-dag OUT N       textual MLIR with N attribute aliases, each
                             holding the one before twice (2^N elements)
"""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "python"))
from sqdev import protowire  # noqa: E402

# --- protobuf wire format ----------------------------------------------------


def varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    return varint((num << 3) | wire) + payload


def f_int(num, v):
    return field(num, 0, varint(v))


def f_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return field(num, 2, varint(len(data)) + data)


# --- ONNX messages (field numbers from onnx.proto) ---------------------------

FLOAT, INT64 = 1, 7


def tensor(name, dims, dtype=FLOAT, raw=None, external=None):
    t = b"".join(f_int(1, d) for d in dims) + f_int(2, dtype) + f_bytes(8, name)
    if raw is not None:
        t += f_bytes(9, raw)
    if external is not None:
        for k, v in external:
            t += f_bytes(13, f_bytes(1, k) + f_bytes(2, v))
        t += f_int(14, 1)  # data_location = EXTERNAL
    return t


def value_info(name, elem, dims):
    shape = b"".join(
        f_bytes(1, f_int(1, d) if isinstance(d, int) else f_bytes(2, d))
        for d in dims)
    tensor_type = f_int(1, elem) + f_bytes(2, shape)
    return f_bytes(1, name) + f_bytes(2, f_bytes(1, tensor_type))


def node(op, inputs, outputs, name="", attrs=b""):
    n = b"".join(f_bytes(1, i) for i in inputs)
    n += b"".join(f_bytes(2, o) for o in outputs)
    if name:
        n += f_bytes(3, name)
    return n + f_bytes(4, op) + attrs


def graph(nodes, initializers=(), inputs=(), outputs=(), name="g"):
    g = b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, name)
    g += b"".join(f_bytes(5, t) for t in initializers)
    g += b"".join(f_bytes(11, v) for v in inputs)
    g += b"".join(f_bytes(12, v) for v in outputs)
    return g


def model(g, opset=17):
    return (f_int(1, 8) + f_bytes(2, "make_bad.py") +
            f_bytes(8, f_bytes(1, "") + f_int(2, opset)) + f_bytes(7, g))


def embedding_model(table, extra_nodes=(), out="h"):
    ids = value_info("input_ids", INT64, ["batch", "seq"])
    nodes = [node("Gather", ["embed_tokens.weight", "input_ids"], ["h"],
                  "/embed_tokens/Gather")] + list(extra_nodes)
    return model(graph(nodes, [table], [ids],
                       [value_info(out, FLOAT, ["batch", "seq", 16])]))


# --- patching an existing model's raw data ------------------------------------


def patch_float(src, dst, name, index, value):
    buf = bytearray(open(src, "rb").read())
    for num, _, gs, ge in protowire.field_spans(buf):
        if num != 7:  # graph
            continue
        for gnum, _, ts, te in protowire.field_spans(buf, gs, ge):
            if gnum != 5:  # initializer
                continue
            tname, raw = None, None
            for tnum, _, s, e in protowire.field_spans(buf, ts, te):
                if tnum == 8:
                    tname = bytes(buf[s:e]).decode()
                elif tnum == 9:
                    raw = (s, e)
            if tname == name and raw:
                at = raw[0] + 4 * index
                if at + 4 > raw[1]:
                    sys.exit("make_bad.py: index %d is past the end of '%s'"
                             % (index, name))
                buf[at:at + 4] = struct.pack("<f", float(value))
                open(dst, "wb").write(buf)
                return
    sys.exit("make_bad.py: no float initializer '%s' with raw data in %s"
             % (name, src))


def main(argv):
    kind, out = argv[1], argv[2]
    data = None
    if kind == "huge-dims":
        data = embedding_model(
            tensor("embed_tokens.weight", [1 << 24, 1 << 24], raw=b"\0" * 16))
    elif kind == "absurd-dims":
        data = embedding_model(
            tensor("embed_tokens.weight", [1 << 40, 1 << 40], raw=b"\0" * 16))
    elif kind == "ext-huge":
        data = embedding_model(
            tensor("embed_tokens.weight", [32, 16],
                   external=[("location", "weights.bin"),
                             ("offset", str((1 << 63) - 1000)),
                             ("length", "2048")]))
    elif kind == "ext-length":
        data = embedding_model(
            tensor("embed_tokens.weight", [32, 16],
                   external=[("location", "weights.bin"),
                             ("length", str(1 << 62))]))
    elif kind == "kv-huge":
        ids = value_info("input_ids", INT64, ["batch", "seq"])
        past = value_info("past_key_values.0.key", FLOAT,
                          ["batch", 1 << 40, "past", 1 << 40])
        data = model(graph([node("Identity", ["input_ids"], ["y"])], [],
                           [ids, past], [value_info("y", INT64, ["b", "s"])]))
    elif kind == "deep-chain":
        n = int(argv[3])
        chain = [node("Identity", ["h" if i == 0 else "c%d" % (i - 1)],
                      ["c%d" % i]) for i in range(n)]
        data = embedding_model(
            tensor("embed_tokens.weight", [32, 16], raw=b"\0" * 2048), chain,
            "c%d" % (n - 1))
    elif kind == "deep-nesting":
        n = int(argv[3])
        g = graph([node("Identity", ["x"], ["y"])])
        for _ in range(n):
            attr = f_bytes(1, "body") + f_bytes(6, g) + f_int(20, 5)  # GRAPH
            g = graph([node("If", ["c"], ["y"], attrs=f_bytes(5, attr))])
        data = model(g)
    elif kind == "truncate":
        # truncate IN OUT N...: OUT with '@' replaced by N, for each N
        src = open(argv[2], "rb").read()
        for n in argv[4:]:
            open(argv[3].replace("@", n), "wb").write(src[:int(n)])
        return
    elif kind == "mlir-nan":
        # mlir-nan IN OUT NAME: textual IR IN with the first float of the
        # resource blob NAME set to NaN
        text = open(argv[2]).read()
        key = '%s: "0x' % argv[4]
        at = text.find(key)
        if at < 0:
            sys.exit("make_bad.py: no resource blob '%s'" % argv[4])
        at += len(key) + 8  # past the 4-byte alignment
        open(argv[3], "w").write(text[:at] + "0000C07F" + text[at + 8:])
        return
    elif kind == "sidecar-nan":
        # sidecar-nan IN OUT SLOT: the weights sidecar IN (model.so.weights)
        # with every fp32 value of weight SLOT set to NaN (header: magic,
        # version, count, hash, header bytes, then (offset, bytes) pairs)
        buf = bytearray(open(argv[2], "rb").read())
        slot = int(argv[4])
        off, size = struct.unpack_from("<QQ", buf, 32 + 16 * slot)
        buf[off:off + size] = b"\x00\x00\xc0\x7f" * (size // 4)
        open(argv[3], "wb").write(bytes(buf))
        return
    elif kind == "patch-float":
        patch_float(argv[2], argv[3], argv[4], int(argv[5]), argv[6])
        return
    elif kind == "mlir-nesting":
        n = int(argv[3])
        data = ('"test.op"() ({\n' * n + '}) : () -> ()\n' * n).encode()
    elif kind == "mlir-affine-chain":
        n = int(argv[3])
        data = ("#map = affine_map<(d0) -> (" + " + ".join(["(d0)"] * n) +
                ")>\nfunc.func private @f() attributes {m = #map}\n").encode()
    elif kind == "mlir-alias-chain":
        n = int(argv[3])
        lines = ["#a0 = [1]"] + ["#a%d = [#a%d]" % (i, i - 1)
                                 for i in range(1, n)]
        data = ("\n".join(lines) + "\nfunc.func private @f() attributes "
                "{m = #a%d}\n" % (n - 1)).encode()
    elif kind == "mlir-alias-dag":
        n = int(argv[3])
        lines = ["#a0 = [1]"] + ["#a%d = [#a%d, #a%d]" % (i, i - 1, i - 1)
                                 for i in range(1, n)]
        data = ("\n".join(lines) + "\nfunc.func private @f() attributes "
                "{m = #a%d}\n" % (n - 1)).encode()
    elif kind == "mlir-attr-nesting":
        n = int(argv[3])
        data = ("func.func private @f() attributes {a = " + "[" * n +
                "]" * n + "}\n").encode()
    else:
        sys.exit("make_bad.py: unknown kind '%s'" % kind)
    open(out, "wb").write(data)


if __name__ == "__main__":
    main(sys.argv)
