//===- Kernels.h - fp32 kernels of the reference executor --------*- C++
//-*-===//
//
// Internal to lib/Exec. Plain C++ over dense row-major tensors; matrix
// products through OpenBLAS sgemm.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_EXEC_KERNELS_H
#define SQ_LIB_EXEC_KERNELS_H

#include "sq/Numerics/Buffer.h"
#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/Layers.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Numerics/ThreadPool.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace sq {
namespace exec {

/// An allocator that leaves new elements uninitialized: every kernel writes
/// all of its output, so zero-filling fresh buffers is wasted work. Storage
/// comes from numerics::allocateLarge, whose cache of freed mappings lets a
/// training step reuse the pages of the previous block's activations instead
/// of having the kernel fault in and zero fresh ones (glibc maps and unmaps
/// every buffer of 32 MiB or more).
template <typename T> struct DefaultInitAllocator : std::allocator<T> {
  template <typename U> struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  T *allocate(size_t n) {
    void *p = numerics::allocateLarge(n * sizeof(T));
    if (!p && n) { // as operator new without exceptions
      std::fputs("sq: out of memory\n", stderr);
      std::abort();
    }
    return static_cast<T *>(p);
  }
  void deallocate(T *p, size_t n) { numerics::freeLarge(p, n * sizeof(T)); }
  template <typename U> void construct(U *p) {
    ::new (static_cast<void *>(p)) U;
  }
  template <typename U, typename... Args> void construct(U *p, Args &&...args) {
    ::new (static_cast<void *>(p)) U(std::forward<Args>(args)...);
  }
};
using FloatBuffer = std::vector<float, DefaultInitAllocator<float>>;

struct Tensor {
  std::vector<int64_t> shape;
  std::shared_ptr<FloatBuffer> data;          // float tensors
  std::shared_ptr<std::vector<int64_t>> ints; // ids, positions
  /// A frozen 16-bit weight read in place (the module's resource, never
  /// widened as a whole): numel() values of `format` at `half`, and `data`
  /// is null. Only linear weights and embedding tables are kept so: linear,
  /// linearBackward and embedding widen the rows they need on the fly.
  const void *half = nullptr;
  numerics::FloatFormat format = numerics::FloatFormat::F32;
  /// The executor's bf16 precision reads an f16 weight in place (`half`)
  /// with the values rounded to bf16 as they are read: the values a packed
  /// bf16 copy would hold, without the copy (linear and linearBackward pack
  /// a panel of rows at a time and multiply it on the bf16 units).
  bool roundToBF16 = false;
  /// The executor's bf16 precision: a frozen linear weight or embedding
  /// table stored once in bf16 (a view of a bf16 resource), `data` and
  /// `half` null; linear and linearBackward multiply it on the bf16 units.
  std::shared_ptr<numerics::PackedMatrix> packed;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  int64_t lastDim() const { return shape.back(); }
};

/// Runs fn(begin, end) over the rows [0, rows) on the kernels' thread pool
/// when there is enough work (rows x perRow values), inline otherwise. Each
/// row is computed alone, the same way whichever thread takes it, so the
/// results do not depend on the split or the thread count.
template <typename F> void forRows(int64_t rows, int64_t perRow, F &&fn) {
  if (rows > 1 && rows * perRow >= (int64_t(1) << 15))
    numerics::ThreadPool::global().parallelFor(rows, fn);
  else
    fn(int64_t(0), rows);
}
/// forRows over the n values of a flat array, in blocks of 4096.
template <typename F> void forValues(int64_t n, F &&fn) {
  constexpr int64_t kBlock = 4096;
  forRows((n + kBlock - 1) / kBlock, kBlock, [&](int64_t b, int64_t e) {
    fn(b * kBlock, std::min(n, e * kBlock));
  });
}

/// The values of `t` in fp32 (a copy; widened for a 16-bit view).
std::shared_ptr<FloatBuffer> floatValues(const Tensor &t);
/// Rows [row, row + count) of the 2-D weight `w` in fp32 at `out`.
void widenRows(const Tensor &w, int64_t row, int64_t count, float *out);
/// Rows of a 16-bit weight with `cols` columns that linear and
/// linearBackward widen at a time.
int64_t panelRows(int64_t cols);
/// The bf16 precision's f16 weights (`half` with roundToBF16): rows [row,
/// row + count) packed in bf16, and the rows linear and linearBackward pack
/// at a time (about 4 MiB of bf16, a multiple of 32).
numerics::PackedMatrix packRows(const Tensor &w, int64_t row, int64_t count);
int64_t packedPanelRows(int64_t cols);

bool embedding(const Tensor &table, const Tensor &ids, Tensor &out,
               std::string &error);
void rmsNorm(const Tensor &x, const Tensor *scale, double eps, Tensor &out);
void linear(const Tensor &x, const Tensor &w, const Tensor *bias, Tensor &out);
void rope(const Tensor &x, const Tensor &positions, int64_t heads, double theta,
          bool interleaved, Tensor &out,
          const numerics::RopeScaling &scaling = {});
/// Causal grouped-query attention. `cacheK`/`cacheV` hold `cached` tokens
/// per sequence ([batch, cached, kv_features]); `presentK/V` return
/// cache ++ new. A sliding `window` (> 0) limits each query to the last
/// `window` keys up to its own position.
void attention(const Tensor &q, const Tensor &k, const Tensor &v,
               const FloatBuffer &cacheK, const FloatBuffer &cacheV,
               int64_t cached, int64_t heads, int64_t kvHeads, double scale,
               bool causal, int64_t window, Tensor &out, Tensor &presentK,
               Tensor &presentV, bool bf16 = false);
/// The bf16 attention (`bf16` above and in attentionBackward): the products
/// on the bf16 units (operands rounded to bf16, fp32 sums), the work split
/// by sequence and KV head over the thread pool (each task runs its heads
/// alone, so the result does not depend on the thread count), the queries
/// in blocks of kAttentionBlock rows that multiply only the keys up to
/// their last visible position (about half the products of a causal
/// prompt).
constexpr int64_t kAttentionBlock = 128;
/// The keys [0, hi) that the query rows [i0, i1) at key positions
/// offset + i may see among `total`.
inline int64_t attentionBlockKeys(int64_t offset, int64_t i1, int64_t total,
                                  bool causal) {
  return causal ? std::min(total, offset + i1) : total;
}
/// The probabilities of `rows` queries (q, row stride qf; the first at key
/// position `position`) over the keys [0, hi) (k, row stride kvf) into p
/// [rows, hi]: softmax(scale q k^T) with the mask, on the bf16 units. The
/// backward recomputes them with this same function.
void attentionProbsBF16(const float *q, int64_t qf, const float *k, int64_t kvf,
                        int64_t rows, int64_t d, int64_t hi, int64_t position,
                        float scale, bool causal, int64_t window, float *p);
void silu(const Tensor &x, Tensor &out);
void binary(const Tensor &a, const Tensor &b, bool add, Tensor &out);
/// `bf16`: the product on the bf16 units (operands rounded to bf16, fp32
/// sums), as for the linears in the executor's bf16 precision.
void rotate(const Tensor &x, const Tensor &r, bool transposed, Tensor &out,
            bool bf16 = false);
/// x T (or x T^T) for each of `rows` rows of length n, T the matrix of
/// numerics::orthogonalTransformInPlace: the fast transform, or a dense
/// product where that is faster. `out` may equal `x` only for the fast path.
bool orthogonalTransformRows(const float *x, int64_t rows, int64_t n,
                             uint64_t seed, bool transpose, float *out);
/// sq.hadamard: numerics::orthogonalTransformInPlace on every block.
bool hadamard(const Tensor &x, int64_t block, uint64_t seed, Tensor &out,
              std::string &error);
/// The grid and the row length of sq.fake_quant on `x` (granularity: 0
/// per_tensor, one row of everything; 1 per_token, 2 per_channel, 3 group:
/// rows of the last dimension), for fakeQuant and its backward passes.
numerics::QuantGrid fakeQuantGrid(unsigned bits, bool symmetric,
                                  int granularity, int64_t groupSize,
                                  double clip);
int64_t fakeQuantCols(const Tensor &x, int granularity);
/// granularity: 0 per_tensor, 1 per_token, 2 per_channel, 3 group.
void fakeQuant(const Tensor &x, unsigned bits, bool symmetric, int granularity,
               int64_t groupSize, double clip, Tensor &out);
/// The gradient of fakeQuant for learned clipping
/// (numerics::fakeQuantRowsBackward): dx = dL/dx, dclip = dL/dclip (one
/// clip for the whole tensor).
void fakeQuantBackward(const Tensor &x, unsigned bits, bool symmetric,
                       int granularity, int64_t groupSize, double clip,
                       const Tensor &dy, Tensor &dx, double &dclip);

} // namespace exec
} // namespace sq

#endif // SQ_LIB_EXEC_KERNELS_H
