//===- Concrete.cpp - small concrete tensors for shape subgraphs ----------===//

#include "Concrete.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace sq {
namespace onnx_import {

namespace {

std::vector<int64_t> strides(const std::vector<int64_t> &shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    s[i] = s[i + 1] * shape[i + 1];
  return s;
}

bool normAxis(int64_t &axis, int64_t rank, std::string &error) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    error = "axis " + std::to_string(axis) + " out of range for rank " +
            std::to_string(rank);
    return false;
  }
  if (axis < 0)
    axis += rank;
  return true;
}

} // namespace

bool unsqueezeAxes(std::vector<int64_t> &axes, int64_t inputRank,
                   std::string &error) {
  int64_t rank = inputRank + static_cast<int64_t>(axes.size());
  for (int64_t &a : axes)
    if (!normAxis(a, rank, error))
      return false;
  std::sort(axes.begin(), axes.end());
  auto dup = std::adjacent_find(axes.begin(), axes.end());
  if (dup != axes.end()) {
    error = "Unsqueeze axis " + std::to_string(*dup) + " given twice";
    return false;
  }
  return true;
}

bool checkPermutation(const std::vector<int64_t> &perm, int64_t rank,
                      std::string &error) {
  if (static_cast<int64_t>(perm.size()) != rank) {
    error = "Transpose perm does not match the rank";
    return false;
  }
  std::vector<bool> seen(perm.size(), false);
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[p]) {
      error = "Transpose perm is not a permutation of 0.." +
              std::to_string(rank - 1) + " (entry " + std::to_string(p) + ")";
      return false;
    }
    seen[p] = true;
  }
  return true;
}

namespace {

bool checkSize(const std::vector<int64_t> &shape, std::string &error) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      error = "negative dimension in a shape computation";
      return false;
    }
    if (d && n > kMaxConcreteElements / d) {
      error = "shape computation produced a tensor larger than " +
              std::to_string(kMaxConcreteElements) + " elements";
      return false;
    }
    n *= d;
  }
  return true;
}

bool broadcastShape(const std::vector<int64_t> &a,
                    const std::vector<int64_t> &b, std::vector<int64_t> &out,
                    std::string &error) {
  size_t rank = std::max(a.size(), b.size());
  out.assign(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) {
      error = "shapes do not broadcast";
      return false;
    }
    out[i] = da == 1 ? db : da;
  }
  return checkSize(out, error);
}

/// Index into `t` for the broadcast position `idx` of shape `outShape`.
int64_t bcastIndex(const CTensor &t, const std::vector<int64_t> &idx) {
  int64_t offset = 0, stride = 1;
  size_t r = t.shape.size(), shift = idx.size() - r;
  for (int64_t i = static_cast<int64_t>(r) - 1; i >= 0; --i) {
    int64_t d = t.shape[i];
    int64_t k = d == 1 ? 0 : idx[i + shift];
    offset += k * stride;
    stride *= d;
  }
  return offset;
}

bool binary(const CTensor &a, const CTensor &b, CTensor &out,
            const std::function<double(double, double)> &f, CTensor::Kind kind,
            std::string &error) {
  if (!broadcastShape(a.shape, b.shape, out.shape, error))
    return false;
  out.kind = kind;
  int64_t n = out.numel();
  out.data.resize(n);
  std::vector<int64_t> idx(out.shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    out.data[i] = f(a.data[bcastIndex(a, idx)], b.data[bcastIndex(b, idx)]);
    for (int64_t d = static_cast<int64_t>(idx.size()) - 1; d >= 0; --d) {
      if (++idx[d] < out.shape[d])
        break;
      idx[d] = 0;
    }
  }
  return true;
}

CTensor::Kind resultKind(const CTensor &a, const CTensor &b) {
  return (a.kind == CTensor::Float || b.kind == CTensor::Float) ? CTensor::Float
                                                                : CTensor::Int;
}

} // namespace

