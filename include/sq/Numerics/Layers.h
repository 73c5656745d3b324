//===- Layers.h - RMSNorm and RoPE over rows, shared -------------*- C++
//-*-===//
//
// The float arithmetic of sq.rms_norm and sq.rope, in one place for the
// reference executor (lib/Exec) and the CPU runtime (lib/Runtime/CPU), so
// that both compute them bit for bit alike: RMSNorm with a double sum of
// squares, RoPE with PyTorch's fp32 inverse frequencies and angles.
//
// Plain C++: no MLIR or LLVM header, so the runtime can link it.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_LAYERS_H
#define SQ_NUMERICS_LAYERS_H

#include <cstdint>
#include <vector>

namespace sq {
namespace numerics {

/// out = x / sqrt(mean(x^2) + eps) * scale (scale may be null) for each of
/// `rows` rows of `dim` values.
void rmsNormRows(const float *x, const float *scale, int64_t rows, int64_t dim,
                 double eps, float *out);

/// RoPE's inverse frequencies 1 / theta^(2i / headDim), i < headDim / 2, as
/// PyTorch computes them (fp32).
std::vector<float> ropeInverseFrequencies(int64_t headDim, double theta);

/// cos and sin of position * inv[i] (fp32 angles), i < half.
void ropeAngles(const float *inv, int64_t half, int64_t position, float *cos,
                float *sin);

/// Rotary embedding of every head (head_dim = dim / heads) of `rows` tokens
/// at `positions`: rotate_half pairs (i, i + hd/2), or interleaved pairs
/// (2i, 2i+1).
void ropeRows(const float *x, const int64_t *positions, int64_t rows,
              int64_t dim, int64_t heads, double theta, bool interleaved,
              float *out);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_LAYERS_H
