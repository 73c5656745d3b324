#!/usr/bin/python3
"""Generates the ONNX fixtures of test/Import/Inputs/ (checked in).

Run with Debian's python3 (python3-torch, python3-onnx, python3-numpy):

    /usr/bin/python3 test/Import/gen_fixtures.py [OUTDIR]
    /usr/bin/python3 test/Import/gen_fixtures.py --only int4,bias [OUTDIR]

`--only NAME[,NAME...]` writes only the named groups of fixtures that are
built with onnx.helper (no torch needed): see HELPER_FIXTURES.

A small Hugging Face-style PyTorch LLaMA (RMSNorm computed in float32,
rotate-half RoPE, grouped-query attention with repeat_kv, causal mask,
SwiGLU) is exported with the TorchScript exporter of torch.onnx.export in
several styles, then broken copies are derived from one of them with the
onnx package. Every fixture is small (a few hundred kB at most); the weights
are seeded random numbers.

Valid fixtures (name: what varies)
  gqa-opset14.onnx        GQA 4/2 heads, opset 14
  gqa-opset16.onnx        same, opset 16
  gqa-opset17.onnx        same, opset 17
  mha-opset17.onnx        plain multi-head attention (4/4)
  tied-opset17.onnx       tied embedding / lm_head
  kvcache-opset17.onnx    past_key_values.* inputs, present.* outputs
  posids-opset17.onnx     position_ids input, cos/sin gathered from a cache
  where-mask-opset17.onnx causal mask applied with Where (masked_fill)
  interleaved-opset17.onnx  llama2.c/Meta RoPE: (real, imaginary) pairs
  tile-repeat-opset17.onnx  repeat_kv written with .repeat() (ONNX Tile)
  external/model.onnx     weights in external data (external/model.onnx.data)
  external-many/model.onnx  external data in one file per tensor
  bf16-opset17.onnx       gqa-opset17 with every float initializer stored as bfloat16
  genai-gqa-fp16.onnx     ONNX Runtime GenAI model-builder form (built with
                          onnx.helper, no exporter here): fp16 weights as
                          MatMul [in, out], SimplifiedLayerNormalization,
                          SkipSimplifiedLayerNormalization, GroupQueryAttention
                          with do_rotary and a KV cache, attention_mask input
  genai-mha-rotary.onnx   RotaryEmbedding + MultiHeadAttention (unidirectional),
                          position_ids input, float32
  onnx23-attention.onnx   ONNX opset 23: RMSNormalization, RotaryEmbedding and
                          Attention (is_causal, GQA, KV cache), onnx.helper
  int4-*.onnx, qdq-*.onnx pre-quantized linear layers (MatMulNBits, DequantizeLinear):
                          see quantized_models()
  qwen2-bias.onnx         (--only bias) the opset-23 form with Qwen2's biases
                          on q/k/v (MatMul then Add of a [out] vector)
  genai-qwen2-fp16.onnx   (--only bias) genai-gqa-fp16.onnx's form with fp16
                          q/k/v biases (MatMul then Add), as the GenAI builder
                          writes Qwen2
  genai-skip-bias.onnx    (--only bias) genai-mha-rotary.onnx's form with
                          biases on all projections, o_proj's and down_proj's
                          passed to SkipSimplifiedLayerNormalization (input 3)
  torch-qkv-bias-opset17.onnx  (--only bias) gqa-opset17.onnx with q/k/v
                          biases in the TorchScript form (Add(bias, MatMul))
  torch-headdim-opset17.onnx  (--only bias) the TorchScript exporter's form
                          written node by node (onnx.helper), head_dim 8 with
                          4 heads over hidden 16, GQA, q/k/v biases
  headdim-bias.onnx       (--only bias) the opset-23 form with an explicit
                          head_dim (hidden 16, 4 heads of 8: q_proj 16 -> 32)
                          and biases on all seven projections
  llama31-rope-gqa-fp16.onnx  LLaMA-3.1 RoPE scaling (rope_type llama3: factor
                          8, 1, 4, 8192; theta 500000, head_dim 64) baked into
                          the fp16 cos/sin caches of GroupQueryAttention
                          (do_rotary, KV cache), onnx.helper
  llama3-rope-band-gqa-fp16.onnx  as llama31-rope-gqa-fp16 with uncommon
                          llama3 values: factor 16, 2, 4, 8192
  llama32-rope-invfreq.onnx   LLaMA-3.2 scaling (factor 32) as an inv_freq
                          initializer: Cos/Sin of MatMul(position_ids, inv_freq),
                          rotate-half with Slice/Neg/Concat, then
                          MultiHeadAttention; float32, onnx.helper
                          (these three: --only rope-scaling)
  genai-tied-copy.onnx    genai-gqa-fp16 with tied embeddings as the GenAI builder
                          writes them: lm_head a transposed copy of the embedding
  genai-tied-shared.onnx  same, lm_head a Transpose of the embedding initializer
                          (these two: --only tied-genai)
Broken fixtures: see BROKEN below; broken/rope-sharp-cut.onnx (--only
rope-scaling too): frequencies divided by 3 from index 20 on, not a
LLaMA-3.1 scaling.
"""

import math
import os
import random
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper
try:
    import torch
    from torch import nn
except ImportError:  # the onnx.helper fixtures (--only) need no torch
    torch = None

    class nn:  # lets the torch model classes below be defined (never used)
        Module = object

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from sqdev import rope  # noqa: E402

VOCAB, HIDDEN, LAYERS, FFN = 32, 16, 2, 24


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.to(torch.float32)
        var = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(var + self.eps)).to(x.dtype)


class LayerNormVariant(nn.Module):
    """A LayerNorm where a LLaMA has RMSNorm (must be rejected)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        var = x.pow(2).mean(-1, keepdim=True)
        return self.ln.weight * x * torch.rsqrt(var + 1e-5)


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def apply_rotary_emb_interleaved(x, cos, sin):
    """llama2.c's apply_rotary_emb, on x [b, s, h, d] with cos/sin [s, d/2]."""
    xr, xi = x.float().reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    cos = cos.view(1, cos.shape[0], 1, cos.shape[1])
    sin = sin.view(1, sin.shape[0], 1, sin.shape[1])
    out_r = xr * cos - xi * sin
    out_i = xr * sin + xi * cos
    return torch.stack([out_r, out_i], dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, heads, kv_heads, theta, where_mask, interleaved=False, tile=False):
        super().__init__()
        self.interleaved = interleaved
        self.tile = tile
        self.h, self.kv, self.hd = heads, kv_heads, HIDDEN // heads
        self.theta, self.where_mask = theta, where_mask
        self.q_proj = nn.Linear(HIDDEN, heads * self.hd, bias=False)
        self.k_proj = nn.Linear(HIDDEN, kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(HIDDEN, kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(heads * self.hd, HIDDEN, bias=False)

    def forward(self, x, cos, sin, past):
        b, s, _ = x.shape
        if self.interleaved:
            q = apply_rotary_emb_interleaved(self.q_proj(x).view(b, s, self.h, self.hd), cos, sin)
            k = apply_rotary_emb_interleaved(self.k_proj(x).view(b, s, self.kv, self.hd), cos, sin)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:
            q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
            k = self.k_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        v = self.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        present = None
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
            present = (k, v)
        t = k.shape[2]
        rep = self.h // self.kv
        if rep > 1 and self.tile == "heads":
            # torch.repeat over the heads axis: query head h reads kv head
            # h mod kv, not LLaMA's h / rep.
            k = k.repeat(1, rep, 1, 1)
            v = v.repeat(1, rep, 1, 1)
        elif rep > 1 and self.tile:
            k = k[:, :, None, :, :].repeat(1, 1, rep, 1, 1).reshape(b, self.h, t, self.hd)
            v = v[:, :, None, :, :].repeat(1, 1, rep, 1, 1).reshape(b, self.h, t, self.hd)
        elif rep > 1:
            k = k[:, :, None, :, :].expand(b, self.kv, rep, t, self.hd).reshape(b, self.h, t, self.hd)
            v = v[:, :, None, :, :].expand(b, self.kv, rep, t, self.hd).reshape(b, self.h, t, self.hd)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
        if self.where_mask:
            visible = torch.ones(s, t, dtype=torch.bool).tril(diagonal=t - s)
            scores = scores.masked_fill(~visible, float("-inf"))
        else:
            mask = torch.full((s, t), torch.finfo(torch.float32).min).triu(diagonal=t - s + 1)
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.h * self.hd)
        return self.o_proj(out), present


class MLP(nn.Module):
    def __init__(self, ffn=FFN):
        super().__init__()
        self.gate_proj = nn.Linear(HIDDEN, ffn, bias=False)
        self.up_proj = nn.Linear(HIDDEN, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, HIDDEN, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, heads, kv_heads, theta, where_mask, norm, interleaved=False, tile=False,
                 ffn=FFN):
        super().__init__()
        self.input_layernorm = norm(HIDDEN)
        self.self_attn = Attention(heads, kv_heads, theta, where_mask, interleaved, tile)
        self.post_attention_layernorm = RMSNorm(HIDDEN)
        self.mlp = MLP(ffn)

    def forward(self, h, cos, sin, past):
        a, present = self.self_attn(self.input_layernorm(h), cos, sin, past)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), present


