//===- Opset23Ops.cpp - fused ops of ONNX opset 23 ------------------------===//
//
// The default domain's fused LLaMA ops of opset 23: Attention (is_causal
// or an explicit causal mask, possibly with a sliding window, 3-D inputs
// with q_num_heads/kv_num_heads or 4-D [batch, heads, seq, head_dim]; keys
// and values from a static cache, StaticCache.cpp) and RotaryEmbedding (X,
// cos_cache, sin_cache, position_ids; or cos/sin already gathered).
// RMSNormalization is with the other RMSNorm forms (RMSNormOps.cpp).
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

/// ONNX Attention.
bool onnxAttention(Raiser &raiser, OpCall &call) {
  std::vector<AValRef> &outs = call.outs;
  // Only a node of domain "" (not "ai.onnx"), as before the op table.
  if (!call.node.domain().empty())
    return call.decline();
  // ONNX Attention (opset 23): Q/K/V as [batch, seq, heads*head_dim] with
  // q_num_heads/kv_num_heads, or [batch, heads, seq, head_dim].
  AValRef q, k, v;
  if (!raiser.asAct(call.input(0), q, "the query of Attention") ||
      !raiser.asAct(call.input(1), k, "the key of Attention") ||
      !raiser.asAct(call.input(2), v, "the value of Attention"))
    return false;
  if (!call.input(3) && raiser.attrIntOr(call.node, "is_causal", 0) != 1)
    return raiser.fail(
        "Attention without is_causal=1 or a mask: expected a decoder's causal "
        "self-attention");
  if (attrFloat(call.node, "softcap", 0.0) != 0.0 ||
      raiser.attrIntOr(call.node, "qk_matmul_output_mode", 0) != 0)
    return raiser.fail("Attention with softcap or qk_matmul_output_mode is not "
                       "supported");
  auto headsOf = [](const View &view) -> int64_t {
    if (view.size() == 4 && view[1].size() == 1 && view[1][0].kind == AK::N)
      return view[1][0].size;
    return 0;
  };
  bool fourD = q->view.size() == 4;
  int64_t heads =
      fourD ? headsOf(q->view) : raiser.attrIntOr(call.node, "q_num_heads", 0);
  int64_t kvHeads =
      fourD ? headsOf(k->view) : raiser.attrIntOr(call.node, "kv_num_heads", 0);
  auto bnsh = [](const View &view) {
    return view.size() == 4 && view[0].size() == 1 &&
           view[0][0].kind == AK::B && view[1].size() == 1 &&
           view[1][0].kind == AK::N && view[2].size() == 1 &&
           isSeq(view[2][0].kind) && view[3].size() == 1 &&
           view[3][0].kind == AK::D;
  };
  bool layoutOk = fourD ? bnsh(q->view) && bnsh(k->view) && bnsh(v->view)
                        : isCanonical(q->view) && isCanonical(k->view) &&
                              isCanonical(v->view);
  bool kvOk = static_cast<bool>(k->kv) == static_cast<bool>(v->kv) &&
              (!k->kv || (!call.input(4) && !call.input(5)));
  if (!layoutOk || heads <= 0 || kvHeads <= 0 || !kvOk)
    return raiser.fail(
        "Attention inputs laid out as " + viewStr(q->view) + ", " +
        viewStr(k->view) +
        ": expected [batch, seq, heads*head_dim] with "
        "q_num_heads/kv_num_heads, or [batch, heads, seq, head_dim]");
  int64_t headDim = raiser.featureSize(q->view) / (fourD ? 1 : heads);
  // The keys attended to: past ++ new (a static cache's first slots, or
  // past_key ++ key).
  const View &kView = k->view;
  int64_t keys = axisSize(kView[kView.size() - 2]);
  if (call.input(4))
    keys += raiser.options.probePast;
  if (call.input(4) && raiser.staticCache)
    return raiser.fail("Attention with past_key/past_value in a graph with "
                       "static caches: expected the caches written by "
                       "TensorScatter");
  int64_t window = 0;
  if (call.input(3) && !attentionMask(raiser, call, keys, window))
    return false;
  if (call.input(6) && !checkNonpad(raiser, call, keys))
    return false;
  return buildAttention(
      raiser, call.op, q, k, v, call.input(4), call.input(5), heads, kvHeads,
      headDim, attrFloat(call.node, "scale", 0.0), call.node, outs, window);
}

/// RotaryEmbedding with the ONNX argument order.
bool onnxRotaryEmbedding(Raiser &raiser, OpCall &call) {
  // A node of another domain is com.microsoft's form.
  const std::string &domain = call.node.domain();
  if (!domain.empty() && domain != "ai.onnx")
    return call.decline();
  return rotaryEmbedding(raiser, call, /*onnxOrder=*/true);
}

} // namespace

void registerOpset23Ops(OpTable &t) {
  t.add("", "Attention", onnxAttention);
  t.add("", "RotaryEmbedding", onnxRotaryEmbedding);
}

} // namespace onnx_import
} // namespace sq
