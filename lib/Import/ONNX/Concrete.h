//===- Concrete.h - small concrete tensors for shape subgraphs ---*- C++
//-*-===//
//
// Internal to lib/Import/ONNX. Exported graphs compute shapes, causal masks
// and RoPE tables from the input's shape; the importer evaluates those
// subgraphs concretely at probe sizes (double precision) and then recognizes
// the results by value.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_CONCRETE_H
#define SQ_LIB_IMPORT_ONNX_CONCRETE_H

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace onnx_import {

struct CTensor {
  enum Kind { Float, Int, Bool } kind = Float;
  std::vector<int64_t> shape;
  std::vector<double> data;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  static CTensor scalar(double v, Kind kind) {
    CTensor t;
    t.kind = kind;
    t.data = {v};
    return t;
  }
  static CTensor vector(const std::vector<int64_t> &values) {
    CTensor t;
    t.kind = Int;
    t.shape = {static_cast<int64_t>(values.size())};
    t.data.assign(values.begin(), values.end());
    return t;
  }
  /// The values as int64 (shapes, axes, indices). Values outside int64's
  /// range saturate and NaN becomes INT64_MIN, so a hostile constant is
  /// refused by the later checks instead of being an undefined conversion.
  std::vector<int64_t> asInts() const {
    std::vector<int64_t> out;
    out.reserve(data.size());
    for (size_t i = 0; i < data.size(); ++i)
      out.push_back(intAt(i));
    return out;
  }
  /// Element `i` as int64, saturating like asInts(); INT64_MIN when the
  /// tensor has no element `i` (an empty constant where a scalar belongs).
  int64_t intAt(size_t i) const {
    if (i >= data.size())
      return INT64_MIN;
    double v = data[i];
    return v != v        ? INT64_MIN
           : v >= 0x1p63 ? INT64_MAX
           : v < -0x1p63 ? INT64_MIN
                         : static_cast<int64_t>(v);
  }
};

/// Largest concrete tensor the evaluator builds (elements).
constexpr int64_t kMaxConcreteElements = int64_t(1) << 22;

/// Evaluates one ONNX op on concrete operands. Returns false with `error`
/// set when the op or its use is not supported. `attrs` accessors are passed
/// as a small struct to keep this file free of protobuf types.
struct ConcreteAttrs {
  int64_t axis = 0;
  bool hasAxis = false;
  std::vector<int64_t> axes, perm;
  bool hasAxes = false, hasPerm = false;
  int64_t to = 0;                     // Cast
  int64_t upper = 1;                  // Trilu
  int64_t keepdims = 1;               // reductions
  int64_t allowzero = 0;              // Reshape
  int64_t start = 0, end = INT64_MAX; // Shape (opset 15)
  bool hasStart = false, hasEnd = false;
  const CTensor *value = nullptr; // ConstantOfShape
};

bool evalConcrete(const std::string &opType, const std::vector<CTensor> &in,
                  const ConcreteAttrs &attrs, std::vector<CTensor> &out,
                  std::string &error);

/// Resolves ONNX Reshape's 0 and -1 entries against `inputShape`.
bool resolveReshape(const std::vector<int64_t> &inputShape,
                    std::vector<int64_t> target, bool allowZero,
                    std::vector<int64_t> &result, std::string &error);

/// Normalizes ONNX Unsqueeze's `axes` for an input of rank `inputRank`:
/// negative axes count from the end of the output, the result is sorted, and
/// an axis out of range or repeated is an error (ONNX requires unique axes).
/// Inserting a 1 at each axis in order then builds the output shape.
bool unsqueezeAxes(std::vector<int64_t> &axes, int64_t inputRank,
                   std::string &error);

/// Checks that Transpose's `perm` is a permutation of 0..rank-1 (each axis
/// once; ONNX does not allow negative entries).
bool checkPermutation(const std::vector<int64_t> &perm, int64_t rank,
                      std::string &error);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_CONCRETE_H
