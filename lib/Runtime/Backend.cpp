//===- Backend.cpp - the parts of Backend.h every backend shares ----------===//
//
// The error object, mapping the weights sidecar, and the bookkeeping of a
// run of the program (ProgramRun). Compiled with CAPI.cpp into every
// runtime archive. Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#include "Backend.h"

namespace sq {
namespace rt {

sq_status fail(sq_error **err, sq_status code, std::string message) {
  if (err)
    *err = new sq_error{code, std::move(message)};
  return code;
}

Model::~Model() = default;
Context::~Context() = default;

sq_status Model::mapWeights(sq_error **err) {
  std::string error;
  bool io = false;
  if (!file.open(sidecar, manifest, sq_model_manifest, error, io))
    return fail(err, io ? SQ_ERR_IO : SQ_ERR_FORMAT, error);
  weights.resize(manifest.weights.size());
  for (size_t i = 0; i < weights.size(); ++i)
    weights[i] = file.data(int(i));
  return SQ_OK;
}

void ProgramRun::begin(int64_t batch, int64_t n, int64_t cached) {
  this->batch = batch;
  seq = n;
  tokens = batch * n;
  this->cached = cached;
  logits = -1;
  narrowed = false;
  failed = false;
  error.clear();
}

void ProgramRun::fillPositions(std::vector<int64_t> &out) const {
  out.resize(tokens);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      out[b * seq + s] = cached + s;
}

void ProgramRun::setError(std::string message) {
  if (!failed) {
    failed = true;
    error = std::move(message);
  }
}

bool ProgramRun::checkRotation(int64_t n, int64_t block) {
  if (block > 0 && n % block == 0)
    return true;
  setError("sq_rotate: a rotation of " + std::to_string(block) +
           " does not divide rows of " + std::to_string(n));
  return false;
}

bool ProgramRun::finish(std::string &message) const {
  if (failed) {
    message = error;
    return false;
  }
  if (logits < 0) {
    message = "the program produced no logits";
    return false;
  }
  return true;
}

} // namespace rt
} // namespace sq
