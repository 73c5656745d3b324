//===- ComMicrosoftOps.cpp - ONNX Runtime contrib ops ---------------------===//
//
// The com.microsoft domain, as ONNX Runtime GenAI's model builder writes a
// LLaMA: SkipSimplifiedLayerNormalization (residual add + RMSNorm),
// RotaryEmbedding, GroupQueryAttention (with do_rotary and BNSH caches) and
// MultiHeadAttention (unidirectional). Also the pieces the opset-23 fused ops
// share with them (Opset23Ops.cpp): RoPE from cos/sin caches, the
// sq.attention of a fused attention op and RotaryEmbedding itself.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cmath>

using namespace mlir;

namespace sq {
namespace onnx_import {

/// RoPE from cos/sin caches [max_positions, rotary_dim/2] (RotaryEmbedding,
/// GroupQueryAttention with do_rotary): rows at the probe positions.
bool ropeFromCaches(Raiser &raiser, const AValRef &x, const AValRef &cosCache,
                    const AValRef &sinCache, bool interleaved, int64_t heads,
                    AValRef &out) {
  CTensor c, s;
  if (!cosCache || !sinCache || !raiser.concreteOf(cosCache, c) ||
      !raiser.concreteOf(sinCache, s) || c.rank() != 2 || c.shape != s.shape)
    return raiser.fail("RoPE needs constant cos/sin caches [max_positions, "
                       "rotary_dim/2]");
  // The whole cache, positions 0..max_positions-1.
  int64_t rows = c.shape[0], half = c.shape[1];
  if (raiser.positionStart + raiser.options.probeSeq > rows)
    return raiser.fail(
        "the cos/sin caches are shorter than the probe positions");
  return ropeFromHalfTables(raiser, x, c.data, s.data, rows, half, interleaved,
                            heads, out, /*firstPosition=*/0);
}

bool ropeFromHalfTables(Raiser &raiser, const AValRef &x,
                        const std::vector<double> &cosHalf,
                        const std::vector<double> &sinHalf, int64_t rows,
                        int64_t half, bool interleaved, int64_t heads,
                        AValRef &out, int64_t firstPosition) {
  // Rotate-half repeats the half-width tables over both halves; interleaved
  // pairs use them as they are.
  int64_t cols = interleaved ? half : 2 * half;
  std::vector<double> cosT(rows * cols), sinT(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < cols; ++d) {
      int64_t src = r * half + (d % half);
      cosT[r * cols + d] = cosHalf[src];
      sinT[r * cols + d] = sinHalf[src];
    }
  if (heads * cols != raiser.featureSize(x->view))
    return raiser.fail("RoPE over " + std::to_string(heads) + " heads of " +
                       std::to_string(cols) + " does not cover the " +
                       std::to_string(raiser.featureSize(x->view)) +
                       " features (partial rotary is not supported)");
  return finishRope(raiser, x, x->view, cosT, sinT, rows, cols,
                    interleaved ? RopeLayout::Interleaved
                                : RopeLayout::RotateHalf,
                    out, heads, firstPosition);
}

/// The sq.attention of a fused attention op (GroupQueryAttention,
/// MultiHeadAttention, ONNX Attention): outputs are (output, present_key,
/// present_value); caches must be graph inputs. `scale` 0 means default.
/// Keys and values already written into a static cache (TensorScatter,
/// StaticCache.cpp) attend to that cache.
bool buildAttention(Raiser &raiser, const std::string &op, const AValRef &q,
                    const AValRef &k, const AValRef &v, const AValRef &pastK,
                    const AValRef &pastV, int64_t heads, int64_t kvHeads,
                    int64_t headDim, double scale, const onnx::NodeProto &node,
                    std::vector<AValRef> &outs, int64_t window) {
  if (static_cast<bool>(pastK) != static_cast<bool>(pastV) ||
      (pastK && (pastK->kind != AVal::Act || !isa<BlockArgument>(pastK->v))))
    return raiser.fail(op + " past_key/past_value must both be graph inputs");
  if (static_cast<bool>(k->kv) != static_cast<bool>(v->kv) || (k->kv && pastK))
    return raiser.fail(op + " keys and values differ in KV-cache use");
  FloatAttr scaleAttr;
  if (scale != 0.0 &&
      std::fabs(scale - 1.0 / std::sqrt(double(headDim))) > 1e-6 * scale)
    scaleAttr = raiser.builder.getF64FloatAttr(scale);
  SmallVector<Type> presentTypes;
  Value pk, pv, keyNew = k->kv ? k->kvNew : k->v,
                valueNew = v->kv ? v->kvNew : v->v;
  if (pastK) {
    pk = pastK->v;
    pv = pastV->v;
  } else if (k->kv) {
    pk = k->kv->past;
    pv = v->kv->past;
  }
  if (pk)
    presentTypes = {pk.getType(), pv.getType()};
  auto attn = AttentionOp::create(
      raiser.builder, raiser.loc, cast<RankedTensorType>(q->v.getType()),
      presentTypes, q->v, keyNew, valueNew, pk, pv, heads, kvHeads, scaleAttr,
      true, window ? raiser.builder.getI64IntegerAttr(window) : IntegerAttr());
  if (k->kv) {
    k->kv->presentOut = attn.getPresent()[0];
    v->kv->presentOut = attn.getPresent()[1];
  }
  outs.assign(std::max(3, node.output_size()), nullptr);
  outs[0] = raiser.act(attn.getOutput(), q->view);
  if (pastK)
    for (int i = 0; i < 2; ++i) {
      AValRef present = raiser.act(Value(), pastK->view);
      present->kv = std::make_shared<KVCat>();
      present->kv->past = i ? pv : pk;
      present->kv->presentOut = attn.getPresent()[i];
      outs[1 + i] = present;
    }
  return true;
}

bool verifyCausalBias(Raiser &raiser, OpCall &call, size_t index) {
  AValRef mask = call.input(index);
  const std::string &name = call.node.input(index);
  if (mask->kind != AVal::Concrete)
    return raiser.fail("attention mask '" + name + "' is " +
                       kindName(mask->kind) +
                       ": expected one computed from attention_mask and the "
                       "shapes");
  // The shapes a runtime feeds: the probe, and with a cache a prompt without
  // one and a single token after the cached ones. A builder's mask may be
  // computable only for the last two (GenAI: no chunked prefill); the probe
  // must then fail and both others hold.
  struct Probe {
    int64_t seq, past;
  };
  int64_t seq = raiser.options.probeSeq, past = raiser.positionStart;
  std::vector<Probe> probes;
  if (mask->invalid.empty())
    probes.push_back({seq, past});
  if (raiser.cached())
    for (Probe p : {Probe{seq, 0}, Probe{1, raiser.options.probePast}})
      probes.push_back(p);
  if (probes.empty()) {
    raiser.errNamesNode = true;
    return raiser.fail(mask->invalid);
  }
  for (size_t i = 0; i < probes.size(); ++i) {
    const Probe &p = probes[i];
    CTensor value;
    std::string why;
    if (i == 0 && mask->invalid.empty())
      value = mask->c;
    else if (!raiser.probeValue(name, p.seq, p.past, value, why)) {
      if (!mask->invalid.empty()) {
        raiser.errNamesNode = true;
        return raiser.fail(mask->invalid + " (and for " +
                           std::to_string(p.seq) + " new tokens after " +
                           std::to_string(p.past) + " cached ones: " + why +
                           ")");
      }
      return raiser.fail("attention mask '" + name +
                         "' cannot be computed for " + std::to_string(p.seq) +
                         " new tokens after " + std::to_string(p.past) +
                         " cached ones: " + why);
    }
    if (!isCausalMaskTensor(value, p.seq, p.past, why))
      return raiser.fail("attention mask '" + name + "' for " +
                         std::to_string(p.seq) + " new tokens after " +
                         std::to_string(p.past) + " cached ones " + why +
                         "; expected a causal mask (attention_mask assumed "
                         "all ones)");
  }
  return true;
}

bool rotaryEmbedding(Raiser &raiser, OpCall &call, bool onnxOrder) {
  std::vector<AValRef> &outs = call.outs;
  AValRef x;
  if (!raiser.asAct(call.input(0), x, "the input of RotaryEmbedding"))
    return false;
  // com.microsoft: (input, position_ids, cos_cache, sin_cache); ONNX
  // opset 23: (X, cos_cache, sin_cache, position_ids).
  // Without position_ids (opset 23), cos/sin are already gathered at the
  // positions: [batch, seq, rotary_dim/2].
  AValRef cosIn = call.input(2), sinIn = call.input(3);
  bool gathered = false;
  if (onnxOrder) {
    gathered = !call.input(3);
    cosIn = call.input(1);
    sinIn = call.input(2);
  }
  if (raiser.attrIntOr(call.node, "rotary_embedding_dim", 0) != 0)
    return raiser.fail(
        "partial rotary (rotary_embedding_dim) is not supported");
  CTensor c;
  if (!cosIn || !raiser.concreteOf(cosIn, c) || c.rank() != (gathered ? 3 : 2))
    return raiser.fail(
        gathered ? "RotaryEmbedding without position_ids needs cos/sin "
                   "gathered at the positions, constant at the probe "
                   "([batch, seq, rotary_dim/2])"
                 : "RotaryEmbedding needs a constant cos_cache");
  int64_t headDim = 2 * c.shape.back();
  int64_t heads = raiser.attrIntOr(call.node, "num_heads", 0);
  if (!heads)
    heads = raiser.featureSize(x->view) / headDim;
  AValRef out;
  if (!isCanonical(x->view))
    return raiser.fail("RotaryEmbedding on 4-D [batch, heads, seq, head_dim] "
                       "input is not supported; expected [batch, seq, hidden]");
  bool interleaved = raiser.attrIntOr(call.node, "interleaved", 0) != 0;
  if (gathered
          ? !ropeFromGathered(raiser, x, cosIn, sinIn, interleaved, heads, out)
          : !ropeFromCaches(raiser, x, cosIn, sinIn, interleaved, heads, out))
    return false;
  outs = {out};
  return true;
}

namespace {

/// x + skip (+ bias), then RMSNorm: outputs (normed, -, -, x + skip). A
/// bias is the bias of the linear layer (o_proj, down_proj) that computes x
/// (or skip).
bool skipSimplifiedLayerNorm(Raiser &raiser, OpCall &call) {
  std::vector<AValRef> &outs = call.outs;
  AValRef x, skip;
  if (!raiser.canonicalAct(call.input(0), x,
                           "the input of SkipSimplifiedLayerNorm") ||
      !raiser.canonicalAct(call.input(1), skip,
                           "the skip of SkipSimplifiedLayerNorm"))
    return false;
  if (!call.input(2) || call.input(2)->kind != AVal::Weight)
    return raiser.fail(
        "SkipSimplifiedLayerNormalization without a scale weight");
  if (AValRef bias = call.input(3)) {
    AValRef &linear = isBiaslessLinear(x) ? x : skip;
    if (!isBiaslessLinear(linear) || !isBiasVector(bias))
      return raiser.fail("SkipSimplifiedLayerNormalization with a bias that "
                         "is not a constant vector added to a linear layer's "
                         "output; expected the bias of the o_proj or "
                         "down_proj that computes its input");
    if (!addLinearBias(raiser, call, linear, bias, linear))
      return false;
  }
  auto sum = AddOp::create(raiser.builder, raiser.loc, x->v, skip->v);
  Value gamma;
  if (!raiser.weightValue(call.input(2)->tensor, false, gamma))
    return false;
  auto norm = RMSNormOp::create(raiser.builder, raiser.loc, sum, gamma,
                                raiser.builder.getF64FloatAttr(roundAsFloat32(
                                    attrFloat(call.node, "epsilon", 1e-5))));
  outs.assign(std::max(4, call.node.output_size()), nullptr);
  outs[0] = raiser.act(norm, x->view);
  outs[3] = raiser.act(sum, x->view);
  return true;
}

bool microsoftRotaryEmbedding(Raiser &raiser, OpCall &call) {
  return rotaryEmbedding(raiser, call, /*onnxOrder=*/false);
}

/// A packed QKV projection (GroupQueryAttention with empty key and value
/// inputs: the GenAI builder's fp32/int4 form) split into the q, k and v
/// linears a LLaMA has: rows [0, q), [q, q + kv) and [q + kv, q + 2 kv) of
/// the fused [out, in] weight.
bool splitPackedQKV(Raiser &raiser, const AValRef &qkv, int64_t heads,
                    int64_t kvHeads, AValRef &q, AValRef &k, AValRef &v) {
  auto linear = qkv->v ? qkv->v.getDefiningOp<LinearOp>() : LinearOp();
  auto weight =
      linear ? linear.getWeight().getDefiningOp<WeightOp>() : WeightOp();
  auto resource = weight
                      ? dyn_cast<DenseResourceElementsAttr>(weight.getValue())
                      : DenseResourceElementsAttr();
  AsmResourceBlob *blob =
      resource ? resource.getRawHandle().getBlob() : nullptr;
  if (!blob || !linear.getOutput().use_empty())
    return raiser.fail("packed QKV (empty key/value inputs) must be the "
                       "output of one linear projection");
  auto type = cast<RankedTensorType>(weight.getType());
  int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
  if (rows % (heads + 2 * kvHeads) != 0)
    return raiser.fail("packed QKV of " + std::to_string(rows) +
                       " features does not split into " +
                       std::to_string(heads) + " query and 2 x " +
                       std::to_string(kvHeads) + " key/value heads");
  int64_t headDim = rows / (heads + 2 * kvHeads);
  size_t elem = type.getElementTypeBitWidth() / 8;
  ArrayRef<char> data = blob->getData();
  std::string base = resource.getRawHandle().getKey().str();
  int64_t starts[3] = {0, heads * headDim, (heads + kvHeads) * headDim};
  int64_t sizes[3] = {heads * headDim, kvHeads * headDim, kvHeads * headDim};
  const char *suffix[3] = {".q", ".k", ".v"};
  AValRef *outs[3] = {&q, &k, &v};
  raiser.builder.setInsertionPoint(linear);
  for (int i = 0; i < 3; ++i) {
    ArrayRef<char> part =
        data.slice(starts[i] * cols * elem, sizes[i] * cols * elem);
    auto partType =
        RankedTensorType::get({sizes[i], cols}, type.getElementType());
    auto attr = DenseResourceElementsAttr::get(
        partType, base + suffix[i],
        HeapAsmResourceBlob::allocateAndCopyWithAlign(part, elem));
    Value w =
        WeightOp::create(raiser.builder, raiser.loc, cast<ElementsAttr>(attr));
    auto op =
        LinearOp::create(raiser.builder, raiser.loc, linear.getInput(), w);
    *outs[i] = raiser.act(op, raiser.flatView(sizes[i]));
  }
  raiser.builder.setInsertionPointToEnd(linear->getBlock());
  return true;
}

/// GroupQueryAttention and MultiHeadAttention with separate q, k, v; caches
/// are graph inputs.
bool fusedAttention(Raiser &raiser, OpCall &call) {
  std::vector<AValRef> &outs = call.outs;
  bool gqa = call.op == "GroupQueryAttention";
  AValRef q, k, v;
  int64_t heads = raiser.attrIntOr(call.node, "num_heads", 0);
  int64_t kvHeads =
      gqa ? raiser.attrIntOr(call.node, "kv_num_heads", 0) : heads;
  if (heads <= 0 || kvHeads <= 0)
    return raiser.fail(call.op + " needs num_heads" +
                       (gqa ? std::string(" and kv_num_heads") : ""));
  if (!call.input(1) || !call.input(2)) {
    AValRef qkv;
    if (!gqa || call.input(1) || call.input(2))
      return raiser.fail(call.op +
                         " with packed QKV (empty key/value inputs) is not "
                         "supported; export q, k and v separately");
    if (!raiser.canonicalAct(call.input(0), qkv, "the packed QKV of attention"))
      return false;
    // With do_rotary the cos/sin caches give head_dim; the split must agree.
    int64_t width = raiser.featureSize(qkv->view);
    CTensor cosCache;
    if (raiser.attrIntOr(call.node, "do_rotary", 0) && call.input(7) &&
        raiser.concreteOf(call.input(7), cosCache) && cosCache.rank() == 2 &&
        width != (heads + 2 * kvHeads) * 2 * cosCache.shape[1])
      return raiser.fail("packed QKV of " + std::to_string(width) +
                         " features is not " + std::to_string(heads) +
                         " query and 2 x " + std::to_string(kvHeads) +
                         " key/value heads of head_dim " +
                         std::to_string(2 * cosCache.shape[1]) +
                         " (the size of the cos/sin caches)");
    if (!splitPackedQKV(raiser, qkv, heads, kvHeads, q, k, v))
      return false;
  } else if (!raiser.canonicalAct(call.input(0), q, "the query of attention") ||
             !raiser.canonicalAct(call.input(1), k, "the key of attention") ||
             !raiser.canonicalAct(call.input(2), v, "the value of attention")) {
    return false;
  }
  int64_t headDim = raiser.featureSize(q->view) / heads;
  size_t pastIdx = gqa ? 3 : 6;
  if (!gqa) {
    for (size_t i = 3; i < 5; ++i)
      if (call.input(i))
        return raiser.fail("MultiHeadAttention with a bias or a key padding "
                           "mask is not supported");
    // Causal by the attribute, or by an additive attention_bias (the GenAI
    // builder's), whose values are checked.
    if (call.input(5)) {
      if (!verifyCausalBias(raiser, call, 5))
        return false;
    } else if (raiser.attrIntOr(call.node, "unidirectional", 0) != 1) {
      return raiser.fail("MultiHeadAttention without unidirectional=1 or an "
                         "attention_bias is not causal: expected a decoder's "
                         "causal self-attention");
    }
  }
  if (gqa && raiser.attrIntOr(call.node, "do_rotary", 0)) {
    AValRef qr, kr;
    bool inter = raiser.attrIntOr(call.node, "rotary_interleaved", 0) != 0;
    if (!ropeFromCaches(raiser, q, call.input(7), call.input(8), inter, heads,
                        qr) ||
        !ropeFromCaches(raiser, k, call.input(7), call.input(8), inter, kvHeads,
                        kr))
      return false;
    q = qr;
    k = kr;
  }
  return buildAttention(raiser, call.op, q, k, v, call.input(pastIdx),
                        call.input(pastIdx + 1), heads, kvHeads, headDim,
                        attrFloat(call.node, "scale", 0.0), call.node, outs);
}

} // namespace

void registerComMicrosoftOps(OpTable &t) {
  const char *ms = "com.microsoft";
  t.add(ms, "SkipSimplifiedLayerNormalization", skipSimplifiedLayerNorm,
        OpTable::Fallback);
  t.add(ms, "RotaryEmbedding", microsoftRotaryEmbedding, OpTable::Fallback);
  for (const char *op : {"GroupQueryAttention", "MultiHeadAttention"})
    t.add(ms, op, fusedAttention, OpTable::Fallback);
  t.acceptInvalidOperands("MultiHeadAttention");
}

} // namespace onnx_import
} // namespace sq