class Llama(nn.Module):
    def __init__(self, heads=4, kv_heads=2, theta=10000.0, tied=False, cache=False,
                 posids=False, where_mask=False, layernorm_layer=None, interleaved=False,
                 tile=False, ffn=FFN):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList([
            Layer(heads, kv_heads, theta, where_mask,
                  LayerNormVariant if i == layernorm_layer else RMSNorm, interleaved, tile, ffn)
            for i in range(LAYERS)])
        self.norm = RMSNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.embed_tokens.weight
        self.hd, self.theta, self.cache, self.posids = HIDDEN // heads, theta, cache, posids
        self.kv_heads = kv_heads
        self.interleaved = interleaved
        inv = 1.0 / (theta ** (torch.arange(0, self.hd, 2).float() / self.hd))
        self.register_buffer("inv_freq", inv, persistent=False)
        t = torch.arange(64).float()
        freqs = torch.outer(t, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def rope_tables(self, s, past_len, position_ids):
        if self.interleaved:
            # llama2.c: precomputed freqs_cos/freqs_sin [max_seq, d/2], sliced.
            t = torch.arange(64).float()
            freqs = torch.outer(t, self.inv_freq)
            return freqs.cos()[past_len:past_len + s], freqs.sin()[past_len:past_len + s]
        if position_ids is not None:
            return self.cos_cached[position_ids][:, None], self.sin_cached[position_ids][:, None]
        t = torch.arange(past_len, past_len + s, dtype=torch.float32)
        freqs = t[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, input_ids, *rest):
        position_ids = rest[0] if self.posids else None
        pasts = rest if self.cache else None
        h = self.embed_tokens(input_ids)
        past_len = pasts[0].shape[2] if pasts else 0
        cos, sin = self.rope_tables(input_ids.shape[1], past_len, position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            past = (pasts[2 * i], pasts[2 * i + 1]) if pasts else None
            h, present = layer(h, cos, sin, past)
            if present is not None:
                presents += list(present)
        logits = self.lm_head(self.norm(h))
        return (logits, *presents) if presents else logits


def export(model, path, opset, external=False):
    torch.manual_seed(0)
    b, s, p = 2, 5, 3
    ids = torch.randint(0, VOCAB, (b, s))
    args, names, dynamic = [ids], ["input_ids"], {"input_ids": {0: "batch", 1: "seq"}}
    outputs, out_dynamic = ["logits"], {"logits": {0: "batch", 1: "seq"}}
    if model.posids:
        args.append(torch.arange(s).expand(b, s).contiguous())
        names.append("position_ids")
        dynamic["position_ids"] = {0: "batch", 1: "seq"}
    if model.cache:
        for i in range(LAYERS):
            for kind in ("key", "value"):
                n = "past_key_values.%d.%s" % (i, kind)
                args.append(torch.randn(b, model.kv_heads, p, model.hd))
                names.append(n)
                dynamic[n] = {0: "batch", 2: "past_seq"}
                o = "present.%d.%s" % (i, kind)
                outputs.append(o)
                out_dynamic[o] = {0: "batch", 2: "total_seq"}
    dynamic.update(out_dynamic)
    tmp = path + ".tmp.onnx"
    torch.onnx.export(model, tuple(args), tmp, input_names=names, output_names=outputs,
                      dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    if external:
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=0)
    else:
        onnx.save_model(m, path)
    return m


def build(**kw):
    torch.manual_seed(kw.pop("seed", 1))
    model = Llama(**kw)
    model.eval()
    return model


def genai_model(path, kind, quant=None, fp16=None, H=None, heads=None, ffn=FFN, vocab=VOCAB,
                opset=None, packed_qkv=False, bias=(), num_heads=None, num_kv_heads=None,
                head_dim=None, seed=7):
    """A 2-layer LLaMA in the ONNX Runtime GenAI model-builder form.

    `quant` (see quantized_models) writes every linear layer pre-quantized;
    fp16, H, heads (q, kv), ffn and vocab override the kind's sizes;
    packed_qkv (kind gqa) computes q, k and v with one linear layer
    (qkv_proj) and gives GroupQueryAttention empty key and value.
    `bias` names the projections ("q", "k", "v", "o", "gate", "up", "down")
    that get a bias, added by an Add of an [out] initializer after their
    MatMul (o's and down's are SkipSimplifiedLayerNormalization's bias input
    in the com.microsoft kinds); `num_heads`, `num_kv_heads` and `head_dim`
    override the defaults (head_dim = hidden / heads)."""
    from onnx import TensorProto, helper

    VOCAB, FFN = vocab, ffn
    rng = np.random.default_rng(seed)
    # bench/vs_onnxruntime.sh checks these fixtures against onnxruntime,
    # whose fp16 GroupQueryAttention needs head_dim % 16 == 0.
    H = H or (32 if kind == "gqa" else HIDDEN)
    heads, kv = heads or ((2, 2) if kind == "mha" else (2, 1))
    heads, kv = num_heads or heads, num_kv_heads or kv
    hd = head_dim or H // heads
    fp16 = kind == "gqa" if fp16 is None else fp16
    wdt = np.float16 if fp16 else np.float32
    ttype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inits, nodes = [], []

    def weight(name, shape, scale=None, ones=False):
        a = (1.0 + 0.1 * rng.standard_normal(shape)) if ones else \
            rng.standard_normal(shape) * (scale or 1.0 / math.sqrt(shape[0]))
        inits.append(numpy_helper.from_array(a.astype(wdt), name))
        return name

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, outs, name="/" + outs[0], domain=domain, **attrs))
        return outs[0]

    skip_bias = {}  # o/down output -> its bias, the SkipSimplifiedLayerNorm's input 3

    def linear(x, name, shape, out):
        """x times the weight `name` [in, out], as MatMul or pre-quantized,
        plus its bias when `bias` names it."""
        w = weight(name, shape)
        if quant is None:
            y = node("MatMul", [x, w], [out])
        else:
            t = inits.pop()  # replaced by its quantized form
            y = quant(x, name, numpy_helper.to_array(t).astype(np.float64), out, node, inits)
        proj = name.split(".")[-1]
        if proj.split("_")[0] in bias:
            b = weight(name + ".bias", [shape[1]], scale=0.5)
            if kind != "onnx23" and proj in ("o_proj", "down_proj"):
                skip_bias[y] = [b]  # as the GenAI builder fuses it
            else:
                # torch.onnx writes Add(bias, MatMul): both orders occur.
                y = node("Add", [b, y] if proj[0] in "qkg" else [y, b], [out + "_bias"])
        return y

    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
    freqs = np.outer(np.arange(64), inv)
    cos_cache = const("cos_cache", np.cos(freqs).astype(wdt))
    sin_cache = const("sin_cache", np.sin(freqs).astype(wdt))
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", ttype, ["batch", "seq", VOCAB])]
    if kind == "onnx23":
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    elif kind == "gqa":
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_seq"]))
        one = const("one", np.array(1, dtype=np.int64))
        axis1 = const("axis1", np.array([1], dtype=np.int64))
        s = node("ReduceSum", ["attention_mask", axis1], ["mask_sum"], keepdims=0)
        s = node("Sub", [s, one], ["seqlens_minus_one"])
        seqlens = node("Cast", [s], ["seqlens_k"], to=TensorProto.INT32)
        shape = node("Shape", ["attention_mask"], ["mask_shape"])
        total = node("Gather", [shape, one], ["total_len64"], axis=0)
        total = node("Cast", [total], ["total_sequence_length"], to=TensorProto.INT32)
    else:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))

    h = node("Gather", [weight("model.embed_tokens.weight", [VOCAB, H], 0.5), "input_ids"], ["embeds"])
    pending = None  # (x, skip) to add before the next norm
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        ln1 = weight(p + "input_layernorm.weight", [H], ones=True)
        if kind == "onnx23":
            if pending is not None:
                h = node("Add", [h, pending], ["l%d_h" % l])
            n = node("RMSNormalization", [h, ln1], ["l%d_n1" % l], axis=-1, epsilon=1e-5)
        elif pending is None:
            n = node("SimplifiedLayerNormalization", [h, ln1], ["l%d_n1" % l], axis=-1, epsilon=1e-5)
        else:
            outs = ["l%d_n1" % l, "", "", "l%d_h" % l]
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                          [pending, h, ln1] + skip_bias.get(pending, []), outs,
                                          name="/l%d_skipln1" % l, domain="com.microsoft", epsilon=1e-5))
            n, h = outs[0], outs[3]
        if packed_qkv:
            q, k, v = linear(n, p + "qkv_proj", [H, (heads + 2 * kv) * hd], "l%d_qkv" % l), "", ""
        else:
            q = linear(n, p + "q_proj", [H, heads * hd], "l%d_q" % l)
            k = linear(n, p + "k_proj", [H, kv * hd], "l%d_k" % l)
            v = linear(n, p + "v_proj", [H, kv * hd], "l%d_v" % l)
        if kind in ("gqa", "onnx23"):
            pk, pv = "past_key_values.%d.key" % l, "past_key_values.%d.value" % l
            for name in (pk, pv):
                inputs.append(helper.make_tensor_value_info(name, ttype, ["batch", kv, "past_seq", hd]))
            ok, ov = "present.%d.key" % l, "present.%d.value" % l
            for name in (ok, ov):
                outputs.append(helper.make_tensor_value_info(name, ttype, ["batch", kv, "total_seq", hd]))
        if kind == "onnx23":
            qr = node("RotaryEmbedding", [q, cos_cache, sin_cache, "position_ids"], ["l%d_qr" % l],
                      interleaved=0, num_heads=heads)
            kr = node("RotaryEmbedding", [k, cos_cache, sin_cache, "position_ids"], ["l%d_kr" % l],
                      interleaved=0, num_heads=kv)
            nodes.append(helper.make_node(
                "Attention", [qr, kr, v, "", pk, pv], ["l%d_attn" % l, ok, ov], name="/l%d_attn" % l,
                is_causal=1, q_num_heads=heads, kv_num_heads=kv))
            a = "l%d_attn" % l
        elif kind == "gqa":
            nodes.append(helper.make_node(
                "GroupQueryAttention", [q, k, v, pk, pv, seqlens, total, cos_cache, sin_cache],
                ["l%d_attn" % l, ok, ov], name="/l%d_gqa" % l, domain="com.microsoft",
                num_heads=heads, kv_num_heads=kv, do_rotary=1, rotary_interleaved=0,
                scale=1.0 / math.sqrt(hd)))
            a = "l%d_attn" % l
        else:
            qr = node("RotaryEmbedding", [q, "position_ids", cos_cache, sin_cache], ["l%d_qr" % l],
                      domain="com.microsoft", interleaved=0, num_heads=heads)
            kr = node("RotaryEmbedding", [k, "position_ids", cos_cache, sin_cache], ["l%d_kr" % l],
                      domain="com.microsoft", interleaved=0, num_heads=kv)
            a = node("MultiHeadAttention", [qr, kr, v], ["l%d_attn" % l], domain="com.microsoft",
                     num_heads=heads, unidirectional=1)
        o = linear(a, p + "o_proj", [heads * hd, H], "l%d_o" % l)
        ln2 = weight(p + "post_attention_layernorm.weight", [H], ones=True)
        if kind == "onnx23":
            h = node("Add", [h, o], ["l%d_h1" % l])
            n2 = node("RMSNormalization", [h, ln2], ["l%d_n2" % l], axis=-1, epsilon=1e-5)
            outs = [n2, "", "", h]
        else:
            outs = ["l%d_n2" % l, "", "", "l%d_h1" % l]
        if kind != "onnx23":
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                          [o, h, ln2] + skip_bias.get(o, []), outs,
                                          name="/l%d_skipln2" % l, domain="com.microsoft", epsilon=1e-5))
        n2, h = outs[0], outs[3]
        g = linear(n2, p + "gate_proj", [H, FFN], "l%d_gate" % l)
        u = linear(n2, p + "up_proj", [H, FFN], "l%d_up" % l)
        sg = node("Sigmoid", [g], ["l%d_sig" % l])
        silu = node("Mul", [g, sg], ["l%d_silu" % l])
        m = node("Mul", [silu, u], ["l%d_mlp" % l])
        pending = linear(m, p + "down_proj", [FFN, H], "l%d_down" % l)
    if kind == "onnx23":
        h = node("Add", [h, pending], ["final_h"])
        node("RMSNormalization", [h, weight("model.norm.weight", [H], ones=True)], ["final_norm"],
             axis=-1, epsilon=1e-5)
    else:
        outs = ["final_norm", "", "", "final_h"]
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                      [pending, h, weight("model.norm.weight", [H], ones=True)] +
                                      skip_bias.get(pending, []), outs,
                                      name="/final_skipln", domain="com.microsoft", epsilon=1e-5))
    linear("final_norm", "lm_head", [H, VOCAB], "logits")
    graph = helper.make_graph(nodes, "genai-llama", inputs, outputs, inits)
    opset = opset or (23 if kind == "onnx23" else 17)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(model, path)
    return model


