//===- Quantize.cpp - SpinQuant's quantizers (RTN, clip search) -----------===//

#include "sq/Numerics/Quantize.h"
#include "sq/Numerics/Pack.h"

#include <algorithm>
#include <cmath>

namespace sq {
namespace numerics {

void groupScale(const float *x, int64_t n, const QuantGrid &grid, double shrink,
                float &scale, float &zero) {
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  double f = grid.clip * shrink;
  double l = lo * f, h = hi * f;
  if (grid.symmetric) {
    double m = std::max(-l, h);
    scale = static_cast<float>(m / double(grid.qmax()));
    zero = 0;
  } else {
    scale = static_cast<float>((h - l) / double(grid.qmax()));
    zero = scale > 0 ? std::nearbyint(static_cast<float>(-l) / scale) : 0;
  }
  if (!(scale > 0)) { // all zeros (or a range below float resolution)
    scale = 1;
    zero = 0;
  }
}

int64_t quantizeValue(float x, float scale, float zero, const QuantGrid &grid) {
  float q = std::nearbyint(x / scale) + zero;
  q = std::min(std::max(q, float(grid.qmin())), float(grid.qmax()));
  return static_cast<int64_t>(q);
}

void fakeQuantRows(const float *in, int64_t rows, int64_t cols,
                   const QuantGrid &grid, float *out, const float *rowClips) {
  int64_t group = grid.group > 0 ? grid.group : cols;
  QuantGrid g0 = grid;
  for (int64_t r = 0; r < rows; ++r) {
    if (rowClips)
      g0.clip = rowClips[r];
    for (int64_t g = 0; g < cols; g += group) {
      const float *x = in + r * cols + g;
      float *y = out + r * cols + g;
      float scale, zero;
      groupScale(x, group, g0, 1.0, scale, zero);
      for (int64_t i = 0; i < group; ++i)
        y[i] = (float(quantizeValue(x[i], scale, zero, g0)) - zero) * scale;
    }
  }
}

/// The range [lo, hi] of a group with 0 in it (lo = min(min x, 0), hi =
/// max(max x, 0), as groupScale sees it) and the indices of the values that
/// set each end (-1: the end is 0).
static void groupExtremes(const float *x, int64_t n, float &lo, float &hi,
                          int64_t &iLo, int64_t &iHi) {
  lo = 0;
  hi = 0;
  iLo = -1;
  iHi = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] < lo) {
      lo = x[i];
      iLo = i;
    }
    if (x[i] > hi) {
      hi = x[i];
      iHi = i;
    }
  }
}

void fakeQuantRowsBackward(const float *in, int64_t rows, int64_t cols,
                           const QuantGrid &grid, const float *rowClips,
                           const float *dy, float *dx, double *dclip) {
  int64_t group = grid.group > 0 ? grid.group : cols;
  const double qmax = double(grid.qmax()), qmin = double(grid.qmin());
  QuantGrid g0 = grid;
  for (int64_t r = 0; r < rows; ++r) {
    if (rowClips)
      g0.clip = rowClips[r];
    const double c = g0.clip;
    double rowGrad = 0;
    for (int64_t g = 0; g < cols; g += group) {
      const float *x = in + r * cols + g;
      const float *d = dy + r * cols + g;
      float *e = dx ? dx + r * cols + g : nullptr;
      // The range and the values that set it (as groupScale).
      float lo, hi;
      int64_t iLo, iHi;
      groupExtremes(x, group, lo, hi, iLo, iHi);
      float scale, zero;
      groupScale(x, group, g0, 1.0, scale, zero);
      double raw = grid.symmetric ? std::max(-double(lo), double(hi)) * c / qmax
                                  : (double(hi) - double(lo)) * c / qmax;
      bool degenerate = !(float(raw) > 0);
      if (degenerate) { // scale 1: the values pass (zeros)
        if (e)
          for (int64_t i = 0; i < group; ++i)
            e[i] = d[i];
        continue;
      }
      const double s = scale;
      // r_z: the zero point's rounding offset (asymmetric).
      const double rz = grid.symmetric ? 0.0 : double(zero) + c * lo / s;
      double gS = 0, gMin = 0; // dL/ds, dL/dxmin (direct)
      for (int64_t i = 0; i < group; ++i) {
        double u = double(x[i]) / s;
        double k = std::nearbyint(float(x[i]) / scale);
        double t = k + zero;
        if (t > qmax) {
          gS += d[i] * (grid.symmetric ? qmax : qmax - rz);
          gMin += d[i];
          if (e)
            e[i] = 0;
        } else if (t < qmin) {
          gS += d[i] * (grid.symmetric ? qmin : -rz);
          gMin += d[i];
          if (e)
            e[i] = 0;
        } else {
          gS += d[i] * (k - u);
          if (e)
            e[i] = d[i];
        }
      }
      if (grid.symmetric) {
        // s = c A / qmax, A = max(-lo, hi).
        bool upper = double(hi) >= -double(lo);
        double a = upper ? hi : -double(lo);
        rowGrad += gS * a / qmax;
        if (e) {
          int64_t i = upper ? iHi : iLo;
          if (i >= 0)
            e[i] += float((upper ? 1.0 : -1.0) * gS * c / qmax);
        }
      } else {
        // s = (xmax - xmin) / qmax, xmax = c hi, xmin = c lo.
        double dMax = gS / qmax, dMinTotal = -gS / qmax + gMin;
        rowGrad += dMax * hi + dMinTotal * lo;
        if (e) {
          if (iHi >= 0)
            e[iHi] += float(dMax * c);
          if (iLo >= 0)
            e[iLo] += float(dMinTotal * c);
        }
      }
    }
    if (dclip)
      dclip[r] = rowGrad;
  }
}

