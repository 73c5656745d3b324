//===- Program.h - the program shared by the lowerings ----------*- C++ -*-===//
//
// Internal to lib/Conversion: both lowerings turn @forward into the same
// straight-line program over buffer slots (and the same manifest and weights
// sidecar), built by lowerToProgram in Program.cpp; they differ in the
// runtime they call (sqrt_* for the CPU, sqcu_* for CUDA) and in how
// elementwise ops run (loops in the program, or kernels).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_CONVERSION_PROGRAM_H
#define SQ_LIB_CONVERSION_PROGRAM_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace sq {

mlir::LogicalResult lowerToProgram(mlir::ModuleOp module,
                                   const std::string &weightsFile,
                                   const std::string &description, bool gpu);

} // namespace sq

#endif // SQ_LIB_CONVERSION_PROGRAM_H
