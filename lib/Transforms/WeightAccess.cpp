//===- WeightAccess.cpp - reading and rewriting weights in passes ---------===//

#include "WeightAccess.h"

#include "sq/Numerics/Float16.h"
#include "sq/Support/Distributed.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cstdio>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

using namespace mlir;

namespace sq {

WeightOp makeWeight(OpBuilder &b, Location loc, StringRef name, Type type,
                    ShapedType storage, ArrayRef<char> bytes) {
  auto blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(bytes, 4);
  auto attr = DenseResourceElementsAttr::get(storage, name, std::move(blob));
  return WeightOp::create(b, loc, type, cast<ElementsAttr>(attr));
}

namespace {

/// Drops the resident pages of [data, data + size) when the range lies in a
/// read-only file mapping (the bytecode reader's zero-copy view of the input
/// file): they would be re-read from the file if touched again, and they are
/// not: the weight has new bytes. Keeps the peak memory of a rewrite near
/// one copy of the model. Anything else (heap blobs) is left alone.
void releaseFilePages(const char *data, size_t size) {
#if defined(__linux__)
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t begin =
      (reinterpret_cast<uintptr_t>(data) + page - 1) & ~uintptr_t(page - 1);
  uintptr_t end =
      (reinterpret_cast<uintptr_t>(data) + size) & ~uintptr_t(page - 1);
  if (end <= begin)
    return;
  FILE *maps = std::fopen("/proc/self/maps", "r");
  if (!maps)
    return;
  char line[4096];
  bool fileBacked = false;
  while (std::fgets(line, sizeof line, maps)) {
    unsigned long lo, hi, offset, inode;
    char perms[8], dev[32];
    if (std::sscanf(line, "%lx-%lx %7s %lx %31s %lu", &lo, &hi, perms, &offset,
                    dev, &inode) != 6)
      continue;
    if (begin >= lo && end <= hi) {
      fileBacked = inode != 0 && perms[1] != 'w';
      break;
    }
  }
  std::fclose(maps);
  if (fileBacked)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
#else
  (void)data;
  (void)size;
#endif
}

} // namespace

bool readWeightValues(WeightOp op, numerics::FloatBuffer &values) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob || isa<PackedType>(op.getType()))
    return false;
  ArrayRef<char> data = blob->getData();
  Type et = resource.getType().getElementType();
  int64_t n = resource.getType().getNumElements();
  std::optional<numerics::FloatFormat> format = floatFormatOf(et);
  if (!format)
    return false;
  values = numerics::FloatBuffer(n);
  if (values.size() != n)
    return false;
  numerics::widenToFloat(data.data(), n, *format, values.data());
  return true;
}

/// Makes `data` ([bytes] of `elementType`, freed with numerics::freeLarge)
/// the weight's value under its resource name, releasing the old bytes.
static void installWeightBytes(WeightOp op, char *data, size_t bytes,
                               Type elementType) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  auto type = RankedTensorType::get(resource.getType().getShape(), elementType);
  DenseResourceElementsHandle handle = resource.getRawHandle();
  ArrayRef<char> old =
      handle.getBlob() ? handle.getBlob()->getData() : ArrayRef<char>();
  // Same handle (same name), new bytes.
  handle.getResource()->setBlob(AsmResourceBlob(
      ArrayRef<char>(data, bytes), /*dataAlignment=*/alignof(float),
      [](void *p, size_t size, size_t) { numerics::freeLarge(p, size); },
      /*dataIsMutable=*/true));
  releaseFilePages(old.data(), old.size());
  if (resource.getType() != type) {
    op.setValueAttr(
        cast<ElementsAttr>(DenseResourceElementsAttr::get(type, handle)));
    op.getResult().setType(type);
  }
}

void writeWeightValues(WeightOp op, numerics::FloatBuffer values,
                       WeightStorage storage) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  Type oldType = resource.getType().getElementType();
  Type newType = storage == WeightStorage::Keep
                     ? oldType
                     : Type(Float32Type::get(op.getContext()));
  // Callers write back weights readWeightValues read (f32, f16 or bf16).
  numerics::FloatFormat format =
      floatFormatOf(newType).value_or(numerics::FloatFormat::BF16);
  size_t count = static_cast<size_t>(values.size());
  size_t bytes = count * numerics::bytesPerValue(format);
  char *data;
  if (format == numerics::FloatFormat::F32) {
    data = reinterpret_cast<char *>(values.release());
  } else if ((data = static_cast<char *>(numerics::allocateLarge(bytes)))) {
    numerics::narrowFromFloat(values.data(), count, format, data);
    values = numerics::FloatBuffer();
  } else { // no memory for the narrow copy: keep the fp32 buffer
    newType = Float32Type::get(op.getContext());
    bytes = count * sizeof(float);
    data = reinterpret_cast<char *>(values.release());
  }
  installWeightBytes(op, data, bytes, newType);
}

