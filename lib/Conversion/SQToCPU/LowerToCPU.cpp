//===- LowerToCPU.cpp - sq @forward to a CPU program ----------------------===//
//
// --sq-lower-cpu: the program of lowerToProgram (../Program.cpp) calling the
// CPU runtime (sqrt_*, lib/Runtime/CPU/ProgramCalls.cpp), elementwise ops
// included; and the pipeline that takes it to LLVM.
//
//===----------------------------------------------------------------------===//

#include "../Program.h"
#include "sq/Conversion/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

namespace sq {
#define GEN_PASS_DEF_SQLOWERCPU
#include "sq/Conversion/Passes.h.inc"
} // namespace sq

using namespace mlir;

namespace sq {
namespace {

struct SQLowerCPUPass : impl::SQLowerCPUBase<SQLowerCPUPass> {
  using SQLowerCPUBase::SQLowerCPUBase;
  void runOnOperation() override {
    if (failed(lowerToCPU(getOperation(), weightsFile, description)))
      signalPassFailure();
  }
};

} // namespace

LogicalResult lowerToCPU(ModuleOp module, const std::string &weightsFile,
                         const std::string &description) {
  return lowerToProgram(module, weightsFile, description, /*gpu=*/false);
}

void buildCPUToLLVMPipeline(OpPassManager &pm) {
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

} // namespace sq
