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

namespace sq {
namespace numerics {

/// IEEE binary16 bits to float (exact, including subnormals, Inf, NaN).
float halfToFloat(uint16_t bits);
/// bfloat16 bits to float (exact).
float bf16ToFloat(uint16_t bits);

/// Storage formats of float weights.
enum class FloatFormat { F32, F16, BF16 };

/// Widens `count` little-endian values of `format` at `data` to fp32.
void widenToFloat(const void *data, int64_t count, FloatFormat format,
                  float *out);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_FLOAT16_H
