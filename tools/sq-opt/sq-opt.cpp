//===- sq-opt.cpp - the sq optimizer driver -------------------------------===//
//
// mlir-opt with the sq dialect and passes: every upstream dialect, pass and
// LLVM IR translation is registered too, so one tool runs a whole pipeline.
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  sq::registerSQPasses();

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<sq::SQDialect>();

  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv,
      "sq optimizer driver: SpinQuant rotation and quantization passes over "
      "the sq dialect\n",
      registry));
}
