//===- CompiledModelSupport.h - compiling and opening model.so in tests -*- C++
//-*-===//
//
// Shared by the compiled-model tests: run sq-compile, open a model.so
// through its C API (dlopen), compare logits.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_UNITTESTS_RUNTIME_COMPILEDMODELSUPPORT_H
#define SQ_UNITTESTS_RUNTIME_COMPILEDMODELSUPPORT_H

#include "sq/Runtime/sq_runtime.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Program.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace sqtest {

/// A directory for the compiled models, removed at exit.
inline std::string tempDir() {
  static const std::string *dir = [] {
    llvm::SmallString<128> d;
    llvm::sys::fs::createUniqueDirectory("sq-compiled-test", d);
    auto *path = new std::string(d); // never destroyed: used by atexit
    std::atexit([] { llvm::sys::fs::remove_directories(tempDir()); });
    return path;
  }();
  return *dir;
}

/// Runs sq-compile; returns its exit code.
inline int compile(const std::string &input, const std::string &out,
                   const std::vector<std::string> &flags) {
  std::string exe = SQ_BIN_DIR "/sq-compile";
  std::vector<llvm::StringRef> args = {exe, input, "-o", out};
  for (const std::string &f : flags)
    args.push_back(f);
  std::string err;
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, std::nullopt,
                                                std::nullopt};
  return llvm::sys::ExecuteAndWait(exe, args, std::nullopt, redirects, 0, 0,
                                   &err);
}

/// The compiled model through its C API.
struct Compiled {
  void *lib = nullptr;
  sq_model *model = nullptr;
  sq_context *ctx = nullptr;
  decltype(&sq_forward) forward = nullptr;
  decltype(&sq_decode) decode = nullptr;
  decltype(&sq_prefill) prefill = nullptr;
  decltype(&sq_context_reset) reset = nullptr;
  int64_t vocab = 0;
  std::string error;
  sq_status status = SQ_OK; // of a failed sq_model_open / sq_context_create

  bool open(const std::string &path, int64_t maxContext, int64_t batch) {
    lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      return error = dlerror(), false;
    auto openFn = (decltype(&sq_model_open))dlsym(lib, "sq_model_open");
    auto create = (decltype(&sq_context_create))dlsym(lib, "sq_context_create");
    auto vocabFn =
        (decltype(&sq_model_vocab_size))dlsym(lib, "sq_model_vocab_size");
    auto msg = (decltype(&sq_error_message))dlsym(lib, "sq_error_message");
    auto code = (decltype(&sq_error_code))dlsym(lib, "sq_error_code");
    forward = (decltype(&sq_forward))dlsym(lib, "sq_forward");
    decode = (decltype(&sq_decode))dlsym(lib, "sq_decode");
    prefill = (decltype(&sq_prefill))dlsym(lib, "sq_prefill");
    reset = (decltype(&sq_context_reset))dlsym(lib, "sq_context_reset");
    if (!openFn || !create || !vocabFn || !msg || !code || !forward ||
        !decode || !prefill || !reset)
      return error = "missing C API symbols", false;
    sq_error *err = nullptr;
    model = openFn(path.c_str(), &err);
    if (!model)
      return status = code(err), error = msg(err), false;
    vocab = vocabFn(model);
    ctx = create(model, maxContext, batch, &err);
    if (!ctx)
      return status = code(err), error = msg(err), false;
    return true;
  }
  ~Compiled() {
    if (!lib)
      return;
    if (ctx)
      ((decltype(&sq_context_free))dlsym(lib, "sq_context_free"))(ctx);
    if (model)
      ((decltype(&sq_model_free))dlsym(lib, "sq_model_free"))(model);
    dlclose(lib);
  }
};

struct Agreement {
  double maxAbs = 0, maxRef = 0;
  /// Fraction of positions whose logits all agree to 1e-4 of the largest.
  double closePositions = 0;
};

inline Agreement compare(const std::vector<float> &a,
                         const std::vector<float> &b, int64_t vocab) {
  Agreement r;
  for (float v : b)
    r.maxRef = std::max(r.maxRef, std::fabs(double(v)));
  double tol = 1e-4 * std::max(1.0, r.maxRef);
  int64_t positions = int64_t(a.size()) / vocab, close = 0;
  for (int64_t p = 0; p < positions; ++p) {
    double worst = 0;
    for (int64_t i = p * vocab; i < (p + 1) * vocab; ++i)
      worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    r.maxAbs = std::max(r.maxAbs, worst);
    close += worst <= tol;
  }
  r.closePositions = double(close) / positions;
  return r;
}

} // namespace sqtest

#endif // SQ_UNITTESTS_RUNTIME_COMPILEDMODELSUPPORT_H
