//===- Layers.cpp - RMSNorm and RoPE over rows, shared --------------------===//

#include "sq/Numerics/Layers.h"

#include <cmath>

namespace sq {
namespace numerics {

void rmsNormRows(const float *x, const float *scale, int64_t rows, int64_t dim,
                 double eps, float *out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = x + r * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i)
      sum += double(row[i]) * row[i];
    float inv = 1.0f / std::sqrt(static_cast<float>(sum / dim) +
                                 static_cast<float>(eps));
    for (int64_t i = 0; i < dim; ++i)
      out[r * dim + i] = row[i] * inv * (scale ? scale[i] : 1.0f);
  }
}

float scaleRopeFrequency(float inv, const RopeScaling &scaling) {
  if (!scaling.enabled())
    return inv;
  float factor = static_cast<float>(scaling.factor);
  float wavelen = static_cast<float>(2.0 * M_PI) / inv;
  if (wavelen < scaling.originalMaxPositions / scaling.highFreqFactor)
    return inv;
  if (wavelen > scaling.originalMaxPositions / scaling.lowFreqFactor)
    return inv / factor;
  float smooth =
      (static_cast<float>(scaling.originalMaxPositions) / wavelen -
       static_cast<float>(scaling.lowFreqFactor)) /
      static_cast<float>(scaling.highFreqFactor - scaling.lowFreqFactor);
  return (1.0f - smooth) * inv / factor + smooth * inv;
}

std::vector<float> ropeInverseFrequencies(int64_t headDim, double theta,
                                          const RopeScaling &scaling) {
  std::vector<float> inv(headDim / 2);
  for (int64_t i = 0; i < headDim / 2; ++i)
    inv[i] = scaleRopeFrequency(
        1.0f / static_cast<float>(std::pow(theta, static_cast<double>(2 * i) /
                                                      double(headDim))),
        scaling);
  return inv;
}

void ropeAngles(const float *inv, int64_t half, int64_t position, float *cos,
                float *sin) {
  float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; ++i) {
    float angle = pos * inv[i];
    cos[i] = std::cos(angle);
    sin[i] = std::sin(angle);
  }
}

void ropeRows(const float *x, const int64_t *positions, int64_t rows,
              int64_t dim, int64_t heads, double theta, bool interleaved,
              float *out, const RopeScaling &scaling) {
  int64_t d = dim / heads, half = d / 2;
  std::vector<float> inv = ropeInverseFrequencies(d, theta, scaling), c(half),
                     s(half);
  for (int64_t t = 0; t < rows; ++t) {
    ropeAngles(inv.data(), half, positions[t], c.data(), s.data());
    const float *in = x + t * dim;
    float *o = out + t * dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float *xi = in + h * d;
      float *oi = o + h * d;
      for (int64_t i = 0; i < half; ++i) {
        if (interleaved) {
          float a = xi[2 * i], b = xi[2 * i + 1];
          oi[2 * i] = a * c[i] - b * s[i];
          oi[2 * i + 1] = a * s[i] + b * c[i];
        } else {
          float a = xi[i], b = xi[i + half];
          oi[i] = a * c[i] - b * s[i];
          oi[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  }
}

} // namespace numerics
} // namespace sq
