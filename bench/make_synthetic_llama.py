#!/usr/bin/python3
"""Writes a LLaMA-shaped ONNX model with random fp16 weights.

    /usr/bin/python3 bench/make_synthetic_llama.py OUTDIR [--shape S] [--layers N]

--shape (bench/llama_shapes.py, shared with make_q4_peers.py):
  llama2-7b    hidden 4096, 32 layers, 32 heads (head_dim 128, no GQA),
               intermediate 11008, vocab 32000, RoPE theta 10000 (default;
               13.5 GB of weights at 32 layers)
  llama3.2-1b  hidden 2048, 16 layers, 32 heads, 8 KV heads (head_dim 64),
               intermediate 8192, vocab 128256, tied embeddings, theta 500000
               with llama3 RoPE scaling (factor 32, 1, 4, 8192) (2.5 GB)
  llama3.1-8b  hidden 4096, 32 layers, 32 heads, 8 KV heads (head_dim 128),
               intermediate 14336, vocab 128256, untied, theta 500000 with
               llama3 RoPE scaling (factor 8, 1, 4, 8192) (16 GB)
--layers picks how many of the shape's layers to write (default: all).
The graph uses the ONNX Runtime GenAI model-builder form (fp16 MatMul weights
[in, out], SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization,
GroupQueryAttention with do_rotary and kv_num_heads, the RoPE frequencies --
llama3-scaled for the LLaMA-3 shapes -- baked into its cos/sin caches, which
is how SQ's importer recovers theta and the scaling, docs/import.md) and keeps
every weight in OUTDIR/model.onnx.data, written tensor by tensor so the script
never holds the model in memory. Tied embeddings are written as the GenAI
builder's shared form: lm_head is a Transpose of the embedding initializer
(one copy on disk; SQ imports it as tie_word_embeddings = true). A
genai_config.json beside the model gives the context length. The weights are
random: this model is for measuring speed, import time and memory (see
docs/results.md), not for text.

Needs Debian's python3-onnx and python3-numpy.
"""

