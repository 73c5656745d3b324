//===- Structure.cpp - LLaMA structure check, names and config ------------===//
//
// After raising, @forward must be a LLaMA: embedding, then per layer
//   n1 = rms_norm(h); q,k,v = linear(n1); q,k = rope; a = attention(q,k,v)
//   h1 = h + linear_o(a); n2 = rms_norm(h1)
//   h2 = h1 + linear_down(silu(linear_gate(n2)) * linear_up(n2))
// then a final rms_norm and the lm_head linear. This file walks that chain,
// reports the first place where the graph differs, renames every weight to
// its Hugging Face name (a linear's bias `....q_proj.bias` beside its
// `....q_proj.weight`) and records the configuration on the module
// (`attention_bias` / `mlp_bias` = true only when such biases exist, as
// Qwen2's q/k/v projections have).
//
//===----------------------------------------------------------------------===//

#include "Raise.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ModelConfig.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cmath>
#include <cstring>
#include <optional>

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

template <typename OpT> OpT singleUser(Value v) {
  OpT found;
  for (Operation *user : v.getUsers()) {
    auto op = dyn_cast<OpT>(user);
    if (!op)
      continue;
    if (found && found != op)
      return OpT();
    found = op;
  }
  return found;
}

template <typename OpT> SmallVector<OpT> usersOf(Value v) {
  SmallVector<OpT> ops;
  for (Operation *user : v.getUsers())
    if (auto op = dyn_cast<OpT>(user))
      if (!llvm::is_contained(ops, op))
        ops.push_back(op);
  return ops;
}

WeightOp weightOf(Value v) { return v.getDefiningOp<WeightOp>(); }

/// Gives the weight's resource a new name, moving its bytes (no copy).
void renameWeight(WeightOp op, StringRef name) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob || resource.getRawHandle().getKey() == name)
    return;
  AsmResourceBlob moved = std::move(*blob);
  auto renamed = DenseResourceElementsAttr::get(resource.getType(), name,
                                                std::move(moved));
  op.setValueAttr(cast<ElementsAttr>(renamed));
}

double epsOf(RMSNormOp op) { return op.getEpsilon().convertToDouble(); }

/// Walks @forward's residual stream layer by layer, names the weights and
/// collects the configuration.
class StructureWalker {
public:
  StructureWalker(ModuleOp module, func::FuncOp func, std::string &error)
      : module(module), func(func), error(error) {}

  bool run();

private:
  bool fail(const std::string &msg) {
    error = msg;
    return false;
  }
  std::string layerName(StringRef what) const {
    return ("model.layers." + std::to_string(layer) + "." + what).str();
  }
  std::string where(StringRef what) const {
    return "layer " + std::to_string(layer) + ": " + what.str();
  }
  bool checkEps(RMSNormOp n) {
    if (eps < 0)
      eps = epsOf(n);
    return std::fabs(epsOf(n) - eps) <= 1e-12;
  }
  /// Names the weight `name` (`....weight`) and the bias, if any, the same
  /// with `.bias`; returns whether the linear has a bias.
  static bool nameLinear(LinearOp op, StringRef name) {
    renameWeight(weightOf(op.getWeight()), name);
    if (!op.getBias())
      return false;
    if (WeightOp bias = weightOf(op.getBias()))
      renameWeight(bias,
                   (name.drop_back(StringRef("weight").size()) + "bias").str());
    return true;
  }
  static void nameNorm(RMSNormOp op, StringRef name) {
    if (op.getScale())
      renameWeight(weightOf(op.getScale()), name);
  }

  /// `proj` must be added to the residual stream `stream`; `sum` is the
  /// new stream.
  bool addedToStream(LinearOp proj, Value stream, StringRef what, Value &sum) {
    AddOp add = singleUser<AddOp>(proj.getOutput());
    if (!add || !llvm::is_contained(add->getOperands(), stream))
      return fail(where(what.str() + " must be added to the residual stream"));
    sum = add.getOutput();
    return true;
  }

  bool finish(RMSNormOp norm, LinearOp head);
  bool attentionBlock(RMSNormOp n1, ArrayRef<LinearOp> readers,
                      ArrayRef<AttentionOp> attns, Value &h1);
  bool mlpBlock(Value h1);

  ModuleOp module;
  func::FuncOp func;
  std::string &error;

  EmbeddingOp embedding;
  int64_t vocab = 0, hidden = 0;
  /// The residual stream entering the current layer.
  Value h;
  int64_t layer = 0, heads = -1, kvHeads = -1, headDim = -1, ffn = -1;
  double theta = -1, eps = -1;
  std::optional<RopeLayout> ropeLayout;
  /// The layers' RoPE scaling (null: none), once a layer was seen.
  std::optional<RopeScalingAttr> ropeScaling;
  bool cache = false;
  /// Some q/k/v/o (gate/up/down) projection has a bias.
  bool attentionBias = false, mlpBias = false;
};

