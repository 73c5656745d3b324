//===- RotationObjective.cpp - SpinQuant's loss as a function of R1/R2/R3 -===//
//
// The training problem of the embedded calibration (see Calibrate.h), in
// two formulations that compute the same loss and Riemannian gradient:
//
// - activations (16-bit weights, the default there): the rotations only
//   matter where something is quantized. The residual stream stays in the
//   original basis (weightless RMSNorms commute with R1), and the clone
//   gets sq.rotate ops by trainable weights at the quantization sites:
//   x -> Q(x R1) R1^T at the quantized input of q/k/v and of gate/up,
//   v -> v R2 (per head) before the value cache's quantizer and
//   a -> Q(a) R2^T before o_proj. The executor differentiates the rotate
//   ops (dL/dR = x^T (G R) + G^T Q(x R) through the straight-through
//   estimator) and never computes a weight gradient: tokens x dim^2 per
//   site instead of dim x all weights, and no weight copies.
// - weights (needed when weights are quantized in the loop): the rotations
//   are folded into a copy of the frozen weights at every evaluation, the
//   executor runs the fake-quantized model forward and backward (dL/dW' for
//   every rotated weight W'), and the chain rule turns those into dL/dR1,
//   dL/dR2 (and dL/dR3).
//
// The two differ in the raw gradient's component normal to the orthogonal
// group (a symmetric S R: the folded model's RMSNorms see a non-orthogonal
// perturbation of R1, the rotate ops do not), which Cayley SGD discards:
// it only uses skew(G R^T). The training loop is Calibrate.cpp.
//
//===----------------------------------------------------------------------===//

#include "QuantizeCalibration.h"
#include "ScaleSites.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/raw_ostream.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace mlir;

