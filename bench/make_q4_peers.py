#!/usr/bin/python3
"""Writes the same random LLaMA-shaped int4 layer stack for two peers.

    /usr/bin/python3 bench/make_q4_peers.py [--gguf FILE] [--onnx DIR] [--shape S]
        [--layers N] [--block 32|128] [--accuracy-level 0|4] [--seed S]

--shape (bench/llama_shapes.py): llama2-7b (default: hidden 4096, 32 heads,
head_dim 128, no GQA, FFN 11008, vocab 32000, theta 10000), llama3.2-1b
(hidden 2048, 16 layers, 32 heads / 8 KV heads, head_dim 64, FFN 8192, vocab
128256, tied embeddings, theta 500000 with llama3 RoPE scaling, factor 32) or
llama3.1-8b (4096, 32 layers, 32 / 8 KV heads, FFN 14336, vocab 128256,
untied, theta 500000, llama3 scaling factor 8); --layers of its layers
(default 4). Every weight is drawn
uniformly at random (std 0.02) and quantized with ggml's Q4_0 rule (blocks
of 32 along the input dimension, d = the signed absmax / -8 stored as fp16,
q = min(15, trunc(x / d + 8.5)), value = (q - 8) * d).

--gguf FILE: a GGUF v3 file for llama.cpp, architecture "llama", file type
  MOSTLY_Q4_0. Every 2-D tensor is Q4_0, including token_embd and output
  (a "pure" Q4_0 file; llama-quantize would have used Q6_K for output); the
  RMSNorm weights are F32 (ones). GQA is llama.head_count_kv; theta is
  llama.rope.freq_base; LLaMA-3 RoPE scaling is the F32 tensor
  rope_freqs.weight (head_dim/2 factors by which llama.cpp divides each
  frequency, as convert_hf_to_gguf.py writes it); tied embeddings: no
  output.weight (llama.cpp then reads token_embd for the head). Tokenizer
  metadata: a SentencePiece-style ("llama") vocabulary of the shape's size
  (32000 or 128256) of made-up pieces: <unk>, <s>, </s>, the 256 byte pieces
  <0x00>..<0xFF>, then "tok259".. (enough for llama.cpp to load it; the
  benchmark feeds token ids, never text).
--onnx DIR: DIR/model.onnx + DIR/model.onnx.data for onnxruntime, a decode
  graph with a KV cache in the ONNX Runtime GenAI form: fp32 activations,
  the 7 linears per layer and the LM head as com.microsoft::MatMulNBits
  (bits 4, block_size --block, no zero points, i.e. the implied zero point 8,
  fp32 scales, accuracy_level --accuracy-level: 4 = int8 activations, like
  llama.cpp's q4_0 x q8_0 dot products), SimplifiedLayerNormalization /
  SkipSimplifiedLayerNormalization, GroupQueryAttention (do_rotary, past and
  present KV in BNSH fp32, kv_num_heads the shape's KV heads, cos/sin caches
  of the (scaled) frequencies) over the cached tokens, SiLU-gated MLP. The
  token embedding is an fp16 Gather (+ Cast); it is not counted in bytes per
  token (one row per token is read). Tied: the LM head's MatMulNBits holds the
  embedding's int4 weights. With --block 32 the MatMulNBits weights are
  bit-for-bit the Q4_0 weights of the GGUF file (same q, same d); with
  --block 128 they are re-quantized from the same floats.
  Inputs: input_ids, attention_mask, past_key_values.L.key/value; outputs:
  logits and present.L.key/value (what bench/ort_runner.js bench expects).

Prints one JSON line on stdout: the files and their weight bytes per decoded
token (every linear + LM head + norms; not the embedding table, except as
the tied LM head). Every tensor is generated, quantized and written in pieces
of 1024 rows, so memory stays small (the 8B shape's GGUF is ~4.6 GB, its ONNX
~5.3 GB). Needs Debian's python3-numpy (and python3-onnx for --onnx).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_shapes import SHAPES, gguf_rope_factors, inverse_frequencies  # noqa: E402

# Set from --shape in main().
HIDDEN = HEADS = KV_HEADS = FFN = VOCAB = HEAD_DIM = CTX = None
SHAPE = None
QK = 32  # Q4_0 block
GGML_F32, GGML_F16, GGML_Q4_0 = 0, 1, 2
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, ggml's block_q4_0
ALIGN = 32


def quantize_q4_0(x):
    """x: (rows, K) float32 -> (q uint8 (rows, K/32, 32) in 0..15, d float16 (rows, K/32))."""
    rows, k = x.shape
    xb = x.reshape(rows, k // QK, QK)
    idx = np.abs(xb).argmax(axis=-1)[..., None]
    mx = np.take_along_axis(xb, idx, axis=-1)[..., 0]
    d = mx / -8.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, (xb * inv[..., None] + 8.5).astype(np.int8)).astype(np.uint8)
    return q, d.astype(np.float16)


def quantize_sym_zp8(x, block):
    """MatMulNBits quantization with zero point 8 (no zero-point input) for block != 32."""
    rows, k = x.shape
    xb = x.reshape(rows, k // block, block)
    idx = np.abs(xb).argmax(axis=-1)[..., None]
    mx = np.take_along_axis(xb, idx, axis=-1)[..., 0]
    d = (mx / -8.0).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.rint(xb * inv[..., None]) + 8, 0, 15).astype(np.uint8)
    return q, d


class GGUFWriter:
    """GGUF v3 (ggml docs/gguf.md): header, metadata KVs, tensor infos, aligned data."""

    T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9

    def __init__(self, path):
        self.path = path
        self.kv = []
        self.tensors = []  # (name, dims ne0-first, ggml type, nbytes)

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, t, v):
        if t == self.T_U32:
            return struct.pack("<I", v)
        if t == self.T_I32:
            return struct.pack("<i", v)
        if t == self.T_F32:
            return struct.pack("<f", v)
        if t == self.T_BOOL:
            return struct.pack("<B", 1 if v else 0)
        if t == self.T_STRING:
            return self._str(v)
        raise ValueError(t)

    def add(self, key, t, v):
        self.kv.append(self._str(key) + struct.pack("<I", t) + self._val(t, v))

    def add_array(self, key, t, values):
        head = self._str(key) + struct.pack("<IIQ", self.T_ARRAY, t, len(values))
        if t == self.T_STRING:
            body = b"".join(self._str(v) for v in values)
        elif t == self.T_F32:
            body = np.asarray(values, "<f4").tobytes()
        elif t == self.T_I32:
            body = np.asarray(values, "<i4").tobytes()
        else:
            raise ValueError(t)
        self.kv.append(head + body)

    def add_tensor(self, name, dims, gtype):
        n = int(np.prod(dims))
        nbytes = {GGML_F32: 4 * n, GGML_F16: 2 * n, GGML_Q4_0: n // QK * 18}[gtype]
        self.tensors.append((name, dims, gtype, nbytes))

    def begin_data(self):
        self.f = open(self.path + ".tmp", "wb")
        f = self.f
        f.write(struct.pack("<IIQQ", 0x46554747, 3, len(self.tensors), len(self.kv)))
        for kv in self.kv:
            f.write(kv)
        off = 0
        self.offsets = {}
        for name, dims, gtype, nbytes in self.tensors:
            f.write(self._str(name) + struct.pack("<I", len(dims)))
            f.write(struct.pack("<%dQ" % len(dims), *dims))
            f.write(struct.pack("<IQ", gtype, off))
            self.offsets[name] = off
            off += (nbytes + ALIGN - 1) // ALIGN * ALIGN
        pad = (-f.tell()) % ALIGN
        f.write(b"\0" * pad)
        self.data_start = f.tell()

    def write(self, name, data):
        """Appends bytes of tensor `name` (called in add_tensor order, possibly in pieces)."""
        self.f.write(data)

    def end_tensor(self, name):
        expect = self.data_start + self.offsets[name] + [t for t in self.tensors if t[0] == name][0][3]
        if self.f.tell() != expect:
            raise RuntimeError("%s: wrote %d bytes, expected end at %d" % (name, self.f.tell(), expect))
        self.f.write(b"\0" * ((-self.f.tell() + self.data_start) % ALIGN))

    def close(self):
        self.f.close()
        os.replace(self.path + ".tmp", self.path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf")
    ap.add_argument("--onnx")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--block", type=int, default=32, choices=(32, 64, 128))
    ap.add_argument("--accuracy-level", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.gguf and not args.onnx:
        ap.error("nothing to write: give --gguf and/or --onnx")
    global HIDDEN, HEADS, KV_HEADS, FFN, VOCAB, HEAD_DIM, CTX, SHAPE
    SHAPE = SHAPES[args.shape]
    HIDDEN, HEADS, KV_HEADS, FFN, VOCAB, CTX = (SHAPE[k] for k in ("hidden", "heads", "kv_heads", "ffn",
                                                                      "vocab", "context"))
    HEAD_DIM = HIDDEN // HEADS
    tied = SHAPE["tied"]
    rope_factors = gguf_rope_factors(SHAPE)
    L = args.layers
    if L < 1:
        ap.error("--layers must be >= 1")
    rng = np.random.default_rng(args.seed)
    amp = 0.02 * np.sqrt(3.0)  # uniform(-amp, amp) has std 0.02

    # (name in GGUF, name in ONNX, out features N, in features K, kind)
    tensors = [("token_embd.weight", "embed", VOCAB, HIDDEN, "embed"),
               ("output_norm.weight", "final_norm_w", HIDDEN, 1, "norm")]
    if not tied:
        tensors.append(("output.weight", "lm_head", VOCAB, HIDDEN, "linear"))
    if rope_factors is not None:
        tensors.append(("rope_freqs.weight", None, HEAD_DIM // 2, 1, "rope"))
    for l in range(L):
        b = "blk.%d." % l
        o = "l%d_" % l
        tensors += [(b + "attn_norm.weight", o + "ln1", HIDDEN, 1, "norm"),
                    (b + "attn_q.weight", o + "q", HIDDEN, HIDDEN, "linear"),
                    (b + "attn_k.weight", o + "k", KV_HEADS * HEAD_DIM, HIDDEN, "linear"),
                    (b + "attn_v.weight", o + "v", KV_HEADS * HEAD_DIM, HIDDEN, "linear"),
                    (b + "attn_output.weight", o + "o", HIDDEN, HIDDEN, "linear"),
                    (b + "ffn_norm.weight", o + "ln2", HIDDEN, 1, "norm"),
                    (b + "ffn_gate.weight", o + "gate", FFN, HIDDEN, "linear"),
                    (b + "ffn_up.weight", o + "up", FFN, HIDDEN, "linear"),
                    (b + "ffn_down.weight", o + "down", HIDDEN, FFN, "linear")]

    gg = None
    if args.gguf:
        gg = GGUFWriter(args.gguf)
        gg.add("general.architecture", gg.T_STRING, "llama")
        gg.add("general.name", gg.T_STRING, "synthetic-%s-shape-%dL-q4_0" % (args.shape, L))
        gg.add("general.file_type", gg.T_U32, 2)  # LLAMA_FTYPE_MOSTLY_Q4_0
        gg.add("general.quantization_version", gg.T_U32, 2)
        gg.add("general.alignment", gg.T_U32, ALIGN)
        gg.add("llama.vocab_size", gg.T_U32, VOCAB)
        gg.add("llama.context_length", gg.T_U32, CTX)
        gg.add("llama.embedding_length", gg.T_U32, HIDDEN)
        gg.add("llama.block_count", gg.T_U32, L)
        gg.add("llama.feed_forward_length", gg.T_U32, FFN)
        gg.add("llama.rope.dimension_count", gg.T_U32, HEAD_DIM)
        gg.add("llama.rope.freq_base", gg.T_F32, SHAPE["theta"])
        gg.add("llama.attention.head_count", gg.T_U32, HEADS)
        gg.add("llama.attention.head_count_kv", gg.T_U32, KV_HEADS)
        gg.add("llama.attention.layer_norm_rms_epsilon", gg.T_F32, 1e-5)
        toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
        types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE...
        toks += ["tok%d" % i for i in range(len(toks), VOCAB)]
        types += [1] * (VOCAB - len(types))  # NORMAL
        gg.add("tokenizer.ggml.model", gg.T_STRING, "llama")
        gg.add_array("tokenizer.ggml.tokens", gg.T_STRING, toks)
        gg.add_array("tokenizer.ggml.scores", gg.T_F32, [0.0] * 259 + [-float(i) for i in range(VOCAB - 259)])
        gg.add_array("tokenizer.ggml.token_type", gg.T_I32, types)
        gg.add("tokenizer.ggml.bos_token_id", gg.T_U32, 1)
        gg.add("tokenizer.ggml.eos_token_id", gg.T_U32, 2)
        gg.add("tokenizer.ggml.unknown_token_id", gg.T_U32, 0)
        gg.add("tokenizer.ggml.add_bos_token", gg.T_BOOL, True)
        gg.add("tokenizer.ggml.add_eos_token", gg.T_BOOL, False)
        for gname, _, n, k, kind in tensors:
            if kind in ("norm", "rope"):
                gg.add_tensor(gname, [n], GGML_F32)
            else:
                gg.add_tensor(gname, [k, n], GGML_Q4_0)  # ne0 = K (contiguous), ne1 = N
        gg.begin_data()

    ox = None
    if args.onnx:
        import onnx  # noqa: F401  (fail early when python3-onnx is missing)
        os.makedirs(args.onnx, exist_ok=True)
        ox = {"data": open(os.path.join(args.onnx, "model.onnx.data.tmp"), "wb"), "inits": {}}

    def onnx_end(name, dtype, dims, off):
        """Declares the bytes written to the data file since offset `off` as tensor `name`."""
        from onnx import TensorProto
        t = TensorProto()
        t.name = name
        t.data_type = dtype
        t.dims.extend(dims)
        t.data_location = TensorProto.EXTERNAL
        length = ox["data"].tell() - off
        for key, v in (("location", "model.onnx.data"), ("offset", str(off)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = key, v
        pad = (-ox["data"].tell()) % 64
        ox["data"].write(b"\0" * pad)
        ox["inits"][name] = t

    def onnx_external(name, dtype, dims, raw):
        off = ox["data"].tell()
        ox["data"].write(raw)
        onnx_end(name, dtype, dims, off)

    bytes_gguf = bytes_onnx = 0
    for gname, oname, n, k, kind in tensors:
        print("  %s [%d x %d]" % (gname, n, k), file=sys.stderr, flush=True)
        if kind == "norm":
            w = np.ones(n, np.float32)
            if gg:
                gg.write(gname, w.tobytes())
                gg.end_tensor(gname)
                bytes_gguf += w.nbytes
            if ox:
                from onnx import TensorProto
                onnx_external(oname, TensorProto.FLOAT, [n], w.tobytes())
                bytes_onnx += w.nbytes
            continue
        if kind == "rope":  # GGUF only; the ONNX graph bakes the scaling into its cos/sin caches
            if gg:
                gg.write(gname, rope_factors.astype("<f4").tobytes())
                gg.end_tensor(gname)
                bytes_gguf += rope_factors.nbytes
            continue
        # ONNX: the packed weights (or fp16 embedding rows) go straight to the
        # data file; the scales (1/8 of the packed bytes) are kept until the
        # tensor ends; a tied head's packed weights too (the embedding's rows
        # are being written meanwhile).
        S, HB, HS = [], [], []
        head_from_embed = ox and kind == "embed" and tied
        off = ox["data"].tell() if ox else 0
        chunk = 1024
        for r0 in range(0, n, chunk):
            rows = min(chunk, n - r0)
            x = rng.uniform(-amp, amp, size=(rows, k)).astype(np.float32)
            q, d = quantize_q4_0(x)
            if gg:
                blk = np.empty((rows, k // QK), Q4_0_BLOCK)
                blk["d"] = d
                blk["qs"] = q[..., :16] | (q[..., 16:] << 4)
                gg.write(gname, blk.tobytes())
            if ox:
                if kind == "embed":
                    deq = (q.astype(np.float32) - 8) * d.astype(np.float32)[..., None]
                    ox["data"].write(deq.reshape(rows, k).astype(np.float16).tobytes())
                if kind != "embed" or head_from_embed:
                    if args.block == QK:
                        qq, dd = q, d.astype(np.float32)
                    else:
                        qq, dd = quantize_sym_zp8(x, args.block)
                    pk = qq.reshape(rows, k // args.block, args.block // 2, 2)
                    packed = (pk[..., 0] | (pk[..., 1] << 4)).tobytes()
                    if head_from_embed:
                        HB.append(packed)
                        HS.append(dd.astype(np.float32).tobytes())
                    else:
                        ox["data"].write(packed)
                        S.append(dd.astype(np.float32).tobytes())
        if gg:
            gg.end_tensor(gname)
            if kind != "embed" or tied:  # a tied head reads token_embd
                bytes_gguf += n * k // QK * 18
        if ox:
            from onnx import TensorProto
            nb = k // args.block
            if kind == "embed":
                onnx_end(oname, TensorProto.FLOAT16, [n, k], off)
                if head_from_embed:
                    onnx_external("lm_head_B", TensorProto.UINT8, [n, nb, args.block // 2], b"".join(HB))
                    onnx_external("lm_head_scales", TensorProto.FLOAT, [n * nb], b"".join(HS))
                    bytes_onnx += n * k // 2 + n * nb * 4
            else:
                onnx_end(oname + "_B", TensorProto.UINT8, [n, nb, args.block // 2], off)
                onnx_external(oname + "_scales", TensorProto.FLOAT, [n * nb], b"".join(S))
                bytes_onnx += n * k // 2 + n * nb * 4
    if gg:
        gg.close()

    if ox:
        ox["data"].close()
        os.replace(os.path.join(args.onnx, "model.onnx.data.tmp"), os.path.join(args.onnx, "model.onnx.data"))
        write_onnx_graph(args, ox["inits"])

    out = {"layers": L, "shape": args.shape}
    if gg:
        out.update(gguf=args.gguf, gguf_file_bytes=os.path.getsize(args.gguf), gguf_bytes_per_token=bytes_gguf)
    if ox:
        out.update(onnx=os.path.join(args.onnx, "model.onnx"), onnx_block=args.block,
                   onnx_file_bytes=os.path.getsize(os.path.join(args.onnx, "model.onnx.data")),
                   onnx_bytes_per_token=bytes_onnx)
    print(json.dumps(out))


def write_onnx_graph(args, inits):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    L = args.layers
    nodes = []
    init_list = list(inits.values())

    def small(name, array):
        init_list.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, outs, name="/" + outs[0], domain=domain, **attrs))
        return outs[0]

    def linear(x, w, n, k, out):
        return node("MatMulNBits", [x, w + "_B", w + "_scales"], [out], domain="com.microsoft",
                    K=k, N=n, bits=4, block_size=args.block, accuracy_level=args.accuracy_level)

    inv = inverse_frequencies(SHAPE)
    freqs = np.outer(np.arange(CTX, dtype=np.float32), inv).astype(np.float32)
    cos_cache = small("cos_cache", np.cos(freqs).astype(np.float32))
    sin_cache = small("sin_cache", np.sin(freqs).astype(np.float32))
    one = small("one", np.array(1, dtype=np.int64))
    axis1 = small("axis1", np.array([1], dtype=np.int64))
    s = node("ReduceSum", ["attention_mask", axis1], ["mask_sum"], keepdims=0)
    s = node("Sub", [s, one], ["seqlens_minus_one"])
    seqlens = node("Cast", [s], ["seqlens_k"], to=TensorProto.INT32)
    shape = node("Shape", ["attention_mask"], ["mask_shape"])
    total = node("Gather", [shape, one], ["total_len64"], axis=0)
    total = node("Cast", [total], ["total_sequence_length"], to=TensorProto.INT32)

    e = node("Gather", ["embed", "input_ids"], ["embeds16"])
    h = node("Cast", [e], ["embeds"], to=TensorProto.FLOAT)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])]
    pending = None
    for l in range(L):
        o = "l%d_" % l
        if pending is None:
            n1 = node("SimplifiedLayerNormalization", [h, o + "ln1"], [o + "n1"], axis=-1, epsilon=1e-5)
        else:
            outs = [o + "n1", "", "", o + "h"]
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [pending, h, o + "ln1"], outs,
                                          name="/" + o + "skipln1", domain="com.microsoft", epsilon=1e-5))
            n1, h = outs[0], outs[3]
        q = linear(n1, o + "q", HIDDEN, HIDDEN, o + "qo")
        k = linear(n1, o + "k", KV_HEADS * HEAD_DIM, HIDDEN, o + "ko")
        v = linear(n1, o + "v", KV_HEADS * HEAD_DIM, HIDDEN, o + "vo")
        pk, pv = "past_key_values.%d.key" % l, "past_key_values.%d.value" % l
        ck, cv = "present.%d.key" % l, "present.%d.value" % l
        for nm in (pk, pv):
            inputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT,
                                                        ["batch", KV_HEADS, "past", HEAD_DIM]))
        for nm in (ck, cv):
            outputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT,
                                                         ["batch", KV_HEADS, "total", HEAD_DIM]))
        nodes.append(helper.make_node(
            "GroupQueryAttention", [q, k, v, pk, pv, seqlens, total, cos_cache, sin_cache],
            [o + "attn", ck, cv], name="/" + o + "gqa", domain="com.microsoft",
            num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1,
            rotary_interleaved=1))  # adjacent pairs, as llama.cpp rotates "llama" GGUFs
        att = linear(o + "attn", o + "o", HIDDEN, HIDDEN, o + "oo")
        outs = [o + "n2", "", "", o + "h1"]
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [att, h, o + "ln2"], outs,
                                      name="/" + o + "skipln2", domain="com.microsoft", epsilon=1e-5))
        n2, h = outs[0], outs[3]
        g = linear(n2, o + "gate", FFN, HIDDEN, o + "gateo")
        u = linear(n2, o + "up", FFN, HIDDEN, o + "upo")
        sg = node("Sigmoid", [g], [o + "sig"])
        silu = node("Mul", [g, sg], [o + "silu"])
        m = node("Mul", [silu, u], [o + "mlp"])
        pending = linear(m, o + "down", HIDDEN, FFN, o + "downo")
    outs = ["final_n", "", "", "final_h"]
    nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [pending, h, "final_norm_w"], outs,
                                  name="/final_skipln", domain="com.microsoft", epsilon=1e-5))
    linear("final_n", "lm_head", VOCAB, HIDDEN, "logits")
    graph = helper.make_graph(nodes, "synthetic-%s-matmulnbits" % args.shape, inputs, outputs, init_list)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save_model(model, os.path.join(args.onnx, "model.onnx"))


if __name__ == "__main__":
    main()