bool StructureWalker::run() {
  func.walk([&](EmbeddingOp op) { embedding = op; });
  if (!embedding)
    return fail("no embedding lookup (Gather of input_ids from a weight) "
                "was found");
  renameWeight(weightOf(embedding.getTable()), "model.embed_tokens.weight");
  auto embType = embedding.getTable().getType();
  vocab = embType.getDimSize(0);
  hidden = embType.getDimSize(1);

  h = embedding.getOutput();
  while (true) {
    SmallVector<RMSNormOp> norms = usersOf<RMSNormOp>(h);
    if (norms.size() != 1)
      return fail(where("expected one RMSNorm of the residual stream, found " +
                        std::to_string(norms.size())));
    RMSNormOp n1 = norms[0];
    if (!checkEps(n1))
      return fail(where("RMSNorm epsilon differs from the other layers'"));
    SmallVector<LinearOp> readers = usersOf<LinearOp>(n1.getOutput());
    SmallVector<AttentionOp> attns;
    func.walk([&](AttentionOp a) { attns.push_back(a); });
    if (readers.size() == 1 && layer == static_cast<int64_t>(attns.size()))
      return finish(n1, readers[0]);
    Value h1;
    if (!attentionBlock(n1, readers, attns, h1) || !mlpBlock(h1))
      return false;
    ++layer;
  }
}

/// The final norm and the lm_head: names them and records sq.config.
bool StructureWalker::finish(RMSNormOp norm, LinearOp head) {
  nameNorm(norm, "model.norm.weight");
  bool headBias = nameLinear(head, "lm_head.weight");
  if (head.getOutput().getType().getDimSize(2) != vocab)
    return fail("lm_head produces " +
                std::to_string(head.getOutput().getType().getDimSize(2)) +
                " logits but the vocabulary has " + std::to_string(vocab) +
                " entries");
  // Tied embeddings: same bytes as the embedding (now an untied copy).
  auto embRes = cast<DenseResourceElementsAttr>(
      weightOf(embedding.getTable()).getValue());
  auto headRes =
      cast<DenseResourceElementsAttr>(weightOf(head.getWeight()).getValue());
  bool tied = false;
  if (embRes.getType() == headRes.getType()) {
    auto *a = embRes.getRawHandle().getBlob(),
         *b = headRes.getRawHandle().getBlob();
    tied = a && b && a->getData().size() == b->getData().size() &&
           std::memcmp(a->getData().data(), b->getData().data(),
                       a->getData().size()) == 0;
  }
  ImportedModelConfig config;
  config.vocabSize = vocab;
  config.hiddenSize = hidden;
  config.numLayers = layer;
  config.numHeads = heads;
  config.numKvHeads = kvHeads;
  config.headDim = headDim;
  config.intermediateSize = ffn;
  config.ropeTheta = theta;
  config.ropeLayout = ropeLayout.value_or(RopeLayout::RotateHalf);
  config.rmsNormEps = eps;
  config.tieWordEmbeddings = tied;
  config.kvCache = cache;
  config.attentionBias = attentionBias;
  config.mlpBias = mlpBias;
  config.lmHeadBias = headBias;
  // A sliding window common to every layer (Mistral's sliding_window).
  std::optional<int64_t> window;
  bool uniform = true;
  module.walk([&](AttentionOp a) {
    int64_t w = a.getWindow().value_or(0);
    uniform &= !window || *window == w;
    window = w;
  });
  if (uniform && window && *window)
    config.slidingWindow = *window;
  if (ropeScaling && *ropeScaling)
    config.ropeScaling = *ropeScaling;
  module->setAttr("sq.config", buildConfigAttr(module.getContext(), config));
  if (layer == 0)
    return fail("the model has no decoder layer");
  return true;
}

