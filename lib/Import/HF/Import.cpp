//===- Import.cpp - a Hugging Face checkpoint folder into the sq IR -------===//
//
// The builder writes the ops in the order the ONNX route raises a
// TorchScript export of the same model (embedding; per layer the input norm,
// q/k/v, RoPE on q and k, attention, o_proj, the residual add, the
// post-attention norm, gate, SiLU, up, the product, down_proj, the residual
// add; the final norm and lm_head), so that the two routes print the same
// IR for the same weights (test/HF/hf-vs-onnx.test diffs them).
//
//===----------------------------------------------------------------------===//

#include "sq/Import/HF.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/HFConfig.h"
#include "sq/Import/ImportedModule.h"
#include "sq/Import/ModelConfig.h"
#include "sq/Import/Safetensors.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Regex.h"

using namespace mlir;
namespace st = sq::safetensors;

namespace sq {

bool isHFModelDir(llvm::StringRef path) {
  return llvm::sys::fs::is_directory(path);
}

std::string defaultTokenizerSpec(llvm::StringRef modelPath) {
  if (!isHFModelDir(modelPath))
    return "";
  llvm::SmallString<256> json(modelPath), sp(modelPath);
  llvm::sys::path::append(json, "tokenizer.json");
  llvm::sys::path::append(sp, "tokenizer.model");
  if (llvm::sys::fs::exists(json))
    return "hf:" + modelPath.str();
  // Older folders (LLaMA-2 conversions) may carry only the SentencePiece
  // model.
  if (llvm::sys::fs::exists(sp))
    return "sp:" + std::string(sp);
  return ""; // a byte-level model, say: the tool's own default applies
}

namespace {

class HFBuilder {
public:
  HFBuilder(const HFModelConfig &cfg, const st::Checkpoint &ck, ModuleOp module,
            std::string &error)
      : cfg(cfg), ck(ck), module(module), builder(module.getContext()),
        loc(builder.getUnknownLoc()), error(error) {}

  bool run();

private:
  bool fail(const std::string &msg) {
    error = msg;
    return false;
  }
  std::string layerName(int64_t layer, llvm::StringRef what) const {
    return ("model.layers." + llvm::Twine(layer) + "." + what).str();
  }
  /// The sq.weight of tensor `name`, which must have `shape` (`what` says
  /// where the shape comes from). With `asF32`, the data is converted to
  /// fp32 (biases, as the ONNX route stores them); otherwise the blob is a
  /// view of the mapped file.
  bool weight(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
              llvm::StringRef what, Value &out, bool asF32 = false,
              llvm::StringRef as = "");
  Value linear(Value x, llvm::StringRef name, int64_t out, int64_t in,
               bool bias, llvm::StringRef biasWhy, bool &ok);
  Value norm(Value x, llvm::StringRef name, bool &ok);
  bool checkAllUsed();

