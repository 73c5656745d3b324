"""The LLaMA shapes of the benchmarks (bench/make_synthetic_llama.py,
bench/make_q4_peers.py, bench/ratios.sh): one place for their dimensions and
RoPE frequencies.

context is the RoPE table length the generators write (and the context
length they declare): 4096 positions, enough for a 2048-token prompt plus
decoding; the real LLaMA-3 models declare 131072.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from sqdev import rope  # noqa: E402

SHAPES = {
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, ffn=11008, vocab=32000,
                      tied=False, theta=10000.0, rope_scaling=None, context=4096),
    "llama3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256,
                        tied=True, theta=500000.0,
                        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192),
                        context=4096),
    "llama3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256,
                        tied=False, theta=500000.0,
                        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192),
                        context=4096),
}


def head_dim(shape):
    return shape["hidden"] // shape["heads"]


def base_inverse_frequencies(shape):
    """theta^(-2i/d), float32, i < d/2."""
    return rope.inverse_frequencies(shape["theta"], head_dim(shape))


def inverse_frequencies(shape):
    """The RoPE inverse frequencies, with LLaMA-3.1/3.2 ("llama3") scaling when
    the shape has it: transformers' _compute_llama3_parameters in float32
    (python/sqdev/rope.py, the formula SQ's numerics::ropeInverseFrequencies
    is checked against)."""
    inv = base_inverse_frequencies(shape)
    sc = shape["rope_scaling"]
    if not sc:
        return inv
    return rope.llama3_scaled(inv, sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"],
                              sc["original_max_position_embeddings"])


def gguf_rope_factors(shape):
    """llama.cpp's rope_freqs.weight for a llama3-scaled shape (what
    convert_hf_to_gguf.py writes): per frequency, base / scaled, by which
    ggml_rope_ext divides the rotation angle; None without scaling."""
    if not shape["rope_scaling"]:
        return None
    return (base_inverse_frequencies(shape) / inverse_frequencies(shape)).astype(np.float32)
