//===- Passes.h - sq lowering passes -----------------------------*- C++
//-*-===//

#ifndef SQ_CONVERSION_PASSES_H
#define SQ_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
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

/// --sq-lower-nvptx as a function: the kernel library (`kernelsPath`, or
/// the built-in one when empty) is compiled to PTX for `sm`, returned in
/// `ptx` when not null.
mlir::LogicalResult lowerToNVPTX(mlir::ModuleOp module,
                                 const std::string &weightsFile,
                                 const std::string &description, int sm,
                                 const std::string &kernelsPath,
                                 std::string *ptx);

/// The passes after --sq-lower-cpu (or --sq-lower-nvptx) that reach the
/// LLVM dialect.
void buildCPUToLLVMPipeline(mlir::OpPassManager &pm);

} // namespace sq

#endif // SQ_CONVERSION_PASSES_H
