//===- AttentionOps.cpp - attention from MatMul and Softmax ---------------===//
//
// Attention as exporters decompose it: Q*K^T (MatMul of two activations
// whose views pair every query head with one key/value head), the scale
// (Mul or Div by a scalar), the causal mask (Add of a constant, or Where as
// masked_fill; its values are checked), Softmax over the keys and *V become
// one sq.attention. A KV cache is Concat(past, new) along the sequence of a
// cache argument.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

#include <cmath>

using namespace mlir;

namespace sq {
namespace onnx_import {

bool isCausalMaskTensor(const CTensor &mask, int64_t seq, int64_t past,
                        std::string &why) {
  int64_t cols = past + seq;
  int64_t r = mask.rank();
  if (r < 2 || mask.shape[r - 2] != seq || mask.shape[r - 1] != cols) {
    why =
        "has shape [" +
        llvm::join(llvm::map_range(mask.shape,
                                   [](int64_t d) { return std::to_string(d); }),
                   ", ") +
        "], not [..., " + std::to_string(seq) + ", " + std::to_string(cols) +
        "]";
    return false;
  }
  int64_t plane = seq * cols;
  for (int64_t p = 0; p < mask.numel() / plane; ++p)
    for (int64_t i = 0; i < seq; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double m = mask.data[p * plane + i * cols + j];
        bool visible = j <= i + past;
        if (visible ? m != 0.0 : m > -1e4) {
          why = "is not causal: query " + std::to_string(i) + " and key " +
                std::to_string(j) + " (after " + std::to_string(past) +
                " cached tokens) get " + std::to_string(m);
          return false;
        }
      }
  return true;
}

namespace {

/// The mask broadcasts onto the scores as 0 where a query may see a key and
/// a large negative value elsewhere.
bool isCausalMask(Raiser &raiser, const CTensor &mask, const AValRef &scores) {
  // Scores are [..., seq, kv_seq]; the mask broadcasts onto them.
  int64_t rows = raiser.options.probeSeq;
  int64_t cols = axisSize(scores->y->view.back());
  std::string why;
  return isCausalMaskTensor(mask, rows, cols - rows, why);
}

/// Probabilities x values: the sq.attention. (A weight as the second operand
/// is a linear layer, LinearOps.cpp.)
bool attentionOutput(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  // Attention output: probabilities x values.
  if (a->kind == AVal::Probs && b->kind != AVal::Weight &&
      b->kind != AVal::WeightT) {
    AValRef scores = a->x;
    AValRef v;
    if (!raiser.asAct(b, v, "the values of attention"))
      return false;
    AValRef q = scores->x, k = scores->y;
    // Values: [..batch.., kv_seq, head_dim] with the key's batch layout.
    if (v->view.size() < 2 || v->view.back().size() != 1 ||
        v->view.back()[0].kind != AK::D)
      return raiser.fail("attention values laid out as " + viewStr(v->view) +
                         ": expected [..., kv_seq, head_dim]");
    if (static_cast<bool>(v->kv) != static_cast<bool>(k->kv))
      return raiser.fail("keys and values of attention differ in KV-cache use");
    int64_t heads = scores->c.intAt(0), kvHeads = scores->c.intAt(1);
    auto qType = cast<RankedTensorType>(q->v.getType());
    Value keyNew = k->kv ? k->kvNew : k->v;
    Value valueNew = v->kv ? v->kvNew : v->v;
    FloatAttr scaleAttr;
    int64_t headDim = scores->c.data[2];
    double defaultScale = 1.0 / std::sqrt(static_cast<double>(headDim));
    if (std::fabs(scores->scale - defaultScale) > 1e-6 * defaultScale)
      scaleAttr = raiser.builder.getF64FloatAttr(scores->scale);
    SmallVector<Type> presentTypes;
    Value pastK, pastV;
    if (k->kv) {
      pastK = k->kv->past;
      pastV = v->kv->past;
      presentTypes = {pastK.getType(), pastV.getType()};
    }
    auto op = AttentionOp::create(
        raiser.builder, raiser.loc, qType, presentTypes, q->v, keyNew, valueNew,
        pastK, pastV, heads, kvHeads, scaleAttr, scores->causal, IntegerAttr());
    if (k->kv) {
      k->kv->presentOut = op.getPresent()[0];
      v->kv->presentOut = op.getPresent()[1];
    }
    // The result has the query's layout.
    View view = q->view;
    out = raiser.act(op.getOutput(), view);
    return true;
  }
  return call.decline();
}

/// Queries x transposed keys: the scores of attention.
bool attentionScores(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  // Attention scores: queries x transposed keys.
  AValRef q, kt;
  if (!raiser.asAct(a, q,
                    "the queries of attention (MatMul of two activations)") ||
      !raiser.asAct(b, kt, "the transposed keys of attention"))
    return false;
  const View &qv = q->view, &kv = kt->view;
  if (qv.size() < 3 || kv.size() != qv.size() || qv.back().size() != 1 ||
      qv.back()[0].kind != AK::D || kv[kv.size() - 2].size() != 1 ||
      kv[kv.size() - 2][0].kind != AK::D || qv[qv.size() - 2].size() != 1 ||
      !isSeq(qv[qv.size() - 2][0].kind) || kv.back().size() != 1 ||
      !isSeq(kv.back()[0].kind))
    return raiser.fail("MatMul of activations laid out as " + viewStr(qv) +
                       " and " + viewStr(kv) +
                       ": expected attention scores, [..., seq, head_dim] x "
                       "[..., head_dim, kv_seq]");
  // Batch atoms: queries [B, N(h)], keys [B, N(k)] or [B, N(k), R(r)].
  auto batchAtoms = [](const View &v) {
    std::vector<Atom> atoms;
    for (size_t i = 0; i + 2 < v.size(); ++i)
      for (const Atom &a : v[i])
        if (a.kind != AK::One)
          atoms.push_back(a);
    return atoms;
  };
  std::vector<Atom> qb = batchAtoms(qv), kb = batchAtoms(kv);
  int64_t heads = 0, kvHeads = 0, rep = 1;
  bool ok = qb.size() == 2 && qb[0].kind == AK::B && qb[1].kind == AK::N &&
            (kb.size() == 2 || kb.size() == 3) && kb[0].kind == AK::B &&
            kb[1].kind == AK::N;
  if (ok) {
    heads = qb[1].size;
    kvHeads = kb[1].size;
    if (kb.size() == 3) {
      ok = kb[2].kind == AK::R;
      rep = kb[2].size;
    }
  }
  if (!ok || kvHeads * rep != heads)
    return raiser.fail("attention scores over queries " + viewStr(qv) +
                       " and keys " + viewStr(kv) +
                       ": expected every query head to read one key/value head "
                       "(grouped-query attention)");
  AValRef s = AVal::make(AVal::Scores);
  s->x = q;
  s->y = kt;
  s->c.data = {static_cast<double>(heads), static_cast<double>(kvHeads),
               static_cast<double>(qv.back()[0].size)};
  s->scale = 1.0;
  out = s;
  return true;
}

/// Scores * scale.
bool scaleMul(Raiser &, OpCall &call) {
  AValRef scores;
  double s;
  if (!call.commutedScalar(AVal::Scores, scores, s))
    return call.decline();
  AValRef &out = call.out();
  out = std::make_shared<AVal>(*scores);
  out->scale *= s;
  return true;
}

/// Scores / scale.
bool scaleDiv(Raiser &, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  double s;
  if (a->kind == AVal::Scores && isScalar(b, s)) {
    AValRef &out = call.out();
    out = std::make_shared<AVal>(*a);
    out->scale /= s;
    return true;
  }
  return call.decline();
}

/// Scores + the causal mask.
bool maskAdd(Raiser &raiser, OpCall &call) {
  AValRef a, b;
  if (!call.commutedKinds(AVal::Scores, AVal::Concrete, a, b))
    return call.decline();
  if (!isCausalMask(raiser, b->c, a))
    return raiser.fail("attention scores plus a mask that is not causal "
                       "(expected 0 where a query may see a key and a "
                       "large negative value elsewhere)");
  AValRef &out = call.out();
  out = std::make_shared<AVal>(*a);
  out->causal = true;
  return true;
}

/// Where(cond, scores, -inf) or Where(cond, -inf, scores): the causal mask
/// as masked_fill writes it.
bool maskWhere(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  AValRef c = call.input(2);
  if (!(call.in.size() == 3 && b && c && a->kind == AVal::Concrete &&
        (b->kind == AVal::Scores || c->kind == AVal::Scores)))
    return call.decline();
  // masked_fill: where(cond, -inf, scores) or where(cond, scores, -inf).
  bool scoresWhenTrue = b->kind == AVal::Scores;
  AValRef scores = scoresWhenTrue ? b : call.input(2);
  AValRef fill = scoresWhenTrue ? call.input(2) : b;
  double value;
  if (!isScalar(fill, value) || value > -1e4)
    return raiser.fail("attention scores masked with a value that is not very "
                       "negative: expected a causal mask");
  CTensor mask = a->c;
  for (double &m : mask.data)
    m = ((m != 0) == scoresWhenTrue) ? 0.0 : value;
  if (!isCausalMask(raiser, mask, scores))
    return raiser.fail(
        "attention scores masked by a pattern that is not causal");
  out = std::make_shared<AVal>(*scores);
  out->causal = true;
  return true;
}

/// Softmax of the scores over the keys.
bool softmax(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0);
  AValRef &out = call.out();
  int64_t axis = -1;
  raiser.attrInt(call.node, "axis", axis);
  if (a->kind != AVal::Scores)
    return raiser.fail(std::string("Softmax of ") + kindName(a->kind) +
                       ": expected the softmax of attention scores");
  int64_t rank = static_cast<int64_t>(a->x->view.size());
  if (axis != -1 && axis != rank - 1)
    return raiser.fail("attention softmax not over the key axis");
  out = AVal::make(AVal::Probs);
  out->x = a;
  return true;
}

/// The KV cache: Concat(past, new) along the sequence axis, past a cache
/// argument of @forward.
bool kvConcat(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  int64_t axis = 0;
  raiser.attrInt(call.node, "axis", axis);
  if (call.in.size() == 2 && a->kind == AVal::Act && b &&
      b->kind == AVal::Act) {
    int64_t rank = static_cast<int64_t>(a->view.size());
    if (axis < 0)
      axis += rank;
    // A static cache (StaticCache.cpp) is written by TensorScatter, never
    // concatenated to.
    bool pastIsArg = isa<BlockArgument>(a->v) && !raiser.staticCache;
    if (pastIsArg && rank == static_cast<int64_t>(b->view.size()) &&
        axis >= 0 && axis < rank && a->view[axis].size() == 1 &&
        a->view[axis][0].kind == AK::P && b->view[axis].size() == 1 &&
        b->view[axis][0].kind == AK::S) {
      out = raiser.act(Value(), b->view);
      out->view[axis][0] = {AK::T,
                            raiser.options.probePast + raiser.options.probeSeq};
      out->kv = std::make_shared<KVCat>();
      out->kv->past = a->v;
      out->kvNew = b->v;
      return true;
    }
  }
  return call.decline();
}

/// A Concat that is neither RoPE's rotate_half (RopeOps.cpp) nor the KV
/// cache's.
bool unexpectedConcat(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  return raiser.fail(std::string("Concat of ") + kindName(a->kind) +
                     (b ? std::string(" and ") + kindName(b->kind) : "") +
                     ": expected RoPE's rotate_half (Concat(-x2, x1)) or the "
                     "KV-cache concatenation past ++ new");
}

} // namespace

void registerAttentionOps(OpTable &t) {
  t.add("", "MatMul", attentionOutput);
  t.add("", "MatMul", attentionScores, OpTable::Fallback);
  t.add("", "Mul", scaleMul);
  t.add("", "Div", scaleDiv);
  t.add("", "Add", maskAdd);
  t.add("", "Where", maskWhere);
  t.add("", "Softmax", softmax, OpTable::Fallback);
  t.add("", "Concat", kvConcat);
  t.add("", "Concat", unexpectedConcat, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