# --- pre-quantized weights (no torch needed: gen_fixtures.py --only int4) ---

ONNX_UINT4, ONNX_INT4 = 21, 22  # TensorProto data types (onnx >= 1.16)


def pack4(codes):
    """4-bit codes (0..15) packed two per byte, low nibble first."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if c.size % 2:
        c = np.append(c, np.uint8(0))
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def nbits_quant(block, zero_points, scale_dtype, lm_head_bits=4):
    """com.microsoft MatMulNBits, as the GenAI builder writes it: B [N,
    blocks, block * bits / 8] packed along K, low bits first, scales [N *
    blocks]. zero_points: None (the default, 2^(bits-1)), "packed" (uint8,
    [N * ceil(blocks * bits / 8)]) or "float" (the scales' type, [N * blocks];
    for the MLP only, the attention keeps the default). lm_head_bits: 4 or 8."""

    def pack(codes, bits):
        c = np.asarray(codes, dtype=np.uint8)
        return pack4(c) if bits == 4 else c.reshape(-1)

    def quant(x, name, w, out, node, inits):
        bits = lm_head_bits if name == "lm_head" else 4
        zkind = zero_points
        if zkind == "float" and not any(p in name for p in ("gate", "up", "down")):
            zkind = None
        top = 2 ** bits - 1
        K, N = w.shape
        nb = -(-K // block)
        b = np.zeros((N, nb * block))
        b[:, :K] = w.T
        b = b.reshape(N, nb, block)
        if zkind:
            lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
            scale = ((hi - lo) / top).astype(scale_dtype).astype(np.float64)
            scale[scale == 0] = 1
            zp = np.clip(np.round(-lo / scale), 0, top)
            if zkind == "float":  # a fractional zero point, as HQQ writes
                zp = (zp + 0.25).astype(scale_dtype).astype(np.float64)
        else:
            scale = (np.abs(b).max(-1) / (top // 2)).astype(scale_dtype).astype(np.float64)
            scale[scale == 0] = 1
            zp = np.full(scale.shape, float(2 ** (bits - 1)))
        q = np.clip(np.round(b / scale[..., None] + zp[..., None]), 0, top).astype(np.uint8)
        base = name + ".MatMul.weight_"
        ins = [x, base + "Q%d" % bits, base + "scales"]
        inits.append(numpy_helper.from_array(pack(q, bits).reshape(N, nb, block * bits // 8),
                                             ins[1]))
        inits.append(numpy_helper.from_array(scale.reshape(-1).astype(scale_dtype), ins[2]))
        if zkind == "packed":
            z = np.concatenate([pack(r, bits) for r in zp.astype(np.uint8)])
        elif zkind == "float":
            z = zp.reshape(-1).astype(scale_dtype)
        if zkind:
            ins.append(base + "zp")
            inits.append(numpy_helper.from_array(z, ins[-1]))
        return node("MatMulNBits", ins, [out], domain="com.microsoft", K=K, N=N, bits=bits,
                    block_size=block, accuracy_level=4)
    return quant


def qdq_quant(form):
    """DequantizeLinear of the weights, then MatMul (Olive / ORT's QDQ
    quantizers): "int4-blocked" stores [K, N] in blocks of 32 along K
    (opset 21 block_size; int4 symmetric for attention, uint4 with zero
    points for the MLP and lm_head); "int8-axis" stores [N, K] per output
    channel (int8 symmetric for attention, uint8 with zero points for the
    MLP; lm_head int8 with one scale for the tensor, a Constant node) and
    transposes it for the MatMul."""
    from onnx import TensorProto

    def tensor(name, dtype, dims, values):
        t = TensorProto()
        t.name, t.data_type = name, dtype
        t.dims.extend(dims)
        if dtype in (ONNX_INT4, ONNX_UINT4):
            t.raw_data = pack4(np.asarray(values).astype(np.int64) & 0xF).tobytes()
        else:
            t.raw_data = np.asarray(values).astype(
                np.int8 if dtype == TensorProto.INT8 else np.uint8).tobytes()
        return t

    def quant(x, name, w, out, node, inits):
        K, N = w.shape
        asym = "_proj" not in name or "mlp" in name or any(
            p in name for p in ("gate", "up", "down"))
        if form == "int4-blocked":
            blk = 32
            b = w.reshape(K // blk, blk, N)
            qmax, qmin, dt = (15, 0, ONNX_UINT4) if asym else (7, -8, ONNX_INT4)
            if asym:
                lo, hi = np.minimum(b.min(1), 0), np.maximum(b.max(1), 0)
                scale = ((hi - lo) / 15).astype(np.float32).astype(np.float64)
                zp = np.clip(np.round(-lo / scale), 0, 15)
            else:
                scale = (np.abs(b).max(1) / 7).astype(np.float32).astype(np.float64)
                zp = np.zeros_like(scale)
            q = np.clip(np.round(b / scale[:, None, :]) + zp[:, None, :], qmin, qmax)
            ins = [name + "_quantized", name + "_scale"]
            inits.append(tensor(ins[0], dt, [K, N], q.reshape(K, N)))
            inits.append(numpy_helper.from_array(scale.astype(np.float32), ins[1]))
            if asym:
                ins.append(name + "_zero_point")
                inits.append(tensor(ins[2], dt, list(scale.shape), zp))
            wd = node("DequantizeLinear", ins, [name + "_dq"], axis=0, block_size=blk)
            return node("MatMul", [x, wd], [out])
        wt = w.T  # [N, K]
        if asym:
            lo, hi = np.minimum(wt.min(1), 0), np.maximum(wt.max(1), 0)
            scale = ((hi - lo) / 255).astype(np.float32).astype(np.float64)
            zp = np.clip(np.round(-lo / scale), 0, 255)
            q = np.clip(np.round(wt / scale[:, None]) + zp[:, None], 0, 255)
            dt = TensorProto.UINT8
        else:
            scale = (np.abs(wt).max(1) / 127).astype(np.float32).astype(np.float64)
            zp = np.zeros_like(scale)
            q = np.clip(np.round(wt / scale[:, None]), -128, 127)
            dt = TensorProto.INT8
        ins = [name + "_quantized", name + "_scale", name + "_zero_point"]
        if name == "lm_head":  # one scale for the whole tensor, no zero point
            scale = np.array((np.abs(wt).max() / 127)).astype(np.float32).astype(np.float64)
            q = np.clip(np.round(wt / scale), -128, 127)
            dt, ins = TensorProto.INT8, ins[:2]
        inits.append(tensor(ins[0], dt, [N, K], q))
        if name == "lm_head":  # the scale from a Constant node
            node("Constant", [], [ins[1]], value=numpy_helper.from_array(scale.astype(np.float32)))
        else:
            inits.append(numpy_helper.from_array(scale.astype(np.float32), ins[1]))
        if len(ins) == 3:
            inits.append(tensor(ins[2], dt, [N], zp))
        wd = node("DequantizeLinear", ins, [name + "_dq"], axis=0)
        wt_ = node("Transpose", [wd], [name + "_dqT"], perm=[1, 0])
        return node("MatMul", [x, wt_], [out])
    return quant


def quantized_models(out):
    """LLaMAs whose linear layers are pre-quantized (hidden 128, 4 heads of
    32, 2 KV heads (4 with MultiHeadAttention), MLP 256, vocabulary 64):
      int4-nbits32-zp.onnx   MatMulNBits block 32 with packed zero points, GQA, fp32
      int4-nbits64.onnx      MatMulNBits block 64 without zero points (8), an
                             8-bit lm_head, RotaryEmbedding + MultiHeadAttention, fp32
      int4-nbits128-fp16.onnx  MatMulNBits block 128, fp16 scales and model,
                             fp16 zero points in the MLP
      int4-packed-qkv.onnx   block 32, q, k and v packed in one MatMulNBits
                             (GroupQueryAttention with empty key and value)
      qdq-int4-blocked.onnx  DequantizeLinear int4/uint4 blocks of 32, opset 23
      qdq-int8-axis.onnx     DequantizeLinear int8/uint8 per channel (lm_head per
                             tensor) + Transpose
    and broken/nbits-*.onnx, copies of the first that must be refused."""
    j = lambda name: os.path.join(out, name)
    size = dict(H=128, heads=(4, 2), ffn=256, vocab=64)
    genai_model(j("int4-nbits32-zp.onnx"), "gqa", quant=nbits_quant(32, "packed", np.float32),
                fp16=False, **size)
    mha = dict(size, heads=(4, 4))  # MultiHeadAttention: as many KV heads as heads
    genai_model(j("int4-nbits64.onnx"), "mha",
                quant=nbits_quant(64, None, np.float32, lm_head_bits=8), **mha)
    genai_model(j("int4-nbits128-fp16.onnx"), "gqa", quant=nbits_quant(128, "float", np.float16),
                fp16=True, **size)
    # The GenAI builder's own int4 form: q, k and v in one MatMulNBits.
    genai_model(j("int4-packed-qkv.onnx"), "gqa", quant=nbits_quant(32, None, np.float32),
                fp16=False, packed_qkv=True, **size)
    genai_model(j("qdq-int4-blocked.onnx"), "onnx23", quant=qdq_quant("int4-blocked"), **size)
    genai_model(j("qdq-int8-axis.onnx"), "mha", quant=qdq_quant("int8-axis"), **mha)

    # Broken copies: what the importer refuses, each with a one-line error.
    os.makedirs(j("broken"), exist_ok=True)

    def variant(name, edit):
        m = onnx.load(j("int4-nbits32-zp.onnx"))
        n = next(n for n in m.graph.node if n.op_type == "MatMulNBits")
        edit(m, n)
        onnx.save_model(m, os.path.join(out, "broken", name))

    def g_idx(m, n):
        k = next(a.i for a in n.attribute if a.name == "K")
        m.graph.initializer.append(numpy_helper.from_array(
            (np.arange(k) // 32).astype(np.int32), "g_idx"))
        n.input.extend(["g_idx"])

    def bias(m, n):
        m.graph.initializer.append(numpy_helper.from_array(
            np.zeros(next(a.i for a in n.attribute if a.name == "N"), np.float32), "bias"))
        n.input.extend(["", "bias"])

    def attr(key, value):
        def edit(m, n):
            next(a for a in n.attribute if a.name == key).i = value
        return edit

    variant("nbits-g-idx.onnx", g_idx)
    variant("nbits-bias.onnx", bias)
    variant("nbits-bits3.onnx", attr("bits", 3))
    variant("nbits-wrong-k.onnx", attr("K", 64))
    variant("nbits-wrong-block.onnx", attr("block_size", 64))


def torchscript_form_model(path, heads, kv, hd, bias=(), seed=5):
    """A 2-layer Hugging Face LLaMA written node by node as torch.onnx's
    TorchScript exporter writes it (opset 17): RMSNorm from Pow/ReduceMean/
    Sqrt/Div, q/k/v Reshape [b, s, heads, head_dim] and Transpose, rotate-half
    RoPE from Slice/Neg/Concat over cos/sin gathered by position_ids, repeat_kv
    by Unsqueeze/Expand/Reshape, scores / sqrt(head_dim) + a Trilu causal
    mask, Softmax, the output Reshape [b, s, heads * head_dim]. Shapes come
    from Shape/Gather of the input, so any batch and length run. `hd` need not
    be HIDDEN / heads; `bias` as in genai_model (Add(bias, MatMul))."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    H, rep = HIDDEN, heads // kv
    inits, nodes = [], []
    count = [0]

    def const(array, dtype=np.int64):  # a Constant node, as torch.onnx writes
        count[0] += 1
        name = "/Constant_%d_output_0" % count[0]
        nodes.append(helper.make_node("Constant", [], [name], name=name[:-9], value=numpy_helper.from_array(
            np.asarray(array, dtype=dtype))))
        return name

    def node(op, ins, **attrs):
        count[0] += 1
        out = "/%s_%d" % (op, count[0])
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def weight(name, shape, scale=None, ones=False):
        a = (1.0 + 0.1 * rng.standard_normal(shape)) if ones else \
            rng.standard_normal(shape) * (scale or 1.0 / math.sqrt(shape[0]))
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def linear(x, name, shape):
        y = node("MatMul", [x, weight(name + ".weight_t", shape)])
        if name.split(".")[-1].split("_")[0] in bias:
            y = node("Add", [weight(name + ".bias", [shape[1]], scale=0.5), y])
        return y

    def norm(x, name):
        sq = node("Pow", [x, const(2.0, np.float32)])
        ms = node("ReduceMean", [sq], axes=[-1], keepdims=1)
        r = node("Sqrt", [node("Add", [ms, const(1e-5, np.float32)])])
        inv = node("Div", [const(1.0, np.float32), r])
        return node("Mul", [weight(name, [H], ones=True), node("Mul", [x, inv])])

    def dim(x, i):  # Unsqueeze(Gather(Shape(x), i)): a 1-element shape piece
        return node("Unsqueeze", [node("Gather", [node("Shape", [x]), const(i)], axis=0), const([0])])

    def rotate_half(x):
        a = node("Slice", [x, const([0]), const([hd // 2]), const([3]), const([1])])
        b = node("Slice", [x, const([hd // 2]), const([2 ** 62]), const([3]), const([1])])
        return node("Concat", [node("Neg", [b]), a], axis=-1)

    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
    emb = np.concatenate([np.outer(np.arange(64), inv)] * 2, axis=1)
    cos = node("Unsqueeze", [node("Gather", [const(np.cos(emb), np.float32), "position_ids"], axis=0),
                             const([1])])
    sin = node("Unsqueeze", [node("Gather", [const(np.sin(emb), np.float32), "position_ids"], axis=0),
                             const([1])])
    h = node("Gather", [weight("embed_tokens.weight", [VOCAB, H], 0.5), "input_ids"], axis=0)
    b, s = dim(h, 0), dim(h, 1)
    # The causal mask [s, s]: -max above the diagonal.
    full = node("ConstantOfShape", [node("Concat", [s, s], axis=0)],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-3.4028234663852886e38]))
    mask = node("Trilu", [full, const(1)], upper=1)
    for l in range(LAYERS):
        p = "layers.%d." % l
        n = norm(h, p + "input_layernorm.weight")

        def heads_of(x, count):
            x = node("Reshape", [x, node("Concat", [b, s, const([count]), const([hd])], axis=0)])
            return node("Transpose", [x], perm=[0, 2, 1, 3])

        q = heads_of(linear(n, p + "self_attn.q_proj", [H, heads * hd]), heads)
        k = heads_of(linear(n, p + "self_attn.k_proj", [H, kv * hd]), kv)
        v = heads_of(linear(n, p + "self_attn.v_proj", [H, kv * hd]), kv)
        q = node("Add", [node("Mul", [q, cos]), node("Mul", [rotate_half(q), sin])])
        k = node("Add", [node("Mul", [k, cos]), node("Mul", [rotate_half(k), sin])])

        def repeat_kv(x):
            x = node("Unsqueeze", [x, const([2])])
            x = node("Expand", [x, node("Concat", [b, const([kv]), const([rep]), s, const([hd])], axis=0)])
            return node("Reshape", [x, node("Concat", [b, const([heads]), s, const([hd])], axis=0)])

        k, v = repeat_kv(k), repeat_kv(v)
        scores = node("Div", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])]),
                              const(math.sqrt(hd), np.float32)])
        probs = node("Softmax", [node("Add", [scores, mask])], axis=-1)
        a = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        a = node("Reshape", [a, node("Concat", [b, s, const([heads * hd])], axis=0)])
        h = node("Add", [h, linear(a, p + "self_attn.o_proj", [heads * hd, H])])
        n2 = norm(h, p + "post_attention_layernorm.weight")
        g = linear(n2, p + "mlp.gate_proj", [H, FFN])
        u = linear(n2, p + "mlp.up_proj", [H, FFN])
        m = node("Mul", [node("Mul", [g, node("Sigmoid", [g])]), u])
        h = node("Add", [h, linear(m, p + "mlp.down_proj", [FFN, H])])
    n = norm(h, "norm.weight")
    logits = node("MatMul", [n, weight("lm_head.weight_t", [H, VOCAB])])
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, "torchscript-llama",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])], inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def bias_fixtures(j):
    """Qwen2-style q/k/v biases and an explicit head_dim (onnx.helper)."""
    genai_model(j("qwen2-bias.onnx"), "onnx23", bias=("q", "k", "v"), seed=11)
    genai_model(j("headdim-bias.onnx"), "onnx23", num_heads=4, num_kv_heads=2, head_dim=8,
                bias=("q", "k", "v", "o", "gate", "up", "down"), seed=12)
    # The GenAI builder's form of Qwen2 (fp16, GroupQueryAttention).
    genai_model(j("genai-qwen2-fp16.onnx"), "gqa", bias=("q", "k", "v"), seed=14)
    # fp32 RotaryEmbedding + MultiHeadAttention with biases everywhere: o_proj's
    # and down_proj's as SkipSimplifiedLayerNormalization's bias input.
    genai_model(j("genai-skip-bias.onnx"), "mha", bias=("q", "k", "v", "o", "gate", "up", "down"),
                seed=15)
    # The TorchScript form of biased q/k/v (nn.Linear(bias=True) exports as
    # MatMul then Add(bias, product)): gqa-opset17.onnx with biases added.
    src = j("gqa-opset17.onnx")
    if not os.path.exists(src):
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Inputs", "gqa-opset17.onnx")
    m = onnx.load(src)
    rng = np.random.default_rng(13)
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        proj = n.name.split("/")[-2] if n.op_type == "MatMul" else ""
        if proj in ("q_proj", "k_proj", "v_proj"):
            w = next(t for t in m.graph.initializer if t.name == n.input[1])
            name = n.name.split("/")[1] + ".self_attn.%s.bias" % proj
            bias = (0.5 * rng.standard_normal(w.dims[1])).astype(np.float32)
            m.graph.initializer.append(numpy_helper.from_array(bias, name))
            out = n.output[0]
            n.output[0] = out.replace("MatMul_output_0", "MatMul_product")
            nodes.append(onnx.helper.make_node("Add", [name, n.output[0]], [out],
                                               name=n.name.replace("MatMul", "Add")))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save_model(m, j("torch-qkv-bias-opset17.onnx"))
    # The TorchScript form with an explicit head_dim (4 heads of 8 over hidden
    # 16, GQA 2 KV heads) and Qwen2's q/k/v biases.
    torchscript_form_model(j("torch-headdim-opset17.onnx"), 4, 2, 8, bias=("q", "k", "v"))
    # broken/bias-size.onnx: q_proj's bias one entry short.
    os.makedirs(j("broken"), exist_ok=True)
    m = onnx.load(j("qwen2-bias.onnx"))
    t = next(t for t in m.graph.initializer if t.name.endswith("q_proj.bias"))
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:-1], t.name))
    onnx.save_model(m, j("broken", "bias-size.onnx"))