bool resolveReshape(const std::vector<int64_t> &inputShape,
                    std::vector<int64_t> target, bool allowZero,
                    std::vector<int64_t> &result, std::string &error) {
  // Element counts are multiplied with overflow checks: a hostile target
  // such as [60, 2^62] must be an error, not signed overflow.
  int64_t total = 1;
  for (int64_t d : inputShape)
    if (__builtin_mul_overflow(total, d, &total)) {
      error = "reshape input has more elements than int64 can count";
      return false;
    }
  int64_t known = 1, inferAt = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == 0 && !allowZero) {
      if (i >= inputShape.size()) {
        error = "reshape copies a dimension the input does not have";
        return false;
      }
      target[i] = inputShape[i];
    }
    if (target[i] == -1) {
      if (inferAt >= 0) {
        error = "reshape target has two -1 entries";
        return false;
      }
      inferAt = static_cast<int64_t>(i);
      continue;
    }
    if (target[i] < 0) {
      error = "reshape target has a negative dimension";
      return false;
    }
    if (__builtin_mul_overflow(known, target[i], &known)) {
      error = "reshape target has more elements than int64 can count";
      return false;
    }
  }
  if (inferAt >= 0) {
    if (known == 0 || total % known) {
      error = "reshape cannot infer the -1 dimension";
      return false;
    }
    target[inferAt] = total / known;
    known = total;
  }
  if (known != total) {
    error = "reshape changes the number of elements";
    return false;
  }
  result = target;
  return true;
}

