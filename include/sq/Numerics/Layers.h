//===- Layers.h - RMSNorm, RoPE and attention softmax, shared ----*- C++
//-*-===//
//
// The float arithmetic of sq.rms_norm, sq.rope and the softmax of
// sq.attention, in one place for the reference executor (lib/Exec, forward
// and backward) and the CPU runtime (lib/Runtime/CPU), so that they compute
// them bit for bit alike: RMSNorm with a double sum of squares, RoPE with
// PyTorch's fp32 inverse frequencies and angles, softmax in fp32 with a
// sequential sum.
//
// Plain C++: no MLIR or LLVM header, so the runtime can link it.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_LAYERS_H
#define SQ_NUMERICS_LAYERS_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace sq {
namespace numerics {

/// out = x / sqrt(mean(x^2) + eps) * scale (scale may be null) for each of
/// `rows` rows of `dim` values.
void rmsNormRows(const float *x, const float *scale, int64_t rows, int64_t dim,
                 double eps, float *out);

/// LLaMA-3.1/3.2 RoPE scaling (Hugging Face rope_type "llama3"): with
/// wavelen = 2 pi / inv_freq, frequencies whose wavelength is below
/// originalMaxPositions / highFreqFactor are kept, those above
/// originalMaxPositions / lowFreqFactor are divided by `factor`, and those
/// between are interpolated: s = (originalMaxPositions / wavelen -
/// lowFreqFactor) / (highFreqFactor - lowFreqFactor), inv_freq = (1 - s) *
/// inv_freq / factor + s * inv_freq. factor 0 means no scaling.
struct RopeScaling {
  double factor = 0;
  double lowFreqFactor = 1;
  double highFreqFactor = 4;
  double originalMaxPositions = 8192;
  bool enabled() const { return factor > 0; }
};

/// RoPE's inverse frequencies 1 / theta^(2i / headDim), i < headDim / 2, as
/// PyTorch computes them (fp32), then scaled as `scaling` says (in fp32, as
/// transformers' _compute_llama3_parameters).
std::vector<float> ropeInverseFrequencies(int64_t headDim, double theta,
                                          const RopeScaling &scaling = {});

/// One inverse frequency `inv` scaled as `scaling` says (fp32).
float scaleRopeFrequency(float inv, const RopeScaling &scaling);

/// cos and sin of position * inv[i] (fp32 angles), i < half.
void ropeAngles(const float *inv, int64_t half, int64_t position, float *cos,
                float *sin);

/// Rotary embedding of every head (head_dim = dim / heads) of `rows` tokens
/// at `positions`: rotate_half pairs (i, i + hd/2), or interleaved pairs
/// (2i, 2i+1).
void ropeRows(const float *x, const int64_t *positions, int64_t rows,
              int64_t dim, int64_t heads, double theta, bool interleaved,
              float *out, const RopeScaling &scaling = {});

/// Softmax, in place, over the first `visible` of the `total` scores of
/// `row`; the masked rest [visible, total) becomes 0. fp32 throughout: the
/// max, exp(x - max), a sequential sum and one multiply by its inverse.
/// Inline so that a SIMD caller (the runtime's AVX2 attention) compiles it
/// for its own target.
inline void softmaxPrefix(float *row, int64_t visible, int64_t total) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < visible; ++j)
    mx = std::max(mx, row[j]);
  float sum = 0;
  for (int64_t j = 0; j < visible; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  float inv = 1.0f / sum;
  for (int64_t j = 0; j < visible; ++j)
    row[j] *= inv;
  for (int64_t j = std::max<int64_t>(visible, 0); j < total; ++j)
    row[j] = 0.0f;
}

/// Softmax, in place, over the scores [lo, hi) of the `total` scores of
/// `row`; the masked rest becomes 0 (softmaxPrefix over a window).
inline void softmaxRange(float *row, int64_t lo, int64_t hi, int64_t total) {
  for (int64_t j = 0; j < std::min(lo, total); ++j)
    row[j] = 0.0f;
  lo = std::max<int64_t>(lo, 0);
  softmaxPrefix(row + lo, hi - lo, total - lo);
}

/// The keys [lo, hi) that the query at key position `position` sees among
/// `total`: with `causal`, keys up to its own position, and with a sliding
/// `window` (> 0, causal only) just the last `window` of them.
inline void visibleKeys(int64_t position, int64_t total, bool causal,
                        int64_t window, int64_t &lo, int64_t &hi) {
  hi = causal ? std::min(total, position + 1) : total;
  lo = causal && window > 0 ? std::max<int64_t>(0, position - window + 1) : 0;
}

/// The attention probabilities of `rows` queries over `total` keys from
/// their scores ([rows, total] row-major, in place): with `causal`, query i
/// sees keys [0, i + offset] (offset = total - rows, the cached positions
/// before the queries), otherwise every key; a sliding `window` (> 0)
/// keeps only the last `window` of those.
inline void attentionSoftmaxRows(float *scores, int64_t rows, int64_t total,
                                 int64_t offset, bool causal,
                                 int64_t window = 0) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t lo, hi;
    visibleKeys(i + offset, total, causal, window, lo, hi);
    softmaxRange(scores + i * total, lo, hi, total);
  }
}

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_LAYERS_H
