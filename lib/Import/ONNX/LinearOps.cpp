//===- LinearOps.cpp - embedding, linear layers, residuals, MLP -----------===//
//
// The dense parts of a LLaMA layer: the token embedding (Gather of the
// ids from a [vocab, hidden] weight), linear layers (MatMul by a weight
// [in, out], or a Transpose of [out, in]), residual additions, and the
// SwiGLU MLP (Sigmoid and Mul as silu(gate), times up).
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

/// The embedding lookup.
bool embedding(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  int64_t axis = 0;
  raiser.attrInt(call.node, "axis", axis);
  if (a->kind == AVal::Weight && b && b->kind == AVal::Ids && axis == 0) {
    const auto &dims = a->tensor->dims();
    if (dims.size() != 2)
      return raiser.fail("embedding table '" + a->tensor->name() +
                         "' is not 2-D");
    Value table;
    if (!raiser.weightValue(a->tensor, false, table))
      return false;
    auto resultType = raiser.actType(dims[1]);
    auto opE = EmbeddingOp::create(raiser.builder, raiser.loc, resultType,
                                   table, b->v);
    out = raiser.act(opE, raiser.flatView(dims[1]));
    return true;
  }
  return raiser.fail(std::string("Gather from ") + kindName(a->kind) + " at " +
                     (b ? kindName(b->kind) : "?") +
                     ": expected the embedding lookup (Gather of the token ids "
                     "from a [vocab, hidden] weight)");
}

/// Activation x weight: sq.linear.
bool linear(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  // Linear layer: activation x weight [in, out] (or Transpose of [out, in]).
  if (b->kind != AVal::Weight && b->kind != AVal::WeightT)
    return call.decline();
  AValRef x;
  if (!raiser.canonicalAct(a, x,
                           "the input of a linear layer (MatMul with a "
                           "weight)"))
    return false;
  const auto &dims = b->tensor->dims();
  if (dims.size() != 2)
    return raiser.fail("MatMul with a " + std::to_string(dims.size()) +
                       "-D weight: expected a 2-D linear weight");
  bool transposedInOnnx = b->kind == AVal::WeightT;
  int64_t in = transposedInOnnx ? dims[1] : dims[0];
  int64_t outF = transposedInOnnx ? dims[0] : dims[1];
  if (in != raiser.featureSize(x->view))
    return raiser.fail("linear weight '" + b->tensor->name() + "' has " +
                       std::to_string(in) +
                       " input features but the activation " + "has " +
                       std::to_string(raiser.featureSize(x->view)));
  Value w;
  if (!raiser.weightValue(b->tensor, /*transpose=*/!transposedInOnnx, w))
    return false;
  auto op = LinearOp::create(raiser.builder, raiser.loc, x->v, w);
  out = raiser.act(op, raiser.flatView(outF));
  return true;
}

/// `OpT` of two [batch, seq, features] activations of one type; `operand`
/// and `what` name them in messages.
template <typename OpT>
bool activationsOp(Raiser &raiser, OpCall &call, const char *operand,
                   const char *what) {
  AValRef x, y;
  if (!raiser.canonicalAct(call.input(0), x, operand) ||
      !raiser.canonicalAct(call.input(1), y, operand))
    return false;
  if (x->v.getType() != y->v.getType())
    return raiser.fail(std::string(what) +
                       " of activations of different shapes");
  auto op = OpT::create(raiser.builder, raiser.loc, x->v, y->v);
  call.out() = raiser.act(op, x->view);
  return true;
}

/// The residual stream: activation + activation.
bool residualAdd(Raiser &raiser, OpCall &call) {
  return activationsOp<AddOp>(raiser, call, "an operand of a residual addition",
                              "residual addition");
}

/// sigmoid(gate) of SwiGLU.
bool sigmoid(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0);
  AValRef &out = call.out();
  AValRef x;
  if (!raiser.canonicalAct(a, x, "the gate of a SwiGLU MLP"))
    return false;
  out = AVal::make(AVal::Sig);
  out->x = x;
  return true;
}

/// SwiGLU: gate * sigmoid(gate) is silu(gate).
bool silu(Raiser &raiser, OpCall &call) {
  AValRef sig, gate;
  if (!call.commuted(
          [](const AValRef &x, const AValRef &y) {
            return x->kind == AVal::Sig && y->kind == AVal::Act &&
                   y->v == x->x->v;
          },
          sig, gate))
    return call.decline();
  auto op = SiluOp::create(raiser.builder, raiser.loc, gate->v);
  call.out() = raiser.act(op, gate->view);
  return true;
}

/// Two activations: the SwiGLU product silu(gate) * up.
bool product(Raiser &raiser, OpCall &call) {
  return activationsOp<MulOp>(raiser, call,
                              "an operand of an elementwise product",
                              "elementwise product");
}

} // namespace

void registerLinearOps(OpTable &t) {
  t.add("", "Gather", embedding, OpTable::Fallback);
  t.add("", "MatMul", linear);
  t.add("", "Add", residualAdd, OpTable::Fallback);
  t.add("", "Sigmoid", sigmoid, OpTable::Fallback);
  t.add("", "Mul", silu);
  t.add("", "Mul", product, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