namespace sq {
//===----------------------------------------------------------------------===//
// The objective
//===----------------------------------------------------------------------===//

namespace {

/// Output: the bias of a reader (v_proj's), on the output side, which R1
/// leaves alone (only R2 rotates it).
enum class Role { Embedding, Reader, Writer, Output };

/// A weight that R1 (and maybe R2) rotates, [rows, cols] row-major; a bias
/// [n] is a column [n, 1].
struct Entry {
  std::string name;
  Role role;
  int64_t rows = 0, cols = 0;
  /// v_proj (R2^T on the rows of each KV head) or o_proj (R2 on the
  /// columns of each head) of this layer; -1 for neither.
  int64_t r2Layer = -1;
  bool isValue = false;
  /// The embedding table read only by sq.embedding: only the rows of the
  /// batch's tokens are rotated (and contribute to dL/dR1).
  bool rowsOnly = false;
  /// Fake-quantized while training (linear weights but lm_head, when the
  /// spec quantizes weights).
  bool quantize = false;
  /// Training under gptq: the float model's Hessian of this weight's input
  /// (shared by the weights that read the same input: q/k/v, gate/up).
  std::shared_ptr<const std::vector<double>> hessian;
  /// The linear of the float module that reads this weight.
  Operation *linear = nullptr;
  std::vector<float> base;
  /// W R1 (v_proj) or R1^T W (o_proj) of the current step, for dL/dR2.
  std::vector<float> partial;
  /// Learned scales (ScaleSites.h) on its rows (a bias's entries) and on
  /// its columns, applied after the rotations: the site's index (-1: none)
  /// and how it scales this weight.
  int64_t rowSite = -1, colSite = -1;
  ScaleUse rowUse, colUse;
  /// The scaled weight of the current step (before weight quantization),
  /// for dL/du, and (learned scales) its quantization, for the gradient
  /// through the quantization range (numerics::fakeQuantRangeBackward).
  std::vector<float> scaled;
  numerics::QuantizedWeight quantized;
  /// Learned weight clipping: the first of this weight's per-row ratios in
  /// Rotations::weightClips (-1: none), and the rotated weight before its
  /// fake quantization (for the clip-aware gradient).
  int64_t clipOffset = -1;
  std::vector<float> rotated;
};

/// An activation or KV-cache quantizer of the training clone whose clip
/// ratio is learned: its initial ratio and the ops of the source module
/// (with the attribute) that --sq-quantize reads the learned one from.
struct ClipSite {
  double init = 1.0;
  std::vector<std::pair<Operation *, const char *>> targets;
};

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
          int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
          float beta = 0.0f) {
  numerics::gemmF32(ta ? numerics::Transpose::Yes : numerics::Transpose::No,
                    tb ? numerics::Transpose::Yes : numerics::Transpose::No, m,
                    n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

} // namespace

struct RotationObjective::Impl {
  ModuleOp source;
  OwningOpRef<ModuleOp> clone;
  std::unique_ptr<Executor> ex;
  QuantSpec spec;
  std::vector<Entry> entries;
  /// The trainable R3 weights of the clone, one per layer (learnR3).
  std::vector<std::string> r3Names;
  /// The R1/R2 and embedding rows of the last complete fold: the executor
  /// holds its weights (and the entries their `partial`) while they match.
  bool folded = false;
  std::vector<double> foldedR1;
  std::vector<std::vector<double>> foldedR2;
  std::vector<int64_t> foldedRows;
  int64_t hidden = 0, headDim = 0, layers = 0, vocab = 0, maxPositions = 0;
  /// The activations formulation: the clone's trainable R1 and, per layer,
  /// R2 (empty name: no R2 site in that layer, nothing quantized between
  /// v_proj and o_proj).
  bool activations = false;
  bool bf16 = false;
  /// Windows per forward/backward (0: the whole batch at once).
  int64_t microBatch = 0;
  std::string r1Name;
  std::vector<std::string> r2Names;
  /// Learned clipping (enableLearnedClipping).
  bool learnActClips = false, learnWeightClips = false;
  std::vector<ClipSite> clipSites;
  int64_t weightClipCount = 0;
  std::vector<double> foldedWClips;
  /// Learned scales: the clone's sites, the trainable weight each norm site
  /// gives its RMSNorm (empty for the other sites), and the log-scales of
  /// the last complete fold.
  bool learnScales = false;
  std::vector<ScaleSite> scaleSites;
  std::vector<std::string> normScaleNames;
  std::vector<std::vector<double>> foldedScales;
  /// setScaleSidesForTesting: 0 both sides, +1 / -1 only the uses that
  /// multiply by s / by 1/s (the norms count as s).
  int scaleSides = 0;
};

/// The weight grid of `spec` (round-to-nearest, as quantizeWeight).
static numerics::QuantGrid weightGrid(const QuantSpec &spec) {
  numerics::QuantGrid grid;
  grid.bits = spec.wBits;
  grid.symmetric = spec.wSym;
  grid.group = spec.wGroup;
  return grid;
}

/// The activations formulation (see the file comment): rewrites `clone`
/// (already fake-quantized) so that R1 and each layer's R2 act at the
/// quantization sites, as sq.rotate by new fp32 weights (the identity until
/// evaluate() sets them). Attentions are taken in program order, as create()
/// numbers the layers.
static bool insertActivationRotations(ModuleOp clone, int64_t n, int64_t d,
                                      std::string &r1Name,
                                      std::vector<std::string> &r2Names,
                                      std::string &error) {
  auto forward = clone.lookupSymbol<func::FuncOp>("forward");
  if (!forward) {
    error = "the module has no @forward function";
    return false;
  }
  Block &body = forward.getBody().front();
  OpBuilder b(clone.getContext());
  auto identityWeight = [&](int64_t size, const std::string &name) {
    std::vector<float> eye(size * size, 0.0f);
    for (int64_t i = 0; i < size; ++i)
      eye[i * size + i] = 1.0f;
    auto type = RankedTensorType::get({size, size}, b.getF32Type());
    b.setInsertionPointToStart(&body);
    return makeWeight(b, forward.getLoc(), name, type, type,
                      ArrayRef<char>(reinterpret_cast<const char *>(eye.data()),
                                     eye.size() * sizeof(float)));
  };
  // x -> rotate(x) before `op`'s operand, and the result's uses get
  // rotate^T of it: op(x R) R^T.
  auto wrap = [&](FakeQuantOp fq, WeightOp r) {
    b.setInsertionPoint(fq);
    auto in = RotateOp::create(b, fq.getLoc(), fq.getInput(), r, false);
    fq.getInputMutable().assign(in);
    b.setInsertionPointAfter(fq);
    auto out = RotateOp::create(b, fq.getLoc(), fq.getOutput(), r, true);
    fq.getOutput().replaceAllUsesExcept(out, out);
  };
  // R1: the quantizers of RMSNorm outputs (the inputs of the readers of the
  // residual stream); a reader whose input is not quantized (lm_head) sees
  // x R1 R1^T = x.
  SmallVector<FakeQuantOp> readerSites;
  for (Operation &op : body)
    if (auto fq = dyn_cast<FakeQuantOp>(op))
      if (fq.getInput().getDefiningOp<RMSNormOp>())
        readerSites.push_back(fq);
  WeightOp r1;
  if (!readerSites.empty()) {
    r1 = identityWeight(n, "R1_training");
    r1Name = r1.getName().str();
  }
  for (FakeQuantOp fq : readerSites)
    wrap(fq, r1);
  // R2: the value cache's quantizer sees v R2 per head, o_proj's input
  // quantizer a R2 (attention is linear in V per head), and o_proj gets
  // the output rotated back.
  SmallVector<AttentionOp> attentions;
  for (Operation &op : body)
    if (auto a = dyn_cast<AttentionOp>(op))
      attentions.push_back(a);
  for (auto [layer, attn] : llvm::enumerate(attentions)) {
    auto vfq = attn.getValue().getDefiningOp<FakeQuantOp>();
    Value out = attn.getOutput();
    FakeQuantOp ofq;
    if (out.hasOneUse())
      ofq = dyn_cast<FakeQuantOp>(*out.getUsers().begin());
    if (!vfq && !ofq) {
      r2Names.emplace_back();
      continue;
    }
    WeightOp r2 = identityWeight(d, "model.layers." + std::to_string(layer) +
                                        ".self_attn.R2_training");
    r2Names.push_back(r2.getName().str());
    Value v = vfq ? vfq.getInput() : attn.getValue();
    b.setInsertionPointAfterValue(v);
    auto rv = RotateOp::create(b, attn.getLoc(), v, r2, false);
    if (vfq)
      vfq.getInputMutable().assign(rv);
    else
      attn.getValueMutable().assign(rv);
    Value a = ofq ? ofq.getOutput() : out;
    b.setInsertionPointAfterValue(a);
    auto back = RotateOp::create(b, attn.getLoc(), a, r2, true);
    a.replaceAllUsesExcept(back, back);
  }
  return true;
}

RotationObjective::RotationObjective() : impl(std::make_unique<Impl>()) {}
RotationObjective::~RotationObjective() = default;
int64_t RotationObjective::hidden() const { return impl->hidden; }
int64_t RotationObjective::headDim() const { return impl->headDim; }
int64_t RotationObjective::numLayers() const { return impl->layers; }
int64_t RotationObjective::vocabSize() const { return impl->vocab; }
int64_t RotationObjective::maxPositions() const { return impl->maxPositions; }
bool RotationObjective::rotatesActivations() const { return impl->activations; }
bool RotationObjective::computesInBF16() const { return impl->bf16; }
int64_t RotationObjective::checkpointSegments() const {
  return impl->ex->checkpointSegments();
}
void RotationObjective::setMicroBatch(int64_t windows) {
  impl->microBatch = std::max<int64_t>(windows, 0);
}
void RotationObjective::setCheckpointing(Checkpointing checkpoint) {
  impl->ex->setCheckpoint(checkpoint == Checkpointing::On ? ExecCheckpoint::On
                          : checkpoint == Checkpointing::Off
                              ? ExecCheckpoint::Off
                              : ExecCheckpoint::Auto);
}

bool RotationObjective::enableLearnedClipping(bool acts, bool weights,
                                              std::string &error) {
  Impl &impl = *this->impl;
  if (weights) {
    if (!impl.spec.quantizesWeights() || impl.spec.gptq || impl.activations) {
      error = "quant=" + impl.spec.str() +
              ": learned weight clipping needs round-to-nearest weights in "
              "the loop (quant=wN... without gptq, apply=weights); the GPTQ "
              "recipe keeps wclip's MSE search";
      return false;
    }
    impl.weightClipCount = 0;
    for (Entry &e : impl.entries)
      if (e.quantize) {
        if (e.rowsOnly || e.role == Role::Output) // not a linear's weight
          continue;
        e.clipOffset = impl.weightClipCount;
        impl.weightClipCount += e.rows;
      }
    impl.learnWeightClips = true;
  }
  if (!acts)
    return true;
  // The clone's linears and attentions in program order match the source's
  // (the clone only gained fake quantization and rotate ops).
  SmallVector<Operation *> srcOps, cloneOps;
  impl.source.walk([&](Operation *op) {
    if (isa<LinearOp, AttentionOp>(op))
      srcOps.push_back(op);
  });
  impl.clone->walk([&](Operation *op) {
    if (isa<LinearOp, AttentionOp>(op))
      cloneOps.push_back(op);
  });
  if (srcOps.size() != cloneOps.size()) {
    error = "the training model's linears and attentions do not match the "
            "model's";
    return false;
  }
  llvm::DenseMap<Operation *, Operation *> toSource;
  for (size_t i = 0; i < srcOps.size(); ++i)
    toSource[cloneOps[i]] = srcOps[i];
  auto forward = impl.clone->lookupSymbol<func::FuncOp>("forward");
  impl.clipSites.clear();
  for (Operation &op : forward.getBody().front()) {
    auto fq = dyn_cast<FakeQuantOp>(op);
    if (!fq)
      continue;
    ClipSite site;
    site.init = fq.getQuant().getClipRatio();
    // Its consumers, through the training rotations.
    SmallVector<Value> values{fq.getOutput()};
    while (!values.empty()) {
      Value v = values.pop_back_val();
      for (OpOperand &use : v.getUses()) {
        Operation *user = use.getOwner();
        if (auto ro = dyn_cast<RotateOp>(user)) {
          values.push_back(ro.getOutput());
        } else if (isa<LinearOp>(user)) {
          site.targets.push_back({toSource.lookup(user), "sq.input_clip"});
        } else if (auto a = dyn_cast<AttentionOp>(user)) {
          const char *what = use.get() == a.getKey()     ? "sq.key_clip"
                             : use.get() == a.getValue() ? "sq.value_clip"
                                                         : nullptr;
          if (what)
            site.targets.push_back({toSource.lookup(user), what});
        }
      }
    }
    impl.clipSites.push_back(std::move(site));
  }
  if (int64_t(impl.clipSites.size()) != impl.ex->numFakeQuantSites()) {
    error = "the executor counts " +
            std::to_string(impl.ex->numFakeQuantSites()) +
            " fake quantizers, the training model " +
            std::to_string(impl.clipSites.size());
    return false;
  }
  impl.learnActClips = true;
  return true;
}

std::vector<double> RotationObjective::initialActClips() const {
  std::vector<double> clips;
  if (impl->learnActClips)
    for (const ClipSite &s : impl->clipSites)
      clips.push_back(s.init);
  return clips;
}

std::vector<double> RotationObjective::initialWeightClips() const {
  return std::vector<double>(impl->learnWeightClips ? impl->weightClipCount : 0,
                             1.0);
}

void RotationObjective::annotateClips(ModuleOp module,
                                      const Rotations &r) const {
  const Impl &impl = *this->impl;
  Builder b(module.getContext());
  if (impl.learnActClips && r.actClips.size() == impl.clipSites.size())
    for (size_t i = 0; i < impl.clipSites.size(); ++i)
      for (auto [op, attr] : impl.clipSites[i].targets)
        if (op)
          op->setAttr(attr, b.getF64FloatAttr(r.actClips[i]));
  if (impl.learnWeightClips &&
      int64_t(r.weightClips.size()) == impl.weightClipCount)
    for (const Entry &e : impl.entries)
      if (e.clipOffset >= 0 && e.linear) {
        std::vector<float> rows(r.weightClips.begin() + e.clipOffset,
                                r.weightClips.begin() + e.clipOffset + e.rows);
        auto type = RankedTensorType::get({e.rows}, b.getF32Type());
        e.linear->setAttr("sq.weight_clip",
                          DenseElementsAttr::get(type, ArrayRef<float>(rows)));
      }
}

std::vector<std::string> RotationObjective::scaleNames() const {
  std::vector<std::string> names;
  for (const ScaleSite &s : impl->scaleSites)
    names.push_back(s.name());
  return names;
}
void RotationObjective::setScaleSidesForTesting(int sign) {
  impl->scaleSides = sign;
  impl->folded = false;
}
std::vector<int64_t> RotationObjective::scaleSizes() const {
  std::vector<int64_t> sizes;
  for (const ScaleSite &s : impl->scaleSites)
    sizes.push_back(s.size);
  return sizes;
}

std::unique_ptr<RotationObjective>
RotationObjective::create(ModuleOp module, const QuantSpec &quant,
                          std::string &error, bool learnR3, RotationApply apply,
                          CalibPrecision precision, bool learnScales) {
  std::unique_ptr<RotationObjective> obj(new RotationObjective());
  Impl &impl = *obj->impl;
  impl.spec = quant;
  impl.learnScales = learnScales;
  if (learnScales && apply == RotationApply::Activations) {
    error = "scales=learned needs apply=weights (or auto): the scales are "
            "folded into the weights at each step; apply=activations does "
            "not implement them";
    return nullptr;
  }
  if (learnScales && quant.gptq) {
    error = "quant=" + quant.str() +
            ": scales=learned does not implement GPTQ in the training loop "
            "(train under round-to-nearest or 16-bit weights, then GPTQ)";
    return nullptr;
  }
  if (apply == RotationApply::Activations && quant.quantizesWeights()) {
    error = "quant=" + quant.str() +
            ": apply=activations needs 16-bit weights (weights quantized in "
            "the loop must see the rotations folded in: apply=weights)";
    return nullptr;
  }
  impl.activations = apply == RotationApply::Activations ||
                     (apply == RotationApply::Auto &&
                      !quant.quantizesWeights() && !learnScales);
  if (quant.real) {
    error = "quant=" + quant.str() +
            ": rotations are trained under fake quantization (no mode=real)";
    return nullptr;
  }
  if (quant.gptq && !quant.calib.empty()) {
    error = "quant=" + quant.str() +
            ": calib= is not used while training: the GPTQ Hessians come "
            "from the calibration windows (data=)";
    return nullptr;
  }
  if (quant.gptq && !quant.quantizesWeights()) {
    error =
        "quant=" + quant.str() + ": gptq needs quantized weights (wN, N < 16)";
    return nullptr;
  }
  impl.source = module;

  // Which weight plays which part, read off the structure (as
  // --spinquant-rotate does).
  auto nameOf = [](Value v) -> std::string {
    if (auto w = v.getDefiningOp<WeightOp>())
      return w.getName().str();
    return "";
  };
  bool ok = true;
  auto fail = [&](Operation *op, const Twine &msg) {
    if (ok)
      error = (op->getName().getStringRef() + ": " + msg).str();
    ok = false;
  };
  module.walk([&](RMSNormOp n) {
    if (n.getScale())
      fail(n, "has a scale, which does not commute with R1 (run "
              "--sq-fuse-norms first)");
  });
  EmbeddingOp embedding;
  module.walk([&](EmbeddingOp e) { embedding = e; });
  if (!embedding) {
    error = "no sq.embedding: nothing to rotate";
    return nullptr;
  }
  impl.hidden = embedding.getTable().getType().getDimSize(1);
  std::map<std::string, size_t> index;
  auto add = [&](Value w, Role role, Operation *user) -> Entry * {
    std::string name = nameOf(w);
    if (name.empty()) {
      fail(user, "weight must be an sq.weight");
      return nullptr;
    }
    if (index.count(name)) {
      Entry &e = impl.entries[index[name]];
      e.rowsOnly = false; // a tied embedding is read by lm_head too
      return &e;
    }
    auto type = cast<RankedTensorType>(w.getType());
    Entry e;
    e.name = name;
    e.role = role;
    e.rows = type.getDimSize(0);
    e.cols = type.getRank() > 1 ? type.getDimSize(1) : 1;
    index[name] = impl.entries.size();
    impl.entries.push_back(std::move(e));
    return &impl.entries.back();
  };
  add(embedding.getTable(), Role::Embedding, embedding)->rowsOnly = true;
  module.walk([&](LinearOp linear) {
    bool reads = linear.getInput().getDefiningOp<RMSNormOp>() != nullptr;
    bool writes = llvm::any_of(linear.getOutput().getUsers(),
                               [](Operation *u) { return isa<AddOp>(u); });
    bool head = llvm::any_of(linear.getOutput().getUsers(), [](Operation *u) {
      return isa<func::ReturnOp>(u);
    });
    if (reads && writes)
      return fail(linear, "both reads and writes the residual stream");
    if (!reads && !writes)
      return;
    if (Entry *e = add(linear.getWeight(), reads ? Role::Reader : Role::Writer,
                       linear)) {
      e->quantize = impl.spec.quantizesWeights() && !head;
      e->linear = linear;
    }
    // A writer's bias is rotated by R1 like its rows (b' = R1^T b).
    if (writes && linear.getBias())
      add(linear.getBias(), Role::Writer, linear);
  });
  module.walk([&](AttentionOp attn) {
    auto v = attn.getValue().getDefiningOp<LinearOp>();
    LinearOp o;
    for (Operation *u : attn.getOutput().getUsers())
      o = dyn_cast<LinearOp>(u);
    if (!v || !o || !attn.getOutput().hasOneUse())
      return fail(attn, "R2 needs the value to be a linear projection and "
                        "the output to feed one linear (o_proj)");
    impl.headDim = attn.getHeadDim();
    auto vi = index.find(nameOf(v.getWeight()));
    auto oi = index.find(nameOf(o.getWeight()));
    if (vi == index.end() || oi == index.end() ||
        impl.entries[vi->second].role != Role::Reader ||
        impl.entries[oi->second].role != Role::Writer)
      return fail(attn, "v_proj must read the residual stream and o_proj "
                        "write it");
    impl.entries[vi->second].r2Layer = impl.layers;
    impl.entries[vi->second].isValue = true;
    // v_proj's bias: R2^T on the blocks of each KV head, no R1.
    if (v.getBias())
      if (Entry *b = add(v.getBias(), Role::Output, v)) {
        b->r2Layer = impl.layers;
        b->isValue = true;
      }
    impl.entries[oi->second].r2Layer = impl.layers;
    ++impl.layers;
  });
  if (!ok)
    return nullptr;

  // The training model: activations and KV cache fake-quantized as the
  // spec says; weights are quantized here, after rotation, at every step.
  impl.clone = module.clone();
  // Trainable R3: the clone's online Hadamards on Q/K become sq.rotate by
  // weights (the same matrices), set at every step like the rotated weights.
  // (Named apart from the R3 weights the caller folds into the model.)
  if (learnR3 && !replaceR3WithRotations(*impl.clone, {}, &impl.r3Names, error,
                                         "R3_training"))
    return nullptr;
  QuantSpec actOnly = impl.spec.activationsOnly();
  if (actOnly.quantizesActivations() || actOnly.kBits < 16 ||
      actOnly.vBits < 16) {
    PassManager pm(module.getContext());
    pm.addPass(createQuantizePass(actOnly));
    if (failed(pm.run(*impl.clone))) {
      error = "cannot insert the fake quantization of quant=" + quant.str();
      return nullptr;
    }
  }
  if (impl.activations &&
      !insertActivationRotations(*impl.clone, impl.hidden, impl.headDim,
                                 impl.r1Name, impl.r2Names, error))
    return nullptr;
  // Learned scales: every weight a site scales is an entry (q/k/up biases
  // as outputs, which R1 leaves alone), and each norm site's RMSNorm gets a
  // trainable weight (s, set at every step).
  if (learnScales) {
    if (!findScaleSites(*impl.clone, impl.scaleSites, error))
      return nullptr;
    auto forward = impl.clone->lookupSymbol<func::FuncOp>("forward");
    OpBuilder b(impl.clone->getContext());
    for (size_t k = 0; k < impl.scaleSites.size(); ++k) {
      ScaleSite &site = impl.scaleSites[k];
      for (const ScaleUse &use : site.uses) {
        LinearOp user = use.user;
        if (!index.count(use.name))
          add(use.bias ? user.getBias() : user.getWeight(), Role::Output, user);
        if (!ok)
          return nullptr;
        Entry &e = impl.entries[index[use.name]];
        int64_t &slot = use.columns ? e.colSite : e.rowSite;
        if (slot >= 0) {
          error = "scales: '" + use.name + "' is scaled twice on its " +
                  (use.columns ? "columns" : "rows");
          return nullptr;
        }
        slot = k;
        (use.columns ? e.colUse : e.rowUse) = use;
      }
      if (!site.norm) {
        impl.normScaleNames.emplace_back();
        continue;
      }
      std::vector<float> ones(site.size, 1.0f);
      auto type = RankedTensorType::get({site.size}, b.getF32Type());
      b.setInsertionPointToStart(&forward.getBody().front());
      WeightOp w = makeWeight(
          b, site.norm.getLoc(), site.name() + "_training", type, type,
          ArrayRef<char>(reinterpret_cast<const char *>(ones.data()),
                         ones.size() * sizeof(float)));
      site.norm.getScaleMutable().assign(w);
      impl.normScaleNames.push_back(w.getName().str());
    }
  }
  // bf16 products: asked for, or auto with 16-bit linear weights on a CPU
  // where they beat fp32 sgemm (numerics::gemmBF16Preferred: AMX, or
  // AVX-512 BF16 on AMD; on Intel without AMX VDPBF16PS runs at half the
  // FMA rate).
  bool weights16 = true;
  module.walk([&](LinearOp l) {
    auto type = cast<ShapedType>(l.getWeight().getType());
    if (!type.getElementType().isF16() && !type.getElementType().isBF16())
      weights16 = false;
  });
  impl.bf16 = precision == CalibPrecision::BF16 ||
              (precision == CalibPrecision::Auto && weights16 &&
               numerics::gemmBF16Preferred());
  ExecutorOptions exOptions;
  exOptions.precision = impl.bf16 ? ExecPrecision::BF16 : ExecPrecision::F32;
  exOptions.quantRangeGradient = learnScales;
  impl.ex = Executor::create(*impl.clone, error, exOptions);
  if (!impl.ex)
    return nullptr;
  impl.vocab = impl.ex->info().vocabSize;
  impl.maxPositions = impl.ex->info().maxPositions;
  if (impl.activations)
    return obj; // the weights are never copied
  for (Entry &e : impl.entries) {
    std::vector<float> v = impl.ex->weightValues(e.name);
    if (v.size() != size_t(e.rows * e.cols)) {
      error = "weight '" + e.name + "' is not a float weight of the executor";
      return nullptr;
    }
    e.base = std::move(v);
  }
  return obj;
}

bool RotationObjective::prepareGPTQ(
    const std::vector<std::vector<int64_t>> &windows, std::string &error) {
  Impl &impl = *this->impl;
  if (!impl.spec.gptq)
    return true;
  SmallVector<Operation *> ops;
  for (Entry &e : impl.entries)
    if (e.quantize && e.linear)
      ops.push_back(e.linear);
  std::map<Operation *, HessianAccumulator> acc;
  if (failed(collectHessians(impl.source, windows, ops, acc))) {
    error = "cannot collect the GPTQ Hessians of the float model";
    return false;
  }
  // Linears that read the same input get identical Hessians: keep one copy.
  std::map<const void *, std::shared_ptr<const std::vector<double>>> byInput;
  for (Entry &e : impl.entries) {
    if (!e.quantize || !e.linear)
      continue;
    auto &shared = byInput[e.linear->getOperand(0).getAsOpaquePointer()];
    if (!shared)
      shared = std::make_shared<const std::vector<double>>(
          acc.at(e.linear).hessian());
    e.hessian = shared;
  }
  return true;
}

/// The Hessian of a rotated weight's input: the float model's H seen through
/// the rotation. A reader of the residual stream (W' = W R1) gets the input
/// R1^T x, so H' = R1^T H R1; o_proj (W' = R1^T W B, B = blockdiag(R2)) gets
/// B^T x, so H' = B^T H B; any other writer (down_proj) keeps H.
static std::vector<double> rotatedHessian(const std::vector<double> &h,
                                          int64_t cols, const double *r,
                                          int64_t d, bool blockDiagonal) {
  std::vector<double> t(h.size()), out(h.size());
  if (!blockDiagonal) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, cols, cols,
                1.0, h.data(), cols, r, cols, 0.0, t.data(), cols);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, cols, cols, 1.0,
                r, cols, t.data(), cols, 0.0, out.data(), cols);
    return out;
  }
  for (int64_t j = 0; j < cols; j += d) // T[:, blk j] = H[:, blk j] R2
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, d, d, 1.0,
                h.data() + j, cols, r, d, 0.0, t.data() + j, cols);
  for (int64_t i = 0; i < cols; i += d) // H'[blk i, :] = R2^T T[blk i, :]
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, cols, d, 1.0, r, d,
                t.data() + i * cols, cols, 0.0, out.data() + i * cols, cols);
  return out;
}

