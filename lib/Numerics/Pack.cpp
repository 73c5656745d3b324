//===- Pack.cpp - bit packing of quantized integers -----------------------===//

#include "sq/Numerics/Pack.h"

namespace sq {
namespace numerics {

size_t packedBytes(size_t count, unsigned bits) {
  return (count * bits + 7) / 8;
}

bool packInt4(const int8_t *values, size_t count, uint8_t *out) {
  for (size_t i = 0; i < count; ++i)
    if (values[i] < -8 || values[i] > 7)
      return false;
  for (size_t i = 0; i + 1 < count; i += 2)
    out[i / 2] =
        static_cast<uint8_t>((values[i] & 0xF) | ((values[i + 1] & 0xF) << 4));
  if (count % 2)
    out[count / 2] = static_cast<uint8_t>(values[count - 1] & 0xF);
  return true;
}

bool packUInt4(const uint8_t *values, size_t count, uint8_t *out) {
  for (size_t i = 0; i < count; ++i)
    if (values[i] > 15)
      return false;
  for (size_t i = 0; i + 1 < count; i += 2)
    out[i / 2] = static_cast<uint8_t>(values[i] | (values[i + 1] << 4));
  if (count % 2)
    out[count / 2] = values[count - 1];
  return true;
}

// Sign-extends the low nibble of `nibble`.
static inline int8_t signExtend4(unsigned nibble) {
  return static_cast<int8_t>(static_cast<int>(nibble ^ 0x8u) - 8);
}

void unpackInt4(const uint8_t *in, size_t count, int8_t *values) {
  for (size_t i = 0; i < count; ++i) {
    unsigned byte = in[i / 2];
    values[i] = signExtend4((i % 2) ? (byte >> 4) : (byte & 0xF));
  }
}

void unpackUInt4(const uint8_t *in, size_t count, uint8_t *values) {
  for (size_t i = 0; i < count; ++i) {
    unsigned byte = in[i / 2];
    values[i] = static_cast<uint8_t>((i % 2) ? (byte >> 4) : (byte & 0xF));
  }
}

bool packInt4Rows(const int8_t *values, size_t rows, size_t cols,
                  uint8_t *out) {
  for (size_t i = 0; i < rows * cols; ++i)
    if (values[i] < -8 || values[i] > 7)
      return false;
  size_t rowBytes = packedBytes(cols, 4);
  for (size_t r = 0; r < rows; ++r)
    packInt4(values + r * cols, cols, out + r * rowBytes);
  return true;
}

void unpackInt4Rows(const uint8_t *in, size_t rows, size_t cols,
                    int8_t *values) {
  size_t rowBytes = packedBytes(cols, 4);
  for (size_t r = 0; r < rows; ++r)
    unpackInt4(in + r * rowBytes, cols, values + r * cols);
}

} // namespace numerics
} // namespace sq
