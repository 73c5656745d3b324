//===- Weights.cpp - tensor data into concrete values and sq.weight -------===//
//
// The raiser's access to tensor bytes: decoding small tensors into concrete
// values (shape constants, cos/sin caches), and Raiser::weightValue, which
// checks a weight (element type, NaN/Inf), copies it into an sq.weight
// resource (transposing [out, in] MatMul weights in tiles) and gives the
// pages of memory-mapped external data back.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include "sq/Numerics/Float16.h"

#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/Support/Parallel.h"

#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

using namespace mlir;

namespace sq {
namespace onnx_import {

double tensorElement(const TensorBytes &t, int64_t i) {
  if (isPacked4(t.dtype)) {
    unsigned nibble =
        (static_cast<uint8_t>(t.bytes[i / 2]) >> (4 * (i % 2))) & 0xF;
    // int4: two's complement in four bits.
    return t.dtype == DType::I4 && nibble >= 8 ? int(nibble) - 16 : int(nibble);
  }
  const char *p = t.bytes.data() + i * dtypeSize(t.dtype);
  switch (t.dtype) {
  case DType::F32: {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  case DType::F64: {
    double d;
    std::memcpy(&d, p, 8);
    return d;
  }
  case DType::F16: {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return numerics::halfToFloat(h);
  }
  case DType::BF16: {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return numerics::bf16ToFloat(h);
  }
  case DType::I64: {
    int64_t v;
    std::memcpy(&v, p, 8);
    return static_cast<double>(v);
  }
  case DType::I32: {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  case DType::I8:
    return static_cast<int8_t>(*p);
  case DType::U8:
  case DType::Bool:
    return static_cast<uint8_t>(*p);
  case DType::I4:
  case DType::U4:
    break; // above
  }
  return 0;
}

namespace {

/// dst[c][r] = src[r][c] for a rows x cols matrix of `elem`-byte elements,
/// in 64x64 tiles so that both sides stream through the cache.
void transposeTiled(const char *src, char *dst, int64_t rows, int64_t cols,
                    size_t elem) {
  constexpr int64_t tile = 64;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    // Byte offsets, not T pointers: external data may sit at any offset of
    // its file, so `src` need not be aligned for T.
    constexpr int64_t n = sizeof(T);
    // Column tiles are independent: spread them over the cores (this also
    // overlaps the page faults that read the mapped file).
    int64_t colTiles = (cols + tile - 1) / tile;
    llvm::parallelFor(0, colTiles, [&](size_t tileIndex) {
      int64_t c0 = static_cast<int64_t>(tileIndex) * tile;
      for (int64_t r0 = 0; r0 < rows; r0 += tile)
        for (int64_t c = c0; c < std::min(cols, c0 + tile); ++c)
          for (int64_t r = r0; r < std::min(rows, r0 + tile); ++r) {
            std::memcpy(dst + (c * rows + r) * n, src + (r * cols + c) * n, n);
          }
    });
  };
  switch (elem) {
  case 2:
    run(uint16_t());
    break;
  case 4:
    run(uint32_t());
    break;
  default:
    run(uint64_t());
    break;
  }
}

/// The index of the first NaN/Inf in float32/float16/bfloat16 data, or -1.
int64_t firstNonFinite(ArrayRef<char> data, DType dtype) {
  if (dtype == DType::F32) {
    for (size_t i = 0; i + 4 <= data.size(); i += 4) {
      uint32_t bits;
      std::memcpy(&bits, data.data() + i, 4);
      if ((bits & 0x7F800000u) == 0x7F800000u)
        return static_cast<int64_t>(i / 4);
    }
  } else if (dtype == DType::F16 || dtype == DType::BF16) {
    uint16_t mask = dtype == DType::F16 ? 0x7C00u : 0x7F80u;
    for (size_t i = 0; i + 2 <= data.size(); i += 2) {
      uint16_t bits;
      std::memcpy(&bits, data.data() + i, 2);
      if ((bits & mask) == mask)
        return static_cast<int64_t>(i / 2);
    }
  }
  return -1;
}

/// Drops the pages of a read-only file mapping from this process (they are
/// read again from the file if touched).
void releaseMapped(ArrayRef<char> bytes) {
  uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data());
  uintptr_t end = begin + bytes.size();
  begin = (begin + page - 1) & ~(page - 1); // only whole pages of this range
  end &= ~(page - 1);
  if (end > begin)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

} // namespace

bool toConcrete(const TensorBytes &t, CTensor &c, std::string &error) {
  if (t.numElements() > kMaxConcreteElements) {
    error = "a weight is used in a shape computation";
    return false;
  }
  c.shape = t.dims;
  switch (t.dtype) {
  case DType::F32:
  case DType::F16:
  case DType::BF16:
  case DType::F64:
    c.kind = CTensor::Float;
    break;
  case DType::Bool:
    c.kind = CTensor::Bool;
    break;
  default:
    c.kind = CTensor::Int;
  }
  c.data.resize(t.numElements());
  for (int64_t i = 0; i < t.numElements(); ++i)
    c.data[i] = tensorElement(t, i);
  return true;
}

bool Raiser::weightValue(const onnx::TensorProto *tensor, bool transpose,
                         Value &out) {
  TensorBytes bytes;
  if (!model.readTensor(*tensor, bytes, err))
    return false;
  Type elementType;
  switch (bytes.dtype) {
  case DType::F32:
    elementType = builder.getF32Type();
    break;
  case DType::F16:
    elementType = builder.getF16Type();
    break;
  case DType::BF16:
    elementType = builder.getBF16Type();
    break;
  default:
    return fail("weight '" + tensor->name() + "' has element type " +
                dtypeName(bytes.dtype) +
                "; weights must be float32, float16 or bfloat16");
  }
  // A NaN or Inf weight is a corrupt model (a bad export or download):
  // every later stage would compute garbage from it.
  int64_t bad = firstNonFinite(bytes.bytes, bytes.dtype);
  if (bad >= 0)
    return fail("weight '" + tensor->name() +
                "' holds a non-finite value (NaN or Inf) at element " +
                std::to_string(bad) + ": the model's weights are corrupt");
  std::vector<int64_t> dims = bytes.dims;
  size_t elem = dtypeSize(bytes.dtype);
  std::unique_ptr<AsmResourceBlob> blob;
  if (transpose) {
    if (dims.size() != 2)
      return fail("weight '" + tensor->name() + "' is not 2-D");
    auto heap = HeapAsmResourceBlob::allocate(bytes.bytes.size(), elem,
                                              /*dataIsMutable=*/true);
    transposeTiled(bytes.bytes.data(), heap.getMutableData().data(), dims[0],
                   dims[1], elem);
    blob = std::make_unique<AsmResourceBlob>(std::move(heap));
    std::swap(dims[0], dims[1]);
  } else {
    blob = std::make_unique<AsmResourceBlob>(
        HeapAsmResourceBlob::allocateAndCopyWithAlign(bytes.bytes, elem));
  }
  // The bytes are copied: give the mapped pages of external data back, so
  // that a large import holds about one copy of the weights.
  if (bytes.keepAlive)
    releaseMapped(bytes.bytes);
  auto type = RankedTensorType::get(dims, elementType);
  std::string name = tensor->name().empty() ? "weight" : tensor->name();
  auto attr = DenseResourceElementsAttr::get(type, name, std::move(*blob));
  out = WeightOp::create(builder, loc, cast<ElementsAttr>(attr));
  return true;
}

} // namespace onnx_import
} // namespace sq
