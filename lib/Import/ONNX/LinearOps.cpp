//===- LinearOps.cpp - embedding, linear layers, residuals, MLP -----------===//
//
// The dense parts of a LLaMA layer: the token embedding (Gather of the
// ids from a [vocab, hidden] weight), linear layers (MatMul by a weight
// [in, out], or a Transpose of [out, in]; an Add of a constant [out] vector
// to one is its bias, as Qwen2's q/k/v projections have), residual
// additions, and the SwiGLU MLP (Sigmoid and Mul as silu(gate), times up).
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cmath>

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

} // namespace

bool isBiaslessLinear(const AValRef &a) {
  if (!a || a->kind != AVal::Act || a->kv)
    return false;
  auto l = a->v.getDefiningOp<LinearOp>();
  return l && !l.getBias();
}

bool isBiasVector(const AValRef &b) {
  if (!b)
    return false;
  std::vector<int64_t> dims;
  if (b->kind == AVal::Weight)
    dims.assign(b->tensor->dims().begin(), b->tensor->dims().end());
  else if (b->kind == AVal::Concrete && b->c.kind == CTensor::Float)
    dims = b->c.shape;
  else
    return false;
  if (dims.empty())
    return false;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    if (dims[i] != 1)
      return false;
  return dims.back() > 1;
}

bool addLinearBias(Raiser &raiser, OpCall &call, const AValRef &x,
                   const AValRef &b, AValRef &out) {
  auto linear = x->v.getDefiningOp<LinearOp>();
  int64_t outF = linear.getWeight().getType().getDimSize(0);
  std::string name =
      b->kind == AVal::Weight ? b->tensor->name() : call.node.output(0);
  CTensor c;
  if (!raiser.concreteOf(b, c))
    return false;
  if (x->view.size() != 3 || raiser.featureSize(x->view) != outF ||
      c.numel() != outF)
    return raiser.fail("bias '" + name + "' has " + std::to_string(c.numel()) +
                       " entries but the linear layer it is added to has " +
                       std::to_string(outF) + " output features");
  std::vector<float> values(c.data.begin(), c.data.end());
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      return raiser.fail("bias '" + name +
                         "' holds a non-finite value (NaN or Inf) at element " +
                         std::to_string(i) +
                         ": the model's weights are corrupt");
  auto type = RankedTensorType::get({outF}, raiser.builder.getF32Type());
  ArrayRef<char> bytes(reinterpret_cast<const char *>(values.data()),
                       values.size() * sizeof(float));
  auto blob =
      HeapAsmResourceBlob::allocateAndCopyWithAlign(bytes, alignof(float));
  auto attr = DenseResourceElementsAttr::get(type, name.empty() ? "bias" : name,
                                             std::move(blob));
  Value bias =
      WeightOp::create(raiser.builder, raiser.loc, cast<ElementsAttr>(attr));
  auto op = LinearOp::create(raiser.builder, raiser.loc, linear.getInput(),
                             linear.getWeight(), bias);
  out = raiser.act(op, x->view);
  return true;
}

namespace {

/// Linear output + a constant vector of its out_features (in either operand
/// order): the linear's bias (addLinearBias).
bool linearBias(Raiser &raiser, OpCall &call) {
  AValRef x, b;
  if (!call.commuted(
          [&](const AValRef &p, const AValRef &q) {
            return isBiaslessLinear(p) && isBiasVector(q);
          },
          x, b))
    return call.decline();
  return addLinearBias(raiser, call, x, b, call.out());
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
  t.add("", "Add", linearBias);
  t.add("", "Add", residualAdd, OpTable::Fallback);
  t.add("", "Sigmoid", sigmoid, OpTable::Fallback);
  t.add("", "Mul", silu);
  t.add("", "Mul", product, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
