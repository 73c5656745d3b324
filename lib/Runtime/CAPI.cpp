//===- CAPI.cpp - what both runtimes' C APIs share ------------------------===//

#include "CAPI.h"

namespace sq {
namespace rt {

sq_status fail(sq_error **err, sq_status code, std::string message) {
  if (err)
    *err = new sq_error{code, std::move(message)};
  return code;
}

void fillConfig(const Manifest &m, sq_model_config *out) {
  out->vocab_size = m.vocabSize;
  out->hidden_size = m.hiddenSize;
  out->intermediate_size = m.intermediateSize;
  out->num_layers = m.numLayers;
  out->num_heads = m.numHeads;
  out->num_kv_heads = m.numKvHeads;
  out->head_dim = m.headDim;
  out->max_positions = m.maxPositions;
  out->bos_token_id = m.bosTokenId;
  out->eos_token_id = m.eosTokenId;
}

sq_status checkContextArguments(const Manifest &m, int64_t maxContext,
                                int64_t maxBatch, std::string &message) {
  if (maxContext <= 0 || maxBatch <= 0) {
    message = "sq_context_create: max_context and max_batch must be positive "
              "(got " +
              std::to_string(maxContext) + ", " + std::to_string(maxBatch) +
              ")";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  if (m.maxPositions && maxContext > m.maxPositions) {
    message = "sq_context_create: max_context " + std::to_string(maxContext) +
              " exceeds the model's context of " +
              std::to_string(m.maxPositions) + " tokens";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  return SQ_OK;
}

sq_status checkRunArguments(const char *fn, const Manifest &m,
                            const int32_t *tokens, int64_t batch, int64_t n,
                            int64_t maxBatch, int64_t maxContext,
                            int64_t cached, int64_t cachedBatch,
                            std::string &message) {
  std::string f = fn;
  if (batch <= 0 || batch > maxBatch || n <= 0) {
    message = f + ": batch " + std::to_string(batch) +
              " (context holds up to " + std::to_string(maxBatch) + ") and " +
              std::to_string(n) + " tokens per sequence: both must be positive";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  if (cached && batch != cachedBatch) {
    message = f + ": batch " + std::to_string(batch) +
              " differs from the cached sequences' " +
              std::to_string(cachedBatch) + " (reset the context first)";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  if (cached + n > maxContext) {
    message = f + ": " + std::to_string(cached) + " cached + " +
              std::to_string(n) + " new tokens exceed the context of " +
              std::to_string(maxContext);
    return SQ_ERR_CONTEXT_FULL;
  }
  for (int64_t i = 0; i < batch * n; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.vocabSize) {
      message = f + ": token id " + std::to_string(tokens[i]) + " at index " +
                std::to_string(i) + " is outside the vocabulary [0, " +
                std::to_string(m.vocabSize) + ")";
      return SQ_ERR_INVALID_ARGUMENT;
    }
  return SQ_OK;
}

} // namespace rt
} // namespace sq

extern "C" {
SQ_API sq_status sq_error_code(const sq_error *err) {
  return err ? err->code : SQ_OK;
}
SQ_API const char *sq_error_message(const sq_error *err) {
  return err ? err->message.c_str() : "";
}
SQ_API void sq_error_free(sq_error *err) { delete err; }
SQ_API int32_t sq_runtime_abi_version(void) { return SQ_RUNTIME_ABI_VERSION; }
}
