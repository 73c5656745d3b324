//===- InterleavedRopeOps.cpp - RoPE on (real, imaginary) pairs -----------===//
//
// Interleaved RoPE as llama2.c and Meta's exporters write it: x viewed as
// (head_dim/2, 2) pairs (r, i), unbound by Split, Gather or Slice of the
// last axis, rotated as r*cos - i*sin and r*sin + i*cos, stacked back with
// Unsqueeze and Concat and reshaped to the heads, which becomes one sq.rope
// with the interleaved layout. Every handler here is a Pattern: it declines
// nodes whose operands are not pieces of such pairs.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

using namespace mlir;

namespace sq {
namespace onnx_import {
namespace {

AValRef partOf(const AValRef &x, int part, bool keepAxis) {
  AValRef p = AVal::make(AVal::PairPart);
  p->x = x;
  p->part = part;
  p->view = x->view;
  if (keepAxis)
    p->view.back() = Axis{{AK::One, 1}};
  else
    p->view.pop_back();
  return p;
}

/// Unbinds the pair axis: Split, Gather or Slice over the last axis.
bool unbindPair(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  const View *view = a->kind == AVal::Act ? &a->view : nullptr;
  if (!view || view->size() < 2 ||
      !isPairSplit((*view)[view->size() - 2], view->back()))
    return call.decline();
  int64_t rank = static_cast<int64_t>(a->view.size());
  int64_t axis = -1;
  for (const auto &at : call.node.attribute())
    if (at.name() == "axis")
      axis = at.i();
  if (axis < 0)
    axis += rank;
  if (call.op == "Split" && axis == rank - 1 && call.node.output_size() == 2) {
    call.outs = {partOf(a, 0, true), partOf(a, 1, true)};
    return true;
  }
  CTensor c;
  if (call.op == "Gather" && axis == rank - 1 && b && raiser.concreteOf(b, c) &&
      c.numel() == 1) {
    call.outs = {partOf(a, static_cast<int>(c.intAt(0) & 1), false)};
    return true;
  }
  if (call.op == "Slice" && call.in.size() >= 3) {
    CTensor st, en, ax;
    if (raiser.concreteOf(call.in[1], st) &&
        raiser.concreteOf(call.in[2], en) &&
        (call.in.size() < 4 || !call.in[3] ||
         (raiser.concreteOf(call.in[3], ax) &&
          (ax.intAt(0) == -1 || ax.intAt(0) == rank - 1)))) {
      int64_t start = st.intAt(0);
      call.outs = {partOf(a, start == 1 ? 1 : 0, true)};
      return true;
    }
  }
  return call.decline();
}

/// Squeeze of an unbound pair element drops its unit axis.
bool squeezePart(Raiser &, OpCall &call) {
  AValRef a = call.input(0);
  if (a->kind != AVal::PairPart)
    return call.decline();
  std::vector<AValRef> &outs = call.outs;
  outs = {std::make_shared<AVal>(*a)};
  if (outs[0]->view.back().size() == 1 &&
      outs[0]->view.back()[0].kind == AK::One)
    outs[0]->view.pop_back();
  return true;
}

/// Unsqueeze of a rotated element, ready to be stacked.
bool unsqueezeRotated(Raiser &, OpCall &call) {
  AValRef a = call.input(0);
  if (a->kind != AVal::PairRot)
    return call.decline();
  call.outs = {std::make_shared<AVal>(*a)};
  call.outs[0]->unsq = true;
  return true;
}

/// A pair element times a cos or sin table.
bool pairTimesTable(Raiser &, OpCall &call) {
  AValRef p, t;
  if (!call.input(1) || !call.commuted(
                            [](const AValRef &x, const AValRef &y) {
                              double sc;
                              return x->kind == AVal::PairPart &&
                                     y->kind == AVal::Concrete &&
                                     !isScalar(y, sc);
                            },
                            p, t))
    return call.decline();
  AValRef m = AVal::make(AVal::PairMul);
  m->x = p->x;
  m->part = p->part;
  m->view = p->view;
  m->c = t->c;
  call.outs = {m};
  return true;
}

/// r*cos - i*sin (Sub) and r*sin + i*cos (Add).
bool rotatePair(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  if (!b || a->kind != AVal::PairMul || b->kind != AVal::PairMul ||
      a->x != b->x)
    return call.decline();
  AValRef r = AVal::make(AVal::PairRot);
  r->x = a->x;
  r->view = a->view;
  if (call.op == "Sub" && a->part == 0 && b->part == 1) {
    r->part = 0; // r*cos - i*sin
    r->c = a->c;
    r->c2 = b->c;
  } else if (call.op == "Add" && a->part != b->part) {
    r->part = 1; // r*sin + i*cos
    const AValRef &re = a->part == 0 ? a : b, &im = a->part == 0 ? b : a;
    r->c = re->c;  // sin
    r->c2 = im->c; // cos
  } else {
    return raiser.fail("RoPE pair arithmetic that is not a rotation");
  }
  call.outs = {r};
  return true;
}

/// Concat of the two unsqueezed rotated elements: the stacked pairs.
bool stackPairs(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  if (call.in.size() != 2 || !b || a->kind != AVal::PairRot ||
      b->kind != AVal::PairRot || a->part != 0 || b->part != 1 ||
      a->x != b->x || !a->unsq || !b->unsq)
    return call.decline();
  // Tables: a = (cos, sin), b = (sin, cos).
  AValRef x = a->x;
  std::vector<double> cosT, sinT, sin2, cos2;
  int64_t rows, cols, r2, c2;
  if (!extractTable(a->view, a->c, cosT, rows, cols) ||
      !extractTable(a->view, a->c2, sinT, r2, c2) ||
      !extractTable(a->view, b->c, sin2, r2, c2) ||
      !extractTable(a->view, b->c2, cos2, r2, c2) || cosT != cos2 ||
      sinT != sin2)
    return raiser.fail("interleaved RoPE with tables that do not broadcast as "
                       "[seq, head_dim/2] or differ between the two halves");
  AValRef r = AVal::make(AVal::PairRope);
  r->x = x;
  r->c.data = cosT;
  r->c2.data = sinT;
  r->c.shape = {rows, cols};
  call.outs = {r};
  return true;
}

/// The stacked pairs reshaped back to the heads: sq.rope.
bool reshapeStacked(Raiser &raiser, OpCall &call) {
  AValRef a = call.input(0), b = call.input(1);
  if (a->kind != AVal::PairRope || !b)
    return call.decline();
  CTensor target;
  if (!raiser.concreteOf(b, target))
    return raiser.fail("Reshape of interleaved RoPE with a non-constant shape");
  std::vector<int64_t> resolved;
  if (!resolveReshape(viewShape(a->x->view), target.asInts(), false, resolved,
                      raiser.err))
    return false;
  View view;
  if (!reshapeView(a->x->view, resolved, view, raiser.err))
    return false;
  AValRef out;
  if (!finishRope(raiser, a->x, view, a->c.data, a->c2.data, a->c.shape[0],
                  a->c.shape[1], RopeLayout::Interleaved, out))
    return false;
  call.outs = {out};
  return true;
}

} // namespace

void registerInterleavedRopeOps(OpTable &t) {
  for (const char *op : {"Split", "Gather", "Slice"})
    t.add("", op, unbindPair);
  t.add("", "Squeeze", squeezePart);
  t.add("", "Unsqueeze", unsqueezeRotated);
  t.add("", "Mul", pairTimesTable);
  for (const char *op : {"Sub", "Add"})
    t.add("", op, rotatePair);
  t.add("", "Concat", stackPairs);
  t.add("", "Reshape", reshapeStacked);
}

} // namespace onnx_import
} // namespace sq
