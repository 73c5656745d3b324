//===- Ops.h - fp32 kernels of the CPU runtime -------------------*- C++
//-*-===//
//
// The float work of a compiled model besides the integer GEMM (QGemm.h) and
// RMSNorm/RoPE (sq/Numerics/Layers.h, shared with the executor):
// the same arithmetic as the reference executor's kernels (lib/Exec), in
// the same order where it decides rounding, over raw row-major buffers.
// Internal to lib/Runtime/CPU; no MLIR/LLVM.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CPU_OPS_H
#define SQ_LIB_RUNTIME_CPU_OPS_H

#include "sq/Numerics/ThreadPool.h"
#include "sq/Runtime/ModelFormat.h"

#include <cstdint>
#include <vector>

namespace sq {
namespace rt {

using numerics::ThreadPool;

/// out [M, N] = x [M, K] * w [N, K]^T (+ bias [N]).
void linearF32(const float *x, const float *w, const float *bias, int64_t m,
               int64_t k, int64_t n, float *out, ThreadPool *pool);
/// linearF32 with 16-bit weights (f16 or bf16 bits), widened on the fly:
/// the same products as on the widened fp32 weights.
void linear16(const float *x, const uint16_t *w, FloatStorage format,
              const float *bias, int64_t m, int64_t k, int64_t n, float *out,
              ThreadPool *pool);
/// x T for every row of length n, T the transform of sq.hadamard
/// (numerics::orthogonalTransformInPlace): the fast transform, or a dense
/// product with T where numerics::preferDenseTransform says so, as the
/// executor does. `out` may equal `x`.
void orthogonalTransformRows(const float *x, int64_t rows, int64_t n,
                             uint64_t seed, float *out, ThreadPool *pool);
/// x R (or x R^T) for R [n, n] on `rows` rows of n; `out` must not alias x.
void rotate(const float *x, const float *r, int64_t rows, int64_t n,
            bool transposed, float *out);

/// Tokens per tile of a tiled KVStore.
constexpr int64_t kKVTile = 16;

/// One attention layer's KV cache: `capacity` tokens per sequence for
/// `batch` sequences of `features` values, stored as integer codes (packed
/// two per byte for <= 4 bits) with a scale and zero point per group, or as
/// fp32 without a quantizer.
///
/// A store of <= 4-bit codes allocated `tiled` (the CPU backend's keys)
/// keeps them feature-major in tiles of kKVTile = 16 tokens: tile T holds, for
/// each feature c, the codes of its 16 tokens in 8 bytes (token l in byte
/// l % 8, the low nibble for l < 8 and the high one for l >= 8), so that
/// attention reads the 16 keys' values of a
/// feature as one vector and computes 16 scores' chains without a
/// transpose. Scales and zero points stay per row. The capacity is then
/// rounded up to whole tiles.
class KVStore {
public:
  bool allocate(int64_t batch, int64_t capacity, int64_t features,
                const QuantDesc &quant, bool tiled = false);
  ~KVStore();
  /// Stores `count` rows (tokens) of sequence `b` from position `at`.
  /// `simd`: 0 forces the scalar path, 1 at most AVX2, 2 the best this CPU
  /// has (tests compare them); all give the same bits.
  void append(int64_t b, int64_t at, const float *rows, int64_t count,
              int simd = 2);
  /// Rows [begin, end) of sequence `b`, features [f0, f0 + nf), as fp32
  /// ((q - z) s, exactly sq.fake_quant's values).
  void read(int64_t b, int64_t begin, int64_t end, int64_t f0, int64_t nf,
            float *out, int simd = 2) const;
  uint64_t bytes() const;

  /// The raw storage, for the kernels and the tests that compare it bit for
  /// bit: row (b, t) is row b * capacity + t of `codes` (rowBytes each),
  /// `scales`/`zeros` (groups each) or `floats` (features each).
  /// Tiled stores: tile T (rows [16 T, 16 T + 16)) starts at byte
  /// T * features * 8 of `codes` (rowBytes is then 0), and its scales and
  /// zero points are group-major too: group g of its 16 rows at
  /// [(T * groups + g) * 16, + 16), one vector per group.
  struct Layout {
    int64_t batch, capacity, features, group, groups, rowBytes;
    QuantDesc quant;
    const uint8_t *codes;
    const float *floats, *scales, *zeros;
    bool tiled;

    /// The index of the scale and zero point of group g of row `row`.
    size_t param(size_t row, int64_t g) const {
      if (tiled)
        return ((row / kKVTile) * size_t(groups) + size_t(g)) * kKVTile +
               row % kKVTile;
      return row * size_t(groups) + size_t(g);
    }
    /// The code of feature c in row `row` (a quantized store).
    unsigned code(size_t row, int64_t c) const {
      if (tiled)
        return (codes[(row / kKVTile) * size_t(features) * 8 + size_t(c) * 8 +
                      row % 8] >>
                (4 * ((row % kKVTile) / 8))) &
               0xF;
      const uint8_t *src = codes + row * rowBytes;
      return quant.bits <= 4 ? (src[c / 2] >> (4 * (c % 2))) & 0xF : src[c];
    }
  };
  Layout layout() const {
    return {batch, capacity, features, group,  groups, rowBytes,
            quant, codes,    floats,   scales, zeros,  tiled};
  }

private:
  int64_t batch = 0, capacity = 0, features = 0, groups = 1, group = 0;
  int64_t rowBytes = 0;
  QuantDesc quant;
  bool tiled = false;
  uint8_t *codes = nullptr;
  float *floats = nullptr, *scales = nullptr, *zeros = nullptr;
};

/// The dequantization path of the cache kernels for a `simd` level (0
/// scalar, 1 at most AVX2, 2 the best this CPU has): 0, 1 (AVX2) or 2
/// (AVX-512).
int dequantPath(int simd);
/// Features [f0, f0 + nf) of cache row `row` as fp32 ((q - z) s), on
/// dequantization path `path`.
void dequantRow(const KVStore::Layout &s, size_t row, int64_t f0, int64_t nf,
                float *out, int path);
/// Prefetches what dequantRow(row, f0, nf) reads (row-major stores; tiled
/// ones are prefetched by attention per tile).
void prefetchRow(const KVStore::Layout &s, size_t row, int64_t f0, int64_t nf);

/// Causal GQA attention of `seq` new queries per sequence after `cached`
/// tokens; the new keys/values are already appended to the stores.
/// Per output, the same operations in the same order as a plain loop over
/// the dequantized cache: a score is the sequential sum over the head
/// dimension (fused multiply-adds on the SIMD paths, as the compiler
/// contracted them before), softmaxPrefix over the visible keys, and an
/// output the sequential sum over the visible keys. `simd`: 0 forces the
/// scalar path, 1 AVX2, 2 (default) the best (AVX-512 dequantization where
/// the CPU has it); tests compare them. Jobs: (sequence, span of KV heads,
/// block of queries); the cache is dequantized a tile of keys at a time
/// into per-thread scratch reused across calls, and read once per job.
void attention(const float *q, const KVStore &keys, const KVStore &values,
               int64_t batch, int64_t seq, int64_t cached,
               const AttentionDesc &desc, float *out, ThreadPool *pool,
               int simd = 2);

} // namespace rt
} // namespace sq

#endif // SQ_LIB_RUNTIME_CPU_OPS_H
