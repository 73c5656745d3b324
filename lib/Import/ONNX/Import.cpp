//===- Import.cpp - importOnnxModel entry point ---------------------------===//

#include "ONNXModel.h"
#include "Raise.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

using namespace mlir;

OwningOpRef<ModuleOp> sq::importOnnxModel(llvm::StringRef path,
                                          MLIRContext *context,
                                          std::string &error,
                                          const OnnxImportOptions &options) {
  context->loadDialect<SQDialect, func::FuncDialect>();
  std::unique_ptr<onnx_import::OnnxModel> model =
      onnx_import::OnnxModel::load(path, error);
  if (!model)
    return nullptr;

  OpBuilder builder(context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  std::string what;
  if (!onnx_import::raiseGraph(*model, *module, options, what) ||
      !onnx_import::checkStructureAndName(*module, what)) {
    error = path.str() + ": " + what;
    return nullptr;
  }
  (*module)->setAttr("sq.source", builder.getStringAttr(path));

  // The importer builds valid IR by construction; verify to be sure, with
  // the diagnostics captured into the one-line error.
  std::string diag;
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &d) {
    if (diag.empty())
      diag = d.str();
    return success();
  });
  if (failed(verify(*module))) {
    error = path.str() +
            ": internal error, the imported IR does not verify: " + diag;
    return nullptr;
  }
  return module;
}
