//===- FuseNorms.cpp - fold RMSNorm scales into the following linears -----===//

#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
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

LogicalResult sq::foldNormScales(ModuleOp module, bool center,
                                 WeightStorage storage) {
  SmallVector<RMSNormOp> norms;
  module.walk([&](RMSNormOp op) {
    if (op.getScale())
      norms.push_back(op);
  });
  for (RMSNormOp norm : norms) {
    auto gammaOp = norm.getScale().getDefiningOp<WeightOp>();
    numerics::FloatBuffer gamma;
    if (!gammaOp || !readWeightValues(gammaOp, gamma)) {
      norm.emitOpError() << "scale must be a float sq.weight with data to "
                            "be folded";
      return failure();
    }
    SmallVector<LinearOp> readers;
    for (Operation *user : norm.getOutput().getUsers()) {
      auto linear = dyn_cast<LinearOp>(user);
      if (!linear || linear.getInput() != norm.getOutput()) {
        user->emitOpError() << "reads a scaled RMSNorm; only linear layers "
                               "can absorb its scale (--sq-fuse-norms)";
        return failure();
      }
      readers.push_back(linear);
    }
    for (LinearOp linear : readers) {
      // Rows at a time, in place (no fp32 copy of the weight).
      int64_t k = gamma.size();
      auto scale = [&](numerics::FloatBuffer &w, int64_t, int64_t) {
        for (int64_t row = 0; row < w.size(); row += k)
          for (int64_t i = 0; i < k; ++i)
            w[row + i] *= gamma[i];
      };
      if (!transformWeight(linear.getWeight(), linear, /*byRows=*/true, 1,
                           scale, storage))
        return failure();
    }
    norm.getScaleMutable().clear();
    if (gammaOp->use_empty())
      gammaOp->erase();
  }
  if (center)
    module.walk([&](EmbeddingOp op) {
      auto table = op.getTable().getDefiningOp<WeightOp>();
      numerics::FloatBuffer e;
      if (!table || !readWeightValues(table, e))
        return;
      int64_t dim = op.getTable().getType().getDimSize(1);
      for (int64_t row = 0; row < e.size(); row += dim) {
        double mean = 0;
        for (int64_t i = 0; i < dim; ++i)
          mean += e[row + i];
        mean /= dim;
        for (int64_t i = 0; i < dim; ++i)
          e[row + i] -= static_cast<float>(mean);
      }
      writeWeightValues(table, std::move(e), storage);
    });
  return success();
}

namespace {

struct FuseNormsPass : public sq::impl::SQFuseNormsBase<FuseNormsPass> {
  using Base::Base;

  void runOnOperation() override {
    if (failed(foldNormScales(getOperation(), centerEmbeddings, weightType)))
      signalPassFailure();
  }
};

} // namespace
