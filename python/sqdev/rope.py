"""RoPE inverse frequencies, with LLaMA-3.1/3.2 ("llama3") scaling: the
formula of transformers' _compute_llama3_parameters, shared by the
benchmark shapes (bench/llama_shapes.py), the ONNX fixtures
(test/Import/gen_fixtures.py) and the Hugging Face reference
(test/HF/hf_reference.py). SQ's own implementation is
numerics::ropeInverseFrequencies; these are what it is checked against.

The dtype is the caller's: float32 reproduces torch's float32 computation
(what a checkpoint's caches hold), float64 gives a reference.
"""

import math

import numpy as np


def inverse_frequencies(theta, head_dim, dtype=np.float32):
    """theta^(-2i/head_dim) for i < head_dim/2, computed in `dtype`."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(dtype) / head_dim
    return (1.0 / (theta ** exponent)).astype(dtype)


def llama3_scaled(inv, factor, low, high, original):
    """`inv` (inverse frequencies, float32 or float64) with rope_type llama3
    scaling, in inv's dtype: wavelengths above original/low are divided by
    `factor`, those below original/high kept, those between smoothly
    interpolated (factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings)."""
    dt = inv.dtype.type
    wavelen = dt(2 * math.pi) / inv
    scaled = np.where(wavelen > original / low, inv / dt(factor), inv)
    smooth = ((dt(original) / wavelen - dt(low)) / dt(high - low)).astype(dt)
    smoothed = (1 - smooth) * scaled / dt(factor) + smooth * scaled
    medium = ~(wavelen < original / high) & ~(wavelen > original / low)
    return np.where(medium, smoothed, scaled).astype(dt)
