//===- WeightAccess.h - reading and rewriting weights in passes --*- C++
//-*-===//
//
// Internal to lib/Transforms: the float values of an sq.weight, and writing
// new values back under the same resource name.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_WEIGHTACCESS_H
#define SQ_LIB_TRANSFORMS_WEIGHTACCESS_H

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Buffer.h"
#include "sq/Transforms/PassOptionTypes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <string>
#include <vector>

namespace sq {

/// The weight's values widened to fp32 (in a huge-page buffer); false for
/// packed weights, weights without data, non-float element types, or when
/// the buffer cannot be allocated.
bool readWeightValues(WeightOp op, numerics::FloatBuffer &values);

/// Stores `values` (same shape) as the weight's value, in place: the
/// resource keeps its name, the buffer becomes the blob (no copy for fp32),
/// and the replaced bytes are released (their pages dropped when they were
/// a view of a memory-mapped input file). Resources belong to the
/// MLIRContext: a clone of the module shares them and sees the new values
/// too (clone into another context, or re-import, to keep both).
void writeWeightValues(WeightOp op, numerics::FloatBuffer values,
                       WeightStorage storage);

/// Rewrites the float weight that `user` reads as `weight` ([rows, cols];
/// a bias [n] is a column [n, 1]) a panel at a time: `fn(panel, rows,
/// cols)` transforms a panel of about 16 MiB in fp32 in place (it may swap
/// in a buffer of the same size): whole rows ([count, cols], `count` a
/// multiple of `align`) when `byRows`, whole columns ([rows, count],
/// row-major) otherwise. The values go straight into the new bytes (of
/// `storage`), which replace the old ones as writeWeightValues does; a
/// weight shared with other ops gets a new resource for `user` (as
/// unshareWeight, without the copy of the old bytes). Only the old and the
/// new bytes of this one weight and one panel exist at a time, never an
/// fp32 copy of the weight. False (with `user`'s error) for weights
/// readWeightValues cannot read or when memory runs out.
bool transformWeight(
    mlir::Value weight, mlir::Operation *user, bool byRows, int64_t align,
    llvm::function_ref<void(numerics::FloatBuffer &, int64_t, int64_t)> fn,
    WeightStorage storage);
/// Frees the large buffers kept for reuse (numerics::allocateLarge) once a
/// pass is done rewriting weights.
void releaseWeightScratch();
/// A new sq.weight named `name` (uniquified by MLIR if taken) whose
/// resource holds `bytes` (4-byte aligned) typed `storage`; `type` is the
/// weight's logical type (`storage` itself, or an !sq.packed type).
WeightOp makeWeight(mlir::OpBuilder &b, mlir::Location loc,
                    llvm::StringRef name, mlir::Type type,
                    mlir::ShapedType storage, llvm::ArrayRef<char> bytes);

/// Gives `user`'s use of a weight shared with other ops its own copy (a new
/// resource, same name plus MLIR's uniquifying suffix) and returns it; the
/// weight itself when `user` is its only user.
WeightOp unshareWeight(WeightOp weight, mlir::Operation *user);

/// --sq-fuse-norms as a function (also run by --spinquant-rotate).
mlir::LogicalResult foldNormScales(mlir::ModuleOp module, bool center,
                                   WeightStorage storage);

/// --sq-online-hadamard as a function (also run by --spinquant-rotate);
/// idempotent: an attention whose Q and K already pass through a learned
/// R3 (sq.rotate) or
/// sq.hadamard, or a down_proj behind one, is left alone.
mlir::LogicalResult insertOnlineHadamards(mlir::ModuleOp module, bool r3,
                                          bool r4, uint64_t seed,
                                          WeightStorage storage);

/// Replaces the online R3 of every attention (the sq.hadamard of head_dim
/// on its query and on its key) by an sq.rotate of both by one new fp32
/// weight `model.layers.L.self_attn.<name>` per layer: `matrices[L]` (x -> x
/// R), or, when `matrices` is empty, the Hadamard's own matrix (the same
/// function). The weights' names go to `names` when given. Fails with
/// `error` when an attention has no such pair of Hadamards.
bool replaceR3WithRotations(mlir::ModuleOp module,
                            llvm::ArrayRef<std::vector<double>> matrices,
                            std::vector<std::string> *names, std::string &error,
                            llvm::StringRef name = "R3");

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_WEIGHTACCESS_H