void fakeQuantRangeBackward(const float *x, int64_t rows, int64_t cols,
                            const QuantGrid &grid, const float *scales,
                            const float *zeros, const float *dy, float *dx) {
  int64_t group = grid.group > 0 ? grid.group : cols;
  int64_t groups = cols / group;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      int64_t base = r * cols + g * group;
      const float *xs = x + base;
      float scale, zero;
      if (scales) {
        scale = scales[r * groups + g];
        zero = zeros ? zeros[r * groups + g] : 0.0f;
      } else {
        groupScale(xs, group, grid, 1.0, scale, zero);
      }
      float lo, hi;
      int64_t iLo, iHi;
      groupExtremes(xs, group, lo, hi, iLo, iHi);
      double range = grid.symmetric ? std::max(-double(lo), double(hi))
                                    : double(hi) - double(lo);
      if (!(range > 0) || !(scale > 0))
        continue;
      // T = sum_j dy_j dQ_j/dscale; C = the clamped values' dy (asymmetric:
      // Q = c scale + l for them, l = f lo).
      double t = 0, clamped = 0;
      for (int64_t i = 0; i < group; ++i) {
        float raw = std::nearbyint(xs[i] / scale) + zero;
        int64_t q = quantizeValue(xs[i], scale, zero, grid);
        if (raw == float(q)) {
          float qx = (float(q) - zero) * scale;
          t += double(dy[base + i]) * (double(qx) - xs[i]) / scale;
        } else {
          t += double(dy[base + i]) * (double(q) - zero);
          clamped += dy[base + i];
        }
      }
      double dScaleDExtreme = double(scale) / range;
      if (grid.symmetric) {
        int64_t k = double(hi) >= -double(lo) ? iHi : iLo;
        if (k >= 0)
          dx[base + k] += float(t * dScaleDExtreme * (xs[k] < 0 ? -1.0 : 1.0));
      } else {
        if (iHi >= 0)
          dx[base + iHi] += float(t * dScaleDExtreme);
        if (iLo >= 0)
          dx[base + iLo] +=
              float(-t * dScaleDExtreme +
                    clamped * double(scale) * double(grid.qmax()) / range);
      }
    }
}

void dequantizePackedRows(const uint8_t *packed, int64_t rows, int64_t cols,
                          unsigned bits, bool symmetric, int64_t group,
                          const float *scales, const float *zeros, float *out) {
  if (group <= 0)
    group = cols;
  int64_t groups = cols / group;
  int64_t rowBytes = int64_t(packedBytes(cols, bits));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t *row = packed + r * rowBytes;
    for (int64_t c = 0; c < cols; ++c) {
      int v;
      if (bits == 4) {
        uint8_t nib = (row[c / 2] >> (4 * (c % 2))) & 0xF;
        v = symmetric ? (nib >= 8 ? int(nib) - 16 : int(nib)) : int(nib);
      } else {
        v = symmetric ? int(static_cast<int8_t>(row[c])) : int(row[c]);
      }
      int64_t g = r * groups + c / group;
      float zero = zeros ? zeros[g] : 0.0f;
      out[r * cols + c] = (float(v) - zero) * scales[g];
    }
  }
}

void QuantizedWeight::dequantize(float *out) const {
  int64_t group = cols / groups;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      int64_t g = r * groups + c / group;
      out[r * cols + c] = (float(values[r * cols + c]) - zeros[g]) * scales[g];
    }
}

bool quantizeRTN(const float *w, int64_t rows, int64_t cols,
                 const QuantGrid &grid, bool clipSearch, QuantizedWeight &out,
                 std::string &error, const float *rowClips) {
  int64_t group = grid.group > 0 ? grid.group : cols;
  if (cols % group) {
    error = "group size " + std::to_string(group) + " does not divide " +
            std::to_string(cols) + " columns";
    return false;
  }
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) {
      error = "non-finite value at row " + std::to_string(i / cols) +
              ", column " + std::to_string(i % cols);
      return false;
    }
  out.rows = rows;
  out.cols = cols;
  out.groups = cols / group;
  out.grid = grid;
  out.values.assign(rows * cols, 0);
  out.scales.assign(rows * out.groups, 1.0f);
  out.zeros.assign(rows * out.groups, 0.0f);
  // Official search: grid 100, maxshrink 0.8, error norm 2.4.
  const int steps = clipSearch ? 80 : 1;
  QuantGrid rowGrid = grid;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < out.groups; ++g) {
      if (rowClips)
        rowGrid.clip = rowClips[r];
      const float *x = w + r * cols + g * group;
      float bestScale = 1, bestZero = 0;
      double bestErr = INFINITY;
      for (int i = 0; i < steps; ++i) {
        float scale, zero;
        groupScale(x, group, rowGrid, 1.0 - i / 100.0, scale, zero);
        if (steps > 1) {
          double err = 0;
          for (int64_t k = 0; k < group; ++k) {
            float q =
                (float(quantizeValue(x[k], scale, zero, rowGrid)) - zero) *
                scale;
            err += std::pow(std::fabs(double(q) - x[k]), 2.4);
          }
          if (!(err < bestErr))
            continue;
          bestErr = err;
        }
        bestScale = scale;
        bestZero = zero;
      }
      out.scales[r * out.groups + g] = bestScale;
      out.zeros[r * out.groups + g] = bestZero;
      for (int64_t k = 0; k < group; ++k)
        out.values[r * cols + g * group + k] = static_cast<int16_t>(
            quantizeValue(x[k], bestScale, bestZero, rowGrid));
    }
  return true;
}

} // namespace numerics
} // namespace sq
