//===- Passes.h - sq lowering passes -----------------------------*- C++
//-*-===//

#ifndef SQ_CONVERSION_PASSES_H
#define SQ_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>
#include <string>

namespace sq {

#define GEN_PASS_DECL
#include "sq/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "sq/Conversion/Passes.h.inc"

/// --sq-lower-cpu as a function: `weightsFile` empty writes no sidecar.
mlir::LogicalResult lowerToCPU(mlir::ModuleOp module,
                               const std::string &weightsFile,
                               const std::string &description);

/// The passes after --sq-lower-cpu that reach the LLVM dialect.
void buildCPUToLLVMPipeline(mlir::OpPassManager &pm);

} // namespace sq

#endif // SQ_CONVERSION_PASSES_H