import argparse
import os
import sys

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_shapes import SHAPES, inverse_frequencies  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--layers", type=int, default=None, help="default: the shape's layer count")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shp = SHAPES[args.shape]
    if args.layers is None:
        args.layers = shp["layers"]
    if args.layers < 1:
        ap.error("--layers must be >= 1")
    HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = (shp[k] for k in ("hidden", "heads", "kv_heads", "ffn", "vocab"))
    HEAD_DIM = HIDDEN // HEADS
    os.makedirs(args.outdir, exist_ok=True)
    data_name = "model.onnx.data"
    data_path = os.path.join(args.outdir, data_name)
    rng = np.random.default_rng(args.seed)
    inits, nodes = [], []
    offset = [0]
    data = open(data_path + ".tmp", "wb")

    def weight(name, shape):
        n = int(np.prod(shape))
        # Random fp16 bit patterns with magnitudes in [2^-7, 2^-1) and a
        # random sign: fast to draw, finite, LLaMA-like scale.
        # Drawn and written in pieces of 32M values (64 MB): memory stays
        # small even for the 8B shape's 0.5G-value embedding.
        for i in range(0, n, 1 << 25):
            m = min(1 << 25, n - i)
            bits = rng.integers(0x2000, 0x3800, size=m, dtype=np.uint16)
            bits |= (rng.integers(0, 2, size=m, dtype=np.uint16) << 15)
            data.write(bits.tobytes())
        t = TensorProto()
        t.name = name
        t.data_type = TensorProto.FLOAT16
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", data_name), ("offset", str(offset[0])), ("length", str(2 * n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        offset[0] += 2 * n
        inits.append(t)
        return name

    def small(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, outs, name="/" + outs[0], domain=domain, **attrs))
        return outs[0]

    inv = inverse_frequencies(shp)
    freqs = np.outer(np.arange(shp["context"], dtype=np.float32), inv).astype(np.float32)
    cos_cache = small("cos_cache", np.cos(freqs).astype(np.float16))
    sin_cache = small("sin_cache", np.sin(freqs).astype(np.float16))
    one = small("one", np.array(1, dtype=np.int64))
    axis1 = small("axis1", np.array([1], dtype=np.int64))
    s = node("ReduceSum", ["attention_mask", axis1], ["mask_sum"], keepdims=0)
    s = node("Sub", [s, one], ["seqlens_minus_one"])
    seqlens = node("Cast", [s], ["seqlens_k"], to=TensorProto.INT32)
    shape = node("Shape", ["attention_mask"], ["mask_shape"])
    total = node("Gather", [shape, one], ["total_len64"], axis=0)
    total = node("Cast", [total], ["total_sequence_length"], to=TensorProto.INT32)

    h = node("Gather", [weight("model.embed_tokens.weight", [VOCAB, HIDDEN]), "input_ids"], ["embeds"])
    pending = None
    for l in range(args.layers):
        print("layer %d/%d" % (l + 1, args.layers), file=sys.stderr, flush=True)
        p = "model.layers.%d." % l
        ln1 = weight(p + "input_layernorm.weight", [HIDDEN])
        if pending is None:
            n = node("SimplifiedLayerNormalization", [h, ln1], ["l%d_n1" % l], axis=-1, epsilon=1e-5)
        else:
            outs = ["l%d_n1" % l, "", "", "l%d_h" % l]
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [pending, h, ln1], outs,
                                          name="/l%d_skipln1" % l, domain="com.microsoft", epsilon=1e-5))
            n, h = outs[0], outs[3]
        q = node("MatMul", [n, weight(p + "q_proj", [HIDDEN, HIDDEN])], ["l%d_q" % l])
        k = node("MatMul", [n, weight(p + "k_proj", [HIDDEN, KV_HEADS * HEAD_DIM])], ["l%d_k" % l])
        v = node("MatMul", [n, weight(p + "v_proj", [HIDDEN, KV_HEADS * HEAD_DIM])], ["l%d_v" % l])
        nodes.append(helper.make_node(
            "GroupQueryAttention", [q, k, v, "", "", seqlens, total, cos_cache, sin_cache],
            ["l%d_attn" % l], name="/l%d_gqa" % l, domain="com.microsoft",
            num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1))
        o = node("MatMul", ["l%d_attn" % l, weight(p + "o_proj", [HIDDEN, HIDDEN])], ["l%d_o" % l])
        outs = ["l%d_n2" % l, "", "", "l%d_h1" % l]
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                      [o, h, weight(p + "post_attention_layernorm.weight", [HIDDEN])],
                                      outs, name="/l%d_skipln2" % l, domain="com.microsoft", epsilon=1e-5))
        n2, h = outs[0], outs[3]
        g = node("MatMul", [n2, weight(p + "gate_proj", [HIDDEN, FFN])], ["l%d_gate" % l])
        u = node("MatMul", [n2, weight(p + "up_proj", [HIDDEN, FFN])], ["l%d_up" % l])
        sg = node("Sigmoid", [g], ["l%d_sig" % l])
        silu = node("Mul", [g, sg], ["l%d_silu" % l])
        m = node("Mul", [silu, u], ["l%d_mlp" % l])
        pending = node("MatMul", [m, weight(p + "down_proj", [FFN, HIDDEN])], ["l%d_down" % l])
    outs = ["final_norm", "", "", "final_h"]
    nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                  [pending, h, weight("model.norm.weight", [HIDDEN])], outs,
                                  name="/final_skipln", domain="com.microsoft", epsilon=1e-5))
    if shp["tied"]:  # the GenAI builder's shared form: lm_head reads the embedding through a Transpose
        nodes.insert(0, helper.make_node("Transpose", ["model.embed_tokens.weight"], ["lm_head_t"],
                                         name="/lm_head_t", perm=[1, 0]))
        node("MatMul", ["final_norm", "lm_head_t"], ["logits"])
    else:
        node("MatMul", ["final_norm", weight("lm_head", [HIDDEN, VOCAB])], ["logits"])
    data.close()
    os.replace(data_path + ".tmp", data_path)

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["batch", "seq", VOCAB])]
    graph = helper.make_graph(nodes, "synthetic-" + args.shape, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(model, os.path.join(args.outdir, "model.onnx"))
    with open(os.path.join(args.outdir, "genai_config.json"), "w") as f:
        json.dump({"model": {"context_length": shp["context"], "type": "llama",
                             "vocab_size": VOCAB}}, f, indent=1)
    print("wrote %s (%s, %d layers, %.2f GB of weights)" % (args.outdir, args.shape, args.layers,
                                                          offset[0] / 1e9), file=sys.stderr)


if __name__ == "__main__":
    main()
