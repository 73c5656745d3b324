//===- ShapeOps.cpp - constants, shapes and views -------------------------===//
//
// The default domain's ops that build no sq op: Constant and Shape (run
// before constant folding, on any operands), Identity and Cast (pass the
// value on), Transpose of a weight (a [out, in] linear weight) and the view
// ops on activations (Transpose, Reshape, Unsqueeze, Squeeze, Expand, Tile),
// which rewrite the activation's View; Expand and Tile of a unit axis are
// GQA's repeat of the KV heads.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include <algorithm>

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

/// A Constant: small tensors are concrete, large ones weights.
bool handleConstant(Raiser &raiser, OpCall &call) {
  AValRef &out = call.out();
  for (const auto &a : call.node.attribute()) {
    if (a.name() == "value") {
      TensorBytes bytes;
      if (!raiser.model.readTensor(a.t(), bytes, raiser.err))
        return false;
      if (bytes.numElements() > 4096) {
        out = AVal::make(AVal::Weight);
        out->tensor = &a.t();
        return true;
      }
      out = AVal::make(AVal::Concrete);
      return toConcrete(bytes, out->c, raiser.err);
    }
    out = AVal::make(AVal::Concrete);
    if (a.name() == "value_float") {
      out->c = CTensor::scalar(a.f(), CTensor::Float);
      return true;
    }
    if (a.name() == "value_int") {
      out->c = CTensor::scalar(static_cast<double>(a.i()), CTensor::Int);
      return true;
    }
    if (a.name() == "value_ints") {
      out->c = CTensor::vector(
          std::vector<int64_t>(a.ints().begin(), a.ints().end()));
      return true;
    }
    if (a.name() == "value_floats") {
      out->c.kind = CTensor::Float;
      out->c.shape = {a.floats_size()};
      out->c.data.assign(a.floats().begin(), a.floats().end());
      return true;
    }
  }
  return raiser.fail("Constant without a supported value attribute");
}

/// The shape of any value: of an activation or pattern from its view at the
/// probe sizes.
bool handleShape(Raiser &raiser, OpCall &call) {
  AValRef &out = call.out();
  AValRef a = call.input(0);
  if (!a)
    return raiser.fail("Shape without input");
  std::vector<int64_t> shape;
  if (a->kind == AVal::Act)
    shape = viewShape(a->view);
  else if (a->kind == AVal::PairPart || a->kind == AVal::PairMul ||
           a->kind == AVal::PairRot) {
    shape = viewShape(a->view);
    if (a->unsq)
      shape.push_back(1);
  } else if (a->kind == AVal::PairRope || a->kind == AVal::Normed ||
             a->kind == AVal::Sq || a->kind == AVal::Sig ||
             a->kind == AVal::TableMul || a->kind == AVal::RotTableMul ||
             a->kind == AVal::RotHalf)
    shape = viewShape(a->x->view);
  else if (a->kind == AVal::MeanSq || a->kind == AVal::MeanSqEps ||
           a->kind == AVal::Rms || a->kind == AVal::InvRms) {
    shape = viewShape(a->x->view);
    shape.back() = 1;
  } else if (a->kind == AVal::Half || a->kind == AVal::NegHalf) {
    shape = viewShape(a->x->view);
    shape.back() /= 2;
  } else if (a->kind == AVal::Ids)
    shape = {raiser.options.probeBatch, raiser.options.probeSeq};
  else if (a->kind == AVal::Concrete)
    shape = a->c.shape;
  else if (a->kind == AVal::Weight)
    shape.assign(a->tensor->dims().begin(), a->tensor->dims().end());
  else
    return raiser.fail(std::string("Shape of ") + kindName(a->kind));
  CTensor shapeT;
  shapeT.shape = shape;
  shapeT.data.assign(1, 0);
  ConcreteAttrs attrs;
  attrs.hasStart = raiser.attrInt(call.node, "start", attrs.start);
  attrs.hasEnd = raiser.attrInt(call.node, "end", attrs.end);
  std::vector<CTensor> r;
  CTensor dummy;
  dummy.shape = shape;
  dummy.data.assign(1, 0); // only the shape is read
  if (!evalConcrete("Shape", {dummy}, attrs, r, raiser.err))
    return false;
  out = AVal::make(AVal::Concrete);
  out->c = r[0];
  return true;
}

/// Identity and float Casts pass the value on.
bool handleIdentityCast(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0);
  AValRef &out = call.out();
  int64_t to = 1;
  raiser.attrInt(call.node, "to", to);
  if (call.op == "Cast" && a->kind != AVal::Ids && to != 1 && to != 10 &&
      to != 16 && to != 11)
    return raiser.fail("Cast of " + std::string(kindName(a->kind)) +
                       " to a non-float type");
  out = a;
  return true;
}

