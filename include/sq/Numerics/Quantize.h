//===- Quantize.h - SpinQuant's quantizers (RTN, clip search) ----*- C++
//-*-===//
//
// The integer grids of the official SpinQuant/QuaRot quantizers, in plain
// C++ (shared by the quantization pass, the executor and the runtime):
//
//  * symmetric b-bit: q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1),
//    s = clip * max|x| / (2^(b-1) - 1), x ~ s q;
//  * asymmetric b-bit: xmin = clip * min(min x, 0), xmax = clip *
//    max(max x, 0), s = (xmax - xmin) / (2^b - 1), z = round(-xmin / s),
//    q = clamp(round(x / s) + z, 0, 2^b - 1), x ~ s (q - z).
//
// A group of all zeros gets s = 1 (it quantizes to zeros exactly). Values
// are rounded half to even (torch.round). Scales are computed per group of
// `group` consecutive values along a row (group 0: the whole row).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_QUANTIZE_H
#define SQ_NUMERICS_QUANTIZE_H

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace numerics {

struct QuantGrid {
  unsigned bits = 4;
  bool symmetric = true;
  /// Values per scale along a row; 0 = the whole row (per channel/token).
  int64_t group = 0;
  /// Range shrink factor in (0, 1] applied before the scale is computed.
  double clip = 1.0;

  int64_t qmin() const { return symmetric ? -(int64_t(1) << (bits - 1)) : 0; }
  int64_t qmax() const {
    return symmetric ? (int64_t(1) << (bits - 1)) - 1
                     : (int64_t(1) << bits) - 1;
  }
};

/// Scale and zero point of one group of values (zero is 0 when symmetric).
void groupScale(const float *x, int64_t n, const QuantGrid &grid, double shrink,
                float &scale, float &zero);

/// Quantize-dequantize `rows` x `cols` values (row-major) in float, with
/// dynamic scales per group: what sq.fake_quant computes. `cols` must be a
/// multiple of the group. `rowClips` (optional, [rows]) replaces
/// `grid.clip` row by row (learned per-channel weight clipping).
void fakeQuantRows(const float *in, int64_t rows, int64_t cols,
                   const QuantGrid &grid, float *out,
                   const float *rowClips = nullptr);

/// The gradient of fakeQuantRows for learned clipping (LSQ/FlatQuant-style
/// straight-through estimator): the exact gradient of the surrogate in
/// which each value's rounding offset r = round(u) - u (and the zero
/// point's) is held constant, so round(u) acts as u + r. Per group of clip c
/// (lo = min(min x, 0), hi = max(max x, 0)):
///  * symmetric: s = c max(-lo, hi) / qmax; a value inside the grid gives
///    q = x + s r (dq/dx = 1, dq/ds = r), one clamped above s qmax, below
///    s qmin (dq/dx = 0, dq/ds = qmax or qmin);
///  * asymmetric: xmin = c lo, xmax = c hi, s = (xmax - xmin) / qmax,
///    z = -xmin / s + r_z; inside q = x + s r, clamped above
///    q = s qmax + xmin - s r_z, below q = xmin - s r_z.
/// dL/ds and dL/dxmin then flow to c (ds/dc = s / c, dxmin/dc = lo) and to
/// the values that set the range (the largest magnitude, or the minimum and
/// maximum). With c = 1 nothing but the extremes is clamped (up to the
/// zero point's rounding), and dL/dx is the plain straight-through
/// gradient plus the range terms.
/// `dy` is dL/dout [rows, cols]; `dx` (or null) receives dL/din; `dclip`
/// (or null) receives dL/dclip per row [rows] (sum them for a clip shared
/// by all rows). A group of zeros (scale 1) passes dy through.
void fakeQuantRowsBackward(const float *in, int64_t rows, int64_t cols,
                           const QuantGrid &grid, const float *rowClips,
                           const float *dy, float *dx, double *dclip);

/// A weight [rows, cols] quantized per row or in groups: integer values
/// (within [qmin, qmax] of its grid), scales and zero points [rows, groups].
struct QuantizedWeight {
  int64_t rows = 0, cols = 0, groups = 0;
  QuantGrid grid;
  std::vector<int16_t> values;
  std::vector<float> scales, zeros;

  /// (values - zeros) * scales, [rows, cols]. (int16: 8-bit asymmetric
  /// values reach 255.)
  void dequantize(float *out) const;
};

/// Round-to-nearest quantization of `w` [rows, cols]. With `clipSearch`, the
/// official MSE search: for each group, shrink factors p = 1, 0.99, ...
/// (80 steps down to 0.21) of the range, keeping the one with the smallest
/// sum |q(x) - x|^2.4 (p = 1 first, so the error never exceeds plain RTN).
/// Fails (with `error`) on NaN or Inf, or when `cols` is not a multiple of
/// the group.
/// `rowClips` (optional, [rows], each in (0, 1]): learned per-output-channel
/// clip ratios replacing `grid.clip` (the search, if asked for, then
/// shrinks from the learned ratio).
bool quantizeRTN(const float *w, int64_t rows, int64_t cols,
                 const QuantGrid &grid, bool clipSearch, QuantizedWeight &out,
                 std::string &error, const float *rowClips = nullptr);

/// Dequantizes a packed weight [rows, cols] (the !sq.packed rows of
/// Pack.h, 4 or 8 bits; two's complement when `symmetric`) with `scales`
/// (and `zeros`, or null) [rows, cols / group] into fp32:
/// (q - zero) * scale. The one dequantizer of the executor and the
/// runtimes.
void dequantizePackedRows(const uint8_t *packed, int64_t rows, int64_t cols,
                          unsigned bits, bool symmetric, int64_t group,
                          const float *scales, const float *zeros, float *out);

/// The quantization range's part of a fake quantizer's vector-Jacobian
/// product (LSQ+/OmniQuant style), added to `dx` [rows, cols]: round()
/// passes straight through (dx += dy is the caller's), but each group's
/// scale depends on its extremes (scale = f * max|x| / qmax symmetric,
/// f * (hi - lo) / qmax asymmetric, with lo <= 0 <= hi; f, the clip ratio
/// times any searched shrink, is held fixed), and that dependence is
/// differentiated: with T = sum_j dy_j dQ_j/dscale (dQ_j/dscale =
/// (Q_j - x_j) / scale for values on the grid, the clamped integer minus the
/// zero point for clamped ones), the group's extreme(s) get T dscale/dx
/// (and, asymmetric, the clamped values' dy through the zero point). This is
/// what lets a learned scaling of x see that enlarging one channel coarsens
/// its whole group. `scales`/`zeros` [rows, groups] are those used (a
/// QuantizedWeight's); null: computed as fakeQuantRows does.
void fakeQuantRangeBackward(const float *x, int64_t rows, int64_t cols,
                            const QuantGrid &grid, const float *scales,
                            const float *zeros, const float *dy, float *dx);

/// The integer value of `x` on a group's grid.
int64_t quantizeValue(float x, float scale, float zero, const QuantGrid &grid);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_QUANTIZE_H
