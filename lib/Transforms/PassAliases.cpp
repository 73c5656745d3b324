//===- PassAliases.cpp - the pass names from before the sq- prefix --------===//
//
// Every sq pass is named sq-*. The two older names, spinquant-rotate and
// quantize, stay for one release as aliases: each builds the renamed pass
// and hands it its option string unchanged (so --quantize=w4a4kv4,gptq
// keeps its raw spec form).
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include <functional>

using namespace mlir;

namespace {
void registerAlias(StringRef old, StringRef description,
                   std::function<std::unique_ptr<Pass>()> make) {
  registerPassPipeline(
      old, description,
      [make](OpPassManager &pm, StringRef options,
             function_ref<LogicalResult(const Twine &)> errorHandler) {
        std::unique_ptr<Pass> pass = make();
        if (failed(pass->initializeOptions(options, errorHandler)))
          return failure();
        pm.addPass(std::move(pass));
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> optHandler) {
        optHandler(EmptyPipelineOptions());
      });
}
} // namespace

void sq::registerSQPassAliases() {
  registerAlias("spinquant-rotate",
                "deprecated name of --sq-spinquant-rotate (kept for one "
                "release; same options)",
                [] { return createSQSpinQuantRotate(); });
  registerAlias("quantize",
                "deprecated name of --sq-quantize (kept for one release; "
                "same spec)",
                [] { return createSQQuantize(); });
}
