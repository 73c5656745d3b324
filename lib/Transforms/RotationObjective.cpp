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
// This file builds the objective (create(): the training clone, its
// weights' entries, the activation rotate ops, learned clipping and scale
// sites) and collects GPTQ's Hessians; evaluate() is in
// RotationObjectiveEval.cpp; the state both share is RotationObjectiveImpl.h.
//
//===----------------------------------------------------------------------===//

#include "QuantizeCalibration.h"
#include "RotationObjectiveImpl.h"
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
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace mlir;

namespace sq {
//===----------------------------------------------------------------------===//
// The objective
//===----------------------------------------------------------------------===//

using objective::ClipSite;
using objective::Entry;
using objective::Role;

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

/// Bytes per quantized (or scaled) weight value that learned scales or
/// learned weight clips keep from the fold to the backward: the weight
/// before its fake quantization, fp32 (measured: +0.83 GiB for the 0.204 B
/// quantized values of the 1-layer LLaMA-2-7B shape with both).
static constexpr int64_t kPreQuantBytes = 4;

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
    // Without learned scales the clipped weights' pre-quantization values
    // are a copy of their own (with scales, the scaled copy serves both).
    if (!impl.learnScales &&
        !impl.checkMemory(
            impl.plannedBytes + kPreQuantBytes * impl.preQuantValues, error))
      return false;
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

/// A value in kB from a /proc file's "Key:   N kB" line; -1 if absent.
static int64_t procKiB(const char *path, const char *key) {
  FILE *f = std::fopen(path, "r");
  if (!f)
    return -1;
  char line[256];
  int64_t value = -1;
  size_t n = std::strlen(key);
  while (std::fgets(line, sizeof(line), f))
    if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
      value = std::strtoll(line + n + 1, nullptr, 10);
      break;
    }
  std::fclose(f);
  return value;
}

