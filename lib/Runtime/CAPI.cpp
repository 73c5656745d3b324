//===- CAPI.cpp - the C API of a compiled model ---------------------------===//
//
// Every function of sq_runtime.h, once, over the backend interface of
// Backend.h: the same checks and messages whichever backend (CPU or CUDA)
// the model.so was linked with. Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#include "Backend.h"

#include <dlfcn.h>

#include <string>

namespace sq {
namespace rt {

const char capiAnchor = 0;

namespace {

/// The checks of sq_context_create: SQ_OK, or the status and `message`.
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

/// The checks of sq_prefill/sq_forward/sq_decode (`fn` names the caller)
/// for `batch` x `n` tokens in context `c`.
sq_status checkRunArguments(const char *fn, const Context &c,
                            const int32_t *tokens, int64_t batch, int64_t n,
                            std::string &message) {
  std::string f = fn;
  if (batch <= 0 || batch > c.maxBatch || n <= 0) {
    message = f + ": batch " + std::to_string(batch) +
              " (context holds up to " + std::to_string(c.maxBatch) + ") and " +
              std::to_string(n) + " tokens per sequence: both must be positive";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  if (c.cached && batch != c.batch) {
    message = f + ": batch " + std::to_string(batch) +
              " differs from the cached sequences' " + std::to_string(c.batch) +
              " (reset the context first)";
    return SQ_ERR_INVALID_ARGUMENT;
  }
  if (c.cached + n > c.maxContext) {
    message = f + ": " + std::to_string(c.cached) + " cached + " +
              std::to_string(n) + " new tokens exceed the context of " +
              std::to_string(c.maxContext);
    return SQ_ERR_CONTEXT_FULL;
  }
  int64_t vocab = c.model.manifest.vocabSize;
  for (int64_t i = 0; i < batch * n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      message = f + ": token id " + std::to_string(tokens[i]) + " at index " +
                std::to_string(i) + " is outside the vocabulary [0, " +
                std::to_string(vocab) + ")";
      return SQ_ERR_INVALID_ARGUMENT;
    }
  return SQ_OK;
}

/// Runs the program over batch x n tokens; `every` selects all positions'
/// logits or only the last of each sequence.
sq_status run(sq_context *ctx, const int32_t *tokens, int64_t batch, int64_t n,
              float *logits, bool every, const char *fn, sq_error **err) {
  if (err)
    *err = nullptr;
  if (!ctx || !tokens)
    return fail(err, SQ_ERR_INVALID_ARGUMENT,
                std::string(fn) + ": context or tokens is NULL");
  Context &c = *reinterpret_cast<Context *>(ctx);
  std::string message;
  if (sq_status s = checkRunArguments(fn, c, tokens, batch, n, message))
    return fail(err, s, message);
  c.lastOnly = !every;
  if (!c.run(tokens, batch, n, message))
    return fail(err, SQ_ERR_INTERNAL, std::string(fn) + ": " + message);
  c.cached += n;
  c.batch = batch;
  if (logits && !c.readLogits(logits, every, message))
    return fail(err, SQ_ERR_INTERNAL, std::string(fn) + ": " + message);
  return SQ_OK;
}

} // namespace
} // namespace rt
} // namespace sq

using sq::rt::Context;
using sq::rt::fail;
using sq::rt::Model;

static const Model &model(const sq_model *m) {
  return *reinterpret_cast<const Model *>(m);
}

extern "C" {

SQ_API sq_status sq_error_code(const sq_error *err) {
  return err ? err->code : SQ_OK;
}

SQ_API const char *sq_error_message(const sq_error *err) {
  return err ? err->message.c_str() : "";
}

SQ_API void sq_error_free(sq_error *err) { delete err; }

SQ_API int32_t sq_runtime_abi_version(void) { return SQ_RUNTIME_ABI_VERSION; }

SQ_API sq_model *sq_model_open(const char *path, sq_error **err) {
  if (err)
    *err = nullptr;
  std::string self;
  if (path) {
    self = path;
  } else {
    Dl_info info;
    if (!dladdr(reinterpret_cast<void *>(&sq_model_open), &info) ||
        !info.dli_fname) {
      fail(err, SQ_ERR_IO, "cannot find the model library's own path");
      return nullptr;
    }
    self = info.dli_fname;
  }
  std::unique_ptr<Model> m = sq::rt::newModel();
  m->path = self;
  m->sidecar = self + ".weights";
  std::string error;
  if (!sq::rt::Manifest::parse(sq_model_manifest, m->manifest, error)) {
    fail(err, SQ_ERR_FORMAT, self + ": " + error);
    return nullptr;
  }
  if (m->load(err) != SQ_OK)
    return nullptr;
  m->description = m->manifest.description;
  if (!m->description.empty())
    m->description += "; ";
  m->description += m->describe();
  return reinterpret_cast<sq_model *>(m.release());
}

SQ_API void sq_model_free(sq_model *model) {
  delete reinterpret_cast<Model *>(model);
}

SQ_API void sq_model_get_config(const sq_model *m, sq_model_config *out) {
  if (!m || !out)
    return;
  const sq::rt::Manifest &c = model(m).manifest;
  out->vocab_size = c.vocabSize;
  out->hidden_size = c.hiddenSize;
  out->intermediate_size = c.intermediateSize;
  out->num_layers = c.numLayers;
  out->num_heads = c.numHeads;
  out->num_kv_heads = c.numKvHeads;
  out->head_dim = c.headDim;
  out->max_positions = c.maxPositions;
  out->bos_token_id = c.bosTokenId;
  out->eos_token_id = c.eosTokenId;
}

SQ_API int64_t sq_model_vocab_size(const sq_model *m) {
  return m ? model(m).manifest.vocabSize : 0;
}

SQ_API const char *sq_model_description(const sq_model *m) {
  return m ? model(m).description.c_str() : "";
}

SQ_API sq_context *sq_context_create(sq_model *model, int64_t maxContext,
                                     int64_t maxBatch, sq_error **err) {
  if (err)
    *err = nullptr;
  if (!model) {
    fail(err, SQ_ERR_INVALID_ARGUMENT, "sq_context_create: model is NULL");
    return nullptr;
  }
  Model *m = reinterpret_cast<Model *>(model);
  std::string message;
  if (sq_status s = sq::rt::checkContextArguments(m->manifest, maxContext,
                                                  maxBatch, message)) {
    fail(err, s, message);
    return nullptr;
  }
  std::unique_ptr<Context> c = m->createContext(maxContext, maxBatch, err);
  return reinterpret_cast<sq_context *>(c.release());
}

SQ_API void sq_context_free(sq_context *ctx) {
  delete reinterpret_cast<Context *>(ctx);
}

SQ_API void sq_context_reset(sq_context *ctx) {
  if (!ctx)
    return;
  Context *c = reinterpret_cast<Context *>(ctx);
  c->cached = 0;
  c->batch = 0;
}

SQ_API int64_t sq_context_length(const sq_context *ctx) {
  return ctx ? reinterpret_cast<const Context *>(ctx)->cached : 0;
}

SQ_API sq_status sq_prefill(sq_context *ctx, const int32_t *tokens,
                            int64_t batch, int64_t n, float *logits,
                            sq_error **err) {
  return sq::rt::run(ctx, tokens, batch, n, logits, false, "sq_prefill", err);
}

SQ_API sq_status sq_forward(sq_context *ctx, const int32_t *tokens,
                            int64_t batch, int64_t n, float *logits,
                            sq_error **err) {
  return sq::rt::run(ctx, tokens, batch, n, logits, true, "sq_forward", err);
}

SQ_API sq_status sq_decode(sq_context *ctx, const int32_t *tokens,
                           float *logits, sq_error **err) {
  Context *c = reinterpret_cast<Context *>(ctx);
  int64_t batch = c && c->batch ? c->batch : 1;
  return sq::rt::run(ctx, tokens, batch, 1, logits, false, "sq_decode", err);
}

} // extern "C"
