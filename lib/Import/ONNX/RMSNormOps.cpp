//===- RMSNormOps.cpp - RMSNorm -------------------------------------------===//
//
// RMSNorm, decomposed or fused, becomes one sq.rms_norm: the pattern
// x^2 (Pow or Mul), ReduceMean over the features, + eps, Sqrt, 1/rms
// (Reciprocal, Div or Pow -0.5), x * (1/rms) or x / rms, then * gamma;
// and SimplifiedLayerNormalization (ONNX Runtime) and RMSNormalization
// (opset 23). LayerNorm is refused with a message that says so.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

/// x * x, x * (1/rms(x)) and normed * gamma.
bool rmsMul(Raiser &raiser, OpCall &call) {
  AValRef a, b;
  AValRef &out = call.out();
  // RMSNorm: x * (1/rms(x)), then * gamma.
  if (call.commuted(
          [](const AValRef &x, const AValRef &y) {
            return (x->kind == AVal::InvRms && y->kind == AVal::Act &&
                    y->v == x->x->v) ||
                   (x->kind == AVal::Normed && y->kind == AVal::Weight);
          },
          a, b)) {
    if (a->kind == AVal::InvRms) {
      out = AVal::make(AVal::Normed);
      out->x = a->x;
      out->eps = a->eps;
      return true;
    }
    const auto &dims = b->tensor->dims();
    int64_t f = raiser.featureSize(a->x->view);
    if (dims.size() != 1 || dims[0] != f)
      return raiser.fail("RMSNorm scale '" + b->tensor->name() +
                         "' must be 1-D with " + std::to_string(f) +
                         " entries");
    Value gamma;
    if (!raiser.weightValue(b->tensor, false, gamma))
      return false;
    auto op = RMSNormOp::create(raiser.builder, raiser.loc, a->x->v, gamma,
                                raiser.builder.getF64FloatAttr(a->eps));
    out = raiser.act(op, a->x->view);
    return true;
  }
  // x * x (an RMSNorm square written as Mul).
  a = call.input(0);
  b = call.input(1);
  if (a->kind == AVal::Act && b->kind == AVal::Act && a->v == b->v &&
      viewStr(a->view) == viewStr(b->view)) {
    out = AVal::make(AVal::Sq);
    out->x = a;
    return true;
  }
  return call.decline();
}

/// mean(x^2) + eps.
bool rmsAddEps(Raiser &, OpCall &call) {
  AValRef meanSq;
  double s;
  if (!call.commutedScalar(AVal::MeanSq, meanSq, s))
    return call.decline();
  AValRef sum = AVal::make(AVal::MeanSqEps);
  sum->x = meanSq->x;
  sum->eps = roundAsFloat32(s);
  call.out() = sum;
  return true;
}

/// 1 / rms and x / rms.
bool rmsDiv(Raiser &, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  double s;
  if (b->kind == AVal::Rms && isScalar(a, s) && s == 1.0) {
    out = AVal::make(AVal::InvRms);
    out->x = b->x;
    out->eps = b->eps;
    return true;
  }
  if (b->kind == AVal::Rms && a->kind == AVal::Act && a->v == b->x->v) {
    out = AVal::make(AVal::Normed);
    out->x = b->x;
    out->eps = b->eps;
    return true;
  }
  return call.decline();
}

/// A Div that is neither RMSNorm's nor the attention scale
/// (AttentionOps.cpp).
bool unexpectedDiv(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  return raiser.fail(std::string("division of ") + kindName(a->kind) + " by " +
                     kindName(b->kind) +
                     ": expected 1/sqrt(mean(x^2)+eps) of an RMSNorm or the "
                     "attention scale");
}

/// x^2 and (mean(x^2)+eps)^-0.5.
bool rmsPow(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  double e;
  if (a->kind == AVal::Act && b && isScalar(b, e) && e == 2.0) {
    out = AVal::make(AVal::Sq);
    out->x = a;
    return true;
  }
  if (a->kind == AVal::MeanSqEps && b && isScalar(b, e) && e == -0.5) {
    out = AVal::make(AVal::InvRms);
    out->x = a->x;
    out->eps = a->eps;
    return true;
  }
  return raiser.fail(std::string("Pow of ") + kindName(a->kind) +
                     ": expected x^2 of an RMSNorm");
}

