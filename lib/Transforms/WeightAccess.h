//===- WeightAccess.h - reading and rewriting weights in passes --*- C++
//-*-===//
//
// Internal to lib/Transforms: the float values of an sq.weight, and writing
// new fp32 values back under the same resource name.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_WEIGHTACCESS_H
#define SQ_LIB_TRANSFORMS_WEIGHTACCESS_H

#include "sq/Dialect/SQ/IR/SQ.h"

#include <vector>

namespace sq {

/// The weight's values widened to fp32; false for packed weights, weights
/// without data or non-float element types.
bool readWeightValues(WeightOp op, std::vector<float> &values);

/// Stores fp32 `values` (same shape) as the weight's value, in place: the
/// resource keeps its name (a weight whose dtype was f16/bf16 becomes f32)
/// and no second copy of the weights is kept. Resources belong to the
/// MLIRContext: a clone of the module shares them and sees the new values
/// too (clone into another context, or re-import, to keep both).
void writeWeightValues(WeightOp op, const std::vector<float> &values);

/// Gives `user`'s use of a weight shared with other ops its own copy (a new
/// resource, same name plus MLIR's uniquifying suffix) and returns it; the
/// weight itself when `user` is its only user.
WeightOp unshareWeight(WeightOp weight, mlir::Operation *user);

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_WEIGHTACCESS_H
