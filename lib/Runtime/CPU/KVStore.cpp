//===- KVStore.cpp - the quantized KV cache of the CPU runtime ------------===//
//
// KVStore (Ops.h): allocation in row-major or tiled layout, append
// (quantization of new keys/values: scalar and AVX2 paths, the same codes),
// read, and the dequantization of cache rows that attention (Attention.cpp)
// shares: scalar, AVX2 and AVX-512 paths with the same bits
// (unittests/Runtime/AttentionTest.cpp).
//
//===----------------------------------------------------------------------===//

#include "Ops.h"

#include "sq/Numerics/Quantize.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sq {
namespace rt {

//===----------------------------------------------------------------------===//
// KV cache
//===----------------------------------------------------------------------===//

KVStore::~KVStore() {
  std::free(codes);
  std::free(floats);
  std::free(scales);
  std::free(zeros);
}

bool KVStore::allocate(int64_t b, int64_t cap, int64_t f, const QuantDesc &q,
                       bool tile) {
  batch = b;
  features = f;
  quant = q;
  tiled = tile && q.bits && q.bits <= 4;
  capacity = tiled ? (cap + kKVTile - 1) / kKVTile * kKVTile : cap;
  size_t rows = size_t(b) * size_t(capacity);
  if (!q.bits) {
    floats = static_cast<float *>(std::malloc(rows * f * sizeof(float)));
    return floats != nullptr;
  }
  group = q.group ? q.group : f;
  groups = f / group;
  if (tiled) {
    // Zeroed: a partial tile's lanes past the last token are read (and
    // ignored) by the vector kernels.
    rowBytes = 0;
    codes = static_cast<uint8_t *>(std::calloc(rows / kKVTile * f * 8, 1));
    scales = static_cast<float *>(std::calloc(rows * groups, sizeof(float)));
    zeros = static_cast<float *>(std::calloc(rows * groups, sizeof(float)));
    return codes && scales && zeros;
  }
  rowBytes = q.bits <= 4 ? (f + 1) / 2 : f;
  codes = static_cast<uint8_t *>(std::malloc(rows * rowBytes));
  scales = static_cast<float *>(std::malloc(rows * groups * sizeof(float)));
  zeros = static_cast<float *>(std::malloc(rows * groups * sizeof(float)));
  return codes && scales && zeros;
}

uint64_t KVStore::bytes() const {
  uint64_t rows = uint64_t(batch) * capacity;
  if (!quant.bits)
    return rows * features * 4;
  return (tiled ? rows * features / 2 : rows * rowBytes) + rows * 8 * groups;
}

namespace {

/// The code stored for one value: numerics::quantizeValue, offset by
/// 2^(bits-1) when signed (symmetric).
inline uint8_t kvCode(float x, float scale, float zero,
                      const numerics::QuantGrid &grid) {
  int64_t v = numerics::quantizeValue(x, scale, zero, grid);
  return static_cast<uint8_t>(
      grid.symmetric ? v + (int64_t(1) << (grid.bits - 1)) : v);
}

/// Stores the codes of values [c0, c0 + n) of one group into `dst` (the
/// row's code bytes, zeroed beforehand for <= 4 bits).
inline void kvCodesScalar(const float *x, int64_t c0, int64_t n, float scale,
                          float zero, const numerics::QuantGrid &grid,
                          uint8_t *dst) {
  for (int64_t c = c0; c < c0 + n; ++c) {
    uint8_t u = kvCode(x[c], scale, zero, grid);
    if (grid.bits <= 4)
      dst[c / 2] |= uint8_t(u << (4 * (c % 2)));
    else
      dst[c] = u;
  }
}

#if defined(__x86_64__)
/// The codes of 8 values (kvCode, masked to a byte as its uint8_t cast):
/// the same division, round to nearest (current mode, as nearbyint), zero
/// point, clamp and truncation. std::min(std::max(q, lo), hi): max_ps and
/// min_ps return their second operand when the comparison fails, as
/// std::max/min return their first.
__attribute__((target("avx2,fma"))) inline __m256i
codes8AVX2(const float *p, __m256 vs, __m256 vz, __m256 lo, __m256 hi,
           __m256i off) {
  __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs),
                             _MM_FROUND_CUR_DIRECTION);
  q = _mm256_add_ps(q, vz);
  q = _mm256_min_ps(hi, _mm256_max_ps(lo, q));
  return _mm256_and_si256(_mm256_add_epi32(_mm256_cvttps_epi32(q), off),
                          _mm256_set1_epi32(0xFF));
}

