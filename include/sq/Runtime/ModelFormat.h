//===- ModelFormat.h - what a compiled model carries -------------*- C++
//-*-===//
//
// The contract between the CPU lowering (lib/Conversion/SQToCPU), which
// writes it, and the runtime (lib/Runtime/CPU), which reads it:
//
//  * the manifest: a short text compiled into model.so as the string
//    `sq_model_manifest`. It lists the model's configuration, the weight
//    slots (name, kind, shape), and the per-op data the runtime prepares at
//    load time (quantized linears, attention with its KV-cache quantizers);
//  * the sidecar `model.so.weights`: a header with the manifest's hash and
//    one (offset, bytes) pair per weight, then the weights, each aligned to
//    64 bytes. Float weights are fp32, except linear weights and embedding
//    tables, which keep a 16-bit type (f16/bf16) when the model has one;
//    packed weights are the !sq.packed bytes of lib/Numerics/Pack.h, except
//    the weights of the quantized linears the CPU runtime runs on its
//    integer kernels (integerPathLayout), which the CPU lowering writes in
//    the kernels' own layout (sq/Runtime/KernelLayout.h; their manifest
//    entry names the kernel block size): the runtime maps them as they are,
//    with no copy and no repacking at load.
//
// Version 2 (both the manifest and the sidecar): kernel-layout weights.
// Files of another version are refused with a one-line error.
//
// Plain C++ (no MLIR/LLVM): the runtime links it.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_RUNTIME_MODELFORMAT_H
#define SQ_RUNTIME_MODELFORMAT_H

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace rt {

constexpr int kManifestVersion = 2;
constexpr uint32_t kSidecarVersion = 2;
constexpr uint64_t kSidecarAlign = 64;
/// "SQWEIGHT"
constexpr char kSidecarMagic[8] = {'S', 'Q', 'W', 'E', 'I', 'G', 'H', 'T'};

/// A quantizer: bits == 0 means none.
struct QuantDesc {
  unsigned bits = 0;
  bool symmetric = true;
  int64_t group = 0; // 0: the whole row (per token / per channel)
  double clip = 1.0;
};

/// How a float weight is stored in the sidecar.
enum class FloatStorage { F32 = 0, F16 = 1, BF16 = 2 };

struct WeightDesc {
  int slot = 0;
  std::string name;
  unsigned packedBits = 0; // 0: float; 4 or 8: !sq.packed bytes
  /// Float weights: fp32, or the model's own f16/bf16 for linear weights
  /// and embedding tables (the kernels widen them on the fly).
  FloatStorage storage = FloatStorage::F32;
  int64_t rows = 1, cols = 0;
  /// Packed weights: 0 for the !sq.packed rows; otherwise the weight is in
  /// the CPU kernels' layout (KernelLayout.h) with kernel blocks of this
  /// many K values (a divisor of cols).
  int64_t kernelBlock = 0;
  uint64_t bytes() const;
};

struct QLinearDesc {
  int weight = -1, scales = -1, zeros = -1, bias = -1; // slots
  int64_t n = 0, k = 0;
  QuantDesc weightQuant, actQuant;
};

struct AttentionDesc {
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double scale = 0;
  bool causal = true;
  int64_t window = 0; // sliding window (keys p - window < j <= p); 0: none
  QuantDesc keyQuant, valueQuant; // the KV cache's quantizers
};

struct Manifest {
  // Configuration (0 / -1 when unknown).
  int64_t vocabSize = 0, hiddenSize = 0, intermediateSize = 0, numLayers = 0,
          numHeads = 0, numKvHeads = 0, headDim = 0, maxPositions = 0;
  int32_t bosTokenId = -1, eosTokenId = -1;
  std::string description;
  int numSlots = 0;
  std::vector<WeightDesc> weights;
  std::vector<QLinearDesc> qlinears;
  std::vector<AttentionDesc> attentions;

  std::string serialize() const;
  /// Parses serialize()'s text; false with a message naming the line.
  static bool parse(const std::string &text, Manifest &out, std::string &error);
};

/// 64-bit FNV-1a: the manifest's hash, stored in the sidecar.
uint64_t fnv1a(const void *data, size_t size);

/// The sidecar's layout for `m`: header bytes, each weight's offset, the
/// total file size.
void planSidecar(const Manifest &m, uint64_t &headerBytes,
                 std::vector<uint64_t> &offsets, uint64_t &totalBytes);

/// The header: magic, version, weight count, manifest hash, header bytes,
/// then (offset, bytes) per weight; all little-endian u32/u64.
std::string sidecarHeader(const Manifest &m, uint64_t manifestHash);

/// A weights sidecar mapped read-only (mmap) and checked against the
/// manifest (magic, version, manifest hash, every entry, the file size)
/// before anything reads it.
class WeightsFile {
public:
  WeightsFile() = default;
  WeightsFile(const WeightsFile &) = delete;
  WeightsFile &operator=(const WeightsFile &) = delete;
  ~WeightsFile();
  /// `manifestText` is the manifest as compiled into the library (its hash
  /// ties the library to the file). Returns false with a one-line `error`
  /// naming `path`; `io` tells a missing/unreadable file from a bad one.
  bool open(const std::string &path, const Manifest &manifest,
            const std::string &manifestText, std::string &error, bool &io);
  /// The bytes of weight `slot` (WeightDesc::bytes() of them).
  const uint8_t *data(int slot) const { return weights[slot]; }
  /// Drops the resident pages of weight `slot` (after the runtime copied it
  /// into its own layout); reading it again faults the file back in.
  void release(int slot, uint64_t bytes);
  uint64_t size() const { return mapBytes; }

private:
  void *map = nullptr;
  uint64_t mapBytes = 0;
  std::vector<const uint8_t *> weights;
};

} // namespace rt
} // namespace sq

#endif // SQ_RUNTIME_MODELFORMAT_H
