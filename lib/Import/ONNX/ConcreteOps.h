//===- ConcreteOps.h - the concrete evaluator's op table --------*- C++ -*-===//
//
// Internal to lib/Import/ONNX. evalConcrete (Concrete.cpp) looks each op up in
// a table of evaluators keyed by ONNX op type; the Concrete*.cpp files fill it
// by family. This header holds the evaluator signature, the registration
// functions and the tensor helpers the families share.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_CONCRETEOPS_H
#define SQ_LIB_IMPORT_ONNX_CONCRETEOPS_H

#include "Concrete.h"

#include <functional>
#include <map>

namespace sq {
namespace onnx_import {

/// Evaluates `op` on `in` into `r` (evalConcrete's only output); false with
/// `error` set.
using ConcreteEvalFn = std::function<bool(
    const std::string &op, const std::vector<CTensor> &in,
    const ConcreteAttrs &attrs, CTensor &r, std::string &error)>;
/// An op's evaluator and how many operands it needs at least (evalConcrete
/// checks that before calling it).
struct ConcreteOp {
  size_t arity;
  ConcreteEvalFn eval;
};
using ConcreteTable = std::map<std::string, ConcreteOp>;

/// Identity, unary math, Cast, arithmetic, comparisons and Where.
void registerConcreteElementwise(ConcreteTable &table);
/// Shape, Unsqueeze, Squeeze, Reshape, Concat, Gather, Slice, Transpose and
/// Expand.
void registerConcreteShapeOps(ConcreteTable &table);
/// Range, ConstantOfShape and Trilu (masks and RoPE tables), MatMul and the
/// reductions.
void registerConcreteGenerators(ConcreteTable &table);

/// Row-major strides of `shape`.
std::vector<int64_t> strides(const std::vector<int64_t> &shape);
/// Checks `axis` against `rank` and makes it non-negative.
bool normAxis(int64_t &axis, int64_t rank, std::string &error);
/// Refuses negative dimensions and tensors over kMaxConcreteElements.
bool checkSize(const std::vector<int64_t> &shape, std::string &error);
/// The numpy broadcast of two shapes.
bool broadcastShape(const std::vector<int64_t> &a,
                    const std::vector<int64_t> &b, std::vector<int64_t> &out,
                    std::string &error);
/// Steps the row-major multi-index `idx` over `shape` (last axis fastest).
void advanceIndex(std::vector<int64_t> &idx, const std::vector<int64_t> &shape);
/// Index into `t` for the broadcast position `idx` of shape `outShape`.
int64_t bcastIndex(const CTensor &t, const std::vector<int64_t> &idx);
/// out = f(a, b) elementwise with broadcasting.
bool binary(const CTensor &a, const CTensor &b, CTensor &out,
            const std::function<double(double, double)> &f, CTensor::Kind kind,
            std::string &error);
/// Float if either operand is, else Int.
CTensor::Kind resultKind(const CTensor &a, const CTensor &b);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_CONCRETEOPS_H