/// dL/du of the scales on `e` (its scaled weight F = rows(s) W' cols(s) of
/// this step, `dW` = dL/dF) into `grads`, and `dW` becomes dL/dW' (W' the
/// rotated weight before the scales). A factor exp(+-u_k) on row i gives
/// dL/du_k += +-sum_j dW_ij F_ij (the columns alike); columns behind the
/// online transform T (down_proj under R4, F = (W' T^T D) T) are compared in
/// the basis before T: dW T^T against F T^T, and dL/dW' = ((dW T^T) D) T.
static void scaleBackward(const Entry &e,
                          const std::vector<std::vector<double>> &logScales,
                          std::vector<float> &dW,
                          std::vector<std::vector<double>> &grads, int sides) {
  int64_t rows = e.rows, cols = e.cols;
  const std::vector<float> &f = e.scaled;
  // Both sums read dL/dF before either factor turns it into dL/dW'.
  bool rowsScaled = e.rowSite >= 0 && sides != -e.rowUse.sign;
  std::vector<double> rowFactor;
  if (rowsScaled) {
    std::vector<double> &g = grads[e.rowSite];
    rowFactor = scaleFactors(e.rowUse, logScales[e.rowSite]);
    for (int64_t i = 0; i < rows; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < cols; ++j)
        acc += double(dW[i * cols + j]) * f[i * cols + j];
      g[e.rowUse.index[i]] += e.rowUse.sign * acc;
    }
  }
  if (e.colSite >= 0 && sides != -e.colUse.sign) {
    std::vector<double> &g = grads[e.colSite];
    std::vector<double> factor = scaleFactors(e.colUse, logScales[e.colSite]);
    std::vector<double> acc(cols, 0.0);
    std::vector<float> pre;
    const float *fp = f.data();
    if (e.colUse.transformed) {
      transformRows(dW.data(), rows, cols, e.colUse.seed, /*transpose=*/true);
      pre = f;
      transformRows(pre.data(), rows, cols, e.colUse.seed, /*transpose=*/true);
      fp = pre.data();
    }
    for (int64_t i = 0; i < rows; ++i) {
      float *d = dW.data() + i * cols;
      const float *fr = fp + i * cols;
      for (int64_t j = 0; j < cols; ++j) {
        acc[j] += double(d[j]) * fr[j];
        d[j] = float(d[j] * factor[j]);
      }
    }
    if (e.colUse.transformed)
      transformRows(dW.data(), rows, cols, e.colUse.seed, /*transpose=*/false);
    for (int64_t j = 0; j < cols; ++j)
      g[e.colUse.index[j]] += e.colUse.sign * acc[j];
  }
  if (rowsScaled)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        dW[i * cols + j] = float(dW[i * cols + j] * rowFactor[i]);
}

