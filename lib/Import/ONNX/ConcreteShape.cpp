//===- ConcreteShape.cpp - shape and data movement on concrete tensors ----===//
//
// The concrete evaluator's shape family: Shape, Unsqueeze, Squeeze, Reshape,
// Concat, Gather, Slice, Transpose and Expand, as exporters use them to
// compute shapes, masks and RoPE tables from the input's size.
//
//===----------------------------------------------------------------------===//

#include "ConcreteOps.h"

#include <algorithm>

namespace sq {
namespace onnx_import {
namespace {

using K = CTensor::Kind;

bool evalShape(const std::string &op, const std::vector<CTensor> &in,
               const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
  int64_t rank = in[0].rank();
  int64_t s = attrs.hasStart ? attrs.start : 0;
  int64_t e = attrs.hasEnd ? attrs.end : rank;
  if (s < 0)
    s += rank;
  if (e < 0)
    e += rank;
  s = std::clamp<int64_t>(s, 0, rank);
  e = std::clamp<int64_t>(e, 0, rank);
  r = CTensor::vector(std::vector<int64_t>(
      in[0].shape.begin() + s, in[0].shape.begin() + std::max(s, e)));
  return true;
}

bool evalUnsqueezeSqueeze(const std::string &op, const std::vector<CTensor> &in,
                          const ConcreteAttrs &attrs, CTensor &r,
                          std::string &error) {
  std::vector<int64_t> axes = in.size() > 1 ? in[1].asInts() : attrs.axes;
  r = in[0];
  if (op == "Unsqueeze") {
    if (!unsqueezeAxes(axes, in[0].rank(), error))
      return false;
    for (int64_t a : axes)
      r.shape.insert(r.shape.begin() + a, 1);
  } else {
    std::vector<int64_t> shape;
    if (axes.empty()) {
      for (int64_t d : in[0].shape)
        if (d != 1)
          shape.push_back(d);
    } else {
      for (int64_t &a : axes)
        if (!normAxis(a, in[0].rank(), error))
          return false;
      for (int64_t i = 0; i < in[0].rank(); ++i)
        if (std::find(axes.begin(), axes.end(), i) == axes.end())
          shape.push_back(in[0].shape[i]);
    }
    r.shape = shape;
  }
  return true;
}

bool evalReshape(const std::string &op, const std::vector<CTensor> &in,
                 const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
  r = in[0];
  return resolveReshape(in[0].shape, in[1].asInts(), attrs.allowzero != 0,
                        r.shape, error);
}

bool evalConcat(const std::string &op, const std::vector<CTensor> &in,
                const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
  if (in[0].rank() == 0) {
    error = "Concat of scalars (rank 0)";
    return false;
  }
  int64_t axis = attrs.axis;
  if (!normAxis(axis, in[0].rank(), error))
    return false;
  r.shape = in[0].shape;
  r.kind = in[0].kind;
  r.shape[axis] = 0;
  for (const CTensor &t : in) {
    if (t.rank() != in[0].rank()) {
      error = "Concat of tensors of different ranks";
      return false;
    }
    r.shape[axis] += t.shape[axis];
    if (t.kind == K::Float)
      r.kind = K::Float;
  }
  if (!checkSize(r.shape, error))
    return false;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i)
    outer *= r.shape[i];
  for (int64_t i = axis + 1; i < r.rank(); ++i)
    inner *= r.shape[i];
  for (int64_t o = 0; o < outer; ++o)
    for (const CTensor &t : in) {
      int64_t chunk = t.shape[axis] * inner;
      r.data.insert(r.data.end(), t.data.begin() + o * chunk,
                    t.data.begin() + (o + 1) * chunk);
    }
  return true;
}

bool evalGather(const std::string &op, const std::vector<CTensor> &in,
                const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
  int64_t axis = attrs.axis;
  const CTensor &d = in[0], &idx = in[1];
  if (!normAxis(axis, d.rank(), error))
    return false;
  r.kind = d.kind;
  r.shape.assign(d.shape.begin(), d.shape.begin() + axis);
  r.shape.insert(r.shape.end(), idx.shape.begin(), idx.shape.end());
  r.shape.insert(r.shape.end(), d.shape.begin() + axis + 1, d.shape.end());
  if (!checkSize(r.shape, error))
    return false;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i)
    outer *= d.shape[i];
  for (int64_t i = axis + 1; i < d.rank(); ++i)
    inner *= d.shape[i];
  for (int64_t o = 0; o < outer; ++o)
    for (double fi : idx.data) {
      int64_t i = static_cast<int64_t>(fi);
      if (i < 0)
        i += d.shape[axis];
      if (i < 0 || i >= d.shape[axis]) {
        error = "Gather index out of range";
        return false;
      }
      auto begin = d.data.begin() + (o * d.shape[axis] + i) * inner;
      r.data.insert(r.data.end(), begin, begin + inner);
    }
  return true;
}

bool evalSlice(const std::string &op, const std::vector<CTensor> &in,
               const ConcreteAttrs &, CTensor &r, std::string &error) {
  const CTensor &d = in[0];
  std::vector<int64_t> starts = in[1].asInts(), ends = in[2].asInts(), axes,
                       steps;
  if (in.size() > 3 && !in[3].data.empty())
    axes = in[3].asInts();
  else
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  if (in.size() > 4 && !in[4].data.empty())
    steps = in[4].asInts();
  else
    steps.assign(starts.size(), 1);
  std::vector<int64_t> lo(d.rank(), 0), step(d.rank(), 1), count = d.shape;
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t a = axes[i];
    if (!normAxis(a, d.rank(), error))
      return false;
    int64_t dim = d.shape[a], s = starts[i], e = ends[i], st = steps[i];
    if (st <= 0) {
      error = "Slice with a non-positive step is not supported";
      return false;
    }
    if (s < 0)
      s += dim;
    if (e < 0)
      e += dim;
    s = std::clamp<int64_t>(s, 0, dim);
    e = std::clamp<int64_t>(e, 0, dim);
    lo[a] = s;
    step[a] = st;
    count[a] = e > s ? (e - s + st - 1) / st : 0;
  }
  r.kind = d.kind;
  r.shape = count;
  std::vector<int64_t> st = strides(d.shape);
  std::vector<int64_t> idx(d.rank(), 0);
  int64_t n = r.numel();
  r.data.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int64_t k = 0; k < d.rank(); ++k)
      off += (lo[k] + idx[k] * step[k]) * st[k];
    r.data[i] = d.data[off];
    advanceIndex(idx, count);
  }
  return true;
}