/// kvCodesScalar, 16 values at a time: the same division, round to nearest
/// (current mode, as nearbyint), zero point, clamp (max then min, with
/// std::max/min's operand order) and truncation.
__attribute__((target("avx2,fma"))) void
kvCodesAVX2(const float *x, int64_t c0, int64_t n, float scale, float zero,
            const numerics::QuantGrid &grid, uint8_t *dst) {
  bool nibbles = grid.bits <= 4;
  int64_t c = c0, end = c0 + n;
  if (nibbles && (c & 1) && c < end) {
    kvCodesScalar(x, c, 1, scale, zero, grid, dst);
    ++c;
  }
  const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
  const __m256 lo = _mm256_set1_ps(float(grid.qmin())),
               hi = _mm256_set1_ps(float(grid.qmax()));
  const __m256i off =
      _mm256_set1_epi32(grid.symmetric ? (1 << (grid.bits - 1)) : 0);
  for (; c + 16 <= end; c += 16) {
    __m256i w = _mm256_packus_epi32(codes8AVX2(x + c, vs, vz, lo, hi, off),
                                    codes8AVX2(x + c + 8, vs, vz, lo, hi, off));
    w = _mm256_permute4x64_epi64(w, 0xD8); // 16 x u16 in order
    __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w),
                                 _mm256_extracti128_si256(w, 1));
    if (!nibbles) {
      _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + c), b);
      continue;
    }
    // Byte k = code 2k | code (2k + 1) << 4.
    __m128i pair = _mm_or_si128(b, _mm_srli_epi16(b, 4));
    pair = _mm_and_si128(pair, _mm_set1_epi16(0xFF));
    _mm_storel_epi64(reinterpret_cast<__m128i *>(dst + c / 2),
                     _mm_packus_epi16(pair, pair));
  }
  kvCodesScalar(x, c, end - c, scale, zero, grid, dst);
}

bool haveAVX2() {
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
}
bool haveAVX512() {
  static const bool avx512 = haveAVX2() && __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  return avx512;
}
#else
bool haveAVX2() { return false; }
bool haveAVX512() { return false; }
#endif

} // namespace

/// The dequantization path for a `simd` level (Ops.h).
int dequantPath(int simd) {
  if (simd <= 0 || !haveAVX2())
    return 0;
  return simd >= 2 && haveAVX512() ? 2 : 1;
}

namespace {

/// (u - offset - zero) * scale for the codes [c0, c0 + n) of one group.
inline void dequantScalar(const uint8_t *src, int64_t c0, int64_t n,
                          unsigned bits, int64_t offset, float zero,
                          float scale, float *o) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = c0 + i;
    int64_t u = bits <= 4 ? (src[c / 2] >> (4 * (c % 2))) & 0xF : src[c];
    o[i] = (float(u - offset) - zero) * scale;
  }
}

#if defined(__x86_64__)
/// (u - offset - zero) * scale for the 8 codes in the low bytes.
__attribute__((target("avx2,fma"))) inline void
dequant8AVX2(__m128i bytes8, __m256i off, __m256 vz, __m256 vs, float *p) {
  __m256i u = _mm256_sub_epi32(_mm256_cvtepu8_epi32(bytes8), off);
  _mm256_storeu_ps(p,
                   _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(u), vz), vs));
}

