//===- Repack.cpp - host-side preparation of the GPU kernels' data --------===//

#include "Repack.h"

#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Pack.h"
#include "sq/Numerics/Quantize.h"

#include <algorithm>
#include <cmath>

namespace sq {
namespace cuda {

void hadamardFactor(int64_t n, uint64_t seed, int64_t &m,
                    std::vector<float> &q) {
  q.clear();
  int hm = 1;
  int64_t p = 0;
  if (numerics::splitHadamardSize(n, hm, p)) {
    m = hm;
    if (m == 1)
      return;
    // The +-1 matrix itself: the kernels recognize it (|Q[0][0]| == 1) and
    // scale by 1/sqrt(n) once, as hadamardTransformInPlace does (bit for
    // bit); an orthogonal Q would be off by one rounding per product.
    std::vector<int8_t> h = numerics::hadamardMatrix(hm);
    q.resize(m * m);
    for (int64_t i = 0; i < m * m; ++i)
      q[i] = float(h[i]);
    return;
  }
  p = n & -n;
  m = n / p;
  if (m == 1)
    return;
  std::vector<double> r = numerics::randomOrthogonalMatrix(m, seed);
  q.assign(r.begin(), r.end());
}

static int64_t roundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

QGemmPlan planQGemm(const rt::QLinearDesc &d, int major, int minor,
                    bool haveS4) {
  QGemmPlan p;
  const rt::QuantDesc &w = d.weightQuant, &a = d.actQuant;
  if (!w.symmetric || d.zeros >= 0) {
    p.reason = "asymmetric weights";
    return p;
  }
  if (w.bits != 4 && w.bits != 8) {
    p.reason = std::to_string(w.bits) + "-bit weights";
    return p;
  }
  if (!a.bits) {
    p.reason = "float activations";
    return p;
  }
  if (a.bits > 8) {
    p.reason = std::to_string(a.bits) + "-bit activations";
    return p;
  }
  int64_t k = d.k;
  if (k <= 0 || d.n <= 0 || w.group < 0 || a.group < 0 ||
      (w.group && k % w.group) || (a.group && k % a.group)) {
    p.reason = "groups that do not divide K";
    return p;
  }
  int64_t wg = w.group ? w.group : k, ag = a.group ? a.group : k;
  int64_t bs = std::min(wg, ag);
  if (std::max(wg, ag) % bs) {
    p.reason = "groups that do not nest";
    return p;
  }
  if (bs == k) { // one block per row: pad K
    p.kpad = roundUp(k, 64);
    p.blockk = p.kpad;
  } else {
    p.kpad = k;
    p.blockk = bs;
  }
  if (p.blockk % 32) {
    p.reason = "blocks of " + std::to_string(p.blockk) + " values";
    return p;
  }
  p.blocks = p.kpad / p.blockk;
  p.ablocks = ag == k ? p.blocks : ag / bs;
  p.wblocks = wg == k ? p.blocks : wg / bs;
  p.integer = true;
  bool ampere = major == 8 && (minor == 0 || minor == 6 || minor == 9);
  p.s4 = haveS4 && ampere && w.bits == 4 && a.bits <= 4 && p.blockk % 64 == 0;
  return p;
}

/// Value c of a packed row (sign-extended).
static int weightValue(const uint8_t *row, int64_t c, unsigned bits) {
  if (bits == 4) {
    int nib = (row[c / 2] >> (4 * (c % 2))) & 0xF;
    return nib >= 8 ? nib - 16 : nib;
  }
  return int(static_cast<int8_t>(row[c]));
}

void repackWeight(const uint8_t *packed, int64_t n, int64_t k, unsigned bits,
                  const QGemmPlan &plan, std::vector<uint8_t> &w,
                  std::vector<int32_t> &wsums) {
  const int64_t rowIn = int64_t(numerics::packedBytes(k, bits));
  const int64_t rowOut = plan.s4 ? plan.kpad / 2 : plan.kpad;
  w.assign(size_t(n) * rowOut, 0);
  wsums.assign(size_t(n) * plan.blocks, 0);
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t *in = packed + r * rowIn;
    uint8_t *out = w.data() + r * rowOut;
    int32_t *sums = wsums.data() + r * plan.blocks;
    if (plan.s4) // the same nibbles (k <= kpad; the tail stays zero)
      std::copy(in, in + rowIn, out);
    for (int64_t c = 0; c < k; ++c) {
      int v = weightValue(in, c, bits);
      if (!plan.s4)
        out[c] = static_cast<uint8_t>(static_cast<int8_t>(v));
      sums[c / plan.blockk] += v;
    }
    // An odd K leaves the high nibble of the last input byte zero (Pack.h).
  }
}

void dequantizeWeight(const uint8_t *packed, const float *scales,
                      const float *zeros, const rt::QLinearDesc &d,
                      std::vector<float> &out) {
  const rt::QuantDesc &wq = d.weightQuant;
  out.resize(size_t(d.n) * d.k);
  numerics::dequantizePackedRows(packed, d.n, d.k, wq.bits, wq.symmetric,
                                 wq.group, scales, zeros, out.data());
}

} // namespace cuda
} // namespace sq
