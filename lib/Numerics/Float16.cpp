//===- Float16.cpp - fp16 / bf16 to fp32 ----------------------------------===//

#include "sq/Numerics/Float16.h"

#include <cstring>

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

float bf16ToFloat(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void widenToFloat(const void *data, int64_t count, FloatFormat format,
                  float *out) {
  const char *bytes = static_cast<const char *>(data);
  if (format == FloatFormat::F32) {
    std::memcpy(out, bytes, count * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * i, 2);
    out[i] = format == FloatFormat::F16 ? halfToFloat(h) : bf16ToFloat(h);
  }
}

} // namespace numerics
} // namespace sq
