//===- FuzzONNX.cpp - fuzz the ONNX importer ------------------------------===//
//
// importOnnxModel on the input bytes, written as model.onnx into a private
// temporary directory that also holds a small external data file
// (weights.bin). Bad models must come back as a one-line error, never a
// crash. (External data outside the model's directory is refused by
// OnnxModel::mapExternal; inputs may still reference weights.bin.)
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>

static std::string modelPath;

static void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const char *tmp = std::getenv("TMPDIR");
  std::string dir =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/sq-fuzz-onnx-XXXXXX";
  if (!mkdtemp(dir.data())) {
    std::perror("sq-fuzz-onnx: mkdtemp");
    std::abort();
  }
  modelPath = dir + "/model.onnx";
  std::string external(4096, '\0');
  for (size_t i = 0; i < external.size(); ++i)
    external[i] = char(i * 37);
  writeFile(dir + "/weights.bin", external);
  return 0;
}

static mlir::DialectRegistry &registry() {
  static mlir::DialectRegistry r = [] {
    mlir::DialectRegistry r;
    r.insert<sq::SQDialect, mlir::func::FuncDialect>();
    return r;
  }();
  return r;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  writeFile(modelPath, std::string(reinterpret_cast<const char *>(data), size));
  mlir::MLIRContext context(registry(), mlir::MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  mlir::ScopedDiagnosticHandler handler(
      &context, [](mlir::Diagnostic &) { return mlir::success(); });
  std::string error;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      sq::importOnnxModel(modelPath, &context, error);
  if (!module && error.empty()) {
    std::fprintf(stderr, "sq-fuzz-onnx: import failed without a message\n");
    std::abort();
  }
  return 0;
}
