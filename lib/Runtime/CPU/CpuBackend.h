//===- CpuBackend.h - the CPU backend's model and context -------*- C++ -*-===//
//
// Internal to lib/Runtime/CPU: the CPU implementation of Backend.h (the
// model with its weights prepared for the kernels, the context with its KV
// caches; CpuBackend.cpp) and `Exec`, what the generated program's `ctx`
// points to during one call (read by the sqrt_* calls of ProgramCalls.cpp).
// Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CPU_CPUBACKEND_H
#define SQ_LIB_RUNTIME_CPU_CPUBACKEND_H

#include "Backend.h"
#include "Ops.h"
#include "QGemm.h"

#include <memory>
#include <string>
#include <vector>

namespace sq {
namespace rt {

/// A quantized linear, prepared at load time.
struct PreparedQLinear {
  QLinearDesc desc;
  bool integer = false;
  PackedWeight packed;      // integer path
  std::vector<float> dense; // float path: dequantized [N, K]
  const float *bias = nullptr;
};

class CpuModel : public Model {
public:
  sq_status load(sq_error **err) override;
  std::string describe() const override;
  std::unique_ptr<Context> createContext(int64_t maxContext, int64_t maxBatch,
                                         sq_error **err) override;

  const float *f32(int slot) const {
    return slot >= 0 ? reinterpret_cast<const float *>(weights[slot]) : nullptr;
  }

  std::vector<PreparedQLinear> qlinears;
  KernelPath kernels = KernelPath::Scalar;
  std::string kernelNote; // why a faster kernel path is not used, if so

private:
  sq_status prepareQLinears(sq_error **err);
};

class CpuContext;

/// SQ_PROFILE=1: where a context's runs spend their time, per kind of
/// program call, decode runs (one token per sequence) apart from prefill
/// runs; printed to stderr when the context is freed. "other" is the rest
/// of the run (the calls' own overhead).
struct Profile {
  enum Op {
    Embedding,
    RMSNorm,
    Linear16,     // float linears (the 16-bit lm_head)
    Hadamard,     // online Hadamard fused in front of a quantized linear (R4)
    ActQuant,     // activation quantization
    Gemm,         // integer GEMM/GEMV
    QLinearFloat, // quantized linears on the float path
    Rope,
    KVAppend,  // quantizing new keys/values into the cache
    Attention, // attention over the cache
    Rotate,
    OnlineHadamard, // standalone sq.hadamard (R3)
    FakeQuant,
    LastRows,    // selecting the rows the logits need
    Elementwise, // add, mul, silu
    NumOps
  };
  static const char *name(Op op);
  double seconds[2][NumOps] = {};
  double total[2] = {};
  int64_t runs[2] = {}, tokens[2] = {};
  void print() const;
};

/// What the generated program's `ctx` points to during one call.
struct Exec : ProgramRun {
  CpuModel *model = nullptr;
  CpuContext *context = nullptr;
  const int32_t *ids = nullptr;
  std::vector<int64_t> positions;
  std::vector<std::vector<float>> slots;
  std::vector<float> scratch;
  QuantizedActs acts;
  Profile *profile = nullptr; // SQ_PROFILE set
  int phase = 0;              // 0: prefill run, 1: decode run

  bool isWeight(int slot) const {
    return slot >= 0 && slot < int(model->weights.size());
  }
  const float *in(int slot) {
    if (isWeight(slot))
      return model->f32(slot);
    return slots[slot].data();
  }
  /// `acts` holds the quantized rows of this slot (tokens x actsK under
  /// actsQuant), or actsSlot is -1: q/k/v_proj (and gate/up_proj) quantize
  /// the same input once. Any write to the slot forgets it.
  int actsSlot = -1;
  int64_t actsK = 0, actsTokens = 0;
  QuantDesc actsQuant;

  float *out(int slot, int64_t numel) {
    if (slot == actsSlot)
      actsSlot = -1;
    std::vector<float> &s = slots[slot];
    if (int64_t(s.size()) < numel)
      s.resize(numel);
    return s.data();
  }
};

class CpuContext : public Context {
public:
  CpuContext(CpuModel &model, int64_t maxContext, int64_t maxBatch)
      : Context(model, maxContext, maxBatch) {}
  bool run(const int32_t *tokens, int64_t batch, int64_t n,
           std::string &error) override;
  bool readLogits(float *logits, bool every, std::string &error) override;

  ~CpuContext() override;

  std::vector<std::unique_ptr<KVStore[]>> caches; // [attention] -> {K, V}
  Exec exec;
  std::unique_ptr<Profile> profile;
};

} // namespace rt
} // namespace sq

#endif // SQ_LIB_RUNTIME_CPU_CPUBACKEND_H
