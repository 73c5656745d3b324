//===- ConcreteGenerators.cpp - tables, masks and reductions -------------===//
//
// The concrete evaluator's generators and reductions: Range, ConstantOfShape
// and Trilu (what exporters build causal masks and RoPE tables from), 2-D
// MatMul (the inverse-frequency outer product) and ReduceSum, ReduceMax,
// ReduceMin.
//
//===----------------------------------------------------------------------===//

#include "ConcreteOps.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sq {
namespace onnx_import {
namespace {

using K = CTensor::Kind;

bool evalRange(const std::string &op, const std::vector<CTensor> &in,
               const ConcreteAttrs &, CTensor &r, std::string &error) {
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

bool evalConstantOfShape(const std::string &op, const std::vector<CTensor> &in,
                         const ConcreteAttrs &attrs, CTensor &r,
                         std::string &error) {
  r.shape = in[0].asInts();
  if (!checkSize(r.shape, error))
    return false;
  double v =
      attrs.value && !attrs.value->data.empty() ? attrs.value->data[0] : 0.0;
  r.kind = attrs.value ? attrs.value->kind : K::Float;
  r.data.assign(r.numel(), v);
  return true;
}

bool evalTrilu(const std::string &op, const std::vector<CTensor> &in,
               const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
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

bool evalMatMul(const std::string &op, const std::vector<CTensor> &in,
                const ConcreteAttrs &, CTensor &r, std::string &error) {
  // Matrices in the last two axes, numpy-broadcast leading (batch) axes:
  // [m, k] x [k, n], or [b, d/2, 1] x [b, 1, s] as Hugging Face's rotary
  // embedding computes its angles.
  const CTensor &a = in[0], &b = in[1];
  if (a.rank() < 2 || b.rank() < 2 ||
      a.shape[a.rank() - 1] != b.shape[b.rank() - 2]) {
    error = "MatMul on constants needs [..., m, k] x [..., k, n] operands";
    return false;
  }
  int64_t m = a.shape[a.rank() - 2], k = a.shape[a.rank() - 1],
          n = b.shape[b.rank() - 1];
  CTensor aBatch, bBatch;
  aBatch.shape.assign(a.shape.begin(), a.shape.end() - 2);
  bBatch.shape.assign(b.shape.begin(), b.shape.end() - 2);
  std::vector<int64_t> batch;
  if (!broadcastShape(aBatch.shape, bBatch.shape, batch, error))
    return false;
  r.kind = resultKind(a, b);
  r.shape = batch;
  r.shape.push_back(m);
  r.shape.push_back(n);
  if (!checkSize(r.shape, error))
    return false;
  r.data.assign(r.numel(), 0.0);
  int64_t batches = r.numel() / (m * n);
  std::vector<int64_t> idx(batch.size(), 0);
  for (int64_t t = 0; t < batches; ++t) {
    const double *pa = a.data.data() + bcastIndex(aBatch, idx) * m * k;
    const double *pb = b.data.data() + bcastIndex(bBatch, idx) * k * n;
    double *pr = r.data.data() + t * m * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < k; ++l)
          pr[i * n + j] += pa[i * k + l] * pb[l * n + j];
    advanceIndex(idx, batch);
  }
  return true;
}

bool evalReduce(const std::string &op, const std::vector<CTensor> &in,
                const ConcreteAttrs &attrs, CTensor &r, std::string &error) {
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
    advanceIndex(idx, d.shape);
  }
  return true;
}

} // namespace

void registerConcreteGenerators(ConcreteTable &t) {
  t["Range"] = {3, evalRange};
  t["ConstantOfShape"] = {1, evalConstantOfShape};
  t["Trilu"] = {1, evalTrilu};
  t["MatMul"] = {2, evalMatMul};
  for (const char *op : {"ReduceSum", "ReduceMax", "ReduceMin"})
    t[op] = {1, evalReduce};
}

} // namespace onnx_import
} // namespace sq
