//===- Pack.h - bit packing of quantized integers -----------------*- C++
//-*-===//
//
// The one packing format shared by the passes, the reference executor and the
// runtime (see !sq.packed): rows of the last dimension are packed
// independently, each padded to a whole byte; for 4 bits, element 2j of a row
// is the low nibble of byte j and element 2j+1 its high nibble. Signed values
// are stored in two's complement, unsigned ones as they are.
//
// Plain C++: no MLIR or LLVM header, so the runtime can link it.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_PACK_H
#define SQ_NUMERICS_PACK_H

#include <cstddef>
#include <cstdint>

namespace sq {
namespace numerics {

/// Bytes needed to pack `count` values of `bits` bits (4 or 8), rounded up.
size_t packedBytes(size_t count, unsigned bits);

/// Packs signed 4-bit values (each in [-8, 7]) two per byte. Returns false,
/// writing nothing, if a value is out of range. An odd count leaves the high
/// nibble of the last byte zero.
bool packInt4(const int8_t *values, size_t count, uint8_t *out);
/// Packs unsigned 4-bit values (each in [0, 15]) two per byte.
bool packUInt4(const uint8_t *values, size_t count, uint8_t *out);

/// Unpacks `count` signed 4-bit values (sign-extended to int8).
void unpackInt4(const uint8_t *in, size_t count, int8_t *values);
/// Unpacks `count` unsigned 4-bit values.
void unpackUInt4(const uint8_t *in, size_t count, uint8_t *values);

/// Packs a row-major [rows, cols] matrix of signed 4-bit values, each row
/// padded to packedBytes(cols, 4) bytes. Returns false, writing nothing, if
/// a value is out of range.
bool packInt4Rows(const int8_t *values, size_t rows, size_t cols, uint8_t *out);
/// Inverse of packInt4Rows.
void unpackInt4Rows(const uint8_t *in, size_t rows, size_t cols,
                    int8_t *values);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_PACK_H