/// The memory the weights formulation may add to what this process holds,
/// in bytes: the SQ_MEMORY_BUDGET_MB environment variable, else this
/// process's share of the machine's available memory (processes of one
/// mpirun on this machine split it); -1 when unknown (no check).
static int64_t memoryBudgetBytes() {
  if (const char *env = std::getenv("SQ_MEMORY_BUDGET_MB"); env && *env)
    return std::strtoll(env, nullptr, 10) << 20;
  int64_t avail = procKiB("/proc/meminfo", "MemAvailable");
  if (avail < 0)
    return -1;
  int64_t local = 1;
  if (const char *env = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
    local = std::max<int64_t>(1, std::strtoll(env, nullptr, 10));
  return (avail / local) << 10;
}

/// What the weights formulation adds to the loaded model, in bytes: the
/// executor's folded copy of every rotated weight (`bytesPerValue`: bf16 2,
/// fp32 4; the frozen originals are read where they are, not copied), one
/// weight's transients at a time (its fold, its gradient and their scratch:
/// 10.3 bytes a value of the largest weight measured, 12 planned) and R1's
/// state (the rotation, its gradient and the Cayley step, about 48 bytes per
/// entry of hidden^2). Measured on the 1-layer LLaMA-2-7B shape (0.466 B
/// values, 131 M in the largest): 2.9 GB (bf16) and 3.8 GB (fp32) over the
/// 1.1 GiB of the loaded module (docs/scale.md).
static int64_t weightsFormulationBytes(int64_t values, int64_t largest,
                                       int64_t hidden, int64_t bytesPerValue) {
  return values * bytesPerValue + largest * 12 + hidden * hidden * 48;
}

bool RotationObjective::Impl::checkMemory(int64_t need,
                                          std::string &error) const {
  int64_t budget = memoryBudgetBytes();
  if (budget < 0 || need <= budget)
    return true;
  char buf[640];
  std::snprintf(
      buf, sizeof(buf),
      "quant=%s trains with the weights in the loop (apply=weights), "
      "which adds a folded copy of the %.2f M rotated weight values "
      "and one weight's gradient at a time: about %.1f GB, more than the "
      "%.1f GB this process can add; train with 16-bit weights and no "
      "learned scales instead (sq-compile --recipe=spinquant, or "
      "quant=w16a4kv4 scales=none: --calib-options='quant=w16a4kv4 "
      "scales=none'), or use --rotate=hadamard, or more memory "
      "(SQ_MEMORY_BUDGET_MB overrides this estimate)",
      spec.str().c_str(), double(rotatedValues) * 1e-6, double(need) * 1e-9,
      double(budget) * 1e-9);
  error = buf;
  return false;
}

/// scales-init=smooth bounds its log-scales (s within e^-6 .. e^6).
static constexpr double kMaxInitialLogScale = 6.0;

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
  if (!impl.activations) {
    // Fail before allocating rather than be killed by the kernel's OOM
    // killer half-way (LLaMA-3.2-1B in bf16: ~6.4 GB more; 8B: ~23 GB).
    int64_t values = 0, largest = 0, kept = 0;
    for (const Entry &e : impl.entries) {
      values += e.rows * e.cols;
      largest = std::max(largest, e.rows * e.cols);
      if (e.quantize || e.rowSite >= 0 || e.colSite >= 0)
        kept += e.rows * e.cols;
    }
    impl.rotatedValues = values;
    impl.preQuantValues = kept;
    // Learned scales keep each step's scaled weight (fp32) until the
    // backward.
    impl.plannedBytes = weightsFormulationBytes(values, largest, impl.hidden,
                                                impl.bf16 ? 2 : 4) +
                        (learnScales ? kPreQuantBytes * kept : 0);
    if (!impl.checkMemory(impl.plannedBytes, error))
      return nullptr;
  }
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
    e.base = impl.ex->weightSnapshot(e.name);
    if (!e.base || e.base.rows() != e.rows || e.base.cols() != e.cols) {
      error = "weight '" + e.name + "' is not a float weight of the executor";
      return nullptr;
    }
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

void RotationObjective::setPrefixCache(int64_t maxBytes) {
  impl->ex->setPrefixCache(maxBytes);
}

Executor::SegmentCounts RotationObjective::segmentCounts() const {
  return impl->ex->segmentCounts();
}

bool RotationObjective::smoothScales(
    const std::vector<std::vector<int64_t>> &windows,
    std::vector<std::vector<double>> &logScales, std::string &error) const {
  const Impl &impl = *this->impl;
  if (!impl.learnScales) {
    error = "smoothScales: the objective does not learn scales";
    return false;
  }
  std::map<std::string, const Entry *> byName;
  for (const Entry &e : impl.entries)
    byName[e.name] = &e;
  auto entryOf = [&](const ScaleUse &use) -> const Entry * {
    auto it = byName.find(use.name);
    return it == byName.end() ? nullptr : it->second;
  };
  // The linears whose outputs' RMS is needed (the rows sides); those that
  // read the same input (q/k/v_proj) share one Hessian: `shares` maps each
  // to the linear whose Hessian is collected.
  SmallVector<Operation *> ops;
  llvm::DenseMap<Operation *, Operation *> shares;
  llvm::DenseMap<Value, Operation *> byInput;
  for (const ScaleSite &site : impl.scaleSites)
    for (const ScaleUse &use : site.uses) {
      const Entry *e = entryOf(use);
      if (site.norm || use.bias || use.columns)
        continue;
      if (!e || !e->linear) {
        error = "smoothScales: no float linear for '" + use.name + "'";
        return false;
      }
      if (shares.count(e->linear))
        continue;
      Operation *owner = e->linear;
      if (auto l = dyn_cast<LinearOp>(e->linear))
        owner = byInput.try_emplace(l.getInput(), e->linear).first->second;
      shares[e->linear] = owner;
      if (owner == e->linear)
        ops.push_back(e->linear);
    }
  std::map<Operation *, HessianAccumulator> acc;
  if (!ops.empty() && failed(collectHessians(impl.source, windows, ops, acc))) {
    error = "cannot collect the float model's statistics for scales-init";
    return false;
  }
  logScales.clear();
  for (const ScaleSite &site : impl.scaleSites) {
    std::vector<double> u(site.size, 0.0);
    if (site.norm) {
      logScales.push_back(std::move(u));
      continue;
    }
    // Mean squares of the s side (0) and the 1/s side (1) per index.
    std::vector<double> sum[2] = {std::vector<double>(site.size, 0.0),
                                  std::vector<double>(site.size, 0.0)};
    std::vector<int64_t> count[2] = {std::vector<int64_t>(site.size, 0),
                                     std::vector<int64_t>(site.size, 0)};
    for (const ScaleUse &use : site.uses) {
      if (use.bias)
        continue;
      const Entry &e = *entryOf(use);
      int side = use.sign > 0 ? 0 : 1;
      int64_t rows = e.rows, cols = e.cols;
      if (!use.columns) {
        // E[(w_r x)^2] = w_r^T H w_r: the rows of (W H) . W.
        const std::vector<double> &h = acc.at(shares.at(e.linear)).hessian();
        std::vector<float> hf(h.begin(), h.end()), wh(rows * cols), scratch;
        const float *base = baseValues(e, scratch);
        numerics::gemmF32(numerics::Transpose::No, numerics::Transpose::No,
                          rows, cols, cols, 1.0f, base, cols, hf.data(), cols,
                          0.0f, wh.data(), cols);
        for (int64_t r = 0; r < rows; ++r) {
          double q = 0;
          for (int64_t c = 0; c < cols; ++c)
            q += double(wh[r * cols + c]) * base[r * cols + c];
          sum[side][use.index[r]] += std::max(q, 0.0);
          ++count[side][use.index[r]];
        }
      } else {
        std::vector<float> pre;
        const float *w = baseValues(e, pre);
        if (use.transformed) { // columns in the basis before R4
          if (w != pre.data())
            pre.assign(w, w + rows * cols);
          transformRows(pre.data(), rows, cols, use.seed, /*transpose=*/true);
          w = pre.data();
        }
        std::vector<double> colSq(cols, 0.0);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            colSq[c] += double(w[r * cols + c]) * w[r * cols + c];
        for (int64_t c = 0; c < cols; ++c) {
          sum[side][use.index[c]] += colSq[c] / double(rows);
          ++count[side][use.index[c]];
        }
      }
    }
    // u = (log m- - log m+) / 2 = (log ms- - log ms+) / 4, centred over
    // the indices where both sides are nonzero (elsewhere 0), bounded.
    double mean = 0;
    int64_t valid = 0;
    std::vector<bool> ok(site.size, false);
    for (int64_t k = 0; k < site.size; ++k) {
      if (!count[0][k] || !count[1][k])
        continue;
      double plus = sum[0][k] / count[0][k], minus = sum[1][k] / count[1][k];
      if (!(plus > 0) || !(minus > 0) || !std::isfinite(plus) ||
          !std::isfinite(minus))
        continue;
      u[k] = 0.25 * (std::log(minus) - std::log(plus));
      ok[k] = true;
      mean += u[k];
      ++valid;
    }
    if (valid)
      mean /= double(valid);
    for (int64_t k = 0; k < site.size; ++k)
      u[k] = ok[k] ? std::clamp(u[k] - mean, -kMaxInitialLogScale,
                                kMaxInitialLogScale)
                   : 0.0;
    logScales.push_back(std::move(u));
  }
  return true;
}

} // namespace sq
