//===- Raise.h - raising an ONNX LLaMA graph into sq ops ---------*- C++
//-*-===//
//
// Internal to lib/Import/ONNX. raiseGraph interprets the ONNX graph
// abstractly: shape-only values are computed concretely at probe sizes;
// activations carry their backing sq value and a logical view (how batch,
// sequence, heads and head_dim are arranged in the ONNX tensor); partial
// patterns (the pieces of an RMSNorm, of rotate-half RoPE, of attention
// scores) are recognized as they are built and become sq ops when complete.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_RAISE_H
#define SQ_LIB_IMPORT_ONNX_RAISE_H

#include "ONNXModel.h"
#include "sq/Import/ONNX.h"

#include "mlir/IR/BuiltinOps.h"

namespace sq {
namespace onnx_import {

/// Builds func.func @forward in `module` from the model's graph. Returns
/// false with a one-line `error` (without the file name prefix).
bool raiseGraph(OnnxModel &model, mlir::ModuleOp module,
                const OnnxImportOptions &options, std::string &error);

/// Checks the LLaMA structure of @forward (per layer: two sq.rms_norm,
/// seven sq.linear, one sq.attention, ...), gives weights their canonical
/// Hugging Face names and writes the configuration on the module.
bool checkStructureAndName(mlir::ModuleOp module, std::string &error);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_RAISE_H
