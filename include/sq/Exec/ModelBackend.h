//===- ModelBackend.h - what runs a model: executor or model.so -*- C++ -*-===//
//
// One interface over the two ways SQ runs a model, so that perplexity,
// generation and benchmarks (sq/Exec/Evaluate.h, sq/Exec/Generate.h) are
// written once: the reference executor on sq IR, or a model.so compiled by
// sq-compile, loaded with dlopen and driven through its C API
// (sq/Runtime/sq_runtime.h). Both check that the logits they return are
// finite. openModel (sq/Exec/ModelLoader.h) picks one from a file name.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_MODELBACKEND_H
#define SQ_EXEC_MODELBACKEND_H

#include "sq/Exec/Executor.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sq {

class ModelBackend {
public:
  virtual ~ModelBackend();
  /// Runs `tokens` ([batch, seq], row-major) after the cached ones and
  /// returns the logits of every position, [batch, seq, vocab]. Returns
  /// false with a one-line `error`, also for a NaN/Inf logit.
  virtual bool forward(llvm::ArrayRef<int64_t> tokens, int64_t batch,
                       int64_t seq, std::vector<float> &logits,
                       std::string &error) = 0;
  /// Forgets the KV cache.
  virtual void reset() = 0;
  const ModelInfo &info() const { return modelInfo; }

protected:
  ModelInfo modelInfo;
};

/// The reference executor as a backend; `modelPath` names the model in
/// messages. `keepAlive` (may be null) is released after the executor: what
/// it runs (the module and its context).
std::unique_ptr<ModelBackend>
createExecutorBackend(std::unique_ptr<Executor> executor,
                      llvm::StringRef modelPath,
                      std::shared_ptr<void> keepAlive = nullptr);

/// A model.so compiled by sq-compile, loaded with dlopen (RTLD_LOCAL:
/// several models can live in one process) after checking that the file
/// holds what its ELF headers declare. `contextTokens` sizes its KV cache
/// (0: the model's maximum, else 2048). Null with `error` when it cannot
/// be loaded.
std::unique_ptr<ModelBackend> openCompiledModel(llvm::StringRef path,
                                                int64_t contextTokens,
                                                std::string &error);

/// False with `error` when `path` is a 64-bit ELF file shorter than its
/// headers declare (dlopen of a truncated library dies of SIGBUS); other
/// files are left to dlopen.
bool checkElfComplete(llvm::StringRef path, std::string &error);

/// False with `error` at the first NaN/Inf of `logits` ([positions, vocab]):
/// a perplexity or a generation from them would be garbage. The message
/// names `modelPath` and where the bad values likely come from (`compiled`:
/// a damaged weights file; otherwise NaN/Inf weights in the IR).
bool checkFiniteLogits(llvm::ArrayRef<float> logits, int64_t vocab,
                       llvm::StringRef modelPath, bool compiled,
                       std::string &error);

} // namespace sq

#endif // SQ_EXEC_MODELBACKEND_H
