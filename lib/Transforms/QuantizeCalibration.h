//===- QuantizeCalibration.h - GPTQ Hessians from calibration text -*- C++ -*-//
//
// Internal to lib/Transforms: the --quantize pass and the rotation
// calibration (which can train under GPTQ) both collect GPTQ Hessians and
// quantize weights as a spec says.
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

/// Quantizes `w` [rows, cols] with the weight grid of `spec`: GPTQ (its
/// damp, block, actorder and wclip) under `hessian` when `spec.gptq`,
/// round-to-nearest otherwise (`hessian` unused). `rowClips` (optional,
/// [rows]): learned per-output-channel clip ratios (sq.weight_clip), used
/// for the scales by RTN and GPTQ alike in place of wclip's search.
bool quantizeWeight(const float *w, int64_t rows, int64_t cols,
                    const QuantSpec &spec, const std::vector<double> *hessian,
                    numerics::QuantizedWeight &out, std::string &error,
                    const float *rowClips = nullptr);

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_QUANTIZECALIBRATION_H
