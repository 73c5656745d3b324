//===- ImportedModule.cpp - the last step of both importers ---------------===//

#include "sq/Import/ImportedModule.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"

using namespace mlir;

namespace sq {

bool finishImportedModule(ModuleOp module, llvm::StringRef source,
                          std::string &error) {
  MLIRContext *context = module.getContext();
  module->setAttr("sq.source", Builder(context).getStringAttr(source));
  std::string diag;
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &d) {
    if (diag.empty())
      diag = d.str();
    return success();
  });
  if (failed(verify(module))) {
    error = source.str() +
            ": internal error, the imported IR does not verify: " + diag;
    return false;
  }
  return true;
}

} // namespace sq
