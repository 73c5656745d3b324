//===- ModelLoader.cpp - open a model file as a ModelBackend --------------===//

#include "sq/Exec/ModelLoader.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/HF.h"
#include "sq/Import/ONNX.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"
#include "sq/Support/ToolSupport.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace sq {

namespace {
/// What the executor runs, released after it.
struct LoadedModule {
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};
} // namespace

/// Imports or parses `path` into `loaded.module`; false with `error`.
static bool loadModule(StringRef path, LoadedModule &loaded,
                       std::string &error) {
  mlir::MLIRContext &ctx = loaded.context;
  ctx.loadDialect<SQDialect, mlir::func::FuncDialect>();
  // The importers' warnings (unknown config.json fields, already quantized
  // weights) go to stderr; MLIR would drop them without a handler.
  mlir::ScopedDiagnosticHandler warnings(&ctx, [](mlir::Diagnostic &d) {
    if (d.getSeverity() != mlir::DiagnosticSeverity::Warning &&
        d.getSeverity() != mlir::DiagnosticSeverity::Remark)
      return mlir::failure();
    errs() << "warning: " << d.str() << "\n";
    return mlir::success();
  });
  if (path.ends_with(".onnx")) {
    loaded.module = importOnnxModel(path, &ctx, error);
    return bool(loaded.module);
  }
  if (isHFModelDir(path)) {
    loaded.module = importHFModel(path, &ctx, error);
    return bool(loaded.module);
  }
  if (!path.ends_with(".mlir") && !path.ends_with(".mlirbc")) {
    error = "unknown model type '" + path.str() +
            "': expected .onnx, a Hugging Face folder, .mlir, .mlirbc or .so";
    return false;
  }
  std::string diag;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    if (diag.empty()) {
      raw_string_ostream os(diag);
      if (auto loc = dyn_cast<mlir::FileLineColLoc>(d.getLocation()))
        os << loc.getFilename().getValue() << ":" << loc.getLine() << ":"
           << loc.getColumn() << ": ";
      os << d.str();
    }
    return mlir::success();
  });
  if (!checkRegularFile(path, error))
    return false;
  if (auto text = MemoryBuffer::getFile(path)) {
    error = checkNestingDepth((*text)->getBuffer(), path,
                              /*mlirLayout=*/false);
    if (!error.empty())
      return false;
  }
  loaded.module = parseModuleFile(path, &ctx);
  if (!loaded.module)
    error = diag.empty() ? "cannot read '" + path.str() + "'" : diag;
  return bool(loaded.module);
}

std::unique_ptr<ModelBackend> openModel(StringRef path, int64_t contextTokens,
                                        std::string &error) {
  if (path.ends_with(".so")) {
    if (!sys::fs::exists(path)) {
      error = path.str() + ": no such file";
      return nullptr;
    }
    return openCompiledModel(path, contextTokens, error);
  }
  auto loaded = std::make_shared<LoadedModule>();
  if (!loadModule(path, *loaded, error))
    return nullptr;
  auto executor = Executor::create(*loaded->module, error);
  if (!executor) {
    error = path.str() + ": " + error;
    return nullptr;
  }
  return createExecutorBackend(std::move(executor), path, std::move(loaded));
}

} // namespace sq
