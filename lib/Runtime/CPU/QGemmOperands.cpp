//===- QGemmOperands.cpp - the operands of the integer GEMM ---------------===//
//
// What qgemm (QGemm.cpp) multiplies: weights in the kernels' layout
// (packWeight builds an owned copy, viewPackedWeight points into the mapped
// sidecar; sq/Runtime/KernelLayout.h) and activations quantized per token or
// group into unsigned codes (quantizeActivations). Split from QGemm.cpp.
//
//===----------------------------------------------------------------------===//

#include "QGemm.h"

#include "sq/Numerics/Quantize.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#define SQ_X86 1
#include <immintrin.h>
#define SQ_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define SQ_X86 0
#endif

namespace sq {
namespace rt {

namespace {
int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
} // namespace

//===----------------------------------------------------------------------===//
// Weights.
//===----------------------------------------------------------------------===//

bool packWeight(const uint8_t *packed, const float *scales, int64_t n,
                int64_t k, unsigned bits, int64_t weightGroup, int64_t actGroup,
                PackedWeight &out, std::string &error) {
  KernelLayout layout;
  if (!planKernelLayout(n, k, bits, weightGroup, actGroup, layout, error))
    return false;
  if (!packed || !scales) {
    error = "null weight data or scales";
    return false;
  }
  uint64_t bytes = layout.bytes();
  void *memory = std::aligned_alloc(64, roundUp(int64_t(bytes), 64));
  if (!memory) {
    error = "out of memory for a packed weight of " + std::to_string(bytes) +
            " bytes";
    return false;
  }
  std::shared_ptr<void> owned(memory, std::free);
  writeKernelLayout(layout, packed, scales, static_cast<uint8_t *>(memory));
  if (!viewPackedWeight(layout, static_cast<const uint8_t *>(memory), bytes,
                        out, error))
    return false;
  out.owned = std::move(owned);
  return true;
}

bool viewPackedWeight(const KernelLayout &layout, const uint8_t *bytes,
                      uint64_t size, PackedWeight &out, std::string &error) {
  if (size != layout.bytes()) {
    error = "kernel layout of " + std::to_string(size) + " bytes, expected " +
            std::to_string(layout.bytes());
    return false;
  }
  if (reinterpret_cast<uintptr_t>(bytes) % 64) {
    error = "kernel layout not 64-byte aligned";
    return false;
  }
  out = PackedWeight();
  static_cast<KernelLayout &>(out) = layout;
  out.data = bytes;
  out.blockSums = reinterpret_cast<const int32_t *>(bytes + layout.dataBytes());
  out.blockScales = reinterpret_cast<const float *>(bytes + layout.dataBytes() +
                                                    layout.sumsBytes());
  return true;
}

//===----------------------------------------------------------------------===//
// Activations.
//===----------------------------------------------------------------------===//

#if SQ_X86
/// codes = quantizeValue(x, scale, zero) + offset, 16 at a time: the same
/// float division, round-half-even, add and clamp as the scalar code.
SQ_TARGET_VNNI static void quantizeGroupAVX512(const float *x, int64_t len,
                                               float scale, float zero,
                                               float qmin, float qmax,
                                               int32_t offset, uint8_t *codes) {
  const __m512 vs = _mm512_set1_ps(scale), vz = _mm512_set1_ps(zero);
  const __m512 lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
  const __m512i off = _mm512_set1_epi32(offset);
  for (int64_t i = 0; i < len; i += 16) {
    __mmask16 mask =
        len - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (len - i)) - 1);
    __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(mask, x + i), vs);
    q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, vz), lo), hi);
    __m512i c = _mm512_add_epi32(_mm512_cvttps_epi32(q), off);
    _mm512_mask_cvtepi32_storeu_epi8(codes + i, mask, c);
  }
}
#endif

static void quantizeRows(const float *x, int64_t r0, int64_t r1, int64_t k,
                         const numerics::QuantGrid &grid, int64_t g,
                         int64_t groups, int32_t offset, QuantizedActs &out) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *xr = x + r * k;
    uint8_t *codes = out.codes.data() + r * out.kPadded;
    for (int64_t gi = 0; gi < groups; ++gi) {
      int64_t begin = gi * g, len = std::min(g, k - begin);
      float scale, zero;
      numerics::groupScale(xr + begin, len, grid, 1.0, scale, zero);
#if SQ_X86
      static const bool avx512 = kernelPathSupported(KernelPath::AVX512VNNI);
      if (avx512)
        quantizeGroupAVX512(xr + begin, len, scale, zero, float(grid.qmin()),
                            float(grid.qmax()), offset, codes + begin);
      else
#endif
        for (int64_t i = 0; i < len; ++i)
          codes[begin + i] = static_cast<uint8_t>(
              numerics::quantizeValue(xr[begin + i], scale, zero, grid) +
              offset);
      out.scales[r * groups + gi] = scale;
      out.zeros[r * groups + gi] =
          grid.symmetric ? offset : static_cast<int32_t>(zero);
    }
  }
}

void quantizeActivations(const float *x, int64_t m, int64_t k, unsigned bits,
                         bool symmetric, int64_t group, double clip,
                         QuantizedActs &out, ThreadPool *pool) {
  numerics::QuantGrid grid;
  grid.bits = bits;
  grid.symmetric = symmetric;
  int64_t g = group > 0 && group < k ? group : k;
  grid.group = g;
  grid.clip = clip;
  int64_t groups = (k + g - 1) / g;
  out.m = m;
  out.k = k;
  // The row stride: K rounded up to 64, plus 64 when that is a multiple of
  // 1 KiB, so that the rows of a tile (16 rows for AMX, 6 for VNNI) do not
  // all fall into the same L1 set (4 KiB aliasing: with K = 4096 the AMX
  // tiles ran at 40% of their speed).
  out.kPadded = roundUp(k, 64);
  if (out.kPadded % 1024 == 0)
    out.kPadded += 64;
  out.group = g == k ? 0 : g;
  out.codes.assign(m * out.kPadded, 0);
  out.scales.assign(m * groups, 1.0f);
  out.zeros.assign(m * groups, 0);
  int32_t offset = symmetric ? int32_t(1) << (bits - 1) : 0;
  if (pool && m > 1)
    pool->parallelFor(m, [&](int64_t r0, int64_t r1) {
      quantizeRows(x, r0, r1, k, grid, g, groups, offset, out);
    });
  else
    quantizeRows(x, 0, m, k, grid, g, groups, offset, out);
}

} // namespace rt
} // namespace sq
