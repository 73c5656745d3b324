//===- FuseNorms.cpp - fold RMSNorm scales into the following linears -----===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Float16.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cstring>

namespace sq {
#define GEN_PASS_DEF_SQFUSENORMS
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

/// A weight's values widened to fp32; false if it has no data.
bool readWeight(WeightOp op, std::vector<float> &values) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob || isa<PackedType>(op.getType()))
    return false;
  ArrayRef<char> data = blob->getData();
  Type et = resource.getType().getElementType();
  int64_t n = resource.getType().getNumElements();
  values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    if (et.isF32()) {
      std::memcpy(&values[i], data.data() + 4 * i, 4);
    } else if (et.isF16() || et.isBF16()) {
      uint16_t h;
      std::memcpy(&h, data.data() + 2 * i, 2);
      values[i] =
          et.isF16() ? numerics::halfToFloat(h) : numerics::bf16ToFloat(h);
    } else {
      return false;
    }
  }
  return true;
}

/// Replaces the weight's value by fp32 `values` of the same shape, keeping
/// its name (in place when it was fp32 already).
void writeWeight(OpBuilder &builder, WeightOp op,
                 const std::vector<float> &values) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  auto type = RankedTensorType::get(resource.getType().getShape(),
                                    builder.getF32Type());
  auto blob =
      HeapAsmResourceBlob::allocateAndCopyInferAlign(ArrayRef<float>(values));
  if (resource.getType() == type) {
    resource.getRawHandle().getResource()->setBlob(std::move(blob));
    return;
  }
  auto attr =
      DenseResourceElementsAttr::get(type, op.getName(), std::move(blob));
  op.setValueAttr(cast<ElementsAttr>(attr));
  op.getResult().setType(type);
}

struct FuseNormsPass : public sq::impl::SQFuseNormsBase<FuseNormsPass> {
  using Base::Base;

  void runOnOperation() override {
    OpBuilder builder(&getContext());
    SmallVector<RMSNormOp> norms;
    getOperation().walk([&](RMSNormOp op) {
      if (op.getScale())
        norms.push_back(op);
    });
    for (RMSNormOp norm : norms) {
      auto gammaOp = norm.getScale().getDefiningOp<WeightOp>();
      std::vector<float> gamma;
      if (!gammaOp || !readWeight(gammaOp, gamma)) {
        norm.emitOpError() << "scale must be a float sq.weight with data to "
                              "be folded";
        return signalPassFailure();
      }
      SmallVector<LinearOp> readers;
      for (Operation *user : norm.getOutput().getUsers()) {
        auto linear = dyn_cast<LinearOp>(user);
        if (!linear || linear.getInput() != norm.getOutput()) {
          user->emitOpError() << "reads a scaled RMSNorm; only linear layers "
                                 "can absorb its scale (--sq-fuse-norms)";
          return signalPassFailure();
        }
        readers.push_back(linear);
      }
      for (LinearOp linear : readers) {
        auto weight = linear.getWeight().getDefiningOp<WeightOp>();
        std::vector<float> w;
        if (!weight || !readWeight(weight, w)) {
          linear.emitOpError() << "weight must be a float sq.weight with data";
          return signalPassFailure();
        }
        if (!weight->hasOneUse()) {
          // Shared (e.g. tied) weight: give this linear its own copy.
          builder.setInsertionPoint(weight);
          weight = cast<WeightOp>(builder.clone(*weight));
          linear.getWeightMutable().assign(weight);
          auto res = cast<DenseResourceElementsAttr>(weight.getValue());
          auto copy = DenseResourceElementsAttr::get(
              res.getType(), weight.getName(),
              HeapAsmResourceBlob::allocateAndCopyWithAlign(
                  res.getRawHandle().getBlob()->getData(),
                  res.getRawHandle().getBlob()->getDataAlignment()));
          weight.setValueAttr(cast<ElementsAttr>(copy));
        }
        int64_t k = static_cast<int64_t>(gamma.size());
        for (size_t i = 0; i < w.size(); ++i)
          w[i] *= gamma[i % k];
        writeWeight(builder, weight, w);
      }
      norm.getScaleMutable().clear();
      if (gammaOp->use_empty())
        gammaOp->erase();
    }
    if (centerEmbeddings)
      getOperation().walk([&](EmbeddingOp op) {
        auto table = op.getTable().getDefiningOp<WeightOp>();
        std::vector<float> e;
        if (!table || !readWeight(table, e))
          return;
        int64_t dim = op.getTable().getType().getDimSize(1);
        for (size_t row = 0; row < e.size(); row += dim) {
          double mean = 0;
          for (int64_t i = 0; i < dim; ++i)
            mean += e[row + i];
          mean /= dim;
          for (int64_t i = 0; i < dim; ++i)
            e[row + i] -= static_cast<float>(mean);
        }
        writeWeight(builder, table, e);
      });
  }
};

} // namespace
