//===- Quantize.cpp - --quantize=SPEC: weights, activations, KV cache -----===//
//
// Turns a (rotated) float model into a quantized one:
//  * weights of every linear layer but lm_head: RTN (optionally with the
//    MSE clip search) or GPTQ, per channel or in groups;
//  * activations: an sq.fake_quant before every linear but lm_head, per
//    token (o_proj's input in groups of head_dim);
//  * lm_head only with head=8: int8 symmetric per-channel weights (RTN or
//    GPTQ as the others, quantized last) and 8-bit per-token input;
//  * KV cache: sq.fake_quant on the keys (after R3) and values entering
//    each attention, asymmetric, in groups of head_dim.
// Learned clip ratios stored on the model by --sq-spinquant-rotate=...
// clip=... (sq.input_clip, sq.key_clip, sq.value_clip, sq.weight_clip)
// replace the spec's aclip/kclip/vclip and wclip where present.
// mode=fake keeps float weights that went through quantize-dequantize;
// mode=real emits sq.qlinear over packed integer weights.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Quantize.h"
#include "QuantizeCalibration.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Pack.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SmallPtrSet.h"

#include <map>

namespace sq {
#define GEN_PASS_DEF_SQQUANTIZE
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

QuantAttr makeQuant(MLIRContext *ctx, unsigned bits, bool sym, int64_t group,
                    bool perChannel, double clip) {
  Granularity g = group > 0    ? Granularity::Group
                  : perChannel ? Granularity::PerChannel
                               : Granularity::PerToken;
  return QuantAttr::get(ctx, bits, sym, g, group > 0 ? group : 0,
                        APFloat(clip));
}

/// Packs integer values [rows, cols] row by row (each row padded to whole
/// bytes): signed for symmetric grids, unsigned for asymmetric ones.
std::vector<char> packRows(const numerics::QuantizedWeight &q) {
  unsigned bits = q.grid.bits <= 4 ? 4 : 8;
  int64_t rowBytes = bits == 4 ? (q.cols + 1) / 2 : q.cols;
  std::vector<char> out(q.rows * rowBytes);
  std::vector<int8_t> s(q.cols);
  std::vector<uint8_t> u(q.cols);
  for (int64_t r = 0; r < q.rows; ++r) {
    const int16_t *v = q.values.data() + r * q.cols;
    auto *dst = reinterpret_cast<uint8_t *>(out.data() + r * rowBytes);
    for (int64_t c = 0; c < q.cols; ++c) {
      s[c] = static_cast<int8_t>(v[c]);
      u[c] = static_cast<uint8_t>(v[c]);
    }
    if (bits == 4 && q.grid.symmetric)
      numerics::packInt4(s.data(), q.cols, dst);
    else if (bits == 4)
      numerics::packUInt4(u.data(), q.cols, dst);
    else if (q.grid.symmetric)
      std::memcpy(dst, s.data(), q.cols);
    else
      std::memcpy(dst, u.data(), q.cols);
  }
  return out;
}

struct QuantizePass : public sq::impl::SQQuantizeBase<QuantizePass> {
  using Base::Base;

  QuantSpec spec = QuantSpec::bits(4, 4, 4, 4);

  QuantizePass() = default;
  explicit QuantizePass(const QuantSpec &spec) : spec(spec) {}

  /// `--sq-quantize=SPEC`: the whole option string is the spec (its commas
  /// are the spec's, not MLIR's option separators).
  LogicalResult initializeOptions(
      StringRef options,
      function_ref<LogicalResult(const Twine &)> errorHandler) override {
    StringRef text = options.trim();
    if (text.empty())
      text = "w4a4kv4";
    std::string parseError;
    if (!readQuantSpecArgument(text, spec, parseError))
      return errorHandler(parseError);
    return success();
  }

