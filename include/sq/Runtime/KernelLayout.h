//===- KernelLayout.h - the CPU kernels' weight layout -----------*- C++
//-*-===//
//
// The layout the CPU GEMM/GEMV kernels (lib/Runtime/CPU/QGemm.cpp) read a
// quantized weight [N, K] in, and the code that builds it from the
// !sq.packed rows of lib/Numerics/Pack.h. One implementation for both
// sides: the CPU lowering (lib/Conversion/Program.cpp) writes it into the
// weights sidecar at compile time, so that the runtime maps it as it is;
// the runtime builds it itself only where it has no such entry (unit tests,
// benchmarks). Plain C++ (no MLIR/LLVM); compiled into SQModelFormat.
//
// One entry is three arrays, each starting on a 64-byte boundary (their
// sizes are multiples of 256 bytes), in the byte order of the machine
// (little-endian x86):
//
//  * data: N in panels of 64 output columns (the last one padded with zero
//    weights), K padded to kPadded (a multiple of 64) with zero weights and
//    cut in chunks of 8 values; a panel is stored contiguously, chunk after
//    chunk.
//     - int4: a chunk is 4 x 64 bytes; in the i-th 64 bytes, dword l is
//       column 16 i + l and its byte t holds w[k0 + t] + 8 in the low nibble
//       and w[k0 + 4 + t] + 8 in the high nibble (biased to [0, 15]).
//     - int8: a chunk is 2 x 4 x 64 bytes, the same with one k4 step per
//       256 bytes and the signed values as they are.
//  * blockSums: int32 [panels, blocks, 64], the sum of w over each kernel
//    block of K (blockSize values: the finer of the weight's and the
//    activation's groups; the last block runs to kPadded);
//  * blockScales: fp32 [panels, blocks, 64], the weight scale of each block.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_RUNTIME_KERNELLAYOUT_H
#define SQ_RUNTIME_KERNELLAYOUT_H

#include <cstdint>
#include <string>

namespace sq {
namespace rt {

struct QLinearDesc;

constexpr int64_t kKernelPanel = 64; // output columns per panel
constexpr int64_t kKernelChunk = 8;  // K values per chunk

/// The shape of one weight in the kernels' layout.
struct KernelLayout {
  int64_t n = 0, k = 0;
  int64_t kPadded = 0;   // K rounded up to a multiple of 64
  unsigned bits = 4;     // 4 or 8, signed symmetric
  int64_t group = 0;     // K values per weight scale (0: per channel)
  int64_t actGroup = 0;  // the activation's group along K (0: per token)
  int64_t blockSize = 0; // K values per kernel block
  int64_t panels = 0;    // ceil(N / 64)
  int64_t blocks = 0;    // K / blockSize

  int64_t panelBytes() const;
  uint64_t dataBytes() const;
  uint64_t sumsBytes() const;   // blockSums
  uint64_t scalesBytes() const; // blockScales
  /// The whole entry: data, blockSums, blockScales.
  uint64_t bytes() const { return dataBytes() + sumsBytes() + scalesBytes(); }
};

/// Plans the layout of a weight [n, k] of `bits` with scales per
/// `weightGroup` values of K (0: per channel) for activations quantized per
/// `actGroup` (0: per token). False with `error` when the shape or the
/// groups do not fit (a group that does not divide K, groups that do not
/// nest, bits other than 4 and 8).
bool planKernelLayout(int64_t n, int64_t k, unsigned bits, int64_t weightGroup,
                      int64_t actGroup, KernelLayout &out, std::string &error);

/// The entry's size for a weight [n, k] of `bits` in kernel blocks of
/// `blockSize` (which divides k): what the sidecar's manifest implies.
uint64_t kernelLayoutBytes(int64_t n, int64_t k, unsigned bits,
                           int64_t blockSize);

/// Whether the CPU runtime runs quantized linear `d` on the integer kernels
/// (symmetric 4- or 8-bit weights without zero points, quantized
/// activations, groups that nest), and if so its layout. The compiler
/// writes the layout of exactly these into the sidecar.
bool integerPathLayout(const QLinearDesc &d, KernelLayout &out);

/// Writes the layout of `packed` (rows of packedBytes(K, bits) bytes, the
/// Pack.h format, two's complement) and `scales` (fp32 [N, K / group]) to
/// `dst`, layout.bytes() bytes (every byte written, padding zeroed).
void writeKernelLayout(const KernelLayout &layout, const uint8_t *packed,
                       const float *scales, uint8_t *dst);

} // namespace rt
} // namespace sq

#endif // SQ_RUNTIME_KERNELLAYOUT_H