/// dequantScalar, 16 codes at a time (the same integer subtraction, exact
/// conversion, subtraction and multiplication).
__attribute__((target("avx2,fma"))) void
dequantAVX2(const uint8_t *src, int64_t c0, int64_t n, unsigned bits,
            int64_t offset, float zero, float scale, float *o) {
  int64_t i = 0;
  bool nibbles = bits <= 4;
  if (nibbles && (c0 & 1) && n > 0) {
    dequantScalar(src, c0, 1, bits, offset, zero, scale, o);
    i = 1;
  }
  const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zero);
  const __m256i off = _mm256_set1_epi32(int(offset));
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (; i + 16 <= n; i += 16) {
    int64_t c = c0 + i;
    __m128i codes;
    if (nibbles) {
      __m128i by =
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(src + c / 2));
      codes = _mm_unpacklo_epi8(_mm_and_si128(by, low4),
                                _mm_and_si128(_mm_srli_epi16(by, 4), low4));
    } else {
      codes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + c));
    }
    dequant8AVX2(codes, off, vz, vs, o + i);
    dequant8AVX2(_mm_srli_si128(codes, 8), off, vz, vs, o + i + 8);
  }
  dequantScalar(src, c0 + i, n - i, bits, offset, zero, scale, o + i);
}
#endif

#if defined(__x86_64__)
/// dequantScalar for <= 4-bit codes, 16 at a time through a table: entry u
/// of the 16-entry table is (u - offset - zero) * scale computed as
/// dequantScalar does (the same bits), and vpermps looks the codes up (it
/// reads the low 4 bits of each index: the byte for an even code, the byte
/// shifted right by 4 for an odd one).
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void
dequantNibblesAVX512(const uint8_t *src, int64_t c0, int64_t n, int64_t offset,
                     float zero, float scale, float *o) {
  int64_t i = 0;
  if ((c0 & 1) && n > 0) {
    dequantScalar(src, c0, 1, 4, offset, zero, scale, o);
    i = 1;
  }
  const __m512i iota =
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 table =
      _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(
                                      iota, _mm512_set1_epi32(int(offset)))),
                                  _mm512_set1_ps(zero)),
                    _mm512_set1_ps(scale));
  const __m512i shifts =
      _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
  for (; i + 32 <= n; i += 32) {
    const uint8_t *p = src + (c0 + i) / 2;
    __m128i by = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    __m512i i0 = _mm512_srlv_epi32(
        _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(by, by)), shifts);
    __m512i i1 = _mm512_srlv_epi32(
        _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(by, by)), shifts);
    _mm512_storeu_ps(o + i, _mm512_permutexvar_ps(i0, table));
    _mm512_storeu_ps(o + i + 16, _mm512_permutexvar_ps(i1, table));
  }
  for (; i + 16 <= n; i += 16) {
    __m128i by =
        _mm_loadl_epi64(reinterpret_cast<const __m128i *>(src + (c0 + i) / 2));
    __m512i i0 = _mm512_srlv_epi32(
        _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(by, by)), shifts);
    _mm512_storeu_ps(o + i, _mm512_permutexvar_ps(i0, table));
  }
  dequantScalar(src, c0 + i, n - i, 4, offset, zero, scale, o + i);
}
#endif

} // namespace

/// Features [f0, f0 + nf) of cache row `row` as fp32, group by group, on
/// dequantization path `path` (dequantPath).
void dequantRow(const KVStore::Layout &s, size_t row, int64_t f0, int64_t nf,
                float *out, int path) {
  if (!s.quant.bits) {
    std::memcpy(out, s.floats + row * s.features + f0, nf * sizeof(float));
    return;
  }
  int64_t offset = s.quant.symmetric ? (int64_t(1) << (s.quant.bits - 1)) : 0;
  if (s.tiled) {
    for (int64_t c = f0; c < f0 + nf; ++c) {
      int64_t g = c / s.group;
      out[c - f0] =
          (float(int64_t(s.code(row, c)) - offset) - s.zeros[s.param(row, g)]) *
          s.scales[s.param(row, g)];
    }
    return;
  }
  const uint8_t *src = s.codes + row * s.rowBytes;
  for (int64_t c = f0; c < f0 + nf;) {
    int64_t g = c / s.group, end = std::min((g + 1) * s.group, f0 + nf);
    float zero = s.zeros[s.param(row, g)], scale = s.scales[s.param(row, g)];
#if defined(__x86_64__)
    if (path == 2 && s.quant.bits <= 4)
      dequantNibblesAVX512(src, c, end - c, offset, zero, scale,
                           out + (c - f0));
    else if (path >= 1)
      dequantAVX2(src, c, end - c, s.quant.bits, offset, zero, scale,
                  out + (c - f0));
    else
#endif
      dequantScalar(src, c, end - c, s.quant.bits, offset, zero, scale,
                    out + (c - f0));
    (void)path;
    c = end;
  }
}