bool RotationObjective::evaluate(const Rotations &r, ArrayRef<int64_t> tokens,
                                 int64_t batch, int64_t seq, double &loss,
                                 Rotations *grad, std::string &error,
                                 std::vector<double> *sequenceLosses,
                                 const SoftTargets *soft) {
  Impl &impl = *this->impl;
  if (grad && impl.microBatch > 0 && batch > impl.microBatch) {
    // Gradient accumulation: microBatch windows at a time, each share's
    // mean loss and gradient weighted by its part of the batch (every
    // window scores seq - 1 tokens): the batch's mean to float rounding.
    int64_t whole = impl.microBatch;
    impl.microBatch = 0;
    llvm::scope_exit restore([&] { impl.microBatch = whole; });
    loss = 0;
    Rotations part;
    SoftTargets softPart;
    for (int64_t b0 = 0; b0 < batch; b0 += whole) {
      int64_t nb = std::min(whole, batch - b0);
      if (soft) { // the reference rows of these windows
        int64_t from = b0 * seq * soft->width, count = nb * seq * soft->width;
        softPart.width = soft->width;
        if (!soft->ids.empty())
          softPart.ids.assign(soft->ids.begin() + from,
                              soft->ids.begin() + from + count);
        softPart.logProbs.assign(soft->logProbs.begin() + from,
                                 soft->logProbs.begin() + from + count);
      }
      double l;
      if (!evaluate(r, tokens.slice(b0 * seq, nb * seq), nb, seq, l, &part,
                    error, nullptr, soft ? &softPart : nullptr))
        return false;
      double w = double(nb) / double(batch);
      loss += w * l;
      auto add = [&](std::vector<double> &to, const std::vector<double> &g) {
        if (b0 == 0)
          to.assign(g.size(), 0.0);
        for (size_t i = 0; i < g.size(); ++i)
          to[i] += w * g[i];
      };
      grad->hidden = part.hidden;
      grad->headDim = part.headDim;
      add(grad->r1, part.r1);
      grad->r2.resize(part.r2.size());
      for (size_t l = 0; l < part.r2.size(); ++l)
        add(grad->r2[l], part.r2[l]);
      grad->r3.resize(part.r3.size());
      for (size_t l = 0; l < part.r3.size(); ++l)
        add(grad->r3[l], part.r3[l]);
      add(grad->actClips, part.actClips);
      add(grad->weightClips, part.weightClips);
      grad->scales.resize(part.scales.size());
      for (size_t k = 0; k < part.scales.size(); ++k)
        add(grad->scales[k], part.scales[k]);
    }
    return true;
  }
  int64_t n = impl.hidden, d = impl.headDim;
  if (r.r1.size() != size_t(n * n) || int64_t(r.r2.size()) != impl.layers) {
    error = "rotations do not match the model (R1 " + std::to_string(n) + "x" +
            std::to_string(n) + ", " + std::to_string(impl.layers) + " R2)";
    return false;
  }
  std::vector<float> r1(r.r1.begin(), r.r1.end());
  std::vector<std::vector<float>> r2(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l) {
    if (r.r2[l].size() != size_t(d * d)) {
      error = "R2 of layer " + std::to_string(l) + " is not " +
              std::to_string(d) + "x" + std::to_string(d);
      return false;
    }
    r2[l].assign(r.r2[l].begin(), r.r2[l].end());
  }
  if (!impl.r3Names.empty() && (int64_t(r.r3.size()) != impl.layers ||
                                llvm::any_of(r.r3, [&](const auto &m) {
                                  return m.size() != size_t(d * d);
                                }))) {
    error = "R3 is learned: " + std::to_string(impl.layers) + " R3 of " +
            std::to_string(d) + "x" + std::to_string(d) + " are needed";
    return false;
  }
  if (impl.learnScales) {
    bool match = r.scales.size() == impl.scaleSites.size();
    for (size_t k = 0; match && k < r.scales.size(); ++k)
      match = int64_t(r.scales[k].size()) == impl.scaleSites[k].size;
    if (!match) {
      error = "scales are learned: " + std::to_string(impl.scaleSites.size()) +
              " log-scale vectors of the sites' sizes are needed";
      return false;
    }
  }

  if (impl.learnActClips) {
    if (r.actClips.size() != impl.clipSites.size()) {
      error = "learned clipping: " + std::to_string(impl.clipSites.size()) +
              " activation clip ratios are needed";
      return false;
    }
    if (!impl.ex->setFakeQuantClips(r.actClips, error))
      return false;
  }
  if (impl.learnWeightClips &&
      int64_t(r.weightClips.size()) != impl.weightClipCount) {
    error = "learned clipping: " + std::to_string(impl.weightClipCount) +
            " weight clip ratios are needed";
    return false;
  }
  // The clips' gradients of a step (after lossAndGradients).
  auto clipGradients = [&](Rotations &g) {
    g.actClips.clear();
    if (impl.learnActClips)
      g.actClips = impl.ex->clipGradients();
    g.weightClips.assign(impl.learnWeightClips ? impl.weightClipCount : 0, 0.0);
  };

  if (impl.activations) {
    // The rotations are the clone's rotate weights; nothing is folded.
    std::vector<std::string> names;
    auto set = [&](const std::string &name, const std::vector<double> &m) {
      names.push_back(name);
      std::vector<float> values(m.begin(), m.end());
      return impl.ex->setWeightValues(name, values, error);
    };
    if (!impl.r1Name.empty() && !set(impl.r1Name, r.r1))
      return false;
    for (int64_t l = 0; l < impl.layers; ++l)
      if (!impl.r2Names[l].empty() && !set(impl.r2Names[l], r.r2[l]))
        return false;
    for (size_t l = 0; l < impl.r3Names.size(); ++l)
      if (!set(impl.r3Names[l], r.r3[l]))
        return false;
    if (!grad)
      return impl.ex->loss(tokens, batch, seq, loss, error, sequenceLosses,
                           soft);
    std::vector<std::vector<float>> dw;
    if (!impl.ex->lossAndGradients(tokens, batch, seq, names, loss, dw, error,
                                   soft))
      return false;
    // A rotation without a site does not change the loss.
    size_t k = 0;
    auto next = [&](bool present, int64_t size) {
      if (!present)
        return std::vector<double>(size * size, 0.0);
      const std::vector<float> &g = dw[k++];
      return std::vector<double>(g.begin(), g.end());
    };
    grad->hidden = n;
    grad->headDim = d;
    grad->r1 = next(!impl.r1Name.empty(), n);
    grad->r2.clear();
    for (int64_t l = 0; l < impl.layers; ++l)
      grad->r2.push_back(next(!impl.r2Names[l].empty(), d));
    grad->r3.clear();
    for (size_t l = 0; l < impl.r3Names.size(); ++l)
      grad->r3.push_back(next(true, d));
    clipGradients(*grad);
    return true;
  }

  // The embedding rows the batch reads.
  std::vector<int64_t> used(tokens.begin(), tokens.end());
  llvm::sort(used);
  used.erase(std::unique(used.begin(), used.end()), used.end());
  auto gatherRows = [&](const std::vector<float> &m, int64_t cols) {
    std::vector<float> g(used.size() * cols);
    for (size_t i = 0; i < used.size(); ++i)
      std::memcpy(g.data() + i * cols, m.data() + used[i] * cols,
                  cols * sizeof(float));
    return g;
  };

  // 1. Fold the rotations into copies of the frozen weights.
  std::vector<std::string> names;
  // Training under gptq: the rotated Hessians of this step, by source
  // Hessian and rotation (-1: R1, l >= 0: R2 of layer l, -2: none).
  std::map<std::pair<const void *, int64_t>, std::vector<double>> rotatedH;
  // Evaluations that change only R3 (the R3 search) reuse the last fold and
  // its weight quantization; only the embedding rows a new batch reads are
  // rotated again.
  bool refold = !(impl.folded && r.r1 == impl.foldedR1 &&
                  r.r2 == impl.foldedR2 && r.weightClips == impl.foldedWClips &&
                  (!impl.learnScales || r.scales == impl.foldedScales));
  bool newRows = refold || used != impl.foldedRows;
  if (refold)
    impl.folded = false; // until this fold completes
  for (Entry &e : impl.entries) {
    names.push_back(e.name);
    if (!(e.rowsOnly ? newRows : refold))
      continue;
    if (e.rowsOnly) {
      if (used.empty() || used.back() >= e.rows || used.front() < 0) {
        error = "token ids outside the embedding table";
        return false;
      }
      std::vector<float> rows = gatherRows(e.base, n), w(rows.size());
      gemm(false, false, used.size(), n, n, rows.data(), n, r1.data(), n,
           w.data(), n);
      if (!impl.ex->setWeightRows(e.name, used, w, error))
        return false;
      continue;
    }
    std::vector<float> w(e.rows * e.cols);
    if (e.role == Role::Output) {
      w = e.base;
    } else if (e.role != Role::Writer) { // W R1
      gemm(false, false, e.rows, n, n, e.base.data(), n, r1.data(), n, w.data(),
           n);
    } else { // R1^T W
      gemm(true, false, n, e.cols, n, r1.data(), n, e.base.data(), e.cols,
           w.data(), e.cols);
    }
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      e.partial = w;
      if (e.isValue) { // rows of each KV head: R2^T A_h
        int64_t c = e.cols;
        for (int64_t r0 = 0; r0 < e.rows; r0 += d)
          gemm(true, false, d, c, d, q.data(), d, e.partial.data() + r0 * c, c,
               w.data() + r0 * c, c);
      } else { // columns of each head: A_h R2 ([rows * heads, d] x R2)
        gemm(false, false, e.rows * e.cols / d, d, d, e.partial.data(), d,
             q.data(), d, w.data(), d);
      }
    }
    // The learned scales, after the rotations (orthogonal, then diagonal).
    if (e.rowSite >= 0 && impl.scaleSides != -e.rowUse.sign)
      applyScale(e.rowUse, scaleFactors(e.rowUse, r.scales[e.rowSite]),
                 w.data(), e.rows, e.cols);
    if (e.colSite >= 0 && impl.scaleSides != -e.colUse.sign)
      applyScale(e.colUse, scaleFactors(e.colUse, r.scales[e.colSite]),
                 w.data(), e.rows, e.cols);
    if (e.rowSite >= 0 || e.colSite >= 0 || (impl.learnScales && e.quantize))
      e.scaled = w;
    if (e.quantize && e.clipOffset >= 0) {
      // Learned clipping (after the scales): round-to-nearest with this
      // weight's row ratios.
      std::vector<float> clips(r.weightClips.begin() + e.clipOffset,
                               r.weightClips.begin() + e.clipOffset + e.rows);
      e.rotated = w;
      numerics::fakeQuantRows(e.rotated.data(), e.rows, e.cols,
                              weightGrid(impl.spec), w.data(), clips.data());
    } else if (e.quantize) {
      const std::vector<double> *hessian = nullptr;
      if (impl.spec.gptq) {
        if (!e.hessian) {
          error = "no GPTQ Hessian for '" + e.name + "' (prepareGPTQ)";
          return false;
        }
        int64_t kind = e.role == Role::Reader ? -1
                       : e.r2Layer >= 0       ? e.r2Layer
                                              : -2;
        auto key = std::make_pair((const void *)e.hessian.get(), kind);
        auto it = rotatedH.find(key);
        if (it == rotatedH.end()) {
          std::vector<double> h =
              kind == -2 ? *e.hessian
              : kind == -1
                  ? rotatedHessian(*e.hessian, e.cols, r.r1.data(), n, false)
                  : rotatedHessian(*e.hessian, e.cols, r.r2[kind].data(), d,
                                   true);
          it = rotatedH.emplace(key, std::move(h)).first;
        }
        hessian = &it->second;
      }
      numerics::QuantizedWeight qw;
      if (!quantizeWeight(w.data(), e.rows, e.cols, impl.spec, hessian, qw,
                          error)) {
        error = "cannot quantize '" + e.name + "': " + error;
        return false;
      }
      qw.dequantize(w.data()); // straight-through: dL/dW' = dL/dQ(W')
      if (impl.learnScales)
        e.quantized = std::move(qw);
    }
    if (!impl.ex->setWeightValues(e.name, w, error))
      return false;
  }
  if (refold) {
    impl.folded = true;
    impl.foldedR1 = r.r1;
    impl.foldedR2 = r.r2;
    impl.foldedWClips = r.weightClips;
    impl.foldedScales = r.scales;
  }
  impl.foldedRows = used;
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    names.push_back(impl.r3Names[l]);
    std::vector<float> m(r.r3[l].begin(), r.r3[l].end());
    if (!impl.ex->setWeightValues(impl.r3Names[l], m, error))
      return false;
  }
  // The norm sites' RMSNorm weights s = exp(u).
  std::vector<size_t> normSites;
  for (size_t k = 0; k < impl.normScaleNames.size(); ++k) {
    if (impl.normScaleNames[k].empty())
      continue;
    normSites.push_back(k);
    names.push_back(impl.normScaleNames[k]);
    std::vector<float> s(r.scales[k].size());
    for (size_t i = 0; i < s.size(); ++i)
      s[i] = impl.scaleSides == -1 ? 1.0f : float(std::exp(r.scales[k][i]));
    if (!impl.ex->setWeightValues(impl.normScaleNames[k], s, error))
      return false;
  }
  if (!grad)
    return impl.ex->loss(tokens, batch, seq, loss, error, sequenceLosses, soft);

  // 2. dL/dW' for every rotated weight.
  std::vector<std::vector<float>> dw;
  if (!impl.ex->lossAndGradients(tokens, batch, seq, names, loss, dw, error,
                                 soft))
    return false;

  clipGradients(*grad);
  // Learned weight clipping: dL/dW' through the clip-aware estimator of the
  // weight's quantizer, and dL/dclip of its rows.
  for (size_t i = 0; i < impl.entries.size(); ++i) {
    Entry &e = impl.entries[i];
    if (e.clipOffset < 0)
      continue;
    std::vector<float> clips(r.weightClips.begin() + e.clipOffset,
                             r.weightClips.begin() + e.clipOffset + e.rows);
    std::vector<float> dx(dw[i].size());
    numerics::fakeQuantRowsBackward(
        e.rotated.data(), e.rows, e.cols, weightGrid(impl.spec), clips.data(),
        dw[i].data(), dx.data(), grad->weightClips.data() + e.clipOffset);
    dw[i].swap(dx);
  }

  // 3. The chain rule back to R1 and R2 (float products, summed in double).
  std::vector<float> g1(n * n, 0.0f);
  std::vector<std::vector<float>> g2(impl.layers,
                                     std::vector<float>(d * d, 0.0f));
  std::vector<std::vector<double>> gs;
  for (const ScaleSite &site : impl.scaleSites)
    gs.emplace_back(site.size, 0.0);
  for (size_t i = 0; i < impl.entries.size(); ++i) {
    Entry &e = impl.entries[i];
    std::vector<float> &dW = dw[i];
    // Learned scales: the weight quantizer's range is differentiated too
    // (as the activations' in the executor), so that a scale that enlarges
    // a group's largest weight pays for the coarser grid.
    // (Learned weight clipping's estimator above already has that part.)
    if (impl.learnScales && e.quantize && e.clipOffset < 0) {
      std::vector<float> dy = dW;
      const numerics::QuantizedWeight &q = e.quantized;
      numerics::QuantGrid grid = q.grid;
      grid.group = e.cols / q.groups;
      numerics::fakeQuantRangeBackward(
          e.scaled.data(), e.rows, e.cols, grid, q.scales.data(),
          q.zeros.empty() ? nullptr : q.zeros.data(), dy.data(), dW.data());
    }
    if (e.rowSite >= 0 || e.colSite >= 0)
      scaleBackward(e, r.scales, dW, gs, impl.scaleSides);
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      std::vector<float> &g = g2[e.r2Layer];
      std::vector<float> dA(dW.size());
      if (e.isValue) {
        // W' = blockdiag(R2^T) A: dR2 += sum_h A_h dW'_h^T, dA_h = R2 dW'_h.
        int64_t c = e.cols;
        for (int64_t r0 = 0; r0 < e.rows; r0 += d) {
          gemm(false, true, d, d, c, e.partial.data() + r0 * c, c,
               dW.data() + r0 * c, c, g.data(), d, 1.0f);
          gemm(false, false, d, c, d, q.data(), d, dW.data() + r0 * c, c,
               dA.data() + r0 * c, c);
        }
      } else {
        // W' = A blockdiag(R2): dR2 += sum_h A_h^T dW'_h, dA = dW' R2^T.
        int64_t blocks = e.rows * e.cols / d;
        gemm(true, false, d, d, blocks, e.partial.data(), d, dW.data(), d,
             g.data(), d, 1.0f);
        gemm(false, true, blocks, d, d, dW.data(), d, q.data(), d, dA.data(),
             d);
      }
      dW.swap(dA);
    }
    if (e.role == Role::Output) // no R1
      continue;
    if (e.rowsOnly) { // only the rows read contribute
      std::vector<float> rows = gatherRows(e.base, n),
                         drows = gatherRows(dW, n);
      gemm(true, false, n, n, used.size(), rows.data(), n, drows.data(), n,
           g1.data(), n, 1.0f);
    } else if (e.role != Role::Writer) // W' = W R1: dR1 += W^T dW'
      gemm(true, false, n, n, e.rows, e.base.data(), n, dW.data(), n, g1.data(),
           n, 1.0f);
    else // W' = R1^T W: dR1 += W dW'^T
      gemm(false, true, n, n, e.cols, e.base.data(), e.cols, dW.data(), e.cols,
           g1.data(), n, 1.0f);
  }
  grad->hidden = n;
  grad->headDim = d;
  grad->r1.assign(g1.begin(), g1.end());
  grad->r2.resize(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l)
    grad->r2[l].assign(g2[l].begin(), g2[l].end());
  grad->r3.clear();
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    const std::vector<float> &g = dw[impl.entries.size() + l];
    grad->r3.emplace_back(g.begin(), g.end());
  }
  // A norm site: dL/du_j += s_j dL/ds_j from its RMSNorm weight.
  for (size_t n = 0; n < normSites.size(); ++n) {
    const std::vector<float> &g =
        dw[impl.entries.size() + impl.r3Names.size() + n];
    std::vector<double> &out = gs[normSites[n]];
    for (size_t j = 0; j < out.size() && impl.scaleSides != -1; ++j)
      out[j] += std::exp(r.scales[normSites[n]][j]) * double(g[j]);
  }
  grad->scales = std::move(gs);
  return true;
}

} // namespace sq
