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
  int64_t cols = interleaved ? half : 2 * half;
  std::vector<double> cosT(rows * cols), sinT(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < cols; ++d) {
      int64_t src = r * half + (d % half);
      cosT[r * cols + d] = c.data[src];
      sinT[r * cols + d] = s.data[src];
    }
  if (heads * cols != raiser.featureSize(x->view))
    return raiser.fail("RoPE over " + std::to_string(heads) + " heads of " +
                       std::to_string(cols) + " does not cover the " +
                       std::to_string(raiser.featureSize(x->view)) +
                       " features (partial rotary is not supported)");
  return finishRope(raiser, x, x->view, cosT, sinT, rows, cols,
                    interleaved ? RopeLayout::Interleaved
                                : RopeLayout::RotateHalf,
                    out, heads, /*firstPosition=*/0);
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

/// x + skip, then RMSNorm: outputs (normed, -, -, x + skip).
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
  if (call.input(3))
    return raiser.fail("SkipSimplifiedLayerNormalization with a bias: LLaMA "
                       "layers have none");
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

/// GroupQueryAttention and MultiHeadAttention with separate q, k, v; caches
/// are graph inputs.
bool fusedAttention(Raiser &raiser, OpCall &call) {
  std::vector<AValRef> &outs = call.outs;
  bool gqa = call.op == "GroupQueryAttention";
  AValRef q, k, v;
  if (!call.input(1) || !call.input(2))
    return raiser.fail(call.op +
                       " with packed QKV (empty key/value inputs) is not "
                       "supported; export q, k and v separately");
  if (!raiser.canonicalAct(call.input(0), q, "the query of attention") ||
      !raiser.canonicalAct(call.input(1), k, "the key of attention") ||
      !raiser.canonicalAct(call.input(2), v, "the value of attention"))
    return false;
  int64_t heads = raiser.attrIntOr(call.node, "num_heads", 0);
  int64_t kvHeads =
      gqa ? raiser.attrIntOr(call.node, "kv_num_heads", 0) : heads;
  if (heads <= 0 || kvHeads <= 0)
    return raiser.fail(call.op + " needs num_heads" +
                       (gqa ? std::string(" and kv_num_heads") : ""));
  int64_t headDim = raiser.featureSize(q->view) / heads;
  size_t pastIdx = gqa ? 3 : 6;
  if (!gqa) {
    if (raiser.attrIntOr(call.node, "unidirectional", 0) != 1)
      return raiser.fail("MultiHeadAttention without unidirectional=1 is not "
                         "causal: expected a decoder's causal self-attention");
    for (size_t i = 3; i < 6; ++i)
      if (call.input(i))
        return raiser.fail("MultiHeadAttention with bias or masks is not "
                           "supported");
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
}

} // namespace onnx_import
} // namespace sq
