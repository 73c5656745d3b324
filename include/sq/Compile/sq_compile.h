/*===- sq_compile.h - the compiler as a C function (libsq_compile.so) -----===*
 *
 * sq::compileModel (Compile.h) for callers that are not C++: Python's
 * ctypes (python/sq: sq.compile) or any FFI. One call compiles a model the
 * way `sq-compile` does, with its flags as arguments:
 *
 *   char err[1024];
 *   if (sq_compile("model.onnx", "model.so", "w4a4kv4", "hadamard", 0,
 *                  NULL, NULL, 0, 0, "so", err, sizeof err) != 0)
 *     fprintf(stderr, "%s\n", err);
 *
 * The runtime archives are looked up next to the library (build/lib) or in
 * $SQ_RUNTIME_DIR. NULL or "" leaves an argument at sq-compile's default.
 *
 *===----------------------------------------------------------------------===*/

#ifndef SQ_COMPILE_SQ_COMPILE_H
#define SQ_COMPILE_SQ_COMPILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Compiles `input` (model.onnx, a Hugging Face folder, .mlir or .mlirbc)
 * to `output`. quantize: the --quantize spec or "none" (default w4a4kv4);
 * rotate: learned, hadamard, random, file:PATH or none (default learned);
 * calib_data, tokenizer, calib_steps, calib_seqlen: --rotate=learned's
 * calibration (--calib-data, --tokenizer, --calib-steps, --calib-seqlen; 0
 * steps or 0 tokens per window: the default); emit: so, obj, llvm, mlir, sq
 * (default so). Returns 0, or 1 with a one-line message in `error`
 * (truncated to error_size, NUL-terminated). */
__attribute__((visibility("default"))) int
sq_compile(const char *input, const char *output, const char *quantize,
           const char *rotate, uint64_t seed, const char *calib_data,
           const char *tokenizer, int64_t calib_steps, int64_t calib_seqlen,
           const char *emit, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* SQ_COMPILE_SQ_COMPILE_H */
