/*===- sq_runtime.h - the C ABI of a model compiled by sq-compile -*- C -*-===//
 *
 * A model compiled with `sq-compile model.onnx -o model.so` is a shared
 * library that exports these functions (and nothing else of its own). Its
 * weights live in the sidecar file `model.so.weights` next to it, mapped
 * read-only with mmap when the model is opened.
 *
 *   sq_error *err = NULL;
 *   sq_model *m = sq_model_open("model.so", &err);
 *   if (!m) { fprintf(stderr, "%s\n", sq_error_message(err)); ... }
 *   sq_context *c = sq_context_create(m, 2048, 1, &err);
 *   float *logits = malloc(sizeof(float) * sq_model_vocab_size(m));
 *   sq_prefill(c, prompt, 1, n, logits, &err);   // logits of the last token
 *   sq_decode(c, &next, logits, &err);
 *   sq_context_free(c); sq_model_free(m);
 *
 * Every function that can fail returns a status (or NULL) and, when `err`
 * is not NULL, stores an error the caller frees with sq_error_free. No
 * function aborts the process. A model and its contexts may be used from
 * one thread at a time per context; different contexts of one model may run
 * concurrently. Kernel threads: SQ_NUM_THREADS (default: the core count).
 *
 *===----------------------------------------------------------------------===*/

#ifndef SQ_RUNTIME_SQ_RUNTIME_H
#define SQ_RUNTIME_SQ_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SQ_API __attribute__((visibility("default")))
#else
#define SQ_API
#endif

/* Bumped when a function's meaning changes. */
#define SQ_RUNTIME_ABI_VERSION 1

typedef enum sq_status {
  SQ_OK = 0,
  SQ_ERR_INVALID_ARGUMENT = 1, /* a bad pointer, size or token id */
  SQ_ERR_IO = 2,               /* a file is missing or unreadable */
  SQ_ERR_FORMAT = 3,           /* a file is not what it should be */
  SQ_ERR_CONTEXT_FULL = 4,     /* more tokens than the context holds */
  SQ_ERR_OUT_OF_MEMORY = 5,
  SQ_ERR_NO_DEVICE = 6,   /* a GPU model on a machine without one */
  SQ_ERR_UNSUPPORTED = 7, /* e.g. the CPU lacks a required feature */
  SQ_ERR_INTERNAL = 8
} sq_status;

typedef struct sq_error sq_error;
typedef struct sq_model sq_model;
typedef struct sq_context sq_context;

SQ_API sq_status sq_error_code(const sq_error *err);
/* One line, naming the file or argument and what is wrong. */
SQ_API const char *sq_error_message(const sq_error *err);
SQ_API void sq_error_free(sq_error *err);

/* The ABI version this library was built with (SQ_RUNTIME_ABI_VERSION). */
SQ_API int32_t sq_runtime_abi_version(void);

/* Opens the model compiled into the library at `path` (this library's own
 * file, as passed to dlopen; NULL means "find it with dladdr") and maps its
 * weights from `path` + ".weights". */
SQ_API sq_model *sq_model_open(const char *path, sq_error **err);
SQ_API void sq_model_free(sq_model *model);

typedef struct sq_model_config {
  int64_t vocab_size;
  int64_t hidden_size;
  int64_t intermediate_size;
  int64_t num_layers;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  int64_t max_positions; /* 0 if the model does not record one */
  int32_t bos_token_id;  /* -1 if unknown */
  int32_t eos_token_id;  /* -1 if unknown */
} sq_model_config;

SQ_API void sq_model_get_config(const sq_model *model, sq_model_config *out);
SQ_API int64_t sq_model_vocab_size(const sq_model *model);
/* A description of the compilation: quantization spec, rotation mode, the
 * CPU kernel path chosen at load time (e.g. "avx512-vnni"), source file. */
SQ_API const char *sq_model_description(const sq_model *model);

/* A context owns the KV cache for up to `max_batch` sequences of up to
 * `max_context` tokens each. */
SQ_API sq_context *sq_context_create(sq_model *model, int64_t max_context,
                                     int64_t max_batch, sq_error **err);
SQ_API void sq_context_free(sq_context *ctx);
/* Forgets every cached token. */
SQ_API void sq_context_reset(sq_context *ctx);
/* Tokens cached per sequence. */
SQ_API int64_t sq_context_length(const sq_context *ctx);

/* Runs `batch` x `n` tokens (row-major) after the cached ones. `logits`,
 * if not NULL, receives batch x vocab floats: each sequence's last token. */
SQ_API sq_status sq_prefill(sq_context *ctx, const int32_t *tokens,
                            int64_t batch, int64_t n, float *logits,
                            sq_error **err);
/* Like sq_prefill, but `logits` (if not NULL) receives batch x n x vocab
 * floats: every position (what perplexity needs). */
SQ_API sq_status sq_forward(sq_context *ctx, const int32_t *tokens,
                            int64_t batch, int64_t n, float *logits,
                            sq_error **err);
/* One token per sequence (`batch` of the context's last call); `logits`
 * receives batch x vocab floats. */
SQ_API sq_status sq_decode(sq_context *ctx, const int32_t *tokens,
                           float *logits, sq_error **err);

#ifdef __cplusplus
}
#endif

#endif /* SQ_RUNTIME_SQ_RUNTIME_H */
