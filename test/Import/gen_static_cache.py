#!/usr/bin/python3
"""Writes a 1-layer LLaMA with static KV caches in the form of ONNX Runtime's
opset-24 builders ("mobius", like test/Import/real/genai-static-scatter):
key_cache.0 / value_cache.0 of MAX_SEQ slots written by TensorScatter at
write_indices, an Attention mask computed from write_indices, the slot
numbers and nonpad_kv_seqlen, RotaryEmbedding on cos/sin gathered by
position_ids. Built with onnx.helper at test time (test/Import/
static-cache.test), so that the importer's checks run on variants the real
file does not have.

    gen_static_cache.py OUT.onnx [--window W] [--max-seq M] [--bnsh]
                        [--mask future|nonpad] [--mode circular]

--window W   a sliding window of W keys in the mask (0: none, the default)
--max-seq M  cache slots (default 32)
--bnsh       4-D caches [batch, kv_heads, max_seq, head_dim], Attention on
             4-D q/k/v
--mask future  the mask also shows the next position (not causal)
--mask nonpad  the mask ignores nonpad_kv_seqlen and Attention gets none
--mode circular  TensorScatter as a ring buffer
"""

import argparse
import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

VOCAB, HIDDEN, HEADS, KV, FFN = 64, 32, 4, 2, 48
HD = HIDDEN // HEADS

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--window", type=int, default=0)
p.add_argument("--max-seq", type=int, default=32)
p.add_argument("--bnsh", action="store_true")
p.add_argument("--mask", default="")
p.add_argument("--mode", default="linear")
a = p.parse_args()
M = a.max_seq

rng = np.random.default_rng(3)
inits, nodes = [], []


def weight(name, shape, ones=False):
    w = (1.0 + 0.1 * rng.standard_normal(shape)) if ones else \
        rng.standard_normal(shape) / math.sqrt(shape[-1])
    inits.append(numpy_helper.from_array(w.astype(np.float32), name))
    return name


def const(name, array):
    inits.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def node(op, ins, out, **attrs):
    nodes.append(helper.make_node(op, ins, [out], name="/" + out, **attrs))
    return out


def linear(x, name, n_out, n_in):
    w = weight(name, [n_out, n_in])
    return node("MatMul", [x, node("Transpose", [w], name + "_t", perm=[1, 0])],
                name + "_out")


inv = 1.0 / (10000.0 ** (np.arange(0, HD, 2) / HD))
freqs = np.outer(np.arange(64), inv)
const("cos_cache", np.cos(freqs).astype(np.float32))
const("sin_cache", np.sin(freqs).astype(np.float32))
const("ax0", np.array([0], np.int64))
const("ax1", np.array([1], np.int64))
const("ax2", np.array([2], np.int64))
const("zero", np.array(0.0, np.float32))
const("ninf", np.array(-3.4028234663852886e38, np.float32))
# Scalars as Constant nodes, as mobius writes them.
for name, value in (("i0", 0), ("i1", 1), ("imax", M), ("iwin", a.window)):
    node("Constant", [], name, value_int=value)

h = node("Gather", [weight("embed", [VOCAB, HIDDEN]), "input_ids"], "emb")
cos = node("Gather", ["cos_cache", "position_ids"], "cos")
sin = node("Gather", ["sin_cache", "position_ids"], "sin")

# The mask [batch, 1, seq, max_seq], as mobius computes it.
seq = node("Squeeze", [node("Shape", ["input_ids"], "shape", start=1, end=2),
                       "ax0"], "seq")
qpos = node("Unsqueeze", [node("Add", [
    node("Unsqueeze", ["write_indices", "ax1"], "wi"),
    node("Unsqueeze", [node("Range", ["i0", seq, "i1"], "qr"), "ax0"], "qr2")],
    "qsum"), "ax2"], "qpos")
kpos = node("Range", ["i0", "imax", "i1"], "kpos")
if a.mask == "future":
    qpos = node("Add", [qpos, "i1"], "qpos_next")
cond = node("GreaterOrEqual", [qpos, kpos], "causal")
if a.window:
    cond = node("And", [cond, node("Less", [node("Sub", [qpos, kpos], "dist"),
                                            "iwin"], "inwin")], "windowed")
