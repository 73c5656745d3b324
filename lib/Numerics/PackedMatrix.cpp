//===- PackedMatrix.cpp - frozen weights in bf16 for the dense GEMM -------===//
//
// numerics::PackedMatrix (sq/Numerics/Gemm.h): one bf16 copy of a weight,
// rows padded to 32 values, converted from fp32/f16/bf16 or viewed in place;
// the GEMM's kernels (Gemm.cpp) read it as W^T or W.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/ThreadPool.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sq {
namespace numerics {

void PackedMatrix::Free::operator()(uint16_t *p) const { std::free(p); }

PackedMatrix::PackedMatrix() = default;
PackedMatrix::~PackedMatrix() = default;
PackedMatrix::PackedMatrix(PackedMatrix &&other) noexcept
    : owned(std::move(other.owned)), base(other.base), numRows(other.numRows),
      numCols(other.numCols), rowStride(other.rowStride) {
  other.base = nullptr;
  other.numRows = other.numCols = other.rowStride = 0;
}
PackedMatrix &PackedMatrix::operator=(PackedMatrix &&other) noexcept {
  if (this != &other) {
    owned = std::move(other.owned);
    base = other.base;
    numRows = other.numRows;
    numCols = other.numCols;
    rowStride = other.rowStride;
    other.base = nullptr;
    other.numRows = other.numCols = other.rowStride = 0;
  }
  return *this;
}

size_t PackedMatrix::ownedBytes() const {
  return owned ? size_t(numRows) * size_t(rowStride) * 2 : 0;
}

PackedMatrix PackedMatrix::fromBits(const void *w, FloatFormat format,
                                    int64_t rows, int64_t cols, int64_t ld) {
  PackedMatrix pm;
  if (rows <= 0 || cols <= 0)
    return pm;
  if (ld <= 0)
    ld = cols;
  pm.numRows = rows;
  pm.numCols = cols;
  pm.rowStride = (cols + 31) / 32 * 32;
  size_t bytes = size_t(rows) * size_t(pm.rowStride) * 2;
  uint16_t *p = static_cast<uint16_t *>(std::aligned_alloc(64, bytes));
  if (!p) {
    std::fprintf(stderr, "sq gemm: out of memory (%zu bytes)\n", bytes);
    std::abort();
  }
  pm.owned.reset(p);
  pm.base = p;
  int64_t stride = pm.rowStride;
  // Rows in parallel (a 1B model's 2.5 GB are converted once at load).
  ThreadPool::global().parallelFor(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint16_t *out = p + r * stride;
      size_t bytes = size_t(bytesPerValue(format));
      narrowToBf16(static_cast<const char *>(w) + size_t(r * ld) * bytes, cols,
                   format, out);
      std::memset(out + cols, 0, (stride - cols) * 2);
    }
  });
  return pm;
}

PackedMatrix PackedMatrix::fromFloat(const float *w, int64_t rows, int64_t cols,
                                     int64_t ld) {
  return fromBits(w, FloatFormat::F32, rows, cols, ld);
}

PackedMatrix PackedMatrix::viewBF16(const uint16_t *w, int64_t rows,
                                    int64_t cols, int64_t ld) {
  PackedMatrix pm;
  if (rows <= 0 || cols <= 0)
    return pm;
  pm.base = w;
  pm.numRows = rows;
  pm.numCols = cols;
  pm.rowStride = ld > 0 ? ld : cols;
  return pm;
}

bool PackedMatrix::setRows(int64_t row0, int64_t count, const float *src,
                           int64_t ld) {
  if (!owned || row0 < 0 || count < 0 || row0 + count > numRows)
    return false;
  if (ld <= 0)
    ld = numCols;
  uint16_t *p = owned.get();
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < numCols; ++c)
      p[(row0 + r) * rowStride + c] = floatToBf16(src[r * ld + c]);
  return true;
}

} // namespace numerics
} // namespace sq
