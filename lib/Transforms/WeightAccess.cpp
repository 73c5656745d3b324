//===- WeightAccess.cpp - reading and rewriting weights in passes ---------===//

#include "WeightAccess.h"

#include "sq/Numerics/Float16.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cstring>

using namespace mlir;

namespace sq {

bool readWeightValues(WeightOp op, std::vector<float> &values) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob || isa<PackedType>(op.getType()))
    return false;
  ArrayRef<char> data = blob->getData();
  Type et = resource.getType().getElementType();
  int64_t n = resource.getType().getNumElements();
  if (!et.isF32() && !et.isF16() && !et.isBF16())
    return false;
  values.resize(n);
  numerics::widenToFloat(data.data(), n,
                         et.isF32()   ? numerics::FloatFormat::F32
                         : et.isF16() ? numerics::FloatFormat::F16
                                      : numerics::FloatFormat::BF16,
                         values.data());
  return true;
}

void writeWeightValues(WeightOp op, const std::vector<float> &values) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  auto type = RankedTensorType::get(resource.getType().getShape(),
                                    Float32Type::get(op.getContext()));
  // Same handle (same name), new bytes, and the fp32 type.
  DenseResourceElementsHandle handle = resource.getRawHandle();
  handle.getResource()->setBlob(
      HeapAsmResourceBlob::allocateAndCopyInferAlign(ArrayRef<float>(values)));
  if (resource.getType() != type) {
    op.setValueAttr(
        cast<ElementsAttr>(DenseResourceElementsAttr::get(type, handle)));
    op.getResult().setType(type);
  }
}

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
