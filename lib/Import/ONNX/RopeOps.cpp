//===- RopeOps.cpp - rotate-half RoPE -------------------------------------===//
//
// Rotary position embeddings in Hugging Face's rotate-half form:
// x*cos + rotate_half(x)*sin, with rotate_half(x) = Concat(-x2, x1) built
// from Slice and Neg, becomes one sq.rope. Also the table checks every RoPE
// form shares (extractTable, finishRope: the tables must be
// cos/sin(position * theta^(-2i/head_dim)); theta is recovered from them).
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"
#include "sq/Numerics/Layers.h"

#include "llvm/ADT/STLExtras.h"

#include <algorithm>
#include <cmath>
#include <optional>

using namespace mlir;

namespace sq {
namespace onnx_import {

/// Extracts the [seq, head_dim] table that `table` broadcasts onto `x`. Other
/// dimensions must be 1, or match the activation's and hold the same table
/// everywhere (tables gathered by position_ids are [batch, 1, seq, dim]).
bool extractTable(const View &view, const CTensor &table,
                  std::vector<double> &t2, int64_t &rows, int64_t &cols) {
  int64_t rank = static_cast<int64_t>(view.size());
  if (table.rank() > rank || table.rank() < 2 || view.back().size() != 1 ||
      (view.back()[0].kind != AK::D && view.back()[0].kind != AK::DP))
    return false;
  int64_t seqAxis = -1;
  for (int64_t i = 0; i < rank; ++i)
    if (view[i].size() == 1 && view[i][0].kind == AK::S)
      seqAxis = i;
  if (seqAxis < 0)
    return false;
  int64_t shift = rank - table.rank();
  rows = axisSize(view[seqAxis]);
  cols = axisSize(view.back());
  int64_t tRowAxis = seqAxis - shift, tColAxis = table.rank() - 1;
  if (tRowAxis < 0)
    return false;
  for (int64_t j = 0; j < table.rank(); ++j) {
    int64_t d = table.shape[j];
    if (j == tColAxis
            ? d != cols
            : (j == tRowAxis ? d != rows
                             : d != 1 && d != axisSize(view[j + shift])))
      return false;
  }
  // Read the [rows, cols] plane at index 0 of the other dimensions, then
  // check that every other index holds the same plane.
  std::vector<int64_t> strides(table.rank(), 1);
  for (int64_t j = table.rank() - 2; j >= 0; --j)
    strides[j] = strides[j + 1] * table.shape[j + 1];
  t2.assign(rows * cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      t2[r * cols + c] =
          table.data[r * strides[tRowAxis] + c * strides[tColAxis]];
  std::vector<int64_t> idx(table.rank(), 0);
  for (int64_t i = 0; i < table.numel(); ++i) {
    if (std::fabs(table.data[i] - t2[idx[tRowAxis] * cols + idx[tColAxis]]) >
        1e-6)
      return false;
    for (int64_t j = table.rank() - 1; j >= 0; --j) {
      if (++idx[j] < table.shape[j])
        break;
      idx[j] = 0;
    }
  }
  return true;
}

namespace {

/// The tables of one RoPE and how to read them.
struct RopeTables {
  const std::vector<double> &cosT, &sinT;
  int64_t rows, cols, headDim, firstPosition;
  bool halves;

  int64_t half() const { return headDim / 2; }
  /// The frequency index of column d.
  int64_t freqIndex(int64_t d) const { return halves ? d % (cols / 2) : d; }

  /// The frequency of column d from its phase, unwrapped over all rows (fp16
  /// tables are too coarse for a two-row difference).
  double frequency(int64_t d) const {
    double phase = 0;
    for (int64_t r = 1; r < rows; ++r) {
      double c0 = cosT[(r - 1) * cols + d], s0 = sinT[(r - 1) * cols + d],
             c1 = cosT[r * cols + d], s1 = sinT[r * cols + d];
      phase += std::atan2(s1 * c0 - c1 * s0, c1 * c0 + s1 * s0);
    }
    return phase / static_cast<double>(rows - 1);
  }

  /// The largest difference between the tables and cos/sin(position *
  /// inv[i]), with the angle in fp32 as the executor computes it; `mismatch`
  /// describes the first entry off by more than the tolerance (fp16 tables
  /// are within 5e-4; an fp32 angle of a large position is off by its
  /// rounding), after which the scan stops at the end of its row.
  double residual(const std::vector<float> &inv, std::string &mismatch) const {
    double worst = 0;
    mismatch.clear();
    for (int64_t r = 0; r < rows && mismatch.empty(); ++r)
      for (int64_t d = 0; d < cols; ++d) {
        double angle =
            static_cast<float>(firstPosition + r) * inv[freqIndex(d)];
        double tolerance = 2e-3 + 2.5e-7 * std::fabs(angle);
        double dc = std::fabs(cosT[r * cols + d] - std::cos(angle)),
               ds = std::fabs(sinT[r * cols + d] - std::sin(angle));
        worst = std::max({worst, dc, ds});
        if (mismatch.empty() && (dc > tolerance || ds > tolerance))
          mismatch = "row " + std::to_string(r) + ", column " +
                     std::to_string(d) + ": cos " +
                     std::to_string(cosT[r * cols + d]) + ", sin " +
                     std::to_string(sinT[r * cols + d]) + ", expected " +
                     std::to_string(std::cos(angle)) + ", " +
                     std::to_string(std::sin(angle));
      }
    return worst;
  }
};

/// `v` rounded to two significant digits (10000, 500000, 1e6, ...).
double twoDigits(double v) {
  double magnitude = std::pow(10.0, std::floor(std::log10(v)) - 1);
  return std::round(v / magnitude) * magnitude;
}

/// Fits LLaMA-3.1 RoPE scaling (rope_type llama3) with base `theta` to the
/// tables: the factor from the low-frequency columns (scaled by 1/factor),
/// the band between from the interpolated columns (their scale is linear in
/// 1/wavelen; low_freq_factor is taken as 1, which fixes the scale of the
/// three band parameters), then the common values (8 or 32; 1, 4 and 8192).
/// Every candidate is checked against every table entry; the one that fits
/// best wins. False when none fits.
bool fitLlama3(const RopeTables &t, double theta, numerics::RopeScaling &best,
               double &bestResidual) {
  std::vector<float> base = numerics::ropeInverseFrequencies(t.headDim, theta);
  int64_t half = t.half();
  // The tables' rounding (about 5e-4 for fp16, 1e-7 for fp32), from how far
  // cos^2 + sin^2 strays from 1.
  double noise = 1e-7;
  for (size_t k = 0; k < t.cosT.size(); ++k)
    noise = std::max(
        noise,
        std::fabs(t.cosT[k] * t.cosT[k] + t.sinT[k] * t.sinT[k] - 1.0) / 2);
  // Measured frequency of every index, and whether it is readable: its phase
  // moves by far more than the rounding over the rows.
  std::vector<double> freq(half, 0.0);
  std::vector<bool> readable(half, false);
  for (int64_t d = 0; d < t.cols; ++d) {
    int64_t i = t.freqIndex(d);
    if (t.halves && d >= half)
      continue;
    freq[i] = t.frequency(d);
    readable[i] = freq[i] * static_cast<double>(t.rows - 1) > 50 * noise;
  }
  // The factor: the largest base/measured ratio of a readable index (the
  // interpolated band scales by less).
  double factorEstimate = 0;
  for (int64_t i = 0; i < half; ++i)
    if (readable[i] && freq[i] > 0)
      factorEstimate = std::max(factorEstimate, base[i] / freq[i]);
  std::vector<double> factors;
  auto addFactor = [&](double f) {
    if (f > 1.0 + 1e-9 && std::isfinite(f) &&
        llvm::find(factors, f) == factors.end())
      factors.push_back(f);
  };
  if (factorEstimate > 1.05) {
    addFactor(std::round(factorEstimate));
    addFactor(std::round(factorEstimate * 2) / 2);
  }
  for (double f : {8.0, 32.0, 16.0, 4.0, 2.0, 64.0})
    addFactor(f);
  // Band parameters (low_freq_factor, high_freq_factor, original max
  // positions) for each factor: fitted, then common.
  struct Band {
    double low, high, original;
  };
  auto bandsFor = [&](double factor) {
    std::vector<Band> bands;
    // s = (original / wavelen - low) / (high - low) = a x + b, x = 1/wavelen.
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    std::vector<std::pair<double, double>> points; // (x, s)
    for (int64_t i = 0; i < half; ++i) {
      if (!readable[i])
        continue;
      double ratio = freq[i] / base[i];
      double smooth = (ratio - 1.0 / factor) / (1.0 - 1.0 / factor);
      if (smooth < 0.03 || smooth > 0.97)
        continue;
      double x = base[i] / (2.0 * M_PI);
      sx += x;
      sy += smooth;
      sxx += x * x;
      sxy += x * smooth;
      ++n;
      points.push_back({x, smooth});
    }
    double det = n * sxx - sx * sx;
    if (n >= 2 && det > 0) {
      double a = (n * sxy - sx * sy) / det, b = (sy - a * sx) / n;
      if (a > 0 && b < 0) {
        double high = 1.0 - 1.0 / b, original = -a / b;
        bands.push_back({1.0, std::round(high * 2) / 2, std::round(original)});
        bands.push_back({1.0, std::round(high * 2) / 2,
                         std::exp2(std::round(std::log2(original)))});
      }
    }
    for (double original : {8192.0, 4096.0, 16384.0, 2048.0, 32768.0})
      bands.push_back({1.0, 4.0, original});
    // Too few interpolated points for a line: a power-of-two original
    // context, and high_freq_factor from the points' s = (original x - 1) /
    // (high - 1).
    if (!points.empty())
      for (double original = 1024; original <= 131072; original *= 2) {
        double high = 0;
        for (auto [x, smooth] : points)
          high += 1.0 + (original * x - 1.0) / smooth;
        high /= static_cast<double>(points.size());
        if (high > 1.0)
          bands.push_back({1.0, std::round(high * 2) / 2, original});
      }
    return bands;
  };
  bool found = false;
  std::string mismatch;
  for (double factor : factors)
    for (const Band &band : bandsFor(factor)) {
      if (!(band.high > band.low) || !(band.original >= 1))
        continue;
      numerics::RopeScaling scaling{factor, band.low, band.high, band.original};
      double r = t.residual(
          numerics::ropeInverseFrequencies(t.headDim, theta, scaling),
          mismatch);
      if (mismatch.empty() && (!found || r < bestResidual)) {
        found = true;
        best = scaling;
        bestResidual = r;
      }
    }
  return found;
}

} // namespace

/// Checks that the tables are cos/sin(position * inv_freq[i]) at positions
/// firstPosition + row, with inv_freq[i] = theta^(-2i/head_dim) or those
/// frequencies scaled as LLaMA-3.1 does (rope_type llama3), recovers theta
/// (and the scaling) and builds sq.rope. For rotate_half the tables have
/// head_dim columns (frequency i at columns i and i + head_dim/2); for
/// interleaved, head_dim/2 (one per pair). firstPosition < 0 means
/// positionStart (the probe's past length).
bool finishRope(Raiser &raiser, const AValRef &x, const View &resultView,
                const std::vector<double> &cosT,
                const std::vector<double> &sinT, int64_t rows, int64_t cols,
                RopeLayout layout, AValRef &out, int64_t heads,
                int64_t firstPosition) {
  if (firstPosition < 0)
    firstPosition = raiser.positionStart;
  bool halves = layout == RopeLayout::RotateHalf;
  int64_t headDim = halves ? cols : 2 * cols;
  if (rows < 2 || (halves && cols % 2) || cols < 2)
    return raiser.fail(
        "RoPE needs an even head_dim and at least two positions");
  RopeTables tables{cosT, sinT, rows, cols, headDim, firstPosition, halves};
  // Theta from the frequency of column 1 (a high frequency, which LLaMA-3.1
  // scaling leaves alone).
  double f1 = tables.frequency(1);
  if (!(f1 > 0 && f1 < 1))
    return raiser.fail("cannot read a RoPE frequency from the cos/sin tables");
  double estimate = std::pow(f1, -static_cast<double>(headDim) / 2.0);
  // Prefer the estimate rounded to two significant digits (10000, 500000,
  // 1e6, ...) when it reproduces the tables.
  double candidates[] = {twoDigits(estimate), estimate};
  std::string mismatch;
  std::optional<double> theta;
  double plainResidual = 0;
  for (double c : candidates) {
    plainResidual =
        tables.residual(numerics::ropeInverseFrequencies(headDim, c), mismatch);
    if (mismatch.empty()) {
      theta = c;
      break;
    }
  }
  // Otherwise LLaMA-3.1 scaling of either theta. Tables of a few probe
  // positions may pass as plain tables when only the low frequencies are
  // scaled (their angles stay small): fp32 tables then fit the scaled
  // frequencies far better than the plain ones, which wins.
  std::optional<numerics::RopeScaling> scaling;
  if (!theta || (plainResidual > 1e-5 && rows <= 64)) {
    std::string plainMismatch = mismatch;
    double bestResidual = 0;
    std::optional<double> scaledTheta;
    for (double c : candidates) {
      numerics::RopeScaling s;
      double r;
      if (fitLlama3(tables, c, s, r) && (!scaling || r < bestResidual)) {
        scaledTheta = c;
        scaling = s;
        bestResidual = r;
      }
      if (scaling)
        break;
    }
    if (theta && scaling && !(bestResidual < plainResidual / 10))
      scaling.reset();
    else if (scaling)
      theta = scaledTheta;
    if (!theta)
      return raiser.fail(
          std::string("the cos/sin tables are not ") +
          (halves ? "rotate-half" : "interleaved") +
          " RoPE tables at positions past_length + i for any theta, with or "
          "without LLaMA-3.1 (llama3) frequency scaling (best estimate " +
          std::to_string(estimate) + "; " + plainMismatch + ")");
  }
  for (const Axis &axis : x->view)
    for (const Atom &a : axis)
      if (a.kind == AK::N && !heads)
        heads = a.size;
  if (!heads)
    return raiser.fail("RoPE on an activation without heads " +
                       viewStr(x->view));
  RopeScalingAttr scalingAttr;
  if (scaling) {
    Builder &b = raiser.builder;
    scalingAttr = RopeScalingAttr::get(
        b.getContext(), b.getF64FloatAttr(scaling->factor).getValue(),
        b.getF64FloatAttr(scaling->lowFreqFactor).getValue(),
        b.getF64FloatAttr(scaling->highFreqFactor).getValue(),
        static_cast<int64_t>(scaling->originalMaxPositions));
  }
  auto op = RopeOp::create(
      raiser.builder, raiser.loc, x->v, raiser.positions, heads,
      raiser.builder.getF64FloatAttr(*theta).getValue(), layout, scalingAttr);
  out = raiser.act(op, resultView);
  return true;
}

namespace {

/// x*cos + rotate_half(x)*sin.
bool makeRope(Raiser &raiser, const AValRef &cosTerm, const AValRef &sinTerm,
              AValRef &out) {
  AValRef x = cosTerm->x;
  if (sinTerm->x->v != x->v || viewStr(sinTerm->x->view) != viewStr(x->view))
    return raiser.fail("RoPE adds x*cos and rotate_half(y)*sin of different "
                       "activations");
  std::vector<double> cosT, sinT;
  int64_t rows, cols, rows2, cols2;
  if (!extractTable(x->view, cosTerm->c, cosT, rows, cols) ||
      !extractTable(x->view, sinTerm->c, sinT, rows2, cols2))
    return raiser.fail(
        "RoPE tables do not broadcast as [seq, head_dim] onto the "
        "heads " +
        viewStr(x->view));
  return finishRope(raiser, x, x->view, cosT, sinT, rows, cols,
                    RopeLayout::RotateHalf, out);
}

/// x * cos and rotate_half(x) * sin.
bool ropeTableMul(Raiser &, OpCall &call) {
  AValRef a, b;
  if (!call.commuted(
          [](const AValRef &x, const AValRef &y) {
            double s;
            return (x->kind == AVal::Act || x->kind == AVal::RotHalf) &&
                   y->kind == AVal::Concrete && !isScalar(y, s);
          },
          a, b))
    return call.decline();
  AValRef &out = call.out();
  out = AVal::make(a->kind == AVal::Act ? AVal::TableMul : AVal::RotTableMul);
  out->x = a->kind == AVal::Act ? a : a->x;
  out->c = b->c;
  return true;
}

/// x*cos + rotate_half(x)*sin.
bool ropeAdd(Raiser &raiser, OpCall &call) {
  AValRef a, b;
  if (!call.commutedKinds(AVal::TableMul, AVal::RotTableMul, a, b))
    return call.decline();
  return makeRope(raiser, a, b, call.out());
}

/// -x2 of rotate_half.
bool ropeNeg(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0);
  AValRef &out = call.out();
  if (a->kind != AVal::Half || !a->hi)
    return raiser.fail(std::string("Neg of ") + kindName(a->kind) +
                       ": expected -x2 in RoPE's rotate_half");
  out = AVal::make(AVal::NegHalf);
  out->x = a->x;
  return true;
}

/// The halves x1, x2 of head_dim.
bool ropeSlice(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  if (a->kind != AVal::Act)
    return raiser.fail(std::string("Slice of ") + kindName(a->kind));
  CTensor starts, ends, axes, steps;
  if (!b || !raiser.concreteOf(b, starts) || !call.input(2) ||
      !raiser.concreteOf(call.input(2), ends))
    return raiser.fail("Slice of an activation with non-constant bounds");
  int64_t rank = static_cast<int64_t>(a->view.size());
  int64_t axis = rank - 1;
  if (call.input(3)) {
    if (!raiser.concreteOf(call.input(3), axes) || axes.numel() != 1)
      return raiser.fail("Slice of an activation over several axes");
    axis = axes.intAt(0);
    if (axis < 0)
      axis += rank;
  }
  if (call.input(4) &&
      (!raiser.concreteOf(call.input(4), steps) || steps.intAt(0) != 1))
    return raiser.fail("strided Slice of an activation");
  if (axis != rank - 1 || a->view.back().size() != 1 ||
      a->view.back()[0].kind != AK::D)
    return raiser.fail("Slice of an activation laid out as " +
                       viewStr(a->view) +
                       ": expected RoPE's rotate_half over head_dim");
  int64_t d = a->view.back()[0].size;
  int64_t s = std::max<int64_t>(starts.intAt(0), -(int64_t(1) << 50)),
          e = std::clamp<int64_t>(ends.intAt(0), -(int64_t(1) << 50),
                                  int64_t(1) << 50);
  if (s < 0)
    s += d;
  if (e < 0)
    e += d;
  e = std::min(e, d);
  if (!((s == 0 && e == d / 2) || (s == d / 2 && e == d)))
    return raiser.fail("Slice [" + std::to_string(s) + ", " +
                       std::to_string(e) + ") of head_dim " +
                       std::to_string(d) +
                       ": expected the halves of RoPE's rotate_half");
  out = AVal::make(AVal::Half);
  out->x = a;
  out->hi = s != 0;
  return true;
}

/// rotate_half(x) = Concat(-x2, x1).
bool ropeConcat(Raiser &, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  if (call.in.size() == 2 && a->kind == AVal::NegHalf && b &&
      b->kind == AVal::Half && !b->hi && b->x->v == a->x->v) {
    call.out() = AVal::make(AVal::RotHalf);
    call.out()->x = a->x;
    return true;
  }
  return call.decline();
}

} // namespace

void registerRopeOps(OpTable &t) {
  t.add("", "Mul", ropeTableMul);
  t.add("", "Add", ropeAdd);
  t.add("", "Neg", ropeNeg, OpTable::Fallback);
  t.add("", "Slice", ropeSlice, OpTable::Fallback);
  t.add("", "Concat", ropeConcat);
}

} // namespace onnx_import
} // namespace sq