bool evalConcrete(const std::string &op, const std::vector<CTensor> &in,
                  const ConcreteAttrs &attrs, std::vector<CTensor> &out,
                  std::string &error) {
  out.assign(1, CTensor());
  CTensor &r = out[0];
  auto need = [&](size_t n) {
    if (in.size() < n) {
      error = op + " needs " + std::to_string(n) + " inputs";
      return false;
    }
    return true;
  };
  auto unary = [&](const std::function<double(double)> &f, CTensor::Kind kind) {
    if (!need(1))
      return false;
    r = in[0];
    r.kind = kind;
    for (double &v : r.data)
      v = f(v);
    return true;
  };

  if (op == "Identity") {
    if (!need(1))
      return false;
    r = in[0];
    return true;
  }
  if (op == "Neg")
    return unary([](double v) { return -v; },
                 in.empty() ? CTensor::Float : in[0].kind);
  if (op == "Cos")
    return unary([](double v) { return std::cos(v); }, CTensor::Float);
  if (op == "Sin")
    return unary([](double v) { return std::sin(v); }, CTensor::Float);
  if (op == "Sqrt")
    return unary([](double v) { return std::sqrt(v); }, CTensor::Float);
  if (op == "Exp")
    return unary([](double v) { return std::exp(v); }, CTensor::Float);
  if (op == "Reciprocal")
    return unary([](double v) { return 1.0 / v; }, CTensor::Float);
  if (op == "Abs")
    return unary([](double v) { return std::fabs(v); },
                 in.empty() ? CTensor::Float : in[0].kind);
  if (op == "Floor")
    return unary([](double v) { return std::floor(v); }, CTensor::Float);
  if (op == "Ceil")
    return unary([](double v) { return std::ceil(v); }, CTensor::Float);
  if (op == "Not")
    return unary([](double v) { return v == 0.0 ? 1.0 : 0.0; }, CTensor::Bool);
  if (op == "Cast") {
    if (!need(1))
      return false;
    r = in[0];
    switch (attrs.to) {
    case 1:
    case 10:
    case 11:
    case 16: // float, f16, f64, bf16
      r.kind = CTensor::Float;
      break;
    case 9: // bool
      r.kind = CTensor::Bool;
      for (double &v : r.data)
        v = v != 0.0;
      break;
    default: // integers
      r.kind = CTensor::Int;
      for (double &v : r.data)
        v = std::trunc(v);
      break;
    }
    return true;
  }

  using K = CTensor::Kind;
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow" ||
      op == "Max" || op == "Min") {
    if (!need(2))
      return false;
    K kind = resultKind(in[0], in[1]);
    std::function<double(double, double)> f;
    if (op == "Add")
      f = [](double a, double b) { return a + b; };
    else if (op == "Sub")
      f = [](double a, double b) { return a - b; };
    else if (op == "Mul")
      f = [](double a, double b) { return a * b; };
    else if (op == "Div")
      f = [kind](double a, double b) {
        return kind == K::Int ? (b == 0 ? 0 : std::trunc(a / b)) : a / b;
      };
    else if (op == "Pow")
      f = [](double a, double b) { return std::pow(a, b); };
    else if (op == "Max")
      f = [](double a, double b) { return std::max(a, b); };
    else
      f = [](double a, double b) { return std::min(a, b); };
    return binary(in[0], in[1], r, f, kind, error);
  }
  if (op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
      op == "GreaterOrEqual" || op == "And" || op == "Or") {
    if (!need(2))
      return false;
    std::function<double(double, double)> f;
    if (op == "Equal")
      f = [](double a, double b) { return a == b; };
    else if (op == "Less")
      f = [](double a, double b) { return a < b; };
    else if (op == "Greater")
      f = [](double a, double b) { return a > b; };
    else if (op == "LessOrEqual")
      f = [](double a, double b) { return a <= b; };
    else if (op == "GreaterOrEqual")
      f = [](double a, double b) { return a >= b; };
    else if (op == "And")
      f = [](double a, double b) { return a != 0 && b != 0; };
    else
      f = [](double a, double b) { return a != 0 || b != 0; };
    return binary(in[0], in[1], r, f, K::Bool, error);
  }
  if (op == "Where") {
    if (!need(3))
      return false;
    CTensor tmp;
    // where(c, x, y) = c ? x : y, broadcast over all three.
    if (!binary(
            in[0], in[1], tmp, [](double c, double x) { return c; }, K::Bool,
            error))
      return false;
    std::vector<int64_t> shape;
    if (!broadcastShape(tmp.shape, in[2].shape, shape, error))
      return false;
    r.shape = shape;
    r.kind = resultKind(in[1], in[2]);
    r.data.resize(r.numel());
    std::vector<int64_t> idx(shape.size(), 0);
    for (int64_t i = 0; i < r.numel(); ++i) {
      bool c = in[0].data[bcastIndex(in[0], idx)] != 0;
      r.data[i] = c ? in[1].data[bcastIndex(in[1], idx)]
                    : in[2].data[bcastIndex(in[2], idx)];
      for (int64_t d = static_cast<int64_t>(idx.size()) - 1; d >= 0; --d) {
        if (++idx[d] < shape[d])
          break;
        idx[d] = 0;
      }
    }
    return true;
  }
  if (op == "Range") {
    if (!need(3))
      return false;
    for (int i = 0; i < 3; ++i)
      if (in[i].data.size() != 1) { // .at(0) would throw: abort, no EH
        error = "Range needs scalar start, limit and delta";
        return false;
      }
    double start = in[0].data.at(0), limit = in[1].data.at(0),
           delta = in[2].data.at(0);
    if (delta == 0) {
      error = "Range with delta 0";
      return false;
    }
    // Check the count as a double: converting a huge, infinite or NaN count
    // to int64 is undefined.
    double count = std::ceil((limit - start) / delta);
    if (!(count <= static_cast<double>(kMaxConcreteElements))) {
      error = "Range is too long";
      return false;
    }
    // An empty range may have a count far below int64's range too.
    int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
    r.kind = resultKind(in[0], in[2]);
    r.shape = {n};
    r.data.resize(n);
    for (int64_t i = 0; i < n; ++i)
      r.data[i] = start + i * delta;
    return true;
  }
  if (op == "ConstantOfShape") {
    if (!need(1))
      return false;
    r.shape = in[0].asInts();
    if (!checkSize(r.shape, error))
      return false;
    double v =
        attrs.value && !attrs.value->data.empty() ? attrs.value->data[0] : 0.0;
    r.kind = attrs.value ? attrs.value->kind : K::Float;
    r.data.assign(r.numel(), v);
    return true;
  }
  if (op == "Shape") {
    if (!need(1))
      return false;
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
  if (op == "Unsqueeze" || op == "Squeeze") {
    if (!need(1))
      return false;
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
  if (op == "Reshape") {
    if (!need(2))
      return false;
    r = in[0];
    return resolveReshape(in[0].shape, in[1].asInts(), attrs.allowzero != 0,
                          r.shape, error);
  }
  if (op == "Concat") {
    if (!need(1))
      return false;
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
  if (op == "Gather") {
    if (!need(2))
      return false;
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
  if (op == "Slice") {
    if (!need(3))
      return false;
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
      for (int64_t k = d.rank() - 1; k >= 0; --k) {
        if (++idx[k] < count[k])
          break;
        idx[k] = 0;
      }
    }
    return true;
  }
  if (op == "Transpose") {
    if (!need(1))
      return false;
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
      for (int64_t k = d.rank() - 1; k >= 0; --k) {
        if (++idx[k] < r.shape[k])
          break;
        idx[k] = 0;
      }
    }
    return true;
  }
  if (op == "Expand") {
    if (!need(2))
      return false;
    CTensor ones;
    ones.kind = in[0].kind;
    ones.shape = in[1].asInts();
    if (!checkSize(ones.shape, error))
      return false;
    ones.data.assign(ones.numel(), 1.0);
    return binary(
        in[0], ones, r, [](double a, double) { return a; }, in[0].kind, error);
  }
  if (op == "Trilu") {
    if (!need(1))
      return false;
    const CTensor &d = in[0];
    if (d.rank() < 2) {
      error = "Trilu needs rank >= 2";
      return false;
    }
    int64_t k = in.size() > 1 && !in[1].data.empty() ? in[1].intAt(0) : 0;
    r = d;
    int64_t rows = d.shape[d.rank() - 2], cols = d.shape[d.rank() - 1];
    for (int64_t i = 0; i < r.numel(); ++i) {
      int64_t col = i % cols, row = (i / cols) % rows;
      bool keep = attrs.upper ? col - row >= k : col - row <= k;
      if (!keep)
        r.data[i] = 0;
    }
    return true;
  }
  if (op == "MatMul") {
    if (!need(2))
      return false;
    const CTensor &a = in[0], &b = in[1];
    if (a.rank() != 2 || b.rank() != 2 || a.shape[1] != b.shape[0]) {
      error = "only 2-D MatMul is evaluated on constants";
      return false;
    }
    int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1];
    r.kind = resultKind(a, b);
    r.shape = {m, n};
    if (!checkSize(r.shape, error))
      return false;
    r.data.assign(m * n, 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < k; ++l)
          r.data[i * n + j] += a.data[i * k + l] * b.data[l * n + j];
    return true;
  }
  if (op == "ReduceSum" || op == "ReduceMax" || op == "ReduceMin") {
    if (!need(1))
      return false;
    const CTensor &d = in[0];
    std::vector<int64_t> axes =
        in.size() > 1 && !in[1].data.empty() ? in[1].asInts() : attrs.axes;
    if (axes.empty())
      for (int64_t i = 0; i < d.rank(); ++i)
        axes.push_back(i);
    std::vector<bool> reduce(d.rank(), false);
    for (int64_t a : axes) {
      if (!normAxis(a, d.rank(), error))
        return false;
      reduce[a] = true;
    }
    r.kind = d.kind == CTensor::Bool ? CTensor::Int : d.kind;
    std::vector<int64_t> outShape;
    for (int64_t i = 0; i < d.rank(); ++i)
      if (!reduce[i])
        outShape.push_back(d.shape[i]);
      else if (attrs.keepdims)
        outShape.push_back(1);
    r.shape = outShape;
    int64_t n = r.numel();
    double init = op == "ReduceSum"   ? 0.0
                  : op == "ReduceMax" ? -std::numeric_limits<double>::infinity()
                                      : std::numeric_limits<double>::infinity();
    r.data.assign(n, init);
    std::vector<int64_t> idx(d.rank(), 0);
    for (int64_t i = 0; i < d.numel(); ++i) {
      int64_t off = 0, stride = 1;
      for (int64_t k = d.rank() - 1; k >= 0; --k) {
        if (reduce[k])
          continue;
        off += idx[k] * stride;
        stride *= d.shape[k];
      }
      double v = d.data[i];
      double &acc = r.data[off];
      acc = op == "ReduceSum"   ? acc + v
            : op == "ReduceMax" ? std::max(acc, v)
                                : std::min(acc, v);
      for (int64_t k = d.rank() - 1; k >= 0; --k) {
        if (++idx[k] < d.shape[k])
          break;
        idx[k] = 0;
      }
    }
    return true;
  }
  error = "op '" + op + "' is not evaluated on constants";
  return false;
}

} // namespace onnx_import
} // namespace sq
