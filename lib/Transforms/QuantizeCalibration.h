//===- QuantizeCalibration.h - GPTQ Hessians from calibration text -*- C++ -*-//
//
// Internal to lib/Transforms: the --quantize pass and the rotation
// calibration (which can train under GPTQ) both collect GPTQ Hessians.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_QUANTIZECALIBRATION_H
#define SQ_LIB_TRANSFORMS_QUANTIZECALIBRATION_H

#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <vector>

namespace sq {

/// `spec.nsamples` windows of `spec.seqlen` tokens at seeded random offsets
/// of the tokenized calibration text `spec.calib`.
mlir::LogicalResult
loadCalibrationSamples(mlir::ModuleOp module, const QuantSpec &spec,
                       int64_t maxPositions,
                       std::vector<std::vector<int64_t>> &out);

/// Hessians of the inputs of `ops` (sq.linear / sq.qlinear of `module`)
/// over `samples`, one forward per sample.
mlir::LogicalResult
collectHessians(mlir::ModuleOp module,
                const std::vector<std::vector<int64_t>> &samples,
                llvm::ArrayRef<mlir::Operation *> ops,
                std::map<mlir::Operation *, HessianAccumulator> &out);

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_QUANTIZECALIBRATION_H