if a.mask != "nonpad":
    valid = node("Unsqueeze", [node("Less", [kpos, node(
        "Unsqueeze", ["nonpad_kv_seqlen", "ax1"], "np")], "valid0"), "ax1"],
        "valid")
    cond = node("And", [cond, valid], "cond")
mask = node("Unsqueeze", [node("Where", [cond, "zero", "ninf"], "maskf"),
                          "ax1"], "mask")

x = node("RMSNormalization", [h, weight("ln1", [HIDDEN], ones=True)], "x1",
         epsilon=1e-5, axis=-1)
q = linear(x, "q_proj", HIDDEN, HIDDEN)
k = linear(x, "k_proj", KV * HD, HIDDEN)
v = linear(x, "v_proj", KV * HD, HIDDEN)
q = node("RotaryEmbedding", [q, cos, sin], "q_rot", num_heads=HEADS)
k = node("RotaryEmbedding", [k, cos, sin], "k_rot", num_heads=KV)
if a.bnsh:
    def bnsh(t, n):
        r = node("Reshape", [t, const(t + "_shape", np.array([0, 0, n, HD], np.int64))],
                 t + "_4d")
        return node("Transpose", [r], t + "_bnsh", perm=[0, 2, 1, 3])
    q, k, v = bnsh(q, HEADS), bnsh(k, KV), bnsh(v, KV)
axis = 2 if a.bnsh else 1
kc = node("TensorScatter", ["key_cache.0", k, "write_indices"],
          "updated_key_cache.0", axis=axis, mode=a.mode)
vc = node("TensorScatter", ["value_cache.0", v, "write_indices"],
          "updated_value_cache.0", axis=axis, mode=a.mode)
attrs = {} if a.bnsh else {"q_num_heads": HEADS, "kv_num_heads": KV}
nonpad = "" if a.mask == "nonpad" else "nonpad_kv_seqlen"
attn = helper.make_node("Attention", [q, kc, vc, mask, "", "", nonpad],
                        ["attn"], name="/attn", scale=1.0 / math.sqrt(HD),
                        **attrs)
nodes.append(attn)
o = "attn"
if a.bnsh:
    o = node("Reshape", [node("Transpose", [o], "attn_t", perm=[0, 2, 1, 3]),
                         const("flat", np.array([0, 0, HIDDEN], np.int64))],
             "attn_flat")
h = node("Add", [h, linear(o, "o_proj", HIDDEN, HIDDEN)], "h1")
x = node("RMSNormalization", [h, weight("ln2", [HIDDEN], ones=True)], "x2",
         epsilon=1e-5, axis=-1)
g = linear(x, "gate_proj", FFN, HIDDEN)
g = node("Mul", [g, node("Sigmoid", [g], "sig")], "silu")
u = linear(x, "up_proj", FFN, HIDDEN)
h = node("Add", [h, linear(node("Mul", [g, u], "gu"), "down_proj", HIDDEN, FFN)],
         "h2")
x = node("RMSNormalization", [h, weight("norm", [HIDDEN], ones=True)], "xf",
         epsilon=1e-5, axis=-1)
linear(x, "lm_head", VOCAB, HIDDEN)
nodes[-1].output[0] = "logits"

cache = ["batch", KV, M, HD] if a.bnsh else ["batch", M, KV * HD]
ids = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
inputs = [ids("input_ids"), ids("position_ids")] + [
    helper.make_tensor_value_info(n, TensorProto.FLOAT, cache)
    for n in ("key_cache.0", "value_cache.0")] + [
    helper.make_tensor_value_info(n, TensorProto.INT64, ["batch"])
    for n in ("write_indices", "nonpad_kv_seqlen")]
outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                         ["batch", "seq", VOCAB])] + [
    helper.make_tensor_value_info(n, TensorProto.FLOAT, cache)
    for n in ("updated_key_cache.0", "updated_value_cache.0")]
graph = helper.make_graph(nodes, "static-cache", inputs, outputs, inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)],
                          producer_name="sq gen_static_cache.py")
model.ir_version = 10
open(a.out, "wb").write(model.SerializeToString())
