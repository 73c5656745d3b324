//===- ConcreteElementwise.cpp - elementwise ops on concrete tensors ------===//
//
// The concrete evaluator's elementwise family: Identity, unary math (Neg,
// Cos, Sin, Sqrt, Exp, Reciprocal, Abs, Floor, Ceil, Not), Cast, broadcast
// arithmetic (Add, Sub, Mul, Div, Pow, Max, Min), comparisons and logic
// (Equal, Less, Greater, LessOrEqual, GreaterOrEqual, And, Or) and Where.
//
//===----------------------------------------------------------------------===//

#include "ConcreteOps.h"

#include <algorithm>
#include <cmath>

namespace sq {
namespace onnx_import {
namespace {

using K = CTensor::Kind;

/// A unary op: `f` on every element. `keepKind` keeps the input's kind
/// (Neg, Abs); otherwise the result is `kind`.
ConcreteEvalFn unaryOp(double (*f)(double), K kind, bool keepKind = false) {
  return [=](const std::string &, const std::vector<CTensor> &in,
             const ConcreteAttrs &, CTensor &r, std::string &error) {
    r = in[0];
    r.kind = keepKind ? in[0].kind : kind;
    for (double &v : r.data)
      v = f(v);
    return true;
  };
}

/// Broadcast arithmetic; `f` learns whether both operands are integers
/// (integer Div truncates).
ConcreteEvalFn arithmeticOp(double (*f)(double, double, bool integer)) {
  return [=](const std::string &, const std::vector<CTensor> &in,
             const ConcreteAttrs &, CTensor &r, std::string &error) {
    K kind = resultKind(in[0], in[1]);
    bool integer = kind == K::Int;
    return binary(
        in[0], in[1], r, [&](double a, double b) { return f(a, b, integer); },
        kind, error);
  };
}

/// Broadcast comparison or logic op with a Bool result.
ConcreteEvalFn predicateOp(bool (*f)(double, double)) {
  return [=](const std::string &, const std::vector<CTensor> &in,
             const ConcreteAttrs &, CTensor &r, std::string &error) {
    return binary(
        in[0], in[1], r, [&](double a, double b) -> double { return f(a, b); },
        K::Bool, error);
  };
}

bool evalIdentity(const std::string &op, const std::vector<CTensor> &in,
                  const ConcreteAttrs &, CTensor &r, std::string &error) {
  r = in[0];
  return true;
}

bool evalCast(const std::string &op, const std::vector<CTensor> &in,
              const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
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

bool evalWhere(const std::string &op, const std::vector<CTensor> &in,
               const ConcreteAttrs &, CTensor &r, std::string &error) {
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
    advanceIndex(idx, shape);
  }
  return true;
}

} // namespace

void registerConcreteElementwise(ConcreteTable &t) {
  t["Identity"] = {1, evalIdentity};
  t["Neg"] = {
      1, unaryOp([](double v) { return -v; }, K::Float, /*keepKind=*/true)};
  t["Cos"] = {1, unaryOp([](double v) { return std::cos(v); }, K::Float)};
  t["Sin"] = {1, unaryOp([](double v) { return std::sin(v); }, K::Float)};
  t["Sqrt"] = {1, unaryOp([](double v) { return std::sqrt(v); }, K::Float)};
  t["Exp"] = {1, unaryOp([](double v) { return std::exp(v); }, K::Float)};
  t["Reciprocal"] = {1, unaryOp([](double v) { return 1.0 / v; }, K::Float)};
  t["Abs"] = {1, unaryOp([](double v) { return std::fabs(v); }, K::Float,
                         /*keepKind=*/true)};
  t["Floor"] = {1, unaryOp([](double v) { return std::floor(v); }, K::Float)};
  t["Ceil"] = {1, unaryOp([](double v) { return std::ceil(v); }, K::Float)};
  t["Not"] = {1,
              unaryOp([](double v) { return v == 0.0 ? 1.0 : 0.0; }, K::Bool)};
  t["Cast"] = {1, evalCast};

  t["Add"] = {2, arithmeticOp([](double a, double b, bool) { return a + b; })};
  t["Sub"] = {2, arithmeticOp([](double a, double b, bool) { return a - b; })};
  t["Mul"] = {2, arithmeticOp([](double a, double b, bool) { return a * b; })};
  t["Div"] = {2, arithmeticOp([](double a, double b, bool integer) {
                return integer ? (b == 0 ? 0 : std::trunc(a / b)) : a / b;
              })};
  t["Pow"] = {
      2, arithmeticOp([](double a, double b, bool) { return std::pow(a, b); })};
  t["Max"] = {
      2, arithmeticOp([](double a, double b, bool) { return std::max(a, b); })};
  t["Min"] = {
      2, arithmeticOp([](double a, double b, bool) { return std::min(a, b); })};

  t["Equal"] = {2, predicateOp([](double a, double b) { return a == b; })};
  t["Less"] = {2, predicateOp([](double a, double b) { return a < b; })};
  t["Greater"] = {2, predicateOp([](double a, double b) { return a > b; })};
  t["LessOrEqual"] = {2,
                      predicateOp([](double a, double b) { return a <= b; })};
  t["GreaterOrEqual"] = {
      2, predicateOp([](double a, double b) { return a >= b; })};
  t["And"] = {2,
              predicateOp([](double a, double b) { return a != 0 && b != 0; })};
  t["Or"] = {2,
             predicateOp([](double a, double b) { return a != 0 || b != 0; })};
  t["Where"] = {3, evalWhere};
}

} // namespace onnx_import
} // namespace sq
