//===- ImportedModule.h - the last step of both importers ------*- C++ -*-===//
//
// The ONNX and the Hugging Face importers end the same way: the module
// records where it came from (`sq.source`) and is verified, with a failure
// turned into the importers' one-line error.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_IMPORTEDMODULE_H
#define SQ_IMPORT_IMPORTEDMODULE_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace sq {

/// Sets `sq.source` to `source` (the model file or folder) and verifies
/// `module`. The importers build valid IR by construction, so a failure is
/// an internal error: false, with `error` = "SOURCE: internal error, the
/// imported IR does not verify: FIRST DIAGNOSTIC" (the diagnostics are
/// captured, not printed).
bool finishImportedModule(mlir::ModuleOp module, llvm::StringRef source,
                          std::string &error);

} // namespace sq

#endif // SQ_IMPORT_IMPORTEDMODULE_H
