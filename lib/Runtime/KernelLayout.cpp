//===- KernelLayout.cpp - the CPU kernels' weight layout ------------------===//

#include "sq/Runtime/KernelLayout.h"
#include "sq/Numerics/Pack.h"
#include "sq/Runtime/ModelFormat.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace sq {
namespace rt {

static int64_t chunkBytes(unsigned bits) { return bits == 4 ? 256 : 512; }

int64_t KernelLayout::panelBytes() const {
  return kPadded / kKernelChunk * chunkBytes(bits);
}
uint64_t KernelLayout::dataBytes() const {
  return uint64_t(panels) * uint64_t(panelBytes());
}
uint64_t KernelLayout::sumsBytes() const {
  return uint64_t(panels) * uint64_t(blocks) * kKernelPanel * 4;
}
uint64_t KernelLayout::scalesBytes() const { return sumsBytes(); }

uint64_t kernelLayoutBytes(int64_t n, int64_t k, unsigned bits,
                           int64_t blockSize) {
  KernelLayout l;
  l.n = n;
  l.k = k;
  l.kPadded = (k + 63) / 64 * 64;
  l.bits = bits;
  l.blockSize = blockSize;
  l.panels = (n + kKernelPanel - 1) / kKernelPanel;
  l.blocks = k / blockSize;
  return l.bytes();
}

bool planKernelLayout(int64_t n, int64_t k, unsigned bits, int64_t weightGroup,
                      int64_t actGroup, KernelLayout &out, std::string &error) {
  if (n <= 0 || k <= 0) {
    error = "weight shape must be positive";
    return false;
  }
  if (bits != 4 && bits != 8) {
    error = "weights must have 4 or 8 bits, not " + std::to_string(bits);
    return false;
  }
  auto normalize = [&](int64_t g, const char *what) -> int64_t {
    if (g < 0 || (g > 0 && k % g)) {
      error = std::string(what) + " group " + std::to_string(g) +
              " does not divide K = " + std::to_string(k);
      return -1;
    }
    return g == 0 ? k : g;
  };
  int64_t wg = normalize(weightGroup, "weight");
  if (wg < 0)
    return false;
  int64_t ag = normalize(actGroup, "activation");
  if (ag < 0)
    return false;
  int64_t bs = std::min(wg, ag);
  if (std::max(wg, ag) % bs) {
    error = "weight group " + std::to_string(wg) + " and activation group " +
            std::to_string(ag) + " do not nest";
    return false;
  }
  out = KernelLayout();
  out.n = n;
  out.k = k;
  out.kPadded = (k + 63) / 64 * 64;
  out.bits = bits;
  out.group = wg == k ? 0 : wg;
  out.actGroup = ag == k ? 0 : ag;
  out.blockSize = bs;
  out.blocks = k / bs;
  out.panels = (n + kKernelPanel - 1) / kKernelPanel;
  return true;
}

bool integerPathLayout(const QLinearDesc &d, KernelLayout &out) {
  std::string error;
  return d.weightQuant.symmetric && d.zeros < 0 && d.actQuant.bits &&
         (d.weightQuant.bits == 4 || d.weightQuant.bits == 8) &&
         planKernelLayout(d.n, d.k, d.weightQuant.bits, d.weightQuant.group,
                          d.actQuant.group, out, error);
}

void writeKernelLayout(const KernelLayout &l, const uint8_t *packed,
                       const float *scales, uint8_t *dst) {
  std::memset(dst, 0, l.bytes());
  const int64_t n = l.n, k = l.k, bits = l.bits, bs = l.blockSize;
  const int64_t wg = l.group ? l.group : k;
  const int64_t wGroups = k / wg;
  const int64_t chunks = l.kPadded / kKernelChunk;
  const int64_t panelBytes = l.panelBytes();
  uint8_t *data = dst;
  // Through memcpy: dst need not be aligned for int32/float stores.
  uint8_t *sums = dst + l.dataBytes();
  uint8_t *blockScales = sums + l.sumsBytes();

  const size_t rowBytes = numerics::packedBytes(k, bits);
  std::vector<int8_t> row(l.kPadded, 0);
  for (int64_t nn = 0; nn < l.panels * kKernelPanel; ++nn) {
    int64_t panel = nn / kKernelPanel, col = nn % kKernelPanel;
    std::fill(row.begin(), row.end(), 0);
    if (nn < n) {
      if (bits == 4)
        numerics::unpackInt4(packed + nn * rowBytes, k, row.data());
      else
        std::memcpy(row.data(), packed + nn * rowBytes, k);
      for (int64_t b = 0; b < l.blocks; ++b) {
        int32_t sum = 0;
        for (int64_t kk = b * bs; kk < (b + 1) * bs; ++kk)
          sum += row[kk];
        int64_t at = (panel * l.blocks + b) * kKernelPanel + col;
        float scale = scales[nn * wGroups + b * bs / wg];
        std::memcpy(sums + 4 * at, &sum, 4);
        std::memcpy(blockScales + 4 * at, &scale, 4);
      }
    }
    uint8_t *p = data + panel * panelBytes;
    for (int64_t c = 0; c < chunks; ++c) {
      const int8_t *v = row.data() + c * kKernelChunk;
      if (bits == 4) {
        uint8_t *d = p + c * 256 + col * 4;
        for (int t = 0; t < 4; ++t)
          d[t] = static_cast<uint8_t>((v[t] + 8) | ((v[t + 4] + 8) << 4));
      } else {
        for (int h = 0; h < 2; ++h)
          for (int t = 0; t < 4; ++t)
            p[c * 512 + h * 256 + col * 4 + t] =
                static_cast<uint8_t>(v[h * 4 + t]);
      }
    }
  }
}

} // namespace rt
} // namespace sq
