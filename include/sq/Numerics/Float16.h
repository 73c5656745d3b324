//===- Float16.h - fp16 / bf16 to fp32 ---------------------------*- C++
//-*-===//
//
// The one conversion used by the importer (constants) and the executor
// (weights). Plain C++.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_FLOAT16_H
#define SQ_NUMERICS_FLOAT16_H

#include <cstdint>
#include <cstring>

namespace sq {
namespace numerics {

/// IEEE binary16 bits to float (exact, including subnormals, Inf, NaN).
float halfToFloat(uint16_t bits);
/// bfloat16 bits to float (exact). Inline: the bf16 GEMM's packers and
/// scalar path call it per element.
inline float bf16ToFloat(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Storage formats of float weights.
enum class FloatFormat { F32, F16, BF16 };

/// Widens `count` little-endian values of `format` at `data` to fp32.
void widenToFloat(const void *data, int64_t count, FloatFormat format,
                  float *out);

/// float to IEEE binary16 bits, rounding to nearest even (overflow to Inf,
/// subnormals kept, NaN stays NaN).
uint16_t floatToHalf(float f);
/// float to bfloat16 bits, rounding to nearest even (NaN stays NaN, made
/// quiet). Inline for the same reason as bf16ToFloat.
inline uint16_t floatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    return uint16_t((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

/// Rounds `count` little-endian values of `format` at `data` to bf16 bits
/// at `out`, exactly as floatToBf16(value) (AVX2 where the CPU has it).
void narrowToBf16(const void *data, int64_t count, FloatFormat format,
                  uint16_t *out);

/// Narrows `count` fp32 values to `format` at `out` (little-endian).
void narrowFromFloat(const float *in, int64_t count, FloatFormat format,
                     void *out);

/// Counts the NaN/Inf values among `count` little-endian values of `format`
/// at `data`; `first` (when given) gets the index of the first one, or -1.
int64_t countNonFinite(const void *data, int64_t count, FloatFormat format,
                       int64_t *first = nullptr);

/// Bytes per value of `format`.
inline int bytesPerValue(FloatFormat format) {
  return format == FloatFormat::F32 ? 4 : 2;
}

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_FLOAT16_H
