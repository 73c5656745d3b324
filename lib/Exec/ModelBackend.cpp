//===- ModelBackend.cpp - the executor and compiled model.so backends -----===//

#include "sq/Exec/ModelBackend.h"
#include "sq/Runtime/sq_runtime.h"

#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>

using namespace llvm;

namespace sq {

ModelBackend::~ModelBackend() = default;

bool checkFiniteLogits(ArrayRef<float> logits, int64_t vocab,
                       StringRef modelPath, bool compiled, std::string &error) {
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isfinite(logits[i])) {
      error = modelPath.str() + ": the model computed a non-finite logit (" +
              (std::isnan(logits[i]) ? "NaN" : "Inf") + ") at position " +
              std::to_string(i / vocab) +
              (compiled ? ": its weights file may be damaged (sq-compile "
                          "refuses NaN/Inf weights; compile it again)"
                        : ": its weights may hold NaN/Inf (see sq-opt "
                          "--sq-weight-summary)");
      return false;
    }
  return true;
}

bool checkElfComplete(StringRef path, std::string &error) {
  auto buffer = MemoryBuffer::getFile(path, /*IsText=*/false,
                                      /*RequiresNullTerminator=*/false);
  if (!buffer) {
    error = path.str() + ": " + buffer.getError().message();
    return false;
  }
  StringRef data = (*buffer)->getBuffer();
  Elf64_Ehdr eh;
  if (data.size() < sizeof(eh) || !data.starts_with(ELFMAG) ||
      data[EI_CLASS] != ELFCLASS64)
    return true; // not a 64-bit ELF file: dlopen says so
  std::memcpy(&eh, data.data(), sizeof(eh));
  // Offsets first (their sums below cannot wrap then: counts are 16-bit).
  uint64_t need = std::max<uint64_t>(eh.e_phoff, eh.e_shoff);
  if (need <= data.size())
    need = std::max<uint64_t>(
        uint64_t(eh.e_phoff) + uint64_t(eh.e_phnum) * eh.e_phentsize,
        uint64_t(eh.e_shoff) + uint64_t(eh.e_shnum) * eh.e_shentsize);
  if (need <= data.size() && eh.e_phentsize == sizeof(Elf64_Phdr))
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
      Elf64_Phdr ph;
      std::memcpy(&ph, data.data() + eh.e_phoff + i * sizeof(ph), sizeof(ph));
      if (ph.p_type == PT_LOAD)
        need = std::max<uint64_t>(need, ph.p_offset + ph.p_filesz);
    }
  if (need > data.size()) {
    error = path.str() + ": truncated: " + std::to_string(data.size()) +
            " bytes, but its ELF headers need " + std::to_string(need) +
            " (an incomplete copy?)";
    return false;
  }
  return true;
}

namespace {

class ExecutorBackend : public ModelBackend {
public:
  ExecutorBackend(std::unique_ptr<Executor> ex, StringRef path,
                  std::shared_ptr<void> keepAlive)
      : keepAlive(std::move(keepAlive)), ex(std::move(ex)), path(path) {
    modelInfo = this->ex->info();
  }
  bool forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error) override {
    return ex->forward(tokens, batch, seq, logits, error) &&
           checkFiniteLogits(logits, modelInfo.vocabSize, path,
                             /*compiled=*/false, error);
  }
  void reset() override { ex->reset(); }

private:
  std::shared_ptr<void> keepAlive; // declared first: outlives `ex`
  std::unique_ptr<Executor> ex;
  std::string path;
};