/// A 2-D weight becomes a transposed weight; an activation's axes are
/// permuted in its view.
bool handleTranspose(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0);
  AValRef &out = call.out();
  std::vector<int64_t> perm;
  bool hasPerm = raiser.attrInts(call.node, "perm", perm);
  if (a->kind == AVal::Weight) {
    if (a->tensor->dims_size() != 2 ||
        (hasPerm && (perm.size() != 2 || perm[0] != 1)))
      return raiser.fail("Transpose of a weight that is not a 2-D matrix");
    out = AVal::make(AVal::WeightT);
    out->tensor = a->tensor;
    return true;
  }
  AValRef x;
  if (!raiser.asAct(a, x, "an activation to transpose"))
    return false;
  size_t rank = x->view.size();
  if (!hasPerm)
    for (size_t i = 0; i < rank; ++i)
      perm.push_back(static_cast<int64_t>(rank - 1 - i));
  std::string permError;
  if (!checkPermutation(perm, static_cast<int64_t>(rank), permError))
    return raiser.fail(permError);
  out = std::make_shared<AVal>(*x);
  for (size_t i = 0; i < rank; ++i)
    out->view[i] = x->view[perm[i]];
  return true;
}

/// Reshape, Unsqueeze, Squeeze, Expand and Tile of an activation rewrite its
/// view.
bool handleViewOp(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  AValRef &out = call.out();
  AValRef x;
  if (!raiser.asAct(a, x, "an activation to reshape"))
    return false;
  std::vector<int64_t> shape = viewShape(x->view);
  CTensor arg;
  if (b && !raiser.concreteOf(b, arg))
    return raiser.fail(call.op + " of an activation with a non-constant shape");
  out = std::make_shared<AVal>(*x);
  if (call.op == "Reshape") {
    int64_t allowzero = 0;
    raiser.attrInt(call.node, "allowzero", allowzero);
    std::vector<int64_t> target;
    if (!resolveReshape(shape, arg.asInts(), allowzero != 0, target,
                        raiser.err))
      return false;
    return reshapeView(x->view, target, out->view, raiser.err);
  }
  if (call.op == "Unsqueeze" || call.op == "Squeeze") {
    std::vector<int64_t> axes = b ? arg.asInts() : std::vector<int64_t>();
    if (!b)
      raiser.attrInts(call.node, "axes", axes);
    int64_t rank = static_cast<int64_t>(shape.size());
    if (call.op == "Unsqueeze") {
      std::string axesError;
      if (!unsqueezeAxes(axes, rank, axesError))
        return raiser.fail(axesError);
      for (int64_t ax : axes)
        out->view.insert(out->view.begin() + ax, Axis{{AK::One, 1}});
    } else {
      View view;
      for (int64_t i = 0; i < rank; ++i) {
        bool drop = axes.empty() ? shape[i] == 1
                                 : std::find(axes.begin(), axes.end(), i) !=
                                           axes.end() ||
                                       std::find(axes.begin(), axes.end(),
                                                 i - rank) != axes.end();
        if (drop && shape[i] != 1)
          return raiser.fail("Squeeze of a dimension that is not 1");
        if (!drop)
          view.push_back(x->view[i]);
      }
      out->view = view;
    }
    return true;
  }
  if (call.op == "Tile") {
    // Tiling a size-1 axis is Expand; tiling the heads axis itself would
    // pair query head h with key/value head h mod kv_heads.
    std::vector<int64_t> repeats = arg.asInts();
    if (repeats.size() != shape.size())
      return raiser.fail("Tile repeats do not match the rank");
    for (size_t i = 0; i < repeats.size(); ++i) {
      if (repeats[i] == 1)
        continue;
      if (shape[i] != 1)
        return raiser.fail(
            "Tile repeats a non-unit axis " + viewStr(x->view) +
            ": that pairs query head h with key/value head h mod "
            "kv_heads, not LLaMA's repeat_kv (h / group)");
      out->view[i] = Axis{{AK::R, repeats[i]}};
    }
    return true;
  }
  // Expand: size-1 axes become repeats (GQA's repeat of K/V heads).
  std::vector<int64_t> target = arg.asInts();
  if (target.size() != shape.size())
    return raiser.fail("Expand that changes the rank of an activation");
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == shape[i] || target[i] == 1)
      continue;
    if (shape[i] != 1)
      return raiser.fail("Expand of a non-unit dimension of an activation");
    out->view[i] = Axis{{AK::R, target[i]}};
  }
  return true;
}

} // namespace

void registerShapeOps(OpTable &t) {
  t.add("", "Constant", handleConstant, OpTable::PreFold);
  t.add("", "Shape", handleShape, OpTable::PreFold);
  for (const char *op : {"Identity", "Cast"})
    t.add("", op, handleIdentityCast, OpTable::Fallback);
  t.add("", "Transpose", handleTranspose, OpTable::Fallback);
  for (const char *op : {"Reshape", "Unsqueeze", "Squeeze", "Expand", "Tile"})
    t.add("", op, handleViewOp, OpTable::Fallback);
}

} // namespace onnx_import
} // namespace sq
