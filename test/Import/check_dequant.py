#!/usr/bin/python3
"""Checks that SQ imports pre-quantized weights exactly as onnxruntime
dequantizes them.

    check_dequant.py MODEL.onnx SQ.mlir WORKDIR
    check_dequant.py --logits MODEL.onnx TOKENS.bin SEQLEN SQ_LOGITS WORKDIR TOL

For every MatMulNBits and DequantizeLinear node of MODEL, a one-node graph
is run by onnxruntime (node + onnxruntime-node; NODE_PATH must reach it):
MatMulNBits with A = the identity matrix [K, K] and accuracy_level 0 (so
Y = dequant(B)^T, each element one product added to zeros), DequantizeLinear
as it is. The result, laid out as SQ's sq.linear weight [out, in], must be
bit for bit the sq.weight that sq-translate wrote to SQ.mlir (text, with the
weights). Weights are matched by their Hugging Face names, which SQ gives
them: layers.N.X_proj in the ONNX names, or lm_head. Prints one line per
weight; exits 1 on any difference.

With --logits: the logits SQ wrote (sq-run --logits-out, a float model of
the dequantized weights) against onnxruntime's on the same tokens
(bench/ort_runner.js compare), run with accuracy_level 0 (no int8
activations in MatMulNBits) and basic graph optimizations (no quantized
DequantizeLinear -> MatMul kernels): the file's float semantics. Fails when
the relative error exceeds TOL.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16
NP = {FLOAT: np.float32, FLOAT16: np.float16, BFLOAT16: np.uint16}

ORT_SCRIPT = r"""
const fs = require('fs');
const ort = require('onnxruntime-node');
(async () => {
  for (const job of JSON.parse(fs.readFileSync(process.argv[2]))) {
    const s = await ort.InferenceSession.create(job.model,
        {graphOptimizationLevel: 'disabled', intraOpNumThreads: 1});
    const feeds = {};
    if (job.k) {
      const k = job.k, n = k * k;
      const eye = job.fp16 ? new Uint16Array(n) : new Float32Array(n);
      for (let i = 0; i < k; ++i) eye[i * k + i] = job.fp16 ? 0x3C00 : 1;
      feeds['A'] = new ort.Tensor(job.fp16 ? 'float16' : 'float32', eye, [k, k]);
    }
    const out = (await s.run(feeds))[s.outputNames[0]];
    const d = out.data;
    fs.writeFileSync(job.out, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
  }
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


def hf_names(onnx_name):
    """The SQ weights a quantized ONNX weight became (q, k and v for a packed
    qkv_proj, whose rows SQ splits in this order)."""
    if "lm_head" in onnx_name:
        return ["lm_head.weight"]
    m = re.search(r"layers\.(\d+)\..*?\b(qkv|q|k|v|o|gate|up|down)_proj", onnx_name.replace("/", "."))
    if not m:
        sys.exit("check_dequant.py: cannot tell which layer '%s' is" % onnx_name)
    part = "self_attn" if m.group(2) in ("qkv", "q", "k", "v", "o") else "mlp"
    projs = ["q", "k", "v"] if m.group(2) == "qkv" else [m.group(2)]
    return ["model.layers.%s.%s.%s_proj.weight" % (m.group(1), part, p) for p in projs]


def sq_weights(mlir_path):
    """name -> (shape, element type, raw bytes) of every sq.weight."""
    text = open(mlir_path).read()
    types = dict(re.findall(r"sq\.weight dense_resource<([^>]+)> : tensor<([^>]+)>", text))
    blobs = dict(re.findall(r"^\s+([\w.]+): \"0x([0-9A-F]+)\"", text, re.M))
    out = {}
    for name, ty in types.items():
        *dims, elt = ty.split("x")
        raw = bytes.fromhex(blobs[name])[4:]  # after the alignment word
        out[name] = ([int(d) for d in dims], elt, raw)
    return out


def check_logits(model_path, tokens, seqlen, sq_logits, work, tol):
    os.makedirs(work, exist_ok=True)
    model = onnx.load(model_path)
    for n in model.graph.node:
        for a in n.attribute:
            if n.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i = 0
    path = os.path.join(work, "accuracy0.onnx")
    onnx.save_model(model, path)
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                          "ort_runner.js")
    env = dict(os.environ, ORT_OPT_LEVEL="basic", ORT_NUM_THREADS="1")
    out = subprocess.run(["node", runner, "compare", path, tokens, seqlen, sq_logits],
                         env=env, check=True, capture_output=True, text=True).stdout
    err = json.loads(out)["rel_max_error"]
    ok = err <= float(tol)
    print("logits %s onnxruntime's: relative error %.2g %s %s" % (
        "match" if ok else "DIFFER from", err, "<=" if ok else ">", tol))
    return 0 if ok else 1


def main():
    if sys.argv[1] == "--logits":
        return check_logits(*sys.argv[2:8])
    model_path, mlir_path, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    model = onnx.load(model_path)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for n in g.node:  # Constant nodes count as initializers
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            inits[t.name] = t
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    jobs, expect = [], []
    for idx, n in enumerate(g.node):
        if n.op_type not in ("MatMulNBits", "DequantizeLinear"):
            continue
        used = [inits[i] for i in n.input if i in inits]
        path = os.path.join(work, "node%d.onnx" % idx)
        out = os.path.join(work, "node%d.bin" % idx)
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "MatMulNBits":
            stype = inits[n.input[2]].data_type
            k, nn = attrs["K"], attrs["N"]
            attrs["accuracy_level"] = 0
            node = helper.make_node("MatMulNBits", ["A"] + list(n.input[1:]), ["Y"],
                                    domain="com.microsoft", **attrs)
            inputs = [helper.make_tensor_value_info("A", stype, [k, k])]
            outputs = [helper.make_tensor_value_info("Y", stype, [k, nn])]
            jobs.append(dict(model=path, out=out, k=k, fp16=stype == FLOAT16))
            # Y = A dequant(B)^T = dequant(B)^T: SQ's weight [N, K] is Y^T.
            fix = lambda y, k=k, nn=nn: y.reshape(k, nn).T
            name = n.input[1]
        else:
            stype = inits[n.input[1]].data_type
            node = helper.make_node("DequantizeLinear", list(n.input), ["Y"], **attrs)
            dims = list(inits[n.input[0]].dims)
            inputs = []
            outputs = [helper.make_tensor_value_info("Y", stype, dims)]
            jobs.append(dict(model=path, out=out, k=0))
            # MatMul(x, y) or MatMul(x, Transpose(y)): SQ's weight is the
            # [out, in] transpose of the MatMul's [in, out] operand.
            transposed = any(c.op_type == "Transpose" for c in consumers.get(n.output[0], []))
            fix = (lambda y, d=dims: y.reshape(d)) if transposed else \
                (lambda y, d=dims: y.reshape(d).T)
            name = n.input[0]
        opsets = [helper.make_opsetid("", max(21, model.opset_import[0].version)),
                  helper.make_opsetid("com.microsoft", 1)]
        m = helper.make_model(helper.make_graph([node], "dq", inputs, outputs, used),
                              opset_imports=opsets)
        m.ir_version = 10
        onnx.save_model(m, path)
        expect.append((hf_names(name), stype, out, fix))

    script = os.path.join(work, "run.js")
    open(script, "w").write(ORT_SCRIPT)
    open(os.path.join(work, "jobs.json"), "w").write(json.dumps(jobs))
    subprocess.run(["node", script, os.path.join(work, "jobs.json")], check=True)

    sq = sq_weights(mlir_path)
    bad = 0
    for names, stype, out, fix in expect:
        ort = np.ascontiguousarray(fix(np.fromfile(out, dtype=NP[stype])))
        # A packed weight: the rows of its parts, in order.
        shape = [sum(sq[n][0][0] for n in names)] + sq[names[0]][0][1:]
        elt = sq[names[0]][1]
        raw = b"".join(sq[n][2] for n in names)
        name = "+".join(names)
        ok = list(ort.shape) == shape and ort.tobytes() == raw
        diff = "" if ok else " (shape %s vs %s, %s)" % (list(ort.shape), shape, elt)
        if not ok and list(ort.shape) == shape:
            got = np.frombuffer(raw, dtype=ort.dtype).reshape(shape)
            wrong = np.argwhere(got.view(np.uint8 if ort.itemsize == 1 else
                                         np.uint16 if ort.itemsize == 2 else np.uint32)
                                != ort.view(np.uint16 if ort.itemsize == 2 else np.uint32))
            diff = " (%d elements differ, first %s: SQ %r onnxruntime %r)" % (
                len(wrong), tuple(wrong[0]), got[tuple(wrong[0])], ort[tuple(wrong[0])])
        print("%s %s %s%s" % ("EXACT" if ok else "DIFFERS", name, "x".join(map(str, shape)), diff))
        bad += not ok
    print("%d weights, %d differ" % (len(expect), bad))
    return 1 if bad or not expect else 0


if __name__ == "__main__":
    sys.exit(main())