def llama3_inv_freq(theta, hd, factor, low, high, original):
    """transformers' _compute_llama3_parameters (float32, as torch)."""
    return rope.llama3_scaled(rope.inverse_frequencies(theta, hd), factor, low, high, original)


def rope_scaling_model(path, form, factor, sharp_cut=False, band=(1.0, 4.0, 8192)):
    """A 2-layer LLaMA with LLaMA-3.1/3.2 RoPE scaling (theta 500000,
    head_dim 64, low/high frequency factors 1 and 4, original context 8192),
    built with onnx.helper. form "gqa": the GenAI builder's fp16 form, the
    scaled frequencies baked into GroupQueryAttention's cos/sin caches (512
    positions); form "invfreq": float32, the scaled inv_freq an initializer
    and the tables computed in the graph from position_ids (TorchScript /
    optimum style), rotate-half RoPE, then MultiHeadAttention. sharp_cut:
    the frequencies from index 20 on divided by `factor`, with no band
    between (no RoPE scaling known to the importer). band: low_freq_factor,
    high_freq_factor, original_max_position_embeddings."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(11)
    H, heads, hd = 128, 2, 64
    kv = 1 if form == "gqa" else 2
    fp16 = form == "gqa"
    wdt = np.float16 if fp16 else np.float32
    ttype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inits, nodes = [], []

    def weight(name, shape, ones=False):
        a = (1.0 + 0.1 * rng.standard_normal(shape)) if ones else \
            rng.standard_normal(shape) * (1.0 / math.sqrt(shape[0]))
        inits.append(numpy_helper.from_array(a.astype(wdt), name))
        return name

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, outs, name="/" + outs[0], domain=domain, **attrs))
        return outs[0]

    inv = llama3_inv_freq(500000.0, hd, factor, *band)
    if sharp_cut:
        inv = llama3_inv_freq(500000.0, hd, 1.0, 1.0, 4.0, 8192)
        inv[20:] /= np.float32(factor)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = [helper.make_tensor_value_info("logits", ttype, ["batch", "seq", VOCAB])]
    if form == "gqa":
        freqs = np.outer(np.arange(512, dtype=np.float32), inv).astype(np.float32)
        cos_cache = const("cos_cache", np.cos(freqs).astype(wdt))
        sin_cache = const("sin_cache", np.sin(freqs).astype(wdt))
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_seq"]))
        one = const("one", np.array(1, dtype=np.int64))
        axis1 = const("axis1", np.array([1], dtype=np.int64))
        s = node("ReduceSum", ["attention_mask", axis1], ["mask_sum"], keepdims=0)
        s = node("Sub", [s, one], ["seqlens_minus_one"])
        seqlens = node("Cast", [s], ["seqlens_k"], to=TensorProto.INT32)
        total = node("Gather", [node("Shape", ["attention_mask"], ["mask_shape"]), one], ["total_len64"], axis=0)
        total = node("Cast", [total], ["total_sequence_length"], to=TensorProto.INT32)
    else:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
        # freqs = position_ids[..., None] @ inv_freq[None, :]; emb = cat(freqs, freqs)
        pos = node("Cast", ["position_ids"], ["pos_f"], to=TensorProto.FLOAT)
        pos = node("Unsqueeze", [pos, const("axis_last", np.array([2], dtype=np.int64))], ["pos_col"])
        freqs = node("MatMul", [pos, const("inv_freq", inv[None, :])], ["freqs"])
        emb = node("Concat", [freqs, freqs], ["emb"], axis=-1)
        heads_axis = const("heads_axis", np.array([2], dtype=np.int64))
        cos4 = node("Unsqueeze", [node("Cos", [emb], ["cos"]), heads_axis], ["cos4"])
        sin4 = node("Unsqueeze", [node("Sin", [emb], ["sin"]), heads_axis], ["sin4"])
        starts1 = const("half_start", np.array([0], dtype=np.int64))
        mid = const("half_mid", np.array([hd // 2], dtype=np.int64))
        end = const("half_end", np.array([hd], dtype=np.int64))
        axis3 = const("axis3", np.array([3], dtype=np.int64))

        def rope(x, n, tag):
            x4 = node("Reshape", [x, const(tag + "_shape4", np.array([0, 0, n, hd], dtype=np.int64))], [tag + "_4"])
            x1 = node("Slice", [x4, starts1, mid, axis3], [tag + "_x1"])
            x2 = node("Slice", [x4, mid, end, axis3], [tag + "_x2"])
            rot = node("Concat", [node("Neg", [x2], [tag + "_negx2"]), x1], [tag + "_rot"], axis=-1)
            y = node("Add", [node("Mul", [x4, cos4], [tag + "_xcos"]), node("Mul", [rot, sin4], [tag + "_rsin"])],
                     [tag + "_rope4"])
            return node("Reshape", [y, const(tag + "_shape3", np.array([0, 0, n * hd], dtype=np.int64))],
                        [tag + "_rope"])

    h = node("Gather", [weight("model.embed_tokens.weight", [VOCAB, H]), "input_ids"], ["embeds"])
    pending = None
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        ln1 = weight(p + "input_layernorm.weight", [H], ones=True)
        if pending is None:
            n = node("SimplifiedLayerNormalization", [h, ln1], ["l%d_n1" % l], axis=-1, epsilon=1e-5)
        else:
            outs = ["l%d_n1" % l, "", "", "l%d_h" % l]
            nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [pending, h, ln1], outs,
                                          name="/l%d_skipln1" % l, domain="com.microsoft", epsilon=1e-5))
            n, h = outs[0], outs[3]
        q = node("MatMul", [n, weight(p + "q_proj", [H, heads * hd])], ["l%d_q" % l])
        k = node("MatMul", [n, weight(p + "k_proj", [H, kv * hd])], ["l%d_k" % l])
        v = node("MatMul", [n, weight(p + "v_proj", [H, kv * hd])], ["l%d_v" % l])
        if form == "gqa":
            pk, pv = "past_key_values.%d.key" % l, "past_key_values.%d.value" % l
            for name in (pk, pv):
                inputs.append(helper.make_tensor_value_info(name, ttype, ["batch", kv, "past_seq", hd]))
            ok, ov = "present.%d.key" % l, "present.%d.value" % l
            for name in (ok, ov):
                outputs.append(helper.make_tensor_value_info(name, ttype, ["batch", kv, "total_seq", hd]))
            nodes.append(helper.make_node(
                "GroupQueryAttention", [q, k, v, pk, pv, seqlens, total, cos_cache, sin_cache],
                ["l%d_attn" % l, ok, ov], name="/l%d_gqa" % l, domain="com.microsoft",
                num_heads=heads, kv_num_heads=kv, do_rotary=1, rotary_interleaved=0,
                scale=1.0 / math.sqrt(hd)))
            a = "l%d_attn" % l
        else:
            a = node("MultiHeadAttention", [rope(q, heads, "l%d_q" % l), rope(k, kv, "l%d_k" % l), v],
                     ["l%d_attn" % l], domain="com.microsoft", num_heads=heads, unidirectional=1)
        o = node("MatMul", [a, weight(p + "o_proj", [heads * hd, H])], ["l%d_o" % l])
        ln2 = weight(p + "post_attention_layernorm.weight", [H], ones=True)
        outs = ["l%d_n2" % l, "", "", "l%d_h1" % l]
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [o, h, ln2], outs,
                                      name="/l%d_skipln2" % l, domain="com.microsoft", epsilon=1e-5))
        n2, h = outs[0], outs[3]
        g = node("MatMul", [n2, weight(p + "gate_proj", [H, FFN])], ["l%d_gate" % l])
        u = node("MatMul", [n2, weight(p + "up_proj", [H, FFN])], ["l%d_up" % l])
        silu = node("Mul", [g, node("Sigmoid", [g], ["l%d_sig" % l])], ["l%d_silu" % l])
        m = node("Mul", [silu, u], ["l%d_mlp" % l])
        pending = node("MatMul", [m, weight(p + "down_proj", [FFN, H])], ["l%d_down" % l])
    outs = ["final_norm", "", "", "final_h"]
    nodes.append(helper.make_node("SkipSimplifiedLayerNormalization",
                                  [pending, h, weight("model.norm.weight", [H], ones=True)], outs,
                                  name="/final_skipln", domain="com.microsoft", epsilon=1e-5))
    node("MatMul", ["final_norm", weight("lm_head", [H, VOCAB])], ["logits"])
    graph = helper.make_graph(nodes, "llama3-rope-scaling", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(model, path)
    return model


def tied_genai_fixtures(out):
    """Tied embeddings in the GenAI builder's form, from genai-gqa-fp16.onnx
    (built here): lm_head a [hidden, vocab] copy of the transposed embedding
    (genai-tied-copy.onnx), or the embedding initializer itself read through
    a Transpose node (genai-tied-shared.onnx)."""
    src = os.path.join(out, "genai-gqa-fp16.onnx")
    if not os.path.exists(src):
        genai_model(src, "gqa")
    for name, shared in (("genai-tied-copy.onnx", False), ("genai-tied-shared.onnx", True)):
        m = onnx.load(src)
        inits = {t.name: t for t in m.graph.initializer}
        emb = numpy_helper.to_array(inits["model.embed_tokens.weight"])
        head = next(n for n in m.graph.node if n.output[0] == "logits")
        if shared:
            m.graph.initializer.remove(inits[head.input[1]])
            m.graph.node.insert(0, onnx.helper.make_node(
                "Transpose", ["model.embed_tokens.weight"], ["lm_head_t"], name="/lm_head_t", perm=[1, 0]))
            head.input[1] = "lm_head_t"
        else:
            inits[head.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(emb.T), head.input[1]))
        onnx.save_model(m, os.path.join(out, name))


def rope_scaling_fixtures(out):
    rope_scaling_model(os.path.join(out, "llama31-rope-gqa-fp16.onnx"), "gqa", 8.0)
    rope_scaling_model(os.path.join(out, "llama32-rope-invfreq.onnx"), "invfreq", 32.0)
    # Not the common values: one interpolated frequency only; the importer
    # reads it as the equivalent low_freq_factor 1, 2, 4096.
    rope_scaling_model(os.path.join(out, "llama3-rope-band-gqa-fp16.onnx"), "gqa", 16.0, band=(2.0, 4.0, 8192))
    os.makedirs(os.path.join(out, "broken"), exist_ok=True)
    rope_scaling_model(os.path.join(out, "broken", "rope-sharp-cut.onnx"), "gqa", 3.0, sharp_cut=True)


# Groups of fixtures built with onnx.helper alone: `--only NAME` writes them
# without torch.
HELPER_FIXTURES = {"int4": lambda j: quantized_models(j("")), "bias": bias_fixtures,
                   "rope-scaling": lambda j: rope_scaling_fixtures(j("")),
                   "tied-genai": lambda j: tied_genai_fixtures(j(""))}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    only = None
    if args[:1] == ["--only"] and len(args) > 1:
        only = args[1].split(",")
        args = args[2:]
        unknown = [n for n in only if n not in HELPER_FIXTURES]
        if unknown:
            sys.exit("gen_fixtures.py: unknown group %s; expected one of %s" %
                     (", ".join(unknown), ", ".join(sorted(HELPER_FIXTURES))))
    out = args[0] if args else os.path.join(here, "Inputs")
    os.makedirs(out, exist_ok=True)
    j = lambda *p: os.path.join(out, *p)
    if only is not None:
        for name in only:
            HELPER_FIXTURES[name](j)
        print("fixtures written to", out)
        return
    if torch is None:
        sys.exit("gen_fixtures.py: torch is needed for the exported fixtures "
                 "(--only %s needs none)" % ",".join(sorted(HELPER_FIXTURES)))

    for opset in (14, 16, 17):
        export(build(), j("gqa-opset%d.onnx" % opset), opset)
    export(build(heads=4, kv_heads=4), j("mha-opset17.onnx"), 17)
    export(build(tied=True), j("tied-opset17.onnx"), 17)
    export(build(cache=True), j("kvcache-opset17.onnx"), 17)
    export(build(posids=True, theta=500000.0), j("posids-opset17.onnx"), 17)
    export(build(where_mask=True), j("where-mask-opset17.onnx"), 17)
    export(build(interleaved=True), j("interleaved-opset17.onnx"), 17)
    export(build(tile=True), j("tile-repeat-opset17.onnx"), 17)
    # MLP widths whose online Hadamard (R4) needs the Paley bases 28 and 12:
    # 224 = 28 * 8 (GQA), 192 = 12 * 16 (GQA with tied embeddings).
    export(build(ffn=224), j("ffn224-opset17.onnx"), 17)
    export(build(ffn=192, tied=True), j("ffn192-tied-opset17.onnx"), 17)
    os.makedirs(j("external-many"), exist_ok=True)
    m = export(build(), j("external-many", "tmp.onnx"), 17)
    os.remove(j("external-many", "tmp.onnx"))
    for i, t in enumerate(m.graph.initializer):
        name = "tensor%02d.bin" % i
        with open(j("external-many", name), "wb") as f:
            f.write(numpy_helper.to_array(t).tobytes())
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.ClearField("int64_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", name
    onnx.save_model(m, j("external-many", "model.onnx"))

    # bfloat16 weights: the top 16 bits of each float32 (round to nearest even).
    m = onnx.load(j("gqa-opset17.onnx"))
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            a = numpy_helper.to_array(t).astype(np.float32).view(np.uint32).astype(np.uint64)
            bf = ((a + 0x7FFF + ((a >> 16) & 1)) >> 16).astype(np.uint16)
            t.ClearField("float_data")
            t.data_type = onnx.TensorProto.BFLOAT16
            t.raw_data = bf.tobytes()
    onnx.save_model(m, j("bf16-opset17.onnx"))

    # Nodes in a shuffled order (a valid graph: ONNX Runtime sorts it, and so
    # does the importer).
    m = onnx.load(j("gqa-opset17.onnx"))
    nodes = list(m.graph.node)
    random.Random(0).shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save_model(m, j("unsorted-opset17.onnx"))

    genai_model(j("genai-gqa-fp16.onnx"), "gqa")
    genai_model(j("genai-mha-rotary.onnx"), "mha")
    genai_model(j("onnx23-attention.onnx"), "onnx23")
    os.makedirs(j("external"), exist_ok=True)
    export(build(), j("external", "model.onnx"), 17, external=True)

    # --- broken fixtures -------------------------------------------------
    b = j("broken")
    if os.path.isdir(b):
        shutil.rmtree(b)
    os.makedirs(b)
    good = onnx.load(j("gqa-opset17.onnx"))
    raw = open(j("gqa-opset17.onnx"), "rb").read()
    open(os.path.join(b, "truncated.onnx"), "wb").write(raw[: len(raw) // 3])
    open(os.path.join(b, "not-onnx.onnx"), "wb").write(b"this is a text file, not a model\n" * 4)
    open(os.path.join(b, "empty.onnx"), "wb").write(b"")
    export(build(layernorm_layer=1), os.path.join(b, "layernorm.onnx"), 17)
    export(build(tile="heads"), os.path.join(b, "tile-heads.onnx"), 17)

    def ext_variant(name, location=None, truncate=None, offset=None, missing=False):
        d = os.path.join(b, name)
        os.makedirs(d)
        m = onnx.load(j("external", "model.onnx"), load_external_data=False)
        shutil.copy(j("external", "model.onnx.data"), os.path.join(d, "model.onnx.data"))
        if missing:
            os.remove(os.path.join(d, "model.onnx.data"))
        if truncate:
            with open(os.path.join(d, "model.onnx.data"), "r+b") as f:
                f.truncate(truncate)
        big = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
        for e in big.external_data:
            if location and e.key == "location":
                e.value = location
            if offset is not None and e.key == "offset":
                e.value = str(offset)
        onnx.save_model(m, os.path.join(d, "model.onnx"))

    ext_variant("ext-missing", missing=True)
    ext_variant("ext-short", truncate=1000)
    ext_variant("ext-offset", offset=10 ** 9)
    ext_variant("ext-absolute", location="/etc/passwd")
    ext_variant("ext-dotdot", location="../../gqa-opset17.onnx")

    def graph_variant(name, edit):
        m = onnx.ModelProto()
        m.CopyFrom(good)
        edit(m)
        onnx.save_model(m, os.path.join(b, name))

    def bad_dtype(m):
        t = m.graph.initializer[0]
        t.data_type = onnx.TensorProto.COMPLEX64

    def cyclic(m):
        # Softmax reads the output of the node that reads the Softmax.
        nodes = list(m.graph.node)
        i = next(k for k, n in enumerate(nodes) if n.op_type == "Softmax")
        pv = next(n for n in nodes if nodes[i].output[0] in n.input)
        nodes[i].input[0] = pv.output[0]

    def negative_dim(m):
        t = next(t for t in m.graph.initializer if len(t.dims) == 2)
        t.dims[0] = -t.dims[0]

    def zero_dim(m):
        t = next(t for t in m.graph.initializer if len(t.dims) == 2 and "MatMul" in t.name)
        t.dims[0] = 0
        t.raw_data = b""

    def mismatched(m):
        # A q_proj weight with one input feature too few (consistent bytes).
        t = next(t for t in m.graph.initializer if len(t.dims) == 2 and "MatMul" in t.name)
        a = numpy_helper.to_array(t)[:-1]
        t.CopyFrom(numpy_helper.from_array(a, t.name))

    def unknown_op(m):
        n = next(n for n in m.graph.node if n.op_type == "Sigmoid")
        n.op_type = "HardSigmoid"

    def short_raw(m):
        t = next(t for t in m.graph.initializer if len(t.dims) == 2)
        t.raw_data = t.raw_data[:-4]

    graph_variant("bad-dtype.onnx", bad_dtype)
    graph_variant("cyclic.onnx", cyclic)
    graph_variant("negative-dim.onnx", negative_dim)
    graph_variant("zero-dim.onnx", zero_dim)
    graph_variant("mismatched-shapes.onnx", mismatched)
    graph_variant("unknown-op.onnx", unknown_op)
    graph_variant("short-raw-data.onnx", short_raw)

    packed = onnx.load(j("genai-gqa-fp16.onnx"))
    gqa = next(n for n in packed.graph.node if n.op_type == "GroupQueryAttention")
    gqa.input[1] = ""
    gqa.input[2] = ""
    onnx.save_model(packed, os.path.join(b, "genai-packed-qkv.onnx"))
    # After broken/ is made afresh: the groups add to it.
    for group in HELPER_FIXTURES.values():
        group(j)
    print("fixtures written to", out)


if __name__ == "__main__":
    main()
