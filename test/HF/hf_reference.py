#!/usr/bin/python3
"""A plain numpy forward pass of a Hugging Face checkpoint folder (the oracle).

    /usr/bin/python3 test/HF/hf_reference.py FOLDER (--tokens 1,2,3 | --tokens-file ids.bin)
                     [--logits OUT.npy|OUT.bin] [--greedy N] [--float32]

Reads config.json and model.safetensors (or the shards named by
model.safetensors.index.json) without any library but numpy, and computes
the logits of one causal sequence as transformers' LlamaForCausalLM,
Qwen2ForCausalLM and MistralForCausalLM do: RMSNorm, rotate-half RoPE (with
rope_scaling of type llama3 or linear), grouped-query attention, q/k/v
biases (Qwen2, attention_bias), SwiGLU MLP, tied or untied lm_head. The
arithmetic is float64 (float32 with --float32) on the stored weights
converted exactly to float.

--tokens-file reads int32 little-endian ids (the format of sq-run --tokens).
--logits writes [len(tokens), vocab] float32: .npy with numpy's header,
anything else as raw little-endian floats (compare_logits.py's format).
--greedy N appends N greedily chosen tokens (recomputing the whole sequence
each step) and prints all ids, space-separated.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from sqdev import rope  # noqa: E402

SAFETENSORS_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
                      "F64": np.dtype("<f8")}


def read_safetensors(path):
    """name -> float32 array (memory-mapped, converted on access)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        dt = SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        a = raw[8 + n + begin:8 + n + end].view(dt).reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        out[name] = a
    return out


def load_folder(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(folder, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for name in files:
        weights.update(read_safetensors(os.path.join(folder, name)))
    return cfg, weights


def inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    f = rope.inverse_frequencies(theta, head_dim, np.float64)
    rs = cfg.get("rope_scaling")
    if not rs:
        return f
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return f
    if kind == "linear":
        return f / rs["factor"]
    if kind == "llama3":
        return rope.llama3_scaled(f, rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"],
                                  rs["original_max_position_embeddings"])
    raise ValueError("rope_scaling type %r not supported by the reference" % kind)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


class Model:
    def __init__(self, folder, dtype=np.float64):
        self.cfg, self.w = load_folder(folder)
        cfg = self.cfg
        arch = (cfg.get("architectures") or ["?"])[0]
        if arch not in ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"):
            raise ValueError("%s: architecture %s not supported by the reference" % (folder, arch))
        self.dtype = dtype
        self.h = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.h // self.nh
        self.eps = cfg["rms_norm_eps"]
        self.inv_freq = inv_freq(cfg, self.hd)

    def p(self, name):
        return np.asarray(self.w[name], dtype=self.dtype)

    def has(self, name):
        return name in self.w

    def linear(self, x, prefix):
        y = x @ self.p(prefix + ".weight").T
        if self.has(prefix + ".bias"):
            y = y + self.p(prefix + ".bias")
        return y

    def forward(self, tokens):
        cfg, dt = self.cfg, self.dtype
        T = len(tokens)
        x = self.p("model.embed_tokens.weight")[np.asarray(tokens)]
        pos = np.arange(T, dtype=np.float64)
        freqs = np.outer(pos, self.inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb).astype(dt), np.sin(emb).astype(dt)
        mask = np.triu(np.full((T, T), -np.inf, dtype=dt), 1)
        group = self.nh // self.nkv
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            hx = rms_norm(x, self.p(p + "input_layernorm.weight"), self.eps)
            q = self.linear(hx, p + "self_attn.q_proj").reshape(T, self.nh, self.hd).transpose(1, 0, 2)
            k = self.linear(hx, p + "self_attn.k_proj").reshape(T, self.nkv, self.hd).transpose(1, 0, 2)
            v = self.linear(hx, p + "self_attn.v_proj").reshape(T, self.nkv, self.hd).transpose(1, 0, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = np.repeat(k, group, axis=0)
            v = np.repeat(v, group, axis=0)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(self.hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s = s / s.sum(axis=-1, keepdims=True)
            a = (s @ v).transpose(1, 0, 2).reshape(T, self.nh * self.hd)
            x = x + self.linear(a, p + "self_attn.o_proj")
            hx = rms_norm(x, self.p(p + "post_attention_layernorm.weight"), self.eps)
            g = self.linear(hx, p + "mlp.gate_proj")
            u = self.linear(hx, p + "mlp.up_proj")
            x = x + self.linear(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
        x = rms_norm(x, self.p("model.norm.weight"), self.eps)
        head = "lm_head.weight" if self.has("lm_head.weight") else "model.embed_tokens.weight"
        if head != "lm_head.weight" and not cfg.get("tie_word_embeddings", True):
            raise ValueError("lm_head.weight missing and tie_word_embeddings is false")
        return x @ self.p(head).T

    def greedy(self, tokens, n):
        tokens = list(tokens)
        for _ in range(n):
            tokens.append(int(np.argmax(self.forward(tokens)[-1])))
        return tokens


def write_logits(path, logits):
    logits = np.asarray(logits, dtype=np.float32)
    if path.endswith(".npy"):
        np.save(path, logits)
    else:
        logits.astype("<f4").tofile(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("folder")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help="comma-separated ids")
    src.add_argument("--tokens-file", help="int32 little-endian ids")
    ap.add_argument("--logits", help="write the logits here (.npy or raw float32)")
    ap.add_argument("--greedy", type=int, default=0, metavar="N")
    ap.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")
    args = ap.parse_args(argv)
    if args.tokens is not None:
        tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    else:
        tokens = np.fromfile(args.tokens_file, dtype="<i4").tolist()
    if not tokens:
        sys.exit("hf_reference.py: no tokens")
    model = Model(args.folder, np.float32 if args.float32 else np.float64)
    vocab = model.cfg["vocab_size"]
    bad = [t for t in tokens if not 0 <= t < vocab]
    if bad:
        sys.exit("hf_reference.py: token %d out of range [0, %d)" % (bad[0], vocab))
    if args.logits:
        write_logits(args.logits, model.forward(tokens))
    if args.greedy:
        print(" ".join(str(t) for t in model.greedy(tokens, args.greedy)))


if __name__ == "__main__":
    main()
