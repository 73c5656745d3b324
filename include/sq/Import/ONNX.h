//===- ONNX.h - import of ONNX LLaMA models into the sq dialect --*- C++
//-*-===//
//
// importOnnxModel reads an ONNX model (with external data) and raises the
// LLaMA it contains into sq ops: per layer two sq.rms_norm, seven sq.linear,
// one sq.rope pair and one sq.attention. The model's configuration is
// recovered from the graph and written as `sq.*` attributes on the module.
//
// Errors are returned as one line "FILE: where: what" (the library never
// exits); tools print them and exit non-zero.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_ONNX_H
#define SQ_IMPORT_ONNX_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace sq {

struct OnnxImportOptions {
  /// The sizes at which shape-only subgraphs (causal mask, RoPE tables,
  /// reshape targets) are evaluated to recognize them. Any sizes > 1 that
  /// differ from each other work; they never appear in the output.
  int64_t probeBatch = 3;
  int64_t probeSeq = 5;
  int64_t probePast = 7;
};

/// Imports the ONNX model at `path` into a new module in `context`. On
/// failure returns null and sets `error` to a one-line message.
mlir::OwningOpRef<mlir::ModuleOp>
importOnnxModel(llvm::StringRef path, mlir::MLIRContext *context,
                std::string &error, const OnnxImportOptions &options = {});

} // namespace sq

#endif // SQ_IMPORT_ONNX_H
