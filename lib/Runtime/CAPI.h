//===- CAPI.h - what both runtimes' C APIs share -----------------*- C++
//-*-===//
//
// Internal to lib/Runtime: the error object of sq_runtime.h and the
// argument checks of its functions, compiled into the CPU and the CUDA
// runtime alike so that both answer the same input with the same message.
// Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CAPI_H
#define SQ_LIB_RUNTIME_CAPI_H

#include "sq/Runtime/ModelFormat.h"
#include "sq/Runtime/sq_runtime.h"

#include <string>

struct sq_error {
  sq_status code;
  std::string message;
};

namespace sq {
namespace rt {

/// Stores a new error in *err (when err is not null); returns `code`.
sq_status fail(sq_error **err, sq_status code, std::string message);

/// sq_model_get_config from the manifest.
void fillConfig(const Manifest &m, sq_model_config *out);

/// The checks of sq_context_create: SQ_OK, or the status and `message`.
sq_status checkContextArguments(const Manifest &m, int64_t maxContext,
                                int64_t maxBatch, std::string &message);

/// The checks of sq_prefill/sq_forward/sq_decode (`fn` names the caller)
/// for a context of `maxBatch` x `maxContext` tokens holding `cached`
/// tokens of `cachedBatch` sequences.
sq_status checkRunArguments(const char *fn, const Manifest &m,
                            const int32_t *tokens, int64_t batch, int64_t n,
                            int64_t maxBatch, int64_t maxContext,
                            int64_t cached, int64_t cachedBatch,
                            std::string &message);

} // namespace rt
} // namespace sq

#endif // SQ_LIB_RUNTIME_CAPI_H
