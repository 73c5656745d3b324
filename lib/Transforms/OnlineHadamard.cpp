//===- OnlineHadamard.cpp - SpinQuant's R3 and R4 -------------------------===//

#include "WeightAccess.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseSet.h"

namespace sq {
#define GEN_PASS_DEF_SQONLINEHADAMARD
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

LogicalResult sq::insertOnlineHadamards(ModuleOp module, bool r3, bool r4,
                                        uint64_t seed, WeightStorage storage) {
  llvm::DenseSet<int64_t> remarked; // one remark per size
  // A size without a Hadamard matrix gets a seeded random orthogonal block
  // (never a failure), with one remark per size.
  auto noteFallback = [&](int64_t n, Operation *where, StringRef what) {
    int m;
    int64_t p;
    if (!numerics::splitHadamardSize(n, m, p) && remarked.insert(n).second)
      where->emitRemark() << "no Hadamard matrix of size " << n << " for "
                          << what << ": using a seeded random orthogonal "
                          << n / (n & -n) << "x" << n / (n & -n)
                          << " block (seed " << seed
                          << ") with the 2^k butterflies";
  };
  OpBuilder builder(module.getContext());
  if (r4) {
    SmallVector<LinearOp> downs;
    module.walk([&](LinearOp linear) {
      // down_proj reads silu(gate) * up; a down_proj already behind an
      // sq.hadamard has its R4 (the pass is idempotent).
      if (linear.getInput().getDefiningOp<MulOp>())
        downs.push_back(linear);
    });
    for (LinearOp down : downs) {
      Value input = down.getInput();
      int64_t n = down.getWeight().getType().getDimSize(1);
      if (ShapedType::isDynamic(n))
        return down.emitOpError() << "R4 needs a static input size";
      auto weight = down.getWeight().getDefiningOp<WeightOp>();
      if (!weight ||
          !floatFormatOf(cast<ShapedType>(weight.getType()).getElementType()) ||
          !cast<DenseResourceElementsAttr>(weight.getValue())
               .getRawHandle()
               .getBlob())
        return down.emitOpError()
               << "weight must be a float sq.weight with data";
      noteFallback(n, down, "R4 (down_proj's input)");
      builder.setInsertionPoint(down);
      auto h = HadamardOp::create(
          builder, down.getLoc(), input, builder.getI64IntegerAttr(n),
          seed ? builder.getI64IntegerAttr(seed) : IntegerAttr());
      down.getInputMutable().assign(h);
      // Rows at a time, in place (no fp32 copy of the weight).
      auto rotate = [&](numerics::FloatBuffer &w, int64_t, int64_t) {
        for (int64_t row = 0; row < w.size(); row += n)
          numerics::orthogonalTransformInPlace(w.data() + row, n, seed);
      };
      if (!transformWeight(down.getWeight(), down, /*byRows=*/true, 1, rotate,
                           storage))
        return failure();
    }
  }
  if (r3) {
    bool ok = true;
    module.walk([&](AttentionOp attn) {
      if (!ok)
        return;
      int64_t headDim = attn.getHeadDim();
      if (ShapedType::isDynamic(headDim)) {
        attn.emitOpError() << "R3 needs a static head_dim";
        ok = false;
        return;
      }
      auto rotated = [](Value v) {
        return v.getDefiningOp<HadamardOp>() || v.getDefiningOp<RotateOp>();
      };
      if (rotated(attn.getQuery()) && rotated(attn.getKey()))
        return; // already rotated (a Hadamard or a learned R3)
      noteFallback(headDim, attn, "R3 (head_dim)");
      for (OpOperand *operand :
           {&attn.getQueryMutable(), &attn.getKeyMutable()}) {
        builder.setInsertionPoint(attn);
        auto h = HadamardOp::create(builder, attn.getLoc(), operand->get(),
                                    builder.getI64IntegerAttr(headDim),
                                    seed ? builder.getI64IntegerAttr(seed)
                                         : IntegerAttr());
        operand->set(h);
      }
    });
    if (!ok)
      return failure();
  }
  return success();
}

bool sq::replaceR3WithRotations(ModuleOp module,
                                ArrayRef<std::vector<double>> matrices,
                                std::vector<std::string> *names,
                                std::string &error, StringRef name) {
  SmallVector<AttentionOp> attentions;
  module.walk([&](AttentionOp a) { attentions.push_back(a); });
  if (!matrices.empty() && matrices.size() != attentions.size()) {
    error = std::to_string(matrices.size()) + " R3 rotations for " +
            std::to_string(attentions.size()) + " attention layers";
    return false;
  }
  OpBuilder b(module.getContext());
  for (auto [layer, attn] : llvm::enumerate(attentions)) {
    auto q = attn.getQuery().getDefiningOp<HadamardOp>();
    auto k = attn.getKey().getDefiningOp<HadamardOp>();
    int64_t d = attn.getHeadDim();
    auto seedOf = [](HadamardOp h) -> uint64_t {
      return h.getSeed() ? *h.getSeed() : 0;
    };
    if (!q || !k || q == k || q.getBlockSize() != d || k.getBlockSize() != d ||
        seedOf(q) != seedOf(k)) {
      error = "a learned R3 replaces the online Hadamard R3 (sq.hadamard of "
              "head_dim " +
              std::to_string(d) +
              " on the query and on the key, "
              "--sq-online-hadamard), which attention " +
              std::to_string(layer) + " does not have";
      return false;
    }
    std::vector<float> m;
    if (matrices.empty()) {
      m = numerics::denseTransform(d, seedOf(q));
    } else if (matrices[layer].size() != size_t(d * d)) {
      error = "R3 of layer " + std::to_string(layer) + " is not " +
              std::to_string(d) + "x" + std::to_string(d);
      return false;
    } else {
      m.assign(matrices[layer].begin(), matrices[layer].end());
    }
    b.setInsertionPoint(q->isBeforeInBlock(k) ? q : k);
    auto type = RankedTensorType::get({d, d}, b.getF32Type());
    WeightOp weight = makeWeight(
        b, attn.getLoc(),
        "model.layers." + std::to_string(layer) + ".self_attn." + name.str(),
        type, type,
        ArrayRef<char>(reinterpret_cast<const char *>(m.data()),
                       m.size() * sizeof(float)));
    for (HadamardOp h : {q, k}) {
      b.setInsertionPoint(h);
      auto rot = RotateOp::create(b, h.getLoc(), h.getInput(), weight,
                                  /*transposed=*/false);
      h.getOutput().replaceAllUsesWith(rot.getOutput());
      h.erase();
    }
    if (names)
      names->push_back(weight.getName().str());
  }
  return true;
}

namespace {

struct OnlineHadamardPass
    : public sq::impl::SQOnlineHadamardBase<OnlineHadamardPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (failed(insertOnlineHadamards(module, r3, r4, seed, weightType)))
      signalPassFailure();
  }
};

} // namespace
