//===- ModelLoader.h - open a model file as a ModelBackend ------*- C++ -*-===//
//
// The one way SQ's tools open a model to run it: by file name,
//   .so              a model compiled by sq-compile (its C API, dlopen)
//   .onnx            imported on the fly (sq/Import/ONNX.h)
//   .mlir / .mlirbc  sq IR, text or bytecode
// the last two run by the reference executor. Its own library
// (SQModelLoader), so that SQExec does not depend on the ONNX importer.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_MODELLOADER_H
#define SQ_EXEC_MODELLOADER_H

#include "sq/Exec/ModelBackend.h"

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <memory>
#include <string>

namespace sq {

/// Opens the model at `path` (see above); `contextTokens` sizes a compiled
/// model's KV cache (0: the model's maximum). Null with a one-line `error`.
std::unique_ptr<ModelBackend>
openModel(llvm::StringRef path, int64_t contextTokens, std::string &error);

} // namespace sq

#endif // SQ_EXEC_MODELLOADER_H