/// A model.so through its C API.
class CompiledBackend : public ModelBackend {
public:
  static std::unique_ptr<CompiledBackend>
  open(StringRef path, int64_t contextTokens, std::string &error) {
    std::unique_ptr<CompiledBackend> b(new CompiledBackend());
    b->path = path.str();
    b->contextTokens = contextTokens;
    std::string abs = path.str();
    if (abs.find('/') == std::string::npos)
      abs = "./" + abs; // dlopen searches the library path otherwise
    if (!checkElfComplete(path, error))
      return nullptr;
    b->lib = dlopen(abs.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) {
      const char *e = dlerror();
      error = path.str() +
              ": cannot load the compiled model: " + (e ? e : "unknown error");
      return nullptr;
    }
#define SQ_BIND(name)                                                          \
  if (!(b->name =                                                              \
            reinterpret_cast<decltype(&::name)>(dlsym(b->lib, #name)))) {      \
    error =                                                                    \
        path.str() + ": not a model compiled by sq-compile (no " #name ")";    \
    return nullptr;                                                            \
  }
    SQ_BIND(sq_model_open)
    SQ_BIND(sq_model_free)
    SQ_BIND(sq_model_get_config)
    SQ_BIND(sq_model_description)
    SQ_BIND(sq_context_create)
    SQ_BIND(sq_context_free)
    SQ_BIND(sq_context_reset)
    SQ_BIND(sq_forward)
    SQ_BIND(sq_error_message)
    SQ_BIND(sq_error_free)
#undef SQ_BIND
    sq_error *err = nullptr;
    b->model = b->sq_model_open(abs.c_str(), &err);
    if (!b->model)
      return error = b->take(err), nullptr;
    sq_model_config config;
    b->sq_model_get_config(b->model, &config);
    b->modelInfo.vocabSize = config.vocab_size;
    b->modelInfo.numLayers = config.num_layers;
    b->modelInfo.maxPositions = config.max_positions;
    return b;
  }
  ~CompiledBackend() override {
    if (ctx)
      sq_context_free(ctx);
    if (model)
      sq_model_free(model);
    if (lib)
      dlclose(lib);
  }
  bool forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error) override {
    if (!ctx || batch > ctxBatch) {
      if (ctx)
        sq_context_free(ctx);
      sq_error *err = nullptr;
      // The context's size: the one asked for, else the model's, else 2048.
      int64_t n = contextTokens            ? contextTokens
                  : modelInfo.maxPositions ? modelInfo.maxPositions
                                           : 2048;
      ctx = sq_context_create(model, std::max(n, seq), batch, &err);
      if (!ctx)
        return error = take(err), false;
      ctxBatch = batch;
    }
    std::vector<int32_t> ids(tokens.begin(), tokens.end());
    logits.resize(size_t(batch) * seq * modelInfo.vocabSize);
    sq_error *err = nullptr;
    if (sq_forward(ctx, ids.data(), batch, seq, logits.data(), &err) != SQ_OK)
      return error = take(err), false;
    return checkFiniteLogits(logits, modelInfo.vocabSize, path,
                             /*compiled=*/true, error);
  }
  void reset() override {
    if (ctx)
      sq_context_reset(ctx);
  }

private:
  CompiledBackend() = default;
  std::string take(sq_error *err) {
    std::string m = err ? sq_error_message(err) : "unknown error";
    if (err)
      sq_error_free(err);
    return m;
  }
  std::string path;
  void *lib = nullptr;
  sq_model *model = nullptr;
  sq_context *ctx = nullptr;
  int64_t ctxBatch = 0, contextTokens = 0;
#define SQ_FN(name) decltype(&::name) name = nullptr;
  SQ_FN(sq_model_open)
  SQ_FN(sq_model_free)
  SQ_FN(sq_model_get_config)
  SQ_FN(sq_model_description)
  SQ_FN(sq_context_create)
  SQ_FN(sq_context_free)
  SQ_FN(sq_context_reset)
  SQ_FN(sq_forward)
  SQ_FN(sq_error_message)
  SQ_FN(sq_error_free)
#undef SQ_FN
};

} // namespace

std::unique_ptr<ModelBackend>
createExecutorBackend(std::unique_ptr<Executor> executor, StringRef modelPath,
                      std::shared_ptr<void> keepAlive) {
  return std::make_unique<ExecutorBackend>(std::move(executor), modelPath,
                                           std::move(keepAlive));
}

std::unique_ptr<ModelBackend>
openCompiledModel(StringRef path, int64_t contextTokens, std::string &error) {
  return CompiledBackend::open(path, contextTokens, error);
}

} // namespace sq
