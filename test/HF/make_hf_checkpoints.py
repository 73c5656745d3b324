#!/usr/bin/python3
"""Writes Hugging Face checkpoint folders for SQ's tests and benchmarks.

    /usr/bin/python3 test/HF/make_hf_checkpoints.py OUTDIR [--only NAME ...] [--full]
                     [--shared-data DIR] [--list]

Each NAME becomes OUTDIR/NAME/ with the files `save_pretrained` writes:
config.json (Hugging Face field names and values, as transformers writes
them), generation_config.json, model.safetensors (or the shards
model-0000i-of-0000n.safetensors with model.safetensors.index.json), and
tokenizer files where the model has them. Only numpy, json and struct are
used: the safetensors files are written here (8-byte little-endian header
length, JSON header with dtype/shape/data_offsets and __metadata__
{"format": "pt"}, padded with spaces to a multiple of 8, then the data);
bfloat16 is the upper half of float32 rounded to nearest even.

Small synthetic folders (seeded random weights; always written unless --only):
  tiny-llama2   LlamaForCausalLM as LLaMA-2: MHA, untied lm_head, float32
  tiny-llama3   LlamaForCausalLM as LLaMA-3.2: rope_scaling llama3 (factor 32),
                rope_theta 500000, tied, GQA, explicit head_dim, bfloat16
  tiny-qwen2    Qwen2ForCausalLM: q/k/v biases, tied, GQA, rms_norm_eps 1e-6,
                sliding_window set but use_sliding_window false, float16
  tiny-mistral  MistralForCausalLM: GQA, sliding_window null, head_dim 32 over
                hidden 64 with 4 heads (as Mistral-NeMo), bfloat16
  tiny-sharded  a LLaMA split over 3 shards with model.safetensors.index.json,
                float32
Converted real models (need the shared data, see --shared-data; skipped with
a note when it is missing, unless named with --only):
  stories260k   llama2c/stories260K.bin with the q/k row permutation of the
                llama2.c/Meta-to-HF conversion (interleaved-pair RoPE rows to
                rotate-half rows), tied; tokenizer.model (tok512.model) and
                tokenizer.json converted as transformers' LlamaConverter does
  wiki2-byte    wiki2-byte-llama/model.bin, same permutation; byte-level model
                without tokenizer files (README.md says so)
Full-shape synthetic folders (only with --full or --only; bfloat16 weights
normal * 0.02, norms 1, biases normal * 0.02, written tensor by tensor in
chunks, sharded at 5 GB as save_pretrained does):
  llama-3.2-1b   2.5 GB    llama-3.1-8b   16 GB
  qwen2.5-1.5b   3.1 GB    mistral-7b     14.5 GB   (v0.3)

The folders are deterministic: the same command writes the same bytes.
test/HF/hf_reference.py is the numpy forward pass that reads them.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))

sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
from sqdev.sp_model import spm_to_tokenizer_json  # noqa: E402

# --------------------------------------------------------------------------
# safetensors

DTYPES = {  # config/torch name -> (safetensors dtype, bytes per element)
    "float32": ("F32", 4),
    "float16": ("F16", 2),
    "bfloat16": ("BF16", 2),
}


def to_bf16_bits(x):
    """float32 array -> uint16 bfloat16 bits, round to nearest even (NaN kept NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    bits = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        bits[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return bits


def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(x, dtype):
    """float array -> bytes of the given dtype."""
    if dtype == "float32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if dtype == "float16":
        return np.ascontiguousarray(x, dtype="<f2").tobytes()
    if dtype == "bfloat16":
        return to_bf16_bits(x).astype("<u2").tobytes()
    raise ValueError(dtype)


class Tensor:
    """A tensor to write: name, shape, dtype and a producer of its values.

    make(start, stop) returns rows [start, stop) of the tensor (first axis)
    as a float32/float64 array, so that large tensors are written in chunks.
    """

    def __init__(self, name, shape, dtype, make):
        self.name, self.shape, self.dtype, self.make = name, tuple(shape), dtype, make

    @property
    def nbytes(self):
        return int(np.prod(self.shape)) * DTYPES[self.dtype][1]


def write_safetensors(path, tensors, chunk_bytes=64 << 20):
    """Writes tensors to path, streaming: never more than one chunk in memory.

    The header lists the tensors sorted by name (the safetensors library
    sorts them too) and the data follows in the same order.
    """
    tensors = sorted(tensors, key=lambda t: t.name)
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors:
            rows = t.shape[0] if t.shape else 1
            row_bytes = t.nbytes // max(rows, 1)
            step = max(1, chunk_bytes // max(row_bytes, 1))
            block = getattr(t.make, "block_rows", None)
            if block:  # whole generator blocks per chunk
                step = max(block, step // block * block)
            written = 0
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                data = encode(t.make(start, stop), t.dtype)
                f.write(data)
                written += len(data)
            assert written == t.nbytes, (t.name, written, t.nbytes)
    os.replace(tmp, path)
    return offset


def write_checkpoint(folder, tensors, max_shard_bytes=None, shards=None):
    """model.safetensors, or shards + index (by size, or a fixed count)."""
    if max_shard_bytes is None and not shards:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
        return
    groups = []
    if shards:  # split the tensor list into `shards` groups of about equal size
        total = sum(t.nbytes for t in tensors)
        target = total / shards
        cur, size = [], 0
        for t in tensors:
            if cur and size + t.nbytes / 2 > target * (len(groups) + 1) and len(groups) < shards - 1:
                groups.append(cur)
                cur = []
            cur.append(t)
            size += t.nbytes
        groups.append(cur)
    else:  # transformers' shard_checkpoint: start a new shard when the next tensor overflows
        cur, size = [], 0
        for t in tensors:
            if cur and size + t.nbytes > max_shard_bytes:
                groups.append(cur)
                cur, size = [], 0
            cur.append(t)
            size += t.nbytes
        groups.append(cur)
    n = len(groups)
    if n == 1 and not shards:  # save_pretrained: one file needs no index
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
        return
    weight_map = {}
    total = 0
    for i, g in enumerate(groups):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, n)
        total += write_safetensors(os.path.join(folder, name), g)
        for t in g:
            weight_map[t.name] = name
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    write_json(os.path.join(folder, "model.safetensors.index.json"), index)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --------------------------------------------------------------------------
# Synthetic weights

def seed_of(seed, name):
    return (seed * 1000003 + zlib.crc32(name.encode())) & 0xFFFFFFFF


RNG_BLOCK = 1 << 22  # elements per generator block


def random_maker(seed, name, shape, scale, offset=0.0):
    """Rows of a seeded N(offset, scale^2) tensor. One generator per block of
    rows (about RNG_BLOCK elements), seeded by (seed, name, block), so the
    values do not depend on how the tensor is chunked or sharded."""
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    block = max(1, RNG_BLOCK // cols)

    def make(start, stop):
        out = []
        while start < stop:
            b = start // block
            rng = np.random.default_rng([seed_of(seed, name), b])
            rows_in_block = min(block, shape[0] - b * block)
            vals = rng.standard_normal((rows_in_block, cols), dtype=np.float32)
            hi = min(stop, (b + 1) * block)
            v = vals[start - b * block:hi - b * block]
            if scale != 1.0:
                v = v * np.float32(scale)
            if offset:
                v = v + np.float32(offset)
            out.append(v)
            start = hi
        arr = np.concatenate(out) if len(out) > 1 else out[0]
        return arr.reshape((-1,) + tuple(shape[1:]))

    make.block_rows = block
    return make


def const_maker(shape, value):
    def make(start, stop):
        return np.full((stop - start,) + tuple(shape[1:]), value, dtype=np.float32)
    return make


def llama_tensors(cfg, dtype, seed, full):
    """The tensors of a Llama/Qwen2/Mistral checkpoint in module order."""
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // nh
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    tensors = []

    def lin(name, out, inp):
        scale = 0.02 if full else 1.0 / math.sqrt(inp)
        tensors.append(Tensor(name, (out, inp), dtype, random_maker(seed, name, (out, inp), scale)))

    def norm(name, n):
        if full:
            tensors.append(Tensor(name, (n,), dtype, const_maker((n,), 1.0)))
        else:  # not all ones, so that folding the norms into the linears is tested
            tensors.append(Tensor(name, (n,), dtype, random_maker(seed, name, (n,), 0.2, 1.0)))

    def vec(name, n):
        tensors.append(Tensor(name, (n,), dtype, random_maker(seed, name, (n,), 0.02 if full else 0.5)))

    emb = "model.embed_tokens.weight"
    tensors.append(Tensor(emb, (vocab, h), dtype, random_maker(seed, emb, (vocab, h), 0.02 if full else 1.0)))
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        norm(p + "input_layernorm.weight", h)
        lin(p + "self_attn.q_proj.weight", nh * hd, h)
        if bias:
            vec(p + "self_attn.q_proj.bias", nh * hd)
        lin(p + "self_attn.k_proj.weight", nkv * hd, h)
        if bias:
            vec(p + "self_attn.k_proj.bias", nkv * hd)
        lin(p + "self_attn.v_proj.weight", nkv * hd, h)
        if bias:
            vec(p + "self_attn.v_proj.bias", nkv * hd)
        lin(p + "self_attn.o_proj.weight", h, nh * hd)
        norm(p + "post_attention_layernorm.weight", h)
        lin(p + "mlp.gate_proj.weight", inter, h)
        lin(p + "mlp.up_proj.weight", inter, h)
        lin(p + "mlp.down_proj.weight", h, inter)
    norm("model.norm.weight", h)
    if not cfg["tie_word_embeddings"]:
        lin("lm_head.weight", vocab, h)
    return tensors


# --------------------------------------------------------------------------
# Configurations (field names and values as transformers writes them)

def decoder_config(architecture, model_type, hidden, layers, heads, kv_heads, inter, vocab, *, bos, eos,
                   max_pos, dtype, eps, rope_theta, tie, version, head_dim=None, **fields):
    """The config.json fields LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM share,
    with the model's own `fields`, in transformers' order (sorted keys)."""
    cfg = {
        "architectures": [architecture],
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "model_type": model_type,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": eps,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tie,
        "torch_dtype": dtype,
        "transformers_version": version,
        "use_cache": True,
        "vocab_size": vocab,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    cfg.update(fields)
    return dict(sorted(cfg.items()))


def llama_config(hidden, layers, heads, kv_heads, inter, vocab, *, tie, rope_theta=10000.0,
                 rope_scaling=None, max_pos=4096, head_dim=None, bos=1, eos=2, dtype="float16",
                 eps=1e-05, version="4.45.0"):
    return decoder_config("LlamaForCausalLM", "llama", hidden, layers, heads, kv_heads, inter, vocab,
                          bos=bos, eos=eos, max_pos=max_pos, dtype=dtype, eps=eps, rope_theta=rope_theta,
                          tie=tie, version=version, head_dim=head_dim, attention_bias=False,
                          mlp_bias=False, pretraining_tp=1, rope_scaling=rope_scaling)


def llama3_scaling(factor):
    return {"factor": factor, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def qwen2_config(hidden, layers, heads, kv_heads, inter, vocab, *, max_pos=32768, dtype="bfloat16",
                 bos=151643, eos=151643, rope_theta=1000000.0, eps=1e-06, tie=True):
    return decoder_config("Qwen2ForCausalLM", "qwen2", hidden, layers, heads, kv_heads, inter, vocab,
                          bos=bos, eos=eos, max_pos=max_pos, dtype=dtype, eps=eps, rope_theta=rope_theta,
                          tie=tie, version="4.43.1", max_window_layers=layers, rope_scaling=None,
                          sliding_window=max_pos, use_sliding_window=False)


def mistral_config(hidden, layers, heads, kv_heads, inter, vocab, *, max_pos=32768, dtype="bfloat16",
                   rope_theta=1000000.0, head_dim=None):
    return decoder_config("MistralForCausalLM", "mistral", hidden, layers, heads, kv_heads, inter, vocab,
                          bos=1, eos=2, max_pos=max_pos, dtype=dtype, eps=1e-05, rope_theta=rope_theta,
                          tie=False, version="4.42.0.dev0", head_dim=head_dim, sliding_window=None)


def generation_config(cfg, extra=None):
    g = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id"):
        if cfg[key] is not None:
            g[key] = cfg[key]
    if extra:
        g.update(extra)
    g["transformers_version"] = cfg["transformers_version"]
    return g


# name -> (config, kwargs for the writer)
SYNTHETIC = {
    "tiny-llama2": (llama_config(64, 2, 4, 4, 128, 256, tie=False, max_pos=512, dtype="float32",
                                 version="4.31.0"), {}),
    "tiny-llama3": (llama_config(64, 2, 4, 2, 128, 320, tie=True, rope_theta=500000.0,
                                 rope_scaling=llama3_scaling(32.0), max_pos=131072, head_dim=16,
                                 bos=309, eos=310, dtype="bfloat16"), {}),
    "tiny-qwen2": (qwen2_config(64, 2, 4, 2, 128, 320, dtype="float16", bos=317, eos=317), {}),
    # head_dim 32 over hidden 64 / 4 heads, as Mistral-NeMo (head_dim 128, hidden 5120, 32 heads)
    "tiny-mistral": (mistral_config(64, 2, 4, 2, 128, 256, max_pos=512, head_dim=32), {}),
    "tiny-sharded": (llama_config(64, 3, 4, 2, 128, 256, tie=False, max_pos=512, dtype="float32"),
                     {"shards": 3}),
}

FULL = {
    "llama-3.2-1b": llama_config(2048, 16, 32, 8, 8192, 128256, tie=True, rope_theta=500000.0,
                                 rope_scaling=llama3_scaling(32.0), max_pos=131072, head_dim=64,
                                 bos=128000, eos=128001, dtype="bfloat16", version="4.45.0.dev0"),
    "llama-3.1-8b": llama_config(4096, 32, 32, 8, 14336, 128256, tie=False, rope_theta=500000.0,
                                 rope_scaling=llama3_scaling(8.0), max_pos=131072,
                                 bos=128000, eos=128001, dtype="bfloat16", version="4.43.0.dev0"),
    "qwen2.5-1.5b": qwen2_config(1536, 28, 12, 2, 8960, 151936, max_pos=131072, dtype="bfloat16"),
    "mistral-7b": mistral_config(4096, 32, 32, 8, 14336, 32768, max_pos=32768, dtype="bfloat16"),
}
FULL_GENERATION = {
    "llama-3.2-1b": {"do_sample": True, "temperature": 0.6, "top_p": 0.9},
    "llama-3.1-8b": {"do_sample": True, "temperature": 0.6, "top_p": 0.9},
}


def write_synthetic(out, name, cfg, seed, full, shards=None, tokenizer_from=None):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    dtype = cfg["torch_dtype"]
    tensors = llama_tensors(cfg, dtype, seed, full)
    if full:
        write_checkpoint(folder, tensors, max_shard_bytes=5 * 1000 ** 3)
    else:
        write_checkpoint(folder, tensors, shards=shards)
    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "generation_config.json"),
               generation_config(cfg, FULL_GENERATION.get(name)))
    tokenizer = cfg["model_type"] == "qwen2" or (cfg.get("rope_scaling") or {}).get("rope_type") == "llama3"
    if tokenizer_from:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(tokenizer_from, f), os.path.join(folder, f))
        tokenizer = False
    elif tokenizer:
        write_tokenizer_files(folder, *synthetic_tokenizer(cfg))
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("# %s (synthetic)\n\nWritten by test/HF/make_hf_checkpoints.py: seeded random %s "
                "weights (%s), the configuration of %s. Not a trained model. %s\n"
                % (name, dtype, "normal * 0.02, norms 1" if full else
                   "normal / sqrt(fan_in), norms 1 + 0.2 * normal",
                   "the public checkpoint" if full else "a small model of this architecture",
                   "tokenizer.json: a byte-level BPE tokenizer in the form of the real one (same "
                   "pre-tokenizer, normalizer, decoder and special tokens, at the ids config.json gives), with the 256 "
                   "byte tokens and merges learned from a short text by make_hf_checkpoints.py, not the "
                   "real vocabulary." if tokenizer else
                   "tokenizer.json and tokenizer_config.json copied from %s." % tokenizer_from
                   if tokenizer_from else "No tokenizer files."))
    return folder


# --------------------------------------------------------------------------
# llama2.c checkpoints

def read_llama2c(path):
    """llama2.c legacy (version 0) checkpoint -> (config dict, weights dict of float32 arrays)."""
    data = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // heads
    kv_dim = kv_heads * hd
    f = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = f[pos:pos + n].reshape(shape).copy()
        pos += n
        return a

    w = {}
    w["tok"] = take(vocab, dim)
    w["rms_att"] = take(layers, dim)
    w["wq"] = take(layers, dim, dim)
    w["wk"] = take(layers, kv_dim, dim)
    w["wv"] = take(layers, kv_dim, dim)
    w["wo"] = take(layers, dim, dim)
    w["rms_ffn"] = take(layers, dim)
    w["w1"] = take(layers, hidden, dim)
    w["w2"] = take(layers, dim, hidden)
    w["w3"] = take(layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len, hd // 2)  # freq_cis_real
    take(seq_len, hd // 2)  # freq_cis_imag
    if not shared:
        w["cls"] = take(vocab, dim)
    if pos != f.size:
        raise ValueError("%s: %d floats left over after the weights" % (path, f.size - pos))
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab,
               seq_len=seq_len, shared=shared)
    return cfg, w


def permute_rotary(w, n_heads):
    """Interleaved-pair RoPE rows -> rotate-half rows, per head (the permute() of
    transformers' convert_llama_weights_to_hf.py and llama2.c's export)."""
    dim1, dim2 = w.shape
    return w.reshape(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(0, 2, 1, 3).reshape(dim1, dim2)


def llama2c_to_hf_tensors(c, w, dtype="float32"):
    tensors = []

    def add(name, arr):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        tensors.append(Tensor(name, arr.shape, dtype, lambda s, e, a=arr: a[s:e]))

    add("model.embed_tokens.weight", w["tok"])
    for i in range(c["layers"]):
        p = "model.layers.%d." % i
        add(p + "input_layernorm.weight", w["rms_att"][i])
        add(p + "self_attn.q_proj.weight", permute_rotary(w["wq"][i], c["heads"]))
        add(p + "self_attn.k_proj.weight", permute_rotary(w["wk"][i], c["kv_heads"]))
        add(p + "self_attn.v_proj.weight", w["wv"][i])
        add(p + "self_attn.o_proj.weight", w["wo"][i])
        add(p + "post_attention_layernorm.weight", w["rms_ffn"][i])
        add(p + "mlp.gate_proj.weight", w["w1"][i])
        add(p + "mlp.up_proj.weight", w["w3"][i])
        add(p + "mlp.down_proj.weight", w["w2"][i])
    add("model.norm.weight", w["rms_final"])
    if not c["shared"]:
        add("lm_head.weight", w["cls"])
    return tensors


def llama2c_config(c, bos, eos, max_pos, version="4.45.0"):
    return llama_config(c["dim"], c["layers"], c["heads"], c["kv_heads"], c["hidden"], c["vocab"],
                        tie=c["shared"], rope_theta=10000.0, max_pos=max_pos, bos=bos, eos=eos,
                        dtype="float32", version=version)


# --------------------------------------------------------------------------
# Synthetic byte-level BPE tokenizers (the form of LLaMA-3's and Qwen2's
# tokenizer.json, with a small vocabulary learned here)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# The text the merges are learned from (written for this purpose).
BPE_TRAINING_TEXT = """\
Hello! Once upon a time, there was a little robot named Bolt. Bolt liked to count: one, two, three,
1234 and 5678. He said, "I'm here, and you're there; we'll meet where the river bends." The river
was wide and the water was cold, but the robot wasn't afraid. The model reads the text, then the
model writes the next word. Hello, hello, hello world. The quick brown fox jumps over the lazy dog.
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
"""


def bytes_to_unicode():
    """GPT-2's byte -> printable character table, in GPT-2's order (the
    printable bytes first, then the others mapped from U+0100 up)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def _ascii_pretokenize(text, digits):
    """The split regex for ASCII text (Python's re has no \p{L}); only used to
    learn merges, so it need not be exact."""
    import re
    pat = (r"'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,%d}|"
           r" ?[^\s A-Za-z0-9]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+") % digits
    return re.findall(pat, text)


def learn_merges(n_merges, digits):
    table = dict(bytes_to_unicode())
    words = {}
    for w in _ascii_pretokenize(BPE_TRAINING_TEXT, digits):
        key = tuple(table[b] for b in w.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(n_merges):
        counts = {}
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return merges


def byte_level_tokenizer(style, n_merges, specials, bos, eos, max_len):
    """tokenizer.json + tokenizer_config.json in LLaMA-3's or Qwen2's form.
    specials: [(id, content)]; bos/eos: contents (bos None: no BOS added)."""
    vocab = {}
    for i, (_, ch) in enumerate(bytes_to_unicode()):
        vocab[ch] = i
    merges = learn_merges(n_merges, 3 if style == "llama3" else 1)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in specials]
    byte_level = lambda ps, tr, rx: {"type": "ByteLevel", "add_prefix_space": ps,  # noqa: E731
                                     "trim_offsets": tr, "use_regex": rx}
    ids = dict((c, i) for i, c in specials)
    if style == "llama3":
        normalizer = None
        split = LLAMA3_SPLIT
        post = {"type": "Sequence", "processors": [
            byte_level(True, False, True),
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [ids[bos]], "tokens": [bos]}}}]}
        decoder = byte_level(True, True, True)
        pre_bl = byte_level(False, True, False)
    else:
        normalizer = {"type": "NFC"}
        split = QWEN2_SPLIT
        post = byte_level(False, False, False)
        decoder = byte_level(False, False, False)
        pre_bl = byte_level(False, False, False)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
            pre_bl]},
        "post_processor": post,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None if style == "llama3" else "",
            "end_of_word_suffix": None if style == "llama3" else "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": style == "llama3",
            "vocab": vocab,
            "merges": ["%s %s" % m for m in merges],
        },
    }
    dec = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word",
                                             "special")} for a in added}
    if style == "llama3":
        config = {"added_tokens_decoder": dec, "bos_token": bos, "clean_up_tokenization_spaces": True,
                  "eos_token": eos, "model_input_names": ["input_ids", "attention_mask"],
                  "model_max_length": max_len, "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        config = {"add_prefix_space": False, "added_tokens_decoder": dec,
                  "additional_special_tokens": [c for _, c in specials if c != eos],
                  "bos_token": None, "chat_template": None, "clean_up_tokenization_spaces": False,
                  "eos_token": eos, "errors": "replace", "model_max_length": max_len, "pad_token": eos,
                  "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    return tok, config, len(vocab)


def write_tokenizer_files(folder, tok, config):
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
        f.write("\n")
    write_json(os.path.join(folder, "tokenizer_config.json"), config)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                   "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def synthetic_tokenizer(cfg):
    """A byte-level BPE tokenizer for a synthetic LLaMA-3 or Qwen2 folder: the
    256 byte tokens, merges up to below the first special id (or 256 merges),
    and the model's special tokens at their ids (bos_token_id onwards)."""
    first = cfg["bos_token_id"]
    if cfg["model_type"] == "qwen2":
        specials = [(first + i, c) for i, c in enumerate(QWEN2_SPECIALS)]
        style, bos, eos = "qwen2", None, QWEN2_SPECIALS[0]
    else:
        specials = [(first + i, c) for i, c in enumerate(LLAMA3_SPECIALS)]
        style, bos, eos = "llama3", LLAMA3_SPECIALS[0], LLAMA3_SPECIALS[1]
    specials = [(i, c) for i, c in specials if i < cfg["vocab_size"]]
    n_merges = min(first - 256, 256)
    tok, config, n = byte_level_tokenizer(style, n_merges, specials, bos, eos,
                                          cfg["max_position_embeddings"])
    assert n <= first, (n, first)
    return tok, config


# --------------------------------------------------------------------------
# Converted real models

def write_stories260k(out, shared):
    src = os.path.join(shared, "llama2c", "stories260K.bin")
    tok_model = os.path.join(shared, "llama2c", "tok512.model")
    c, w = read_llama2c(src)
    folder = os.path.join(out, "stories260k")
    os.makedirs(folder, exist_ok=True)
    cfg = llama2c_config(c, bos=1, eos=2, max_pos=c["seq_len"])
    write_checkpoint(folder, llama2c_to_hf_tensors(c, w))
    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "generation_config.json"), generation_config(cfg))
    shutil.copyfile(tok_model, os.path.join(folder, "tokenizer.model"))
    tok, tok_cfg, special_map = spm_to_tokenizer_json(tok_model)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
        f.write("\n")
    write_json(os.path.join(folder, "tokenizer_config.json"), tok_cfg)
    write_json(os.path.join(folder, "special_tokens_map.json"), special_map)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("""# stories260k (converted)

Karpathy's llama2.c stories260K (`shared/data/llama2c/stories260K.bin`, MIT) as a Hugging Face
LlamaForCausalLM folder, written by test/HF/make_hf_checkpoints.py. float32 weights taken unchanged from
the .bin, except that the rows of q_proj (8 heads) and k_proj (4 KV heads) are permuted from llama2.c's
interleaved-pair RoPE order to Hugging Face's rotate-half order, as transformers'
convert_llama_weights_to_hf.py permute() does. Tied embeddings, rms_norm_eps 1e-5, rope_theta 10000.

Tokenizer: `tokenizer.model` is `llama2c/tok512.model` (SentencePiece BPE, 512 pieces) copied;
`tokenizer.json` is what transformers' LlamaConverter makes of it (legacy form: normalizer
Prepend("\u2581") + Replace(" ", "\u2581"), BPE with byte_fallback, merges from the pieces and their
scores, decoder Replace/ByteFallback/Fuse/Strip). tok512.model's normalizer has
remove_extra_whitespaces on (SentencePiece's default); the converted tokenizer.json, like
transformers' conversion, does not collapse whitespace runs.
""")
    return folder


def write_wiki2_byte(out, shared):
    src = os.path.join(shared, "wiki2-byte-llama", "model.bin")
    c, w = read_llama2c(src)
    folder = os.path.join(out, "wiki2-byte")
    os.makedirs(folder, exist_ok=True)
    # Byte-level model: no BOS/EOS tokens (ids are raw bytes); none in its config.
    cfg = llama2c_config(c, bos=None, eos=None, max_pos=c["seq_len"])
    write_checkpoint(folder, llama2c_to_hf_tensors(c, w))
    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "generation_config.json"), generation_config(cfg))
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("""# wiki2-byte (converted)

The byte-level LLaMA of `shared/data/wiki2-byte-llama` (trained on WikiText-2 for SQ) as a Hugging Face
LlamaForCausalLM folder, written by test/HF/make_hf_checkpoints.py from its `model.bin` (llama2.c
layout), with the q/k rows permuted from interleaved-pair to rotate-half RoPE order. The result is
bit-identical to the initializers of its `model.onnx` (checked by test/HF/check_converted.py).

vocab 256 = raw UTF-8 bytes: there is **no tokenizer file**; use SQ's `byte` tokenizer. No BOS or EOS
(bos_token_id and eos_token_id are null). Untied lm_head, GQA (4 heads, 2 KV heads), rope_theta 10000,
rms_norm_eps 1e-5, max_position_embeddings 256 (its training sequence length).
""")
    return folder


# --------------------------------------------------------------------------

SMALL = list(SYNTHETIC) + ["stories260k", "wiki2-byte"]
ALL = SMALL + list(FULL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Names: " + ", ".join(ALL))
    ap.add_argument("outdir")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=ALL,
                    help="write only these folders")
    ap.add_argument("--full", action="store_true",
                    help="also write the full-shape synthetic folders (tens of GB)")
    ap.add_argument("--shared-data", default=os.environ.get("SQ_SHARED_DATA", DEFAULT_SHARED),
                    help="the shared data folder (default: %(default)s)")
    ap.add_argument("--tokenizer-from", metavar="DIR",
                    help="copy tokenizer.json and tokenizer_config.json from DIR into the synthetic "
                         "folders written (e.g. a real LLaMA-3 tokenizer for the llama-3.x shapes) "
                         "instead of the small synthetic tokenizer")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the synthetic weights (default: %(default)s)")
    args = ap.parse_args(argv)

    names = args.only or (SMALL + (list(FULL) if args.full else []))
    os.makedirs(args.outdir, exist_ok=True)
    for name in names:
        if name in SYNTHETIC:
            cfg, kw = SYNTHETIC[name]
            write_synthetic(args.outdir, name, cfg, args.seed, False, tokenizer_from=args.tokenizer_from, **kw)
        elif name in FULL:
            write_synthetic(args.outdir, name, FULL[name], args.seed, True, tokenizer_from=args.tokenizer_from)
        else:
            needed = {"stories260k": "llama2c/stories260K.bin",
                      "wiki2-byte": "wiki2-byte-llama/model.bin"}[name]
            if not os.path.exists(os.path.join(args.shared_data, needed)):
                if args.only:
                    sys.exit("make_hf_checkpoints.py: %s: %s not found (--shared-data)" %
                             (name, os.path.join(args.shared_data, needed)))
                print("make_hf_checkpoints.py: skipping %s: %s not found" %
                      (name, os.path.join(args.shared_data, needed)), file=sys.stderr)
                continue
            (write_stories260k if name == "stories260k" else write_wiki2_byte)(args.outdir, args.shared_data)
        print(os.path.join(args.outdir, name))


if __name__ == "__main__":
    main()