  /// The decoder layer of a linear, from its weight's name
  /// (model.layers.N.*), or -1.
  static int64_t layerOf(LinearOp l) {
    auto w = l.getWeight().getDefiningOp<WeightOp>();
    if (!w)
      return -1;
    StringRef name = w.getName();
    if (!name.consume_front("model.layers."))
      return -1;
    int64_t n;
    if (name.consumeInteger(10, n))
      return -1;
    return n;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto func = module.lookupSymbol<func::FuncOp>("forward");
    if (!func) {
      emitError(module.getLoc()) << "quantize: the module has no @forward";
      return signalPassFailure();
    }
    MLIRContext *ctx = &getContext();
    // Linear layers: lm_head (feeds the return) stays 16-bit unless head=8,
    // and then comes last (GPTQ: its Hessian is collected on the model
    // whose decoder layers are all quantized).
    SmallVector<LinearOp> linears, heads;
    func.walk([&](LinearOp l) {
      bool isHead = llvm::any_of(l.getOutput().getUsers(), [](Operation *u) {
        return isa<func::ReturnOp>(u);
      });
      if (!isHead)
        linears.push_back(l);
      else if (spec.quantizesHead())
        heads.push_back(l);
    });
    llvm::SmallPtrSet<Operation *, 2> headOps(heads.begin(), heads.end());
    linears.append(heads.begin(), heads.end());
    // The head's weight grid: int8, symmetric, per output channel; RTN
    // (with the spec's clip search) or GPTQ with the spec's settings.
    QuantSpec headSpec = spec;
    headSpec.wBits = spec.headBits;
    headSpec.wSym = true;
    headSpec.wGroup = 0;
    OpBuilder b(ctx);

    // 1. Weights. GPTQ goes layer by layer: the Hessians of layer N are
    // collected on the model whose layers before N are already quantized
    // (the official sequential order), in float activations.
    std::vector<std::vector<int64_t>> samples;
    if (spec.gptq) {
      int64_t maxPositions = 0;
      if (auto config = module->getAttrOfType<DictionaryAttr>("sq.config"))
        if (auto m = config.getAs<IntegerAttr>("max_position_embeddings"))
          maxPositions = m.getInt();
      if (failed(loadCalibrationSamples(module, spec, maxPositions, samples)))
        return signalPassFailure();
    }
    std::map<Operation *, HessianAccumulator> hessians;
    int64_t collectedLayer = -2;
    SmallVector<Operation *> quantizedOps; // linear or qlinear, in order
    for (size_t idx = 0; idx < linears.size(); ++idx) {
      LinearOp l = linears[idx];
      bool isHead = headOps.count(l);
      const QuantSpec &ws = isHead ? headSpec : spec;
      if (!ws.quantizesWeights()) {
        quantizedOps.push_back(l);
        continue;
      }
      auto weight = l.getWeight().getDefiningOp<WeightOp>();
      int64_t rows = l.getWeight().getType().getDimSize(0),
              cols = l.getWeight().getType().getDimSize(1);
      if (ws.gptq && layerOf(l) != collectedLayer) {
        collectedLayer = layerOf(l);
        SmallVector<Operation *> layerOps;
        for (size_t j = idx; j < linears.size(); ++j)
          if (layerOf(linears[j]) == collectedLayer)
            layerOps.push_back(linears[j]);
        hessians.clear();
        if (failed(collectHessians(module, samples, layerOps, hessians)))
          return signalPassFailure();
      }
      numerics::FloatBuffer w;
      if (!weight || !readWeightValues(weight, w)) {
        l.emitOpError() << "weight must be a float sq.weight with data";
        return signalPassFailure();
      }
      if (ws.wGroup && cols % ws.wGroup) {
        l.emitOpError() << "wgroup=" << ws.wGroup << " does not divide the "
                        << cols << " input features of '" << weight.getName()
                        << "'";
        return signalPassFailure();
      }
      // Learned per-channel clip ratios (--sq-spinquant-rotate=...
      // clip=weights|learned) replace wclip's search for this weight.
      std::vector<float> rowClips;
      if (auto attr = l->getAttrOfType<DenseElementsAttr>("sq.weight_clip")) {
        if (attr.getNumElements() == rows && attr.getElementType().isF32())
          rowClips.assign(attr.getValues<float>().begin(),
                          attr.getValues<float>().end());
        if (rowClips.empty() || llvm::any_of(rowClips, [](float c) {
              return !(c > 0 && c <= 1);
            })) {
          l.emitOpError() << "sq.weight_clip must hold " << rows
                          << " f32 clip ratios in (0, 1]";
          return signalPassFailure();
        }
        l->removeAttr("sq.weight_clip");
      }
      numerics::QuantizedWeight q;
      std::string error;
      bool good = quantizeWeight(
          w.data(), rows, cols, ws, ws.gptq ? &hessians[l].hessian() : nullptr,
          q, error, rowClips.empty() ? nullptr : rowClips.data());
      if (!good) {
        l.emitOpError() << "cannot quantize '" << weight.getName()
                        << "': " << error;
        return signalPassFailure();
      }
      if (!spec.real) {
        q.dequantize(w.data());
        weight = unshareWeight(weight, l);
        writeWeightValues(weight, std::move(w), WeightStorage::F32);
        quantizedOps.push_back(l);
        continue;
      }
      // mode=real: sq.qlinear over the packed weight with fp32 scales (and
      // zero points when asymmetric). A head tied to the embedding gets its
      // own quantized copy, named as an untied head; the embedding keeps
      // the float table.
      std::string name = isHead && !weight->hasOneUse()
                             ? std::string("lm_head.weight")
                             : weight.getName().str();
      std::vector<char> packed = packRows(q);
      b.setInsertionPoint(l);
      Location loc = l.getLoc();
      auto packedType =
          PackedType::get(ctx, {rows, cols}, ws.wBits <= 4 ? 4u : 8u);
      WeightOp qw = makeWeight(b, loc, name + ".qweight", packedType,
                               RankedTensorType::get({int64_t(packed.size())},
                                                     IntegerType::get(ctx, 8)),
                               packed);
      auto scaleType =
          RankedTensorType::get({rows, q.groups}, Float32Type::get(ctx));
      auto bytesOf = [](const std::vector<float> &v) {
        return ArrayRef<char>(reinterpret_cast<const char *>(v.data()),
                              v.size() * sizeof(float));
      };
      WeightOp scales = makeWeight(b, loc, name + ".scales", scaleType,
                                   scaleType, bytesOf(q.scales));
      Value zeros;
      if (!ws.wSym)
        zeros = makeWeight(b, loc, name + ".zeros", scaleType, scaleType,
                           bytesOf(q.zeros));
      QuantAttr wq = makeQuant(ctx, ws.wBits, ws.wSym, ws.wGroup,
                               /*perChannel=*/true, 1.0);
      auto ql = QLinearOp::create(b, loc, l.getInput(), qw, scales, zeros,
                                  l.getBias(), wq, QuantAttr());
      if (Attribute clip = l->getAttr("sq.input_clip"))
        ql->setAttr("sq.input_clip", clip);
      l.getOutput().replaceAllUsesWith(ql.getOutput());
      hessians.erase(l);
      if (isHead) {
        headOps.erase(l);
        headOps.insert(ql);
      }
      l.erase();
      if (weight->use_empty())
        weight.erase();
      quantizedOps.push_back(ql);
    }

    // 2. Activations: per token before every linear but lm_head (o_proj's
    // input in groups of head_dim); qlinear takes it as act_quant. With
    // head=8, lm_head's input too, at 8 bits per token (the spec's sym/asym,
    // no clipping) whatever the other activations' bits. A learned clip
    // ratio on the op (sq.input_clip, from clip=acts|learned) replaces
    // aclip; sq.key_clip / sq.value_clip on an attention replace kclip /
    // vclip.
    auto learnedClip = [](Operation *op, StringRef name, double fallback) {
      double clip = fallback;
      if (auto a = op->getAttrOfType<FloatAttr>(name)) {
        double v = a.getValueAsDouble();
        if (v > 0 && v <= 1)
          clip = v;
        op->removeAttr(name);
      }
      return clip;
    };
    llvm::DenseMap<std::pair<Value, Attribute>, Value> quantized;
    auto fakeQuant = [&](Value v, QuantAttr q, Operation *user) -> Value {
      auto key = std::make_pair(v, Attribute(q));
      auto it = quantized.find(key);
      if (it != quantized.end())
        return it->second;
      b.setInsertionPointAfterValue(v);
      Value r = FakeQuantOp::create(b, user->getLoc(), v.getType(), v, q);
      quantized[key] = r;
      return r;
    };
    for (Operation *op : quantizedOps) {
      bool isHead = headOps.count(op);
      if (!isHead && !spec.quantizesActivations())
        continue;
      Value input = op->getOperand(0);
      int64_t group = 0;
      if (auto attn = input.getDefiningOp<AttentionOp>(); attn && !isHead)
        group = attn.getHeadDim();
      QuantAttr aq =
          isHead ? makeQuant(ctx, spec.headBits, spec.aSym, 0, false, 1.0)
                 : makeQuant(ctx, spec.aBits, spec.aSym, group, false,
                             learnedClip(op, "sq.input_clip", spec.aClip));
      if (auto ql = dyn_cast<QLinearOp>(op))
        ql.setActQuantAttr(aq);
      else
        op->setOperand(0, fakeQuant(input, aq, op));
    }

    // 3. KV cache: keys after R3 (the sq.hadamard feeding the attention)
    // and values, asymmetric, in groups of head_dim unless given.
    bool ok = true;
    func.walk([&](AttentionOp attn) {
      int64_t headDim = attn.getHeadDim();
      auto kv = [&](OpOperand &operand, unsigned bits, int64_t group,
                    double clip, const char *what) {
        if (bits >= 16 || !ok)
          return;
        int64_t g = group ? group : headDim;
        if (headDim % g) {
          attn.emitOpError()
              << what << "=" << g << " does not divide head_dim " << headDim;
          ok = false;
          return;
        }
        QuantAttr q = makeQuant(ctx, bits, /*sym=*/false, g, false, clip);
        operand.set(fakeQuant(operand.get(), q, attn));
      };
      kv(attn.getKeyMutable(), spec.kBits, spec.kGroup,
         learnedClip(attn, "sq.key_clip", spec.kClip), "kgroup");
      kv(attn.getValueMutable(), spec.vBits, spec.vGroup,
         learnedClip(attn, "sq.value_clip", spec.vClip), "vgroup");
    });
    if (!ok)
      signalPassFailure();
  }
};

} // namespace

std::unique_ptr<mlir::Pass> sq::createQuantizePass(const QuantSpec &spec) {
  return std::make_unique<QuantizePass>(spec);
}
