//===- OnlineHadamard.cpp - SpinQuant's R3 and R4 -------------------------===//

#include "WeightAccess.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace sq {
#define GEN_PASS_DEF_SQONLINEHADAMARD
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

struct OnlineHadamardPass
    : public sq::impl::SQOnlineHadamardBase<OnlineHadamardPass> {
  using Base::Base;

  bool supported(int64_t n, Operation *where, StringRef what) {
    int m;
    int64_t p;
    if (!ShapedType::isDynamic(n) && numerics::splitHadamardSize(n, m, p))
      return true;
    where->emitOpError() << "no Hadamard matrix of size " << n << " for "
                         << what
                         << " (sizes m * 2^k with m in 1, 12, 20, 28, 36, 40, "
                            "44, 52, 60, 108, 140)";
    return false;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    OpBuilder builder(&getContext());
    bool ok = true;
    if (r4) {
      SmallVector<LinearOp> downs;
      module.walk([&](LinearOp linear) {
        if (linear.getInput().getDefiningOp<MulOp>())
          downs.push_back(linear);
      });
      for (LinearOp down : downs) {
        Value input = down.getInput();
        int64_t n = down.getWeight().getType().getDimSize(1);
        if (!supported(n, down, "R4 (down_proj's input)"))
          return signalPassFailure();
        builder.setInsertionPoint(down);
        auto h =
            HadamardOp::create(builder, down.getLoc(), input,
                               builder.getI64IntegerAttr(n), IntegerAttr());
        down.getInputMutable().assign(h);
        auto weight = down.getWeight().getDefiningOp<WeightOp>();
        std::vector<float> w;
        if (!weight || !readWeightValues(weight, w)) {
          down.emitOpError() << "weight must be a float sq.weight with data";
          return signalPassFailure();
        }
        weight = unshareWeight(weight, down);
        for (size_t row = 0; row < w.size(); row += n)
          numerics::hadamardTransformInPlace(w.data() + row, n);
        writeWeightValues(weight, w);
      }
    }
    if (r3)
      module.walk([&](AttentionOp attn) {
        if (!ok)
          return;
        int64_t headDim = attn.getHeadDim();
        if (!supported(headDim, attn, "R3 (head_dim)")) {
          ok = false;
          return;
        }
        for (OpOperand *operand :
             {&attn.getQueryMutable(), &attn.getKeyMutable()}) {
          builder.setInsertionPoint(attn);
          auto h = HadamardOp::create(builder, attn.getLoc(), operand->get(),
                                      builder.getI64IntegerAttr(headDim),
                                      IntegerAttr());
          operand->set(h);
        }
      });
    if (!ok)
      signalPassFailure();
  }
};

} // namespace
