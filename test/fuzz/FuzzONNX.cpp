//===- FuzzONNX.cpp - fuzz the ONNX importer ------------------------------===//
//
// importOnnxModel on the input bytes, written as model.onnx into a private
// temporary directory that also holds external data files: a small
// weights.bin, and the data files of the fixtures with external data
// (test/Import/Inputs/external*/: model.onnx.data, tensor00.bin, ...), so
// the seeds made from those fixtures import completely and their mutations
// reach the external-data reader (offsets, lengths, locations). Bad models
// must come back as a one-line error, never a crash. (External data outside
// the model's directory is refused by OnnxModel::mapExternal.)
//
// SQ_FUZZ_VERBOSE=1 prints each input's import result (to check that seeds
// get through).
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

static std::string modelPath;
static bool verbose = false;

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
  // The fixtures' external data (SQ_FUZZ_ONNX_INPUTS: test/Import/Inputs).
  namespace fs = std::filesystem;
  for (const char *sub : {"external", "external-many"}) {
    std::error_code ec;
    for (const auto &entry :
         fs::directory_iterator(fs::path(SQ_FUZZ_ONNX_INPUTS) / sub, ec))
      if (entry.is_regular_file() && entry.path().extension() != ".onnx")
        fs::copy_file(entry.path(), fs::path(dir) / entry.path().filename(),
                      fs::copy_options::overwrite_existing, ec);
    if (ec) {
      std::fprintf(stderr, "sq-fuzz-onnx: cannot copy %s/%s: %s\n",
                   SQ_FUZZ_ONNX_INPUTS, sub, ec.message().c_str());
      std::abort();
    }
  }
  const char *v = std::getenv("SQ_FUZZ_VERBOSE");
  verbose = v && *v && *v != '0';
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
  if (verbose)
    std::fprintf(stderr, "sq-fuzz-onnx: %s\n",
                 module ? "imported" : error.c_str());
  return 0;
}
