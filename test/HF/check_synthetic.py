#!/usr/bin/python3
"""Checks the files of make_hf_checkpoints.py folders against the format rules.

    check_synthetic.py FOLDER...

For each folder: every safetensors file has a header whose length is a
multiple of 8, whose data_offsets tile the data exactly (no gap, no overlap,
end of the last = file size - 8 - header), whose dtype sizes match the
shapes, and whose dtype is config.json's torch_dtype; the tensor names are
exactly those a transformers model of config.json's architecture saves (q/k/v
biases for Qwen2, lm_head only when untied); with shards, the index's
weight_map names each tensor's file and metadata.total_size is the sum of the
tensor sizes; hf_reference.py's logits of a short sequence are finite.
Also checks the bfloat16 rounding on chosen values.
Prints one line per folder; exit status 1 if any check fails.
"""

import json
import os
import struct
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference  # noqa: E402
import make_hf_checkpoints as mk  # noqa: E402

SIZES = {"F32": 4, "F16": 2, "BF16": 2}
ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def expected_names(cfg):
    bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        for m in ("q", "k", "v", "o"):
            names.add(p + "self_attn.%s_proj.weight" % m)
            if bias and m != "o":
                names.add(p + "self_attn.%s_proj.bias" % m)
        for m in ("gate", "up", "down"):
            names.add(p + "mlp.%s_proj.weight" % m)
    if not cfg["tie_word_embeddings"]:
        names.add("lm_head.weight")
    return names


def check_file(path, dtype):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert n % 8 == 0, "%s: header length %d not a multiple of 8" % (path, n)
    meta = header.pop("__metadata__", None)
    assert meta == {"format": "pt"}, "%s: __metadata__ %r" % (path, meta)
    spans = []
    for name, info in header.items():
        b, e = info["data_offsets"]
        want = int(np.prod(info["shape"])) * SIZES[info["dtype"]]
        assert e - b == want, "%s: %s: %d bytes for shape %s %s" % (path, name, e - b, info["shape"], info["dtype"])
        assert info["dtype"] == dtype, "%s: %s is %s, config says %s" % (path, name, info["dtype"], dtype)
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        assert b == pos, "%s: %s starts at %d, previous ends at %d" % (path, name, b, pos)
        pos = e
    assert 8 + n + pos == size, "%s: data ends at %d, file has %d bytes" % (path, 8 + n + pos, size)
    return {name: e - b for b, e, name in spans}


def check_folder(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    gen = json.load(open(os.path.join(folder, "generation_config.json")))
    assert gen.get("bos_token_id") == cfg["bos_token_id"] or cfg["bos_token_id"] is None
    dtype = ST[cfg["torch_dtype"]]
    index = os.path.join(folder, "model.safetensors.index.json")
    sizes = {}
    if os.path.exists(index):
        idx = json.load(open(index))
        files = sorted(set(idx["weight_map"].values()))
        n = len(files)
        assert files == ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)], files
        for fn in files:
            part = check_file(os.path.join(folder, fn), dtype)
            for name in part:
                assert idx["weight_map"].get(name) == fn, "%s: index puts %s in %s" % (fn, name, idx["weight_map"].get(name))
            sizes.update(part)
        assert set(idx["weight_map"]) == set(sizes), "index and shards name different tensors"
        assert idx["metadata"]["total_size"] == sum(sizes.values()), "total_size"
        assert not os.path.exists(os.path.join(folder, "model.safetensors"))
    else:
        sizes = check_file(os.path.join(folder, "model.safetensors"), dtype)
        n = 1
    want = expected_names(cfg)
    assert set(sizes) == want, "missing %s, extra %s" % (sorted(want - set(sizes))[:3], sorted(set(sizes) - want)[:3])
    model = hf_reference.Model(folder)
    logits = model.forward([0, 5, 17, 3, 9, 11, 2, 4])
    assert logits.shape == (8, cfg["vocab_size"]) and np.isfinite(logits).all()
    return "%d tensors in %d file%s, %s, %d bytes, logits finite" % (
        len(sizes), n, "" if n == 1 else "s", dtype, sum(sizes.values()))


def check_bf16():
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20, -2.5, 65504.0,
                  3.4e38, np.inf, 1e-40], dtype=np.float32)
    want = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x4780, 0x7F80, 0x7F80, 0x0001]
    got = mk.to_bf16_bits(x).tolist()
    assert got == want, "bf16 bits %s, want %s" % ([hex(g) for g in got], [hex(w) for w in want])
    assert np.isnan(mk.bf16_bits_to_f32(mk.to_bf16_bits(np.array([np.nan], np.float32))))[0]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    failed = False
    try:
        check_bf16()
        print("bf16 rounding: ok")
    except AssertionError as e:
        print("bf16 rounding: FAIL (%s)" % e)
        failed = True
    for folder in sys.argv[1:]:
        try:
            print("%s: ok (%s)" % (os.path.basename(folder.rstrip("/")), check_folder(folder)))
        except AssertionError as e:
            print("%s: FAIL (%s)" % (os.path.basename(folder.rstrip("/")), e))
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
