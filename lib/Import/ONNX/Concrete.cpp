//===- Concrete.cpp - small concrete tensors for shape subgraphs ----------===//
//
// The core of the concrete evaluator: the shared tensor helpers, the checks
// Raise.cpp reuses (Reshape, Unsqueeze, Transpose) and evalConcrete, which
// looks the op up in the table that ConcreteElementwise.cpp,
// ConcreteShape.cpp and ConcreteGenerators.cpp fill.
//
//===----------------------------------------------------------------------===//

#include "ConcreteOps.h"

#include <algorithm>

namespace sq {
namespace onnx_import {

namespace {

bool needInputs(const std::string &op, const std::vector<CTensor> &in, size_t n,
                std::string &error) {
  if (in.size() < n) {
    error = op + " needs " + std::to_string(n) + " inputs";
    return false;
  }
  // Required operands must hold one value per element (an empty input name
  // gives an empty tensor; Shape reads only the shape). Optional ones may be
  // absent (empty), never inconsistent.
  for (size_t i = 0; i < in.size(); ++i) {
    if (op == "Shape" || (i >= n && in[i].data.empty()))
      continue;
    int64_t numel = 1;
    bool overflow = false;
    for (int64_t d : in[i].shape)
      overflow |= d < 0 || __builtin_mul_overflow(numel, d, &numel);
    if (overflow || static_cast<int64_t>(in[i].data.size()) != numel) {
      error = op + " operand " + std::to_string(i) +
              (in[i].data.empty() ? " is missing"
                                  : " has a shape that does not match its "
                                    "values");
      return false;
    }
  }
  return true;
}

} // namespace

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

void advanceIndex(std::vector<int64_t> &idx,
                  const std::vector<int64_t> &shape) {
  for (int64_t d = static_cast<int64_t>(idx.size()) - 1; d >= 0; --d) {
    if (++idx[d] < shape[d])
      break;
    idx[d] = 0;
  }
}

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
    advanceIndex(idx, out.shape);
  }
  return true;
}

CTensor::Kind resultKind(const CTensor &a, const CTensor &b) {
  return (a.kind == CTensor::Float || b.kind == CTensor::Float) ? CTensor::Float
                                                                : CTensor::Int;
}

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
  static const ConcreteTable table = [] {
    ConcreteTable t;
    registerConcreteElementwise(t);
    registerConcreteShapeOps(t);
    registerConcreteGenerators(t);
    return t;
  }();
  out.assign(1, CTensor());
  auto it = table.find(op);
  if (it == table.end()) {
    error = "op '" + op + "' is not evaluated on constants";
    return false;
  }
  if (!needInputs(op, in, it->second.arity, error))
    return false;
  return it->second.eval(op, in, attrs, out[0], error);
}

} // namespace onnx_import
} // namespace sq