bool evalTranspose(const std::string &op, const std::vector<CTensor> &in,
                   const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
  const CTensor &d = in[0];
  std::vector<int64_t> perm = attrs.perm;
  if (!attrs.hasPerm)
    for (int64_t i = d.rank() - 1; i >= 0; --i)
      perm.push_back(i);
  if (!checkPermutation(perm, d.rank(), error))
    return false;
  r.kind = d.kind;
  r.shape.resize(d.rank());
  for (int64_t i = 0; i < d.rank(); ++i)
    r.shape[i] = d.shape[perm[i]];
  std::vector<int64_t> st = strides(d.shape);
  std::vector<int64_t> idx(d.rank(), 0);
  r.data.resize(d.numel());
  for (int64_t i = 0; i < d.numel(); ++i) {
    int64_t off = 0;
    for (int64_t k = 0; k < d.rank(); ++k)
      off += idx[k] * st[perm[k]];
    r.data[i] = d.data[off];
    advanceIndex(idx, r.shape);
  }
  return true;
}

bool evalExpand(const std::string &op, const std::vector<CTensor> &in,
                const ConcreteAttrs &, CTensor &r, std::string &error) {
  CTensor ones;
  ones.kind = in[0].kind;
  ones.shape = in[1].asInts();
  if (!checkSize(ones.shape, error))
    return false;
  ones.data.assign(ones.numel(), 1.0);
  return binary(
      in[0], ones, r, [](double a, double) { return a; }, in[0].kind, error);
}

/// Tile: axis k repeated repeats[k] times.
bool evalTile(const std::string &op, const std::vector<CTensor> &in,
              const ConcreteAttrs &, CTensor &r, std::string &error) {
  std::vector<int64_t> reps = in[1].asInts();
  const CTensor &x = in[0];
  if (static_cast<int64_t>(reps.size()) != x.rank()) {
    error = "Tile repeats have " + std::to_string(reps.size()) +
            " entries for a rank-" + std::to_string(x.rank()) + " input";
    return false;
  }
  r.kind = x.kind;
  r.shape = x.shape;
  for (size_t k = 0; k < reps.size(); ++k) {
    if (reps[k] < 0 ||
        __builtin_mul_overflow(r.shape[k], reps[k], &r.shape[k])) {
      error = "Tile repeats must be non-negative";
      return false;
    }
  }
  if (!checkSize(r.shape, error))
    return false;
  r.data.resize(r.numel());
  if (r.data.empty())
    return true;
  std::vector<int64_t> idx(r.rank(), 0), xs = strides(x.shape);
  for (double &v : r.data) {
    int64_t src = 0;
    for (int64_t k = 0; k < r.rank(); ++k)
      src += (idx[k] % x.shape[k]) * xs[k];
    v = x.data[src];
    advanceIndex(idx, r.shape);
  }
  return true;
}

} // namespace

void registerConcreteShapeOps(ConcreteTable &t) {
  t["Tile"] = {2, evalTile};
  t["Shape"] = {1, evalShape};
  for (const char *op : {"Unsqueeze", "Squeeze"})
    t[op] = {1, evalUnsqueezeSqueeze};
  t["Reshape"] = {2, evalReshape};
  t["Concat"] = {1, evalConcat};
  t["Gather"] = {2, evalGather};
  t["Slice"] = {3, evalSlice};
  t["Transpose"] = {1, evalTranspose};
  t["Expand"] = {2, evalExpand};
}

} // namespace onnx_import
} // namespace sq
