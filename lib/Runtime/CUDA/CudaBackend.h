//===- CudaBackend.h - the CUDA backend's model -----------------*- C++ -*-===//
//
// Internal to lib/Runtime/CUDA: the CUDA implementation of Backend.h (the
// model with its device, kernels and device copies of the weights, the
// context with its device KV caches; CudaBackend.cpp) and `Exec`, what the
// generated program's `ctx` points to during one call (read by the sqcu_*
// calls of ProgramCalls.cpp, which launch the kernels of KernelABI.h).
// Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CUDA_CUDABACKEND_H
#define SQ_LIB_RUNTIME_CUDA_CUDABACKEND_H

#include "Backend.h"
#include "CudaDriver.h"
#include "KernelABI.h"
#include "Repack.h"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

// Defined by the code the NVPTX lowering generates.
extern "C" const char sq_model_ptx[];

namespace sq {
namespace cuda {

using rt::AttentionDesc;
using rt::FloatStorage;
using rt::Manifest;
using rt::QLinearDesc;
using rt::QuantDesc;
using rt::WeightDesc;

using rt::fail;

/// The kernels of KernelABI.h.
enum Kernel {
  kAdd,
  kMul,
  kSilu,
  kEmbedding,
  kRmsNorm,
  kRope,
  kHadamard,
  kFakeQuant,
  kQuantize,
  kQGemmS8,
  kQGemmS4,
  kLinear16,
  kKvAppend,
  kAttention,
  kNumKernels
};
extern const char *const kKernelNames[kNumKernels];

/// Kernels' static shared memory limit without opting in.
constexpr uint64_t kDefaultSharedBytes = 48 * 1024;

/// A device allocation that grows on demand.
struct Buffer {
  CUdeviceptr ptr = 0;
  uint64_t bytes = 0;
};

/// A quantized linear, prepared at load time.
struct PreparedQLinear {
  QLinearDesc desc;
  QGemmPlan plan;
  CUdeviceptr w = 0, wsums = 0; // integer path: the repacked weight
  CUdeviceptr wscales = 0;      // the scales slot [n, groups]
  CUdeviceptr dense = 0;        // float path: dequantized fp32 [n, k]
  CUdeviceptr bias = 0;
};

/// The device factor of an online Hadamard of size n.
struct HadamardFactor {
  int64_t m = 1;
  CUdeviceptr q = 0; // 0 when m == 1
};

inline int storageCode(FloatStorage s) {
  return s == FloatStorage::F16 ? 1 : s == FloatStorage::BF16 ? 2 : 0;
}

inline uint64_t ceilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

class CudaModel : public rt::Model {
public:
  ~CudaModel() override;
  sq_status load(sq_error **err) override;
  std::string describe() const override;
  std::unique_ptr<rt::Context>
  createContext(int64_t maxContext, int64_t maxBatch, sq_error **err) override;

  const Driver *drv = nullptr;
  Device device;
  bool haveDevice = false;
  CUmodule module = nullptr;
  CUfunction fn[kNumKernels] = {};
  std::vector<CUdeviceptr> dweights; // device, by slot (0: packed)
  std::vector<PreparedQLinear> qlinears;
  std::vector<CUdeviceptr> allocations; // freed with the model

  // Filled on first use by any context (under `mutex`).
  std::mutex mutex;
  std::map<std::pair<int64_t, uint64_t>, HadamardFactor> hadamards;
  std::map<int, CUdeviceptr> transposed; // rotation slot -> R^T
  uint64_t sharedSet[kNumKernels] = {};  // dynamic smem limit raised to

  bool makeCurrent(std::string &error) const {
    return drv->check(drv->cuCtxSetCurrent(device.context), "cuCtxSetCurrent",
                      error);
  }
  /// A device copy of `bytes` host bytes, kept until the model is freed.
  bool upload(const void *data, uint64_t bytes, CUdeviceptr &out,
              std::string &error, CUresult *result = nullptr);
};

class CudaContext;

/// What the generated program's `ctx` points to during one call.
struct Exec : rt::ProgramRun {
  CudaModel *model = nullptr;
  CudaContext *context = nullptr;
  Buffer ids, positions;
  std::vector<Buffer> slots;
  Buffer codes, ascales, azeros, scratch, scratch2; // qlinear temporaries

  const Driver &drv() const { return *model->drv; }
  /// Grows `b` to at least `bytes` (its contents are not kept).
  bool ensure(Buffer &b, uint64_t bytes, const char *what) {
    if (b.bytes >= bytes && b.ptr)
      return true;
    std::string e;
    if (b.ptr) {
      // Kernels queued before may still read the old buffer.
      drv().cuCtxSynchronize();
      drv().cuMemFree(b.ptr);
      b = Buffer();
    }
    if (!drv().check(drv().cuMemAlloc(&b.ptr, std::max<uint64_t>(bytes, 4)),
                     "cuMemAlloc", e)) {
      b = Buffer();
      setError(std::string(what) + ": " + e);
      return false;
    }
    b.bytes = bytes;
    return true;
  }
  void release(Buffer &b) {
    if (b.ptr)
      drv().cuMemFree(b.ptr);
    b = Buffer();
  }
  bool isWeight(int slot) const {
    return slot >= 0 && slot < int(model->dweights.size());
  }
  /// The device address of a slot's value (0 with an error if none).
  CUdeviceptr in(int slot) {
    if (isWeight(slot)) {
      if (!model->dweights[slot])
        setError("slot " + std::to_string(slot) +
                 " is a packed weight, not a float tensor");
      return model->dweights[slot];
    }
    if (slot < 0 || slot >= int(slots.size()) || !slots[slot].ptr) {
      setError("slot " + std::to_string(slot) + " is read before written");
      return 0;
    }
    return slots[slot].ptr;
  }
  CUdeviceptr out(int slot, int64_t numel) {
    if (slot < 0 || slot >= int(slots.size()) || isWeight(slot)) {
      setError("slot " + std::to_string(slot) + " is not a buffer slot");
      return 0;
    }
    if (!ensure(slots[slot], uint64_t(numel) * sizeof(float), "slot"))
      return 0;
    return slots[slot].ptr;
  }

  bool launch(Kernel k, uint64_t gridX, uint64_t gridY, unsigned block,
              uint64_t smem, void **params);
};

struct KVCache {
  QuantDesc quant;
  int64_t features = 0, group = 0;
  Buffer codes, scales, zeros, fp;
};

class CudaContext : public rt::Context {
public:
  CudaContext(CudaModel &model, int64_t maxContext, int64_t maxBatch)
      : rt::Context(model, maxContext, maxBatch) {}
  ~CudaContext() override;
  bool run(const int32_t *tokens, int64_t batch, int64_t n,
           std::string &error) override;
  bool readLogits(float *logits, bool every, std::string &error) override;

  CudaModel &cudaModel() const { return static_cast<CudaModel &>(model); }

  std::vector<KVCache> caches; // [attention * 2 + {0: K, 1: V}]
  Exec exec;
};

using Args = KernelArgs;

/// The device factor Q for a Hadamard of size n (built once per model).
bool hadamardFor(Exec &x, int64_t n, uint64_t seed, HadamardFactor &f);

} // namespace cuda
} // namespace sq

#endif // SQ_LIB_RUNTIME_CUDA_CUDABACKEND_H
