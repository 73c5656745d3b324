#!/usr/bin/env python3
"""Writes the external weights of a corpus graph whose weights file was never
published (see SOURCES.md), from the manifest beside it (weights.json: each
initializer's name, shape and byte range, as the graph declares them).

  synth_weights.py DIR/weights.json DIR_OUT/model.onnx.data

Random normal weights (seed 0, std 0.02; norm scales around 1) like the
tiny-random checkpoints the graphs were exported from, and exact RoPE cos/sin
caches for the manifest's rope_theta. Only numpy is needed.
"""
import json
import sys

import numpy as np


def main():
    manifest, out = sys.argv[1], sys.argv[2]
    spec = json.load(open(manifest))
    tensors = spec["tensors"]
    size = max(t["offset"] + t["length"] for t in tensors)
    data = bytearray(size)
    rng = np.random.default_rng(0)
    for t in tensors:
        shape = t["dims"]
        if t["fill"] in ("cos", "sin"):
            half = shape[1]
            inv = spec["rope_theta"] ** (-np.arange(half) * 2.0 / (2 * half))
            angles = np.outer(np.arange(shape[0]), inv)
            a = np.cos(angles) if t["fill"] == "cos" else np.sin(angles)
        elif t["fill"] == "norm":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            a = 0.02 * rng.standard_normal(shape)
        raw = a.astype(np.float32).tobytes()
        assert len(raw) == t["length"], t["name"]
        data[t["offset"]:t["offset"] + t["length"]] = raw
    with open(out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