/// Prefetches what dequantRow(row, f0, nf) reads: rows of one KV head are a
/// stride apart (codes, scales and zeros in three arrays), which the
/// hardware prefetchers do not follow, so a job asks for the next tile's
/// rows while it works on the current one.
void prefetchRow(const KVStore::Layout &s, size_t row, int64_t f0, int64_t nf) {
  auto lines = [](const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    for (size_t i = 0; i < bytes; i += 64)
      __builtin_prefetch(c + i);
    __builtin_prefetch(c + bytes - 1);
  };
  if (nf <= 0)
    return;
  if (!s.quant.bits) {
    lines(s.floats + row * s.features + f0, nf * sizeof(float));
    return;
  }
  if (s.tiled) // attentionJobTiled prefetches whole tiles itself
    return;
  bool nibbles = s.quant.bits <= 4;
  lines(s.codes + row * s.rowBytes + (nibbles ? f0 / 2 : f0),
        nibbles ? (nf + 1) / 2 : nf);
  int64_t g0 = f0 / s.group, g1 = (f0 + nf - 1) / s.group;
  lines(s.scales + row * s.groups + g0, (g1 - g0 + 1) * sizeof(float));
  lines(s.zeros + row * s.groups + g0, (g1 - g0 + 1) * sizeof(float));
}

void KVStore::append(int64_t b, int64_t at, const float *in, int64_t count,
                     int simd) {
  bool avx2 = simd > 0 && haveAVX2();
  for (int64_t t = 0; t < count; ++t) {
    size_t row = size_t(b) * capacity + at + t;
    const float *x = in + t * features;
    if (!quant.bits) {
      std::memcpy(floats + row * features, x, features * sizeof(float));
      continue;
    }
    numerics::QuantGrid grid;
    grid.bits = quant.bits;
    grid.symmetric = quant.symmetric;
    grid.clip = quant.clip;
    // A tiled store's codes go through a row-major row, then into the tile.
    static thread_local std::vector<uint8_t> tiledRow;
    if (tiled && tiledRow.size() < size_t(features + 1) / 2)
      tiledRow.resize((features + 1) / 2);
    uint8_t *dst = tiled ? tiledRow.data() : codes + row * rowBytes;
    if (quant.bits <= 4)
      std::memset(dst, 0, tiled ? (features + 1) / 2 : rowBytes);
    for (int64_t g = 0; g < groups; ++g) {
      float scale, zero;
      numerics::groupScale(x + g * group, group, grid, 1.0, scale, zero);
      size_t param = layout().param(row, g);
      scales[param] = scale;
      zeros[param] = zero;
#if defined(__x86_64__)
      if (avx2) {
        kvCodesAVX2(x, g * group, group, scale, zero, grid, dst);
        continue;
      }
#endif
      kvCodesScalar(x, g * group, group, scale, zero, grid, dst);
    }
    if (tiled) {
      // Token l of the tile: byte l % 8 of each feature's 8, the low nibble
      // for l < 8, the high one for l >= 8.
      uint8_t *tile = codes + (row / kKVTile) * size_t(features) * 8 + row % 8;
      unsigned shift = 4 * ((row % kKVTile) / 8);
      uint8_t keep = uint8_t(0xF0 >> shift);
      for (int64_t c = 0; c < features; ++c) {
        uint8_t u = (dst[c / 2] >> (4 * (c % 2))) & 0xF;
        tile[c * 8] = uint8_t((tile[c * 8] & keep) | (u << shift));
      }
    }
  }
}

void KVStore::read(int64_t b, int64_t begin, int64_t end, int64_t f0,
                   int64_t nf, float *out, int simd) const {
  int path = dequantPath(simd);
  Layout s = layout();
  for (int64_t t = begin; t < end; ++t)
    dequantRow(s, size_t(b) * capacity + t, f0, nf, out + (t - begin) * nf,
               path);
}

} // namespace rt
} // namespace sq