  const HFModelConfig &cfg;
  const st::Checkpoint &ck;
  ModuleOp module;
  OpBuilder builder;
  Location loc;
  std::string &error;
  llvm::StringSet<> used;
};

std::string shapeStr(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool HFBuilder::weight(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
                       llvm::StringRef what, Value &out, bool asF32,
                       llvm::StringRef as) {
  const st::Checkpoint::Entry *e = ck.find(name);
  if (!e)
    return fail(ck.listing().str() + ": tensor '" + name.str() +
                "': missing (" + cfg.architecture + " needs it: " + what.str() +
                ")");
  used.insert(name);
  const st::Tensor &t = *e->tensor;
  std::string where = e->file->path().str() + ": tensor '" + name.str() + "'";
  if (!st::isImportedFloat(t.dtype))
    return fail(where + ": dtype " + st::dtypeName(t.dtype).str() +
                " is not supported (weights must be F32, F16 or BF16)");
  if (llvm::ArrayRef<int64_t>(t.shape) != shape)
    return fail(where + ": shape " + t.shapeStr() + ", but config.json gives " +
                shapeStr(shape) + " (" + what.str() + ")");
  llvm::StringRef bytes = e->file->data(t);
  e->file->mapping()->willNeed(bytes);
  // A NaN or Inf weight is a corrupt checkpoint (as in the ONNX route).
  int64_t bad = st::firstNonFinite(bytes, t.dtype);
  if (bad >= 0)
    return fail(where + ": holds a non-finite value (NaN or Inf) at element " +
                std::to_string(bad) + ": the checkpoint's weights are corrupt");
  Type elementType;
  switch (t.dtype) {
  case st::DType::F16:
    elementType = builder.getF16Type();
    break;
  case st::DType::BF16:
    elementType = builder.getBF16Type();
    break;
  default:
    elementType = builder.getF32Type();
  }
  size_t elem = st::dtypeSize(t.dtype);
  std::optional<AsmResourceBlob> blob;
  if (asF32) {
    elementType = builder.getF32Type();
    auto heap = HeapAsmResourceBlob::allocate(t.numElements() * sizeof(float),
                                              alignof(float),
                                              /*dataIsMutable=*/true);
    st::toFloat(bytes, t.dtype,
                reinterpret_cast<float *>(heap.getMutableData().data()));
    blob = std::move(heap);
  } else if (reinterpret_cast<uintptr_t>(bytes.data()) % elem == 0) {
    // A view of the mapping, which the blob keeps alive: no copy.
    std::shared_ptr<const st::Mapping> keep = e->file->mapping();
    blob = AsmResourceBlob(
        llvm::ArrayRef<char>(bytes.data(), bytes.size()), elem,
        [keep](void *, size_t, size_t) mutable { keep.reset(); },
        /*dataIsMutable=*/false);
  } else {
    // Misaligned in its file (possible with a hand-written header): the
    // only case that copies.
    blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
        llvm::ArrayRef<char>(bytes.data(), bytes.size()), elem);
  }
  auto type = RankedTensorType::get(shape, elementType);
  auto attr = DenseResourceElementsAttr::get(type, as.empty() ? name : as,
                                             std::move(*blob));
  out = WeightOp::create(builder, loc, cast<ElementsAttr>(attr));
  return true;
}

Value HFBuilder::linear(Value x, llvm::StringRef name, int64_t out, int64_t in,
                        bool bias, llvm::StringRef biasWhy, bool &ok) {
  Value w, b;
  std::string wName = (name + ".weight").str(), bName = (name + ".bias").str();
  std::string what = "from hidden_size, num_attention_heads, "
                     "num_key_value_heads, head_dim and intermediate_size";
  if (!weight(wName, {out, in}, what, w)) {
    ok = false;
    return {};
  }
  if (bias) {
    if (!weight(bName, {out}, biasWhy, b, /*asF32=*/true)) {
      ok = false;
      return {};
    }
  }
  return LinearOp::create(builder, loc, x, w, b);
}

Value HFBuilder::norm(Value x, llvm::StringRef name, bool &ok) {
  Value gamma;
  if (!weight(name, {cfg.hiddenSize}, "[hidden_size]", gamma)) {
    ok = false;
    return {};
  }
  return RMSNormOp::create(builder, loc, x, gamma,
                           builder.getF64FloatAttr(cfg.rmsNormEps));
}

bool HFBuilder::checkAllUsed() {
  // Tensors the model does not read would be silently dropped: refuse
  // them, except RoPE's inverse frequencies, which old conversions saved
  // (transformers recomputes them from rope_theta).
  llvm::Regex invFreq("^model\\.layers\\.[0-9]+\\.self_attn\\.rotary_emb\\."
                      "inv_freq$");
  for (llvm::StringRef name : ck.names()) {
    if (used.contains(name) || invFreq.match(name))
      continue;
    const st::Checkpoint::Entry *e = ck.find(name);
    std::string hint =
        "not part of a " + cfg.architecture + " with this config.json";
    if (name.ends_with(".bias"))
      hint += " (config.json says the layer has no bias: attention_bias / "
              "mlp_bias)";
    else if (name.starts_with("model.layers."))
      hint += " (num_hidden_layers is " + std::to_string(cfg.numLayers) + ")";
    return fail(e->file->path().str() + ": tensor '" + name.str() +
                "': " + hint);
  }
  return true;
}

bool HFBuilder::run() {
  const HFModelConfig &c = cfg;
  int64_t H = c.hiddenSize, V = c.vocabSize, I = c.intermediateSize;
  int64_t qOut = c.numHeads * c.headDim, kvOut = c.numKvHeads * c.headDim;
  Type i64 = builder.getI64Type(), f32 = builder.getF32Type();
  int64_t dyn = ShapedType::kDynamic;
  auto idsType = RankedTensorType::get({dyn, dyn}, i64);
  auto logitsType = RankedTensorType::get({dyn, dyn, V}, f32);
  builder.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(
      builder, loc, "forward",
      builder.getFunctionType({idsType, idsType}, {logitsType}));
  Block *body = func.addEntryBlock();
  func.setArgAttr(0, "sq.name", builder.getStringAttr("input_ids"));
  func.setArgAttr(1, "sq.name", builder.getStringAttr("positions"));
  func.setResultAttr(0, "sq.name", builder.getStringAttr("logits"));
  builder.setInsertionPointToEnd(body);
  Value ids = body->getArgument(0), positions = body->getArgument(1);

  Value table;
  if (!weight("model.embed_tokens.weight", {V, H}, "[vocab_size, hidden_size]",
              table))
    return false;
  Value h = EmbeddingOp::create(
      builder, loc, RankedTensorType::get({dyn, dyn, H}, f32), table, ids);
  RopeScalingAttr scaling;
  if (c.ropeScaling)
    scaling = RopeScalingAttr::get(
        builder.getContext(),
        builder.getF64FloatAttr(c.ropeScaling->factor).getValue(),
        builder.getF64FloatAttr(c.ropeScaling->lowFreqFactor).getValue(),
        builder.getF64FloatAttr(c.ropeScaling->highFreqFactor).getValue(),
        c.ropeScaling->originalMaxPositions);
  llvm::APFloat theta = builder.getF64FloatAttr(c.ropeTheta).getValue();
  std::string attnBiasWhy = c.architecture == "Qwen2ForCausalLM"
                                ? "Qwen2's q/k/v projections have biases"
                                : "config.json: attention_bias is true";
  std::string mlpBiasWhy = "config.json: mlp_bias is true";
  bool ok = true;
  for (int64_t l = 0; l < c.numLayers && ok; ++l) {
    Value n1 = norm(h, layerName(l, "input_layernorm.weight"), ok);
    if (!ok)
      break;
    Value q = linear(n1, layerName(l, "self_attn.q_proj"), qOut, H, c.qkvBias,
                     attnBiasWhy, ok);
    Value k = ok ? linear(n1, layerName(l, "self_attn.k_proj"), kvOut, H,
                          c.qkvBias, attnBiasWhy, ok)
                 : Value();
    Value v = ok ? linear(n1, layerName(l, "self_attn.v_proj"), kvOut, H,
                          c.qkvBias, attnBiasWhy, ok)
                 : Value();
    if (!ok)
      break;
    Value qr = RopeOp::create(builder, loc, q, positions, c.numHeads, theta,
                              RopeLayout::RotateHalf, scaling);
    Value kr = RopeOp::create(builder, loc, k, positions, c.numKvHeads, theta,
                              RopeLayout::RotateHalf, scaling);
    auto attn = AttentionOp::create(
        builder, loc, cast<RankedTensorType>(qr.getType()), TypeRange(), qr, kr,
        v, Value(), Value(), c.numHeads, c.numKvHeads, FloatAttr(),
        /*causal=*/true,
        c.slidingWindow ? builder.getI64IntegerAttr(c.slidingWindow)
                        : IntegerAttr());
    Value o = linear(attn.getOutput(), layerName(l, "self_attn.o_proj"), H,
                     qOut, c.oBias, attnBiasWhy, ok);
    if (!ok)
      break;
    Value h1 = AddOp::create(builder, loc, h, o);
    Value n2 = norm(h1, layerName(l, "post_attention_layernorm.weight"), ok);
    if (!ok)
      break;
    Value gate = linear(n2, layerName(l, "mlp.gate_proj"), I, H, c.mlpBias,
                        mlpBiasWhy, ok);
    if (!ok)
      break;
    Value act = SiluOp::create(builder, loc, gate);
    Value up = linear(n2, layerName(l, "mlp.up_proj"), I, H, c.mlpBias,
                      mlpBiasWhy, ok);
    if (!ok)
      break;
    Value prod = MulOp::create(builder, loc, act, up);
    Value down = linear(prod, layerName(l, "mlp.down_proj"), H, I, c.mlpBias,
                        mlpBiasWhy, ok);
    if (!ok)
      break;
    h = AddOp::create(builder, loc, h1, down);
  }
  if (!ok)
    return false;
  Value final = norm(h, "model.norm.weight", ok);
  if (!ok)
    return false;
  Value head;
  if (c.tieWordEmbeddings) {
    // lm_head reads the embedding table: a second weight over the same
    // bytes (the ONNX route's untied copy, without copying).
    if (const st::Checkpoint::Entry *e = ck.find("lm_head.weight")) {
      const st::Checkpoint::Entry *emb = ck.find("model.embed_tokens.weight");
      if (e->tensor->dtype != emb->tensor->dtype ||
          e->tensor->shape != emb->tensor->shape ||
          e->file->data(*e->tensor) != emb->file->data(*emb->tensor))
        return fail(e->file->path().str() +
                    ": tensor 'lm_head.weight': differs from "
                    "model.embed_tokens.weight, but config.json says "
                    "tie_word_embeddings is true");
      used.insert("lm_head.weight");
    }
    if (!weight("model.embed_tokens.weight", {V, H},
                "[vocab_size, hidden_size]", head, false, "lm_head.weight"))
      return false;
  } else if (!weight("lm_head.weight", {V, H},
                     "[vocab_size, hidden_size]; tie_word_embeddings is "
                     "false",
                     head)) {
    return false;
  }
  Value logits = LinearOp::create(builder, loc, final, head);
  func::ReturnOp::create(builder, loc, logits);
  return checkAllUsed();
}

} // namespace

OwningOpRef<ModuleOp> importHFModel(llvm::StringRef dir, MLIRContext *context,
                                    std::string &error) {
  context->loadDialect<SQDialect, func::FuncDialect>();
  if (!llvm::sys::fs::is_directory(dir)) {
    error = dir.str() + ": not a directory (a Hugging Face checkpoint folder "
                        "holds config.json and model.safetensors)";
    return nullptr;
  }
  HFModelConfig cfg;
  if (!readHFConfig(dir, cfg, error))
    return nullptr;
  std::unique_ptr<st::Checkpoint> ck = st::Checkpoint::open(dir, error);
  if (!ck)
    return nullptr;

  OpBuilder builder(context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  if (!HFBuilder(cfg, *ck, *module, error).run())
    return nullptr;

  ImportedModelConfig config;
  config.vocabSize = cfg.vocabSize;
  config.hiddenSize = cfg.hiddenSize;
  config.numLayers = cfg.numLayers;
  config.numHeads = cfg.numHeads;
  config.numKvHeads = cfg.numKvHeads;
  config.headDim = cfg.headDim;
  config.intermediateSize = cfg.intermediateSize;
  config.ropeTheta = cfg.ropeTheta;
  config.ropeLayout = RopeLayout::RotateHalf;
  config.rmsNormEps = cfg.rmsNormEps;
  config.tieWordEmbeddings = cfg.tieWordEmbeddings;
  config.kvCache = false;
  config.attentionBias = cfg.qkvBias || cfg.oBias;
  config.mlpBias = cfg.mlpBias;
  config.slidingWindow = cfg.slidingWindow;
  config.maxPositionEmbeddings = cfg.maxPositions;
  if (cfg.ropeScaling)
    config.ropeScaling = RopeScalingAttr::get(
        context, builder.getF64FloatAttr(cfg.ropeScaling->factor).getValue(),
        builder.getF64FloatAttr(cfg.ropeScaling->lowFreqFactor).getValue(),
        builder.getF64FloatAttr(cfg.ropeScaling->highFreqFactor).getValue(),
        cfg.ropeScaling->originalMaxPositions);
  (*module)->setAttr("sq.config", buildConfigAttr(context, config));
  if (!finishImportedModule(*module, dir, error))
    return nullptr;
  if (!cfg.unknownFields.empty()) {
    std::string list;
    for (const std::string &f : cfg.unknownFields)
      list += (list.empty() ? "'" : ", '") + f + "'";
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, "config.json");
    emitWarning(UnknownLoc::get(context))
        << path << ": "
        << (cfg.unknownFields.size() == 1 ? "field " : "fields ") << list
        << " unknown to SQ, ignored (as transformers' " << cfg.architecture
        << " ignores fields it does not define)";
  }
  return module;
}

} // namespace sq