/// mean(x^2) over the features.
bool rmsReduceMean(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  std::vector<int64_t> axes;
  if (!raiser.attrInts(call.node, "axes", axes) && b) {
    CTensor c;
    if (raiser.concreteOf(b, c))
      axes = c.asInts();
  }
  int64_t keepdims = 1;
  raiser.attrInt(call.node, "keepdims", keepdims);
  if (a->kind == AVal::Sq) {
    int64_t rank = static_cast<int64_t>(a->x->view.size());
    if (axes.size() != 1 || (axes[0] != -1 && axes[0] != rank - 1) || !keepdims)
      return raiser.fail(
          "mean of x^2 not over the last axis (keepdims): expected "
          "the RMSNorm mean over the hidden features");
    out = AVal::make(AVal::MeanSq);
    out->x = a->x;
    return true;
  }
  if (a->kind == AVal::Act)
    return raiser.fail(
        "ReduceMean of an activation itself (not of its square), "
        "as LayerNorm computes its mean: expected an RMSNorm "
        "(mean of x^2); SQ imports LLaMA-family models");
  return raiser.fail(std::string("ReduceMean of ") + kindName(a->kind) +
                     ": expected the mean of x^2 of an RMSNorm");
}

/// One step of the chain: `from` becomes `to` with the same x and eps;
/// anything else is an error that says what was `expected`.
bool rmsStep(Raiser &raiser, OpCall &call, AVal::Kind from, AVal::Kind to,
             const char *expected) {
  AValRef a = call.input(0);
  if (a->kind != from)
    return raiser.fail(call.op + " of " + kindName(a->kind) + ": expected " +
                       expected + " of an RMSNorm");
  AValRef &out = call.out();
  out = AVal::make(to);
  out->x = a->x;
  out->eps = a->eps;
  return true;
}

/// sqrt(mean(x^2) + eps).
bool rmsSqrt(Raiser &raiser, OpCall &call) {
  return rmsStep(raiser, call, AVal::MeanSqEps, AVal::Rms,
                 "sqrt(mean(x^2) + eps)");
}

/// 1 / rms.
bool rmsReciprocal(Raiser &raiser, OpCall &call) {
  return rmsStep(raiser, call, AVal::Rms, AVal::InvRms,
                 "1/sqrt(mean(x^2) + eps)");
}

/// SimplifiedLayerNormalization (ONNX Runtime) and RMSNormalization (opset
/// 23).
bool fusedRMSNorm(Raiser &raiser, OpCall &call) {
  AValRef x, b = call.input(1);
  if (!raiser.canonicalAct(call.input(0), x, "the input of an RMSNorm"))
    return false;
  float eps = 1e-5f;
  for (const auto &at : call.node.attribute())
    if (at.name() == "epsilon")
      eps = at.f();
  if (!b || b->kind != AVal::Weight)
    return raiser.fail("RMSNorm without a scale weight");
  Value gamma;
  if (!raiser.weightValue(b->tensor, false, gamma))
    return false;
  auto opN =
      RMSNormOp::create(raiser.builder, raiser.loc, x->v, gamma,
                        raiser.builder.getF64FloatAttr(roundAsFloat32(eps)));
  call.out() = raiser.act(opN, x->view);
  return true;
}

bool refuseLayerNorm(Raiser &raiser, OpCall &) {
  return raiser.fail(
      "unsupported op 'LayerNormalization': LLaMA-family models "
      "normalize with RMSNorm (expected Pow/ReduceMean/Add/Sqrt/"
      "Div/Mul, SimplifiedLayerNormalization or RMSNormalization)");
}

} // namespace

void registerRMSNormOps(OpTable &t) {
  t.add("", "Mul", rmsMul);
  t.add("", "Add", rmsAddEps);
  t.add("", "Div", rmsDiv);
  t.add("", "Div", unexpectedDiv, OpTable::Fallback);
  t.add("", "Pow", rmsPow, OpTable::Fallback);
  t.add("", "ReduceMean", rmsReduceMean, OpTable::Fallback);
  t.add("", "Sqrt", rmsSqrt, OpTable::Fallback);
  t.add("", "Reciprocal", rmsReciprocal, OpTable::Fallback);
  for (const char *op : {"SimplifiedLayerNormalization", "RMSNormalization"})
    t.add("", op, fusedRMSNorm, OpTable::Fallback);
  t.add("", "LayerNormalization", refuseLayerNorm, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
