//===- CAPI.cpp - sq_compile: compileModel behind a C function ------------===//

#include "sq/Compile/Compile.h"
#include "sq/Compile/sq_compile.h"

#include "llvm/Support/Path.h"

#include <cstring>
#include <dlfcn.h>

namespace {
int report(const std::string &message, char *error, size_t size) {
  if (error && size) {
    size_t n = std::min(message.size(), size - 1);
    std::memcpy(error, message.data(), n);
    error[n] = '\0';
  }
  return 1;
}

bool given(const char *s) { return s && *s; }
} // namespace

extern "C" int sq_compile(const char *input, const char *output,
                          const char *quantize, const char *rotate,
                          uint64_t seed, const char *calibData,
                          const char *tokenizer, int64_t calibSteps,
                          int64_t calibSeqlen, const char *emit, char *error,
                          size_t errorSize) {
  if (!given(input) || !given(output))
    return report("sq_compile: input and output are required", error,
                  errorSize);
  sq::CompileOptions o;
  o.input = input;
  o.output = output;
  std::string err;
  if (!sq::parseCompileFlags(given(emit) ? emit : "so",
                             given(quantize) ? quantize : "w4a4kv4",
                             given(rotate) ? rotate : "learned", o, err))
    return report(err, error, errorSize);
  o.recipe.seed = seed;
  o.recipe.calibData = given(calibData) ? calibData : "";
  o.recipe.tokenizer = given(tokenizer) ? tokenizer : "";
  o.recipe.calibSteps = calibSteps;
  o.recipe.calibSeqlen = calibSeqlen;
  o.recipeGiven = given(quantize) || given(rotate);
  if (const char *env = std::getenv("SQ_RUNTIME_DIR")) {
    o.runtimeDir = env;
  } else {
    // The runtime archives sit next to this library (build/lib).
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(&sq_compile), &info) && info.dli_fname)
      o.runtimeDir = llvm::sys::path::parent_path(info.dli_fname).str();
  }
  if (!sq::compileModel(o, err))
    return report(err, error, errorSize);
  return 0;
}
