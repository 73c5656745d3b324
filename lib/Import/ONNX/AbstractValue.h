//===- AbstractValue.h - the raiser's abstract values ----------*- C++ -*-===//
//
// Internal to lib/Import/ONNX. Every ONNX value the raiser meets is an AVal:
// a concrete tensor (shapes, masks, tables), a weight, the token ids, an
// activation (a backing sq value and its View), or one step of a pattern
// being recognized (the pieces of an RMSNorm, of RoPE, of attention). The
// op handlers advance patterns by building new AVals.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_ABSTRACTVALUE_H
#define SQ_LIB_IMPORT_ONNX_ABSTRACTVALUE_H

#include "Concrete.h"
#include "View.h"

#include "mlir/IR/Value.h"

#include <onnx/onnx_pb.h>

#include <memory>

namespace sq {
namespace onnx_import {

struct KVCat {
  mlir::Value past;       // function argument [B, P, K*D]
  mlir::Value presentOut; // the sq.attention present result, once built
};

struct AVal;
using AValRef = std::shared_ptr<AVal>;

struct AVal {
  enum Kind {
    Concrete, // shape computations, masks, tables
    Weight,   // an initializer or large constant
    WeightT,  // Transpose of a 2-D weight
    Ids,      // the token ids input
    Act,      // an activation: backing flat value + view
    // RMSNorm pieces
    Sq,
    MeanSq,
    MeanSqEps,
    Rms,
    InvRms,
    Normed,
    // SwiGLU
    Sig,
    // RoPE pieces
    TableMul,
    Half,
    NegHalf,
    RotHalf,
    RotTableMul,
    // interleaved RoPE pieces: x = (r, i) pairs
    PairPart,
    PairMul,
    PairRot,
    PairRope,
    // attention pieces
    Scores,
    Probs
  } kind;

  CTensor c;                                 // Concrete; TableMul tables
  const onnx::TensorProto *tensor = nullptr; // Weight, WeightT
  mlir::Value v;                             // Act backing, Ids
  View view;                                 // Act
  std::shared_ptr<KVCat> kv; // Act: keys/values after a cache concat
  mlir::Value kvNew;         // Act with kv: the new part
  AValRef x, y;              // the activations a pattern is about
  double eps = 0, scale = 1;
  bool hi = false, causal = false;
  int part =
      0; // PairPart/PairMul: 0 real, 1 imaginary; PairRot: 0 r*c-i*s, 1 r*s+i*c
  bool unsq = false; // PairRot: unsqueezed for the stack
  CTensor c2;        // PairRot/PairRope: the second table
  /// Concrete: non-empty when the value could not be computed at the probe
  /// sizes ("node 'X' (Expand, #45): shapes do not broadcast"). A builder's
  /// attention mask may only be valid for the shapes its runtime feeds
  /// (prefill without a cache, or one token at a time); the attention that
  /// reads it re-evaluates it at those shapes (Raiser::probeValue). Any
  /// other use reports this error.
  std::string invalid;

  static AValRef make(Kind kind) {
    auto a = std::make_shared<AVal>();
    a->kind = kind;
    return a;
  }
};

/// "x^2 of an RMSNorm", "an activation", ...: for messages.
const char *kindName(AVal::Kind k);

/// True with the value when `a` is a one-element constant.
bool isScalar(const AValRef &a, double &v);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_ABSTRACTVALUE_H
