//===- Backend.h - what a runtime backend implements ------------*- C++ -*-===//
//
// Internal to lib/Runtime: the interface between the C API of sq_runtime.h,
// written once in CAPI.cpp, and the backends that run a model's program (the
// CPU runtime in CPU/, the CUDA runtime in CUDA/). Each runtime archive
// (libSQRuntimeCPU.a, libSQRuntimeCUDA.a) holds CAPI.cpp's object and one
// backend, which defines newModel(): the backend of a model.so is chosen at
// link time, by the archive sq-compile links.
//
// CAPI.cpp does everything both backends do alike: the error object, the
// library's own path, the manifest, the argument checks, the context's
// cached-token bookkeeping and the messages. A backend loads what it needs
// (weights, kernels, a device), allocates a context's KV cache and runs the
// program over a batch of tokens. Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_BACKEND_H
#define SQ_LIB_RUNTIME_BACKEND_H

#include "sq/Runtime/ModelFormat.h"
#include "sq/Runtime/sq_runtime.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct sq_error {
  sq_status code;
  std::string message;
};

// Defined by the code the lowerings generate (lib/Conversion/Program.cpp).
extern "C" const char sq_model_manifest[];
extern "C" void sq_model_program(void *ctx);

namespace sq {
namespace rt {

/// Stores a new error in *err (when err is not null); returns `code`.
sq_status fail(sq_error **err, sq_status code, std::string message);

class Context;

/// An open model (what an sq_model * points to). sq_model_open creates it
/// with newModel(), fills in `path`, `sidecar` and the parsed `manifest`,
/// then calls load().
class Model {
public:
  Model() = default;
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;
  virtual ~Model();

  /// Everything the backend needs before a context can run: mapping the
  /// weights (mapWeights), preparing them, loading kernels. Returns SQ_OK,
  /// or the status with the error stored in *err.
  virtual sq_status load(sq_error **err) = 0;
  /// The backend's part of sq_model_description (after the manifest's
  /// description): the kernel path or device, how the linears run.
  virtual std::string describe() const = 0;
  /// A context of `maxBatch` x `maxContext` tokens (both checked against
  /// the manifest already), or null with the error stored in *err.
  virtual std::unique_ptr<Context>
  createContext(int64_t maxContext, int64_t maxBatch, sq_error **err) = 0;

  /// Maps the sidecar and checks it against the manifest compiled into the
  /// library; fills `weights`.
  sq_status mapWeights(sq_error **err);

  Manifest manifest;
  std::string path, sidecar, description;
  WeightsFile file;
  std::vector<const uint8_t *> weights; // mapped, by slot (weights only)
};

/// A context (what an sq_context * points to): the KV cache of up to
/// `maxBatch` sequences of up to `maxContext` tokens. CAPI.cpp keeps
/// `cached` and `batch`; the backend reads them.
class Context {
public:
  Context(Model &model, int64_t maxContext, int64_t maxBatch)
      : model(model), maxContext(maxContext), maxBatch(maxBatch) {}
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;
  virtual ~Context();

  /// Runs the program over `batch` x `n` tokens (row-major, checked) at
  /// positions cached.. cached + n - 1 of each sequence, appending to the
  /// KV cache. Returns false with a one-line `error` (without the name of
  /// the C API function, which the caller adds).
  virtual bool run(const int32_t *tokens, int64_t batch, int64_t n,
                   std::string &error) = 0;
  /// Copies the logits of the last run: every position's (`every`, batch x
  /// n x vocab floats) or each sequence's last (batch x vocab).
  virtual bool readLogits(float *logits, bool every, std::string &error) = 0;

  Model &model;
  const int64_t maxContext, maxBatch;
  int64_t cached = 0, batch = 0; // tokens per sequence, sequences
  /// Set by the C API before run(): only each sequence's last logits are
  /// wanted (sq_prefill, sq_decode), so the program may compute the head on
  /// the last rows only.
  bool lastOnly = false;
};

/// What the generated program's `ctx` points to during one run, as far as
/// every backend has it: each backend's `Exec` (the slots, the buffers)
/// derives from it. A program call that fails records the first error and
/// the calls after it do nothing.
struct ProgramRun {
  int64_t batch = 0, seq = 0, tokens = 0, cached = 0;
  int logits = -1;       // the slot of the logits (set by the program)
  bool lastOnly = false; // the caller wants each sequence's last logits only
  bool narrowed = false; // the program kept only those rows (sqrt_last_rows)
  bool failed = false;
  std::string error;

  /// Starts a run of `batch` x `n` tokens after `cached` per sequence.
  void begin(int64_t batch, int64_t n, int64_t cached);
  /// The position of every token of the run (row-major, batch x n).
  void fillPositions(std::vector<int64_t> &out) const;
  void setError(std::string message);
  /// Whether a rotation of `block` x `block` applies to rows of `n` values
  /// (sq.rotate); if not, the run fails with a message saying so.
  bool checkRotation(int64_t n, int64_t block);
  /// The tokens the program has to run (0 once it failed).
  int64_t tokensToRun() const { return failed ? 0 : tokens; }
  /// After the program returned: false with `message` when it failed or
  /// produced no logits.
  bool finish(std::string &message) const;
};

/// The program calls (sqrt_*, sqcu_*): C functions, hidden (a model.so
/// exports the C API only).
#define SQ_PROGRAM_CALL extern "C" __attribute__((visibility("hidden")))

/// Defined by the backend that is linked in: a new model of that backend.
std::unique_ptr<Model> newModel();

/// The linker takes from a runtime archive only the members that something
/// it already has refers to, and a model's object refers only to its
/// backend's program calls (sqrt_* or sqcu_*). So each backend's file of
/// program calls says SQ_RUNTIME_USES_CAPI once: it refers to CAPI.cpp's
/// object, which brings in the C API and, through newModel(), the backend.
extern const char capiAnchor;
#define SQ_RUNTIME_USES_CAPI                                                   \
  namespace sq {                                                               \
  namespace rt {                                                               \
  [[maybe_unused]] __attribute__((used)) static const char *const usesCapi =   \
      &capiAnchor;                                                             \
  }                                                                            \
  }

} // namespace rt
} // namespace sq

#endif // SQ_LIB_RUNTIME_BACKEND_H
