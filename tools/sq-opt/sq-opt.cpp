//===- sq-opt.cpp - the sq optimizer driver -------------------------------===//
//
// mlir-opt with the sq dialect and passes: every upstream dialect, pass and
// LLVM IR translation is registered too, so one tool runs a whole pipeline.
//
//===----------------------------------------------------------------------===//

#include "sq/Conversion/Passes.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/CommandLine.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  sq::registerSQPasses();
  sq::registerSQConversionPasses();

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<sq::SQDialect>();

  auto [input, output] = mlir::registerAndParseCLIOptions(
      argc, argv,
      "sq optimizer driver: SpinQuant rotation and quantization passes over "
      "the sq dialect\n",
      registry);
  // An error on the module would otherwise print the whole model (every
  // weight name and op of a 7B model) as a note. Opt back in with
  // --mlir-print-op-on-diagnostic.
  auto &options = llvm::cl::getRegisteredOptions();
  auto it = options.find("mlir-print-op-on-diagnostic");
  if (it != options.end() && !it->second->getNumOccurrences())
    if (auto *flag = static_cast<llvm::cl::opt<bool> *>(it->second))
      *flag = false;
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, input, output, registry));
}