/// The layer's attention: q, k and v projections of the input norm, RoPE on
/// q and k, sq.attention, o_proj added to the residual stream (`h1`).
bool StructureWalker::attentionBlock(RMSNormOp n1, ArrayRef<LinearOp> readers,
                                     ArrayRef<AttentionOp> attns, Value &h1) {
  if (readers.size() != 3)
    return fail(where("expected the q, k and v projections to read the "
                      "input RMSNorm, found " +
                      std::to_string(readers.size()) + " linear layers"));
  if (layer >= static_cast<int64_t>(attns.size()))
    return fail(where("no attention"));
  AttentionOp attn = attns[layer];
  auto ropeInput = [](Value v) -> LinearOp {
    if (auto rope = v.getDefiningOp<RopeOp>())
      return rope.getInput().getDefiningOp<LinearOp>();
    return LinearOp();
  };
  LinearOp q = ropeInput(attn.getQuery()), k = ropeInput(attn.getKey()),
           v = attn.getValue().getDefiningOp<LinearOp>();
  if (!q || !k || !v || !llvm::is_contained(readers, q) ||
      !llvm::is_contained(readers, k) || !llvm::is_contained(readers, v))
    return fail(where("the attention's query and key must be RoPE of "
                      "linear projections of the input RMSNorm, and its "
                      "value a linear projection of it"));
  auto qRope = attn.getQuery().getDefiningOp<RopeOp>();
  auto kRope = attn.getKey().getDefiningOp<RopeOp>();
  double t = qRope.getTheta().convertToDouble();
  if (kRope.getTheta().convertToDouble() != t || (theta >= 0 && t != theta))
    return fail(where("RoPE theta differs between q, k or layers"));
  theta = t;
  if (qRope.getLayout() != kRope.getLayout() ||
      (ropeLayout && *ropeLayout != qRope.getLayout()))
    return fail(where("RoPE layout differs between q, k or layers"));
  ropeLayout = qRope.getLayout();
  if (qRope.getScalingAttr() != kRope.getScalingAttr() ||
      (ropeScaling && *ropeScaling != qRope.getScalingAttr()))
    return fail(where("RoPE scaling differs between q, k or layers"));
  ropeScaling = qRope.getScalingAttr();
  int64_t hd = attn.getHeadDim();
  if ((heads >= 0 &&
       (heads != int64_t(attn.getNumHeads()) ||
        kvHeads != int64_t(attn.getNumKvHeads()) || headDim != hd)))
    return fail(where("head counts differ from the previous layers"));
  heads = attn.getNumHeads();
  kvHeads = attn.getNumKvHeads();
  headDim = hd;
  cache = attn.hasCache();
  nameNorm(n1, layerName("input_layernorm.weight"));
  attentionBias |= nameLinear(q, layerName("self_attn.q_proj.weight"));
  attentionBias |= nameLinear(k, layerName("self_attn.k_proj.weight"));
  attentionBias |= nameLinear(v, layerName("self_attn.v_proj.weight"));

  LinearOp o = singleUser<LinearOp>(attn.getOutput());
  if (!o || !attn.getOutput().hasOneUse())
    return fail(where("the attention output must feed only o_proj"));
  attentionBias |= nameLinear(o, layerName("self_attn.o_proj.weight"));
  return addedToStream(o, h, "o_proj", h1);
}

/// The layer's MLP: post-attention norm, SwiGLU, down_proj added to the
/// residual stream (the next layer's `h`).
bool StructureWalker::mlpBlock(Value h1) {
  SmallVector<RMSNormOp> norms2 = usersOf<RMSNormOp>(h1);
  if (norms2.size() != 1)
    return fail(where("expected one post-attention RMSNorm"));
  RMSNormOp n2 = norms2[0];
  if (!checkEps(n2))
    return fail(where("RMSNorm epsilon differs from the other layers'"));
  nameNorm(n2, layerName("post_attention_layernorm.weight"));
  SmallVector<LinearOp> mlpIn = usersOf<LinearOp>(n2.getOutput());
  if (mlpIn.size() != 2)
    return fail(where("expected gate_proj and up_proj to read the "
                      "post-attention RMSNorm, found " +
                      std::to_string(mlpIn.size()) + " linear layers"));
  LinearOp gate, up;
  for (LinearOp l : mlpIn) {
    if (singleUser<SiluOp>(l.getOutput()))
      gate = l;
    else
      up = l;
  }
  if (!gate || !up)
    return fail(where("expected SiLU on exactly one of gate_proj/up_proj "
                      "(SwiGLU)"));
  SiluOp silu = singleUser<SiluOp>(gate.getOutput());
  MulOp mul = singleUser<MulOp>(silu.getOutput());
  if (!mul || !llvm::is_contained(mul->getOperands(), up.getOutput()))
    return fail(where("expected silu(gate_proj) * up_proj (SwiGLU)"));
  LinearOp down = singleUser<LinearOp>(mul.getOutput());
  if (!down)
    return fail(where("expected down_proj after the SwiGLU product"));
  int64_t f = gate.getOutput().getType().getDimSize(2);
  if (ffn >= 0 && ffn != f)
    return fail(where("intermediate size differs from the previous layers"));
  ffn = f;
  mlpBias |= nameLinear(gate, layerName("mlp.gate_proj.weight"));
  mlpBias |= nameLinear(up, layerName("mlp.up_proj.weight"));
  mlpBias |= nameLinear(down, layerName("mlp.down_proj.weight"));
  return addedToStream(down, h1, "down_proj", h);
}

} // namespace

bool checkStructureAndName(ModuleOp module, std::string &error) {
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func)
    return (error = "no @forward function", false);
  return StructureWalker(module, func, error).run();
}

} // namespace onnx_import
} // namespace sq