bool transformWeight(
    Value weightValue, Operation *user, bool byRows, int64_t align,
    function_ref<void(numerics::FloatBuffer &, int64_t, int64_t)> fn,
    WeightStorage storage) {
  auto weight = weightValue.getDefiningOp<WeightOp>();
  auto fail = [&] {
    user->emitOpError() << "weight must be a float sq.weight with data";
    return false;
  };
  if (!weight || isa<PackedType>(weight.getType()))
    return fail();
  auto resource = cast<DenseResourceElementsAttr>(weight.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  std::optional<numerics::FloatFormat> from =
      floatFormatOf(resource.getType().getElementType());
  if (!blob || !from)
    return fail();
  Type newType = storage == WeightStorage::Keep
                     ? resource.getType().getElementType()
                     : Type(Float32Type::get(weight.getContext()));
  numerics::FloatFormat to = *floatFormatOf(newType);
  ArrayRef<int64_t> shape = resource.getType().getShape();
  int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  if (rows * cols != resource.getType().getNumElements())
    return fail();
  const char *in = blob->getData().data();
  size_t inBytes = numerics::bytesPerValue(*from),
         outBytes = numerics::bytesPerValue(to);
  size_t bytes = size_t(rows * cols) * outBytes;
  char *out = static_cast<char *>(numerics::allocateLarge(bytes));
  if (!out && bytes) {
    user->emitOpError() << "out of memory rewriting a weight";
    return false;
  }
  constexpr int64_t kPanel = int64_t(4) << 20; // fp32 values
  align = std::max<int64_t>(align, 1);
  // Panels of rows (byRows) or columns.
  int64_t extent = byRows ? rows : cols;
  int64_t step =
      byRows ? std::max<int64_t>(align, kPanel / std::max<int64_t>(cols, 1) /
                                            align * align)
             : std::max<int64_t>(1, kPanel / std::max<int64_t>(rows, 1));
  // Under mpirun every process holds the same module: each process
  // transforms a contiguous share of the panels (at least one panel per
  // process where the weight allows) and the shares are then broadcast (the
  // other processes would only repeat the same arithmetic).
  int processes = distributed::size();
  if (processes > 1) {
    int64_t perProcess = (extent + processes - 1) / processes;
    if (byRows)
      perProcess = (perProcess + align - 1) / align * align;
    step = std::min(step, std::max<int64_t>(perProcess, 1));
  }
  int64_t panels = (extent + step - 1) / step;
  if (panels == 1)
    processes = 1;
  auto range = [&](int p) {
    auto [first, last] = processes == 1
                             ? std::pair<int64_t, int64_t>{0, panels}
                             : distributed::share(panels, p, processes);
    return std::pair<int64_t, int64_t>{std::min(extent, first * step),
                                       std::min(extent, last * step)};
  };
  auto [mine0, mine1] = range(processes == 1 ? 0 : distributed::rank());
  for (int64_t i0 = mine0; i0 < mine1; i0 += step) {
    int64_t count = std::min(step, extent - i0);
    if (byRows) {
      numerics::FloatBuffer panel(count * cols);
      numerics::widenToFloat(in + i0 * cols * inBytes, count * cols, *from,
                             panel.data());
      fn(panel, count, cols);
      numerics::narrowFromFloat(panel.data(), count * cols, to,
                                out + i0 * cols * outBytes);
    } else {
      numerics::FloatBuffer panel(rows * count);
      for (int64_t r = 0; r < rows; ++r)
        numerics::widenToFloat(in + (r * cols + i0) * inBytes, count, *from,
                               panel.data() + r * count);
      fn(panel, rows, count);
      for (int64_t r = 0; r < rows; ++r)
        numerics::narrowFromFloat(panel.data() + r * count, count, to,
                                  out + (r * cols + i0) * outBytes);
    }
  }
  for (int p = 0; p < processes; ++p) {
    auto [i0, i1] = range(p);
    if (i0 == i1)
      continue;
    if (byRows) { // contiguous rows
      distributed::broadcastBytes(out + i0 * cols * outBytes,
                                  size_t((i1 - i0) * cols) * outBytes, p);
      continue;
    }
    // Columns [i0, i1) of every row, packed for the broadcast.
    size_t width = size_t(i1 - i0) * outBytes;
    std::vector<char> packed(size_t(rows) * width);
    bool owner = p == distributed::rank();
    for (int64_t r = 0; owner && r < rows; ++r)
      std::memcpy(packed.data() + r * width, out + (r * cols + i0) * outBytes,
                  width);
    distributed::broadcastBytes(packed.data(), packed.size(), p);
    for (int64_t r = 0; !owner && r < rows; ++r)
      std::memcpy(out + (r * cols + i0) * outBytes, packed.data() + r * width,
                  width);
  }
  if (!weight->hasOneUse()) {
    // A weight of its own for `user`: a fresh resource with the new bytes
    // (the original keeps its bytes for the other users).
    OpBuilder builder(weight);
    auto copy = cast<WeightOp>(builder.clone(*weight));
    user->replaceUsesOfWith(weight, copy);
    auto type = RankedTensorType::get(shape, newType);
    copy.setValueAttr(cast<ElementsAttr>(DenseResourceElementsAttr::get(
        type, weight.getName(),
        UnmanagedAsmResourceBlob::allocateWithAlign(
            ArrayRef<char>(out, bytes), alignof(float),
            [](void *p, size_t size, size_t) { numerics::freeLarge(p, size); },
            /*dataIsMutable=*/true))));
    copy.getResult().setType(type);
    return true;
  }
  installWeightBytes(weight, out, bytes, newType);
  return true;
}

void releaseWeightScratch() { numerics::releaseCachedBuffers(); }

WeightOp unshareWeight(WeightOp weight, Operation *user) {
  if (weight->hasOneUse())
    return weight;
  OpBuilder builder(weight);
  auto copy = cast<WeightOp>(builder.clone(*weight));
  user->replaceUsesOfWith(weight, copy);
  // A fresh resource, so that writing the copy leaves the original alone.
  auto res = cast<DenseResourceElementsAttr>(weight.getValue());
  AsmResourceBlob *blob = res.getRawHandle().getBlob();
  copy.setValueAttr(cast<ElementsAttr>(DenseResourceElementsAttr::get(
      res.getType(), weight.getName(),
      HeapAsmResourceBlob::allocateAndCopyWithAlign(
          blob->getData(), blob->getDataAlignment()))));
  return copy;
}

} // namespace sq
