//===- Float16.cpp - fp16 / bf16 to fp32 ----------------------------------===//

#include "sq/Numerics/Float16.h"

#include <cstring>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define SQ_HAVE_F16C_PATH 1
#endif

namespace sq {
namespace numerics {

float halfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF,
           bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

#ifdef SQ_HAVE_F16C_PATH
namespace {
bool hasF16C() {
  static const bool has =
      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}

/// fp16 <-> fp32 eight at a time with the F16C instructions (round to
/// nearest even, like the scalar code); the tail goes through the scalar
/// path. Chosen at run time: the build does not assume the CPU.
__attribute__((target("avx,f16c"))) int64_t
widenHalfF16C(const char *in, int64_t count, float *out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(in + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  return i;
}

__attribute__((target("avx,f16c"))) int64_t
narrowHalfF16C(const float *in, int64_t count, char *out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + 2 * i), h);
  }
  return i;
}
/// fp32 bits to bf16 bits eight at a time, as floatToBf16 does (round to
/// nearest even; NaN made quiet).
__attribute__((target("avx2"))) inline __m128i roundBf16x8(__m256i u) {
  const __m256i absMask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absMask),
                                   _mm256_set1_epi32(0x7F800000));
  __m256i lsb =
      _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb),
      16);
  __m256i quiet =
      _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  // Eight dwords < 2^16 to eight words.
  return _mm_packus_epi32(_mm256_castsi256_si128(r),
                          _mm256_extracti128_si256(r, 1));
}

__attribute__((target("avx2,f16c"))) int64_t
halfToBf16AVX2(const char *in, int64_t count, uint16_t *out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(in + 2 * i));
    __m256i u = _mm256_castps_si256(_mm256_cvtph_ps(h));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), roundBf16x8(u));
  }
  return i;
}

__attribute__((target("avx2"))) int64_t
floatToBf16AVX2(const char *in, int64_t count, uint16_t *out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256i u =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(in + 4 * i));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), roundBf16x8(u));
  }
  return i;
}

bool hasAVX2F16C() {
  static const bool has = hasF16C() && __builtin_cpu_supports("avx2");
  return has;
}
} // namespace
#endif

void narrowToBf16(const void *data, int64_t count, FloatFormat format,
                  uint16_t *out) {
  const char *bytes = static_cast<const char *>(data);
  if (format == FloatFormat::BF16) {
    std::memcpy(out, bytes, size_t(count) * 2);
    return;
  }
  int64_t start = 0;
#ifdef SQ_HAVE_F16C_PATH
  if (hasAVX2F16C())
    start = format == FloatFormat::F16 ? halfToBf16AVX2(bytes, count, out)
                                       : floatToBf16AVX2(bytes, count, out);
#endif
  for (int64_t i = start; i < count; ++i) {
    if (format == FloatFormat::F16) {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      out[i] = floatToBf16(halfToFloat(h));
    } else {
      float f;
      std::memcpy(&f, bytes + 4 * i, 4);
      out[i] = floatToBf16(f);
    }
  }
}

int64_t countNonFinite(const void *data, int64_t count, FloatFormat format,
                       int64_t *first) {
  const char *bytes = static_cast<const char *>(data);
  int64_t n = 0;
  if (first)
    *first = -1;
  for (int64_t i = 0; i < count; ++i) {
    bool bad;
    if (format == FloatFormat::F32) {
      uint32_t bits;
      std::memcpy(&bits, bytes + 4 * i, 4);
      bad = (bits & 0x7F800000u) == 0x7F800000u;
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes + 2 * i, 2);
      bad = format == FloatFormat::F16 ? (bits & 0x7C00u) == 0x7C00u
                                       : (bits & 0x7F80u) == 0x7F80u;
    }
    if (bad && first && *first < 0)
      *first = i;
    n += bad;
  }
  return n;
}

void widenToFloat(const void *data, int64_t count, FloatFormat format,
                  float *out) {
  const char *bytes = static_cast<const char *>(data);
  if (format == FloatFormat::F32) {
    std::memcpy(out, bytes, count * sizeof(float));
    return;
  }
  int64_t start = 0;
  if (format == FloatFormat::BF16) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      uint32_t bits = uint32_t(h) << 16;
      std::memcpy(out + i, &bits, 4);
    }
    return;
  }
#ifdef SQ_HAVE_F16C_PATH
  if (hasF16C())
    start = widenHalfF16C(bytes, count, out);
#endif
  for (int64_t i = start; i < count; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * i, 2);
    out[i] = format == FloatFormat::F16 ? halfToFloat(h) : bf16ToFloat(h);
  }
}

uint16_t floatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t exp = (bits >> 23) & 0xFF, mant = bits & 0x7FFFFF;
  if (exp == 0xFF) // Inf or NaN (keep a quiet NaN bit)
    return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x200u : 0));
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31)
    return static_cast<uint16_t>(sign | 0x7C00u);
  if (e <= 0) { // subnormal half (or zero)
    if (e < -10)
      return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    int shift = 14 - e; // 24-bit mantissa to a (10 + e)-bit one
    uint32_t half = mant >> shift, rest = mant & ((1u << shift) - 1),
             halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1)))
      ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
    ++half; // may carry into the exponent, up to Inf: correct
  return static_cast<uint16_t>(sign | half);
}

void narrowFromFloat(const float *in, int64_t count, FloatFormat format,
                     void *out) {
  char *bytes = static_cast<char *>(out);
  if (format == FloatFormat::F32) {
    std::memcpy(bytes, in, count * sizeof(float));
    return;
  }
  int64_t start = 0;
#ifdef SQ_HAVE_F16C_PATH
  if (format == FloatFormat::F16 && hasF16C())
    start = narrowHalfF16C(in, count, bytes);
#endif
  for (int64_t i = start; i < count; ++i) {
    uint16_t h =
        format == FloatFormat::F16 ? floatToHalf(in[i]) : floatToBf16(in[i]);
    std::memcpy(bytes + 2 * i, &h, 2);
  }
}

} // namespace numerics
} // namespace sq
