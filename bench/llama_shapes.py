"""The LLaMA shapes of the benchmarks (bench/make_synthetic_llama.py,
bench/make_q4_peers.py, bench/ratios.sh): one place for their dimensions and
RoPE frequencies.

context is the RoPE table length the generators write (and the context
length they declare): 4096 positions, enough for a 2048-token prompt plus
decoding; the real LLaMA-3 models declare 131072.
"""

import numpy as np

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
    d = head_dim(shape)
    return (1.0 / (shape["theta"] ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d))).astype(np.float32)


def inverse_frequencies(shape):
    """The RoPE inverse frequencies, with LLaMA-3.1/3.2 ("llama3") scaling when
    the shape has it: transformers' _compute_llama3_parameters in float32 (the
    same formula as test/Import/gen_fixtures.py llama3_inv_freq and SQ's
    numerics::ropeInverseFrequencies)."""
    inv = base_inverse_frequencies(shape)
    sc = shape["rope_scaling"]
    if not sc:
        return inv
    factor, low, high = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    original = sc["original_max_position_embeddings"]
    wavelen = np.float32(2 * np.pi) / inv
    scaled = np.where(wavelen > original / low, inv / np.float32(factor), inv)
    smooth = ((np.float32(original) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = ~(wavelen < original / high) & ~(wavelen > original / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def gguf_rope_factors(shape):
    """llama.cpp's rope_freqs.weight for a llama3-scaled shape (what
    convert_hf_to_gguf.py writes): per frequency, base / scaled, by which
    ggml_rope_ext divides the rotation angle; None without scaling."""
    if not shape["rope_scaling"]:
        return None
    return (base_inverse_frequencies(shape) / inverse_frequencies(shape)).astype(np.float32)
