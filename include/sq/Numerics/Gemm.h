//===- Gemm.h - dense GEMM in bf16 with fp32 accumulation --------*- C++
//-*-===//
//
// The dense matrix products of the reference executor and the calibration
// (sq.linear forward and backward, attention, rotation gradients) on the
// CPU's bf16 units: the operands are rounded to bfloat16 (round to nearest
// even) and the products summed in fp32. A bf16 x bf16 product is exact in
// fp32, so every path computes the same sums of the same products; only the
// order of the fp32 additions differs between paths (and with the blocking),
// which bounds the difference to a few fp32 roundings per term:
//   |C - exact(bf16(A) op(bf16(B)))| <= ~k * 2^-24 * sum_k |a b|.
//
// Paths, chosen at run time (CPUID; the environment variable SQ_GEMM_PATH
// or GemmOptions::path forces one):
//   amx        AMX-BF16 tiles (TDPBF16PS; Sapphire Rapids and newer; Linux
//              grants the tile data per process, see CpuFeatures.h);
//   avx512bf16 AVX-512 BF16 (VDPBF16PS; Cooper Lake, Sapphire Rapids, Zen 4).
//              On Sapphire/Emerald Rapids VDPBF16PS (zmm) issues once per 2
//              cycles, half the flops of fp32 FMA (bench/GemmBench.cpp,
//              Peak/*): there this path is slower than fp32 sgemm and only
//              a fallback for when the OS refuses the AMX tiles;
//   scalar     portable C++ (any CPU; much slower than sgemm: a caller
//              choosing between this GEMM and fp32 BLAS should use BLAS when
//              gemmDefaultPath() is Scalar).
// The AMX and AVX-512 paths treat subnormal inputs as zero and flush
// subnormal results (the instructions' fixed behaviour); the scalar path
// keeps them.
//
// Threads: the work is split over a numerics::ThreadPool (the global pool,
// shared with the CPU runtime, unless GemmOptions::pool names another); a
// call made from inside one of the pool's jobs runs on the calling thread.
// Results may differ in the last bits between paths (and, on the AMX path,
// for the last rows of a call whose row count leaves a block of at most 8
// rows, which go to the AVX-512 kernel), but not between thread counts.
//
// Plain C++ (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_GEMM_H
#define SQ_NUMERICS_GEMM_H

#include "sq/Numerics/Float16.h"

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sq {
namespace numerics {

class ThreadPool;

/// The instruction path of a gemm call. Auto: SQ_GEMM_PATH when it names a
/// supported path, else the fastest supported one.
enum class GemmPath { Auto, AMX, AVX512BF16, Scalar };

/// "auto", "amx", "avx512bf16", "scalar".
const char *gemmPathName(GemmPath path);
/// Whether this CPU (and OS) can run `path` (Auto and Scalar: always).
bool gemmPathSupported(GemmPath path);
/// What Auto resolves to in this process: SQ_GEMM_PATH (amx | avx512bf16 |
/// scalar) when set and supported, otherwise the fastest supported path. An
/// unknown or unsupported SQ_GEMM_PATH is ignored (one note on stderr).
GemmPath gemmDefaultPath();
/// Whether this GEMM's default path is expected to beat fp32 sgemm on this
/// CPU, so that a caller free to choose (precision=auto) takes bf16: AMX
/// tiles, or AVX-512 BF16 on AMD (Zen 4 and 5 issue VDPBF16PS at the rate
/// of an FMA, twice an FMA's flops; measured on Zen 5: a 1B calibration step
/// 34 s in bf16 against 90 s in fp32). Not on Intel without AMX (Cooper
/// Lake; and AMX CPUs whose tiles the OS refuses), where VDPBF16PS runs at
/// half the FMA rate. Decided from CPUID alone (the same answer in every
/// run on a machine) and SQ_GEMM_PATH, which can only narrow the choice.
bool gemmBF16Preferred();

struct GemmOptions {
  GemmPath path = GemmPath::Auto; ///< an unsupported path falls back to Auto
  ThreadPool *pool = nullptr;     ///< nullptr: ThreadPool::global()
};

/// Whether an operand is used as stored or transposed (cblas' NoTrans/Trans).
enum class Transpose { No, Yes };

/// A frozen matrix W [rows, cols] (a linear's weight [out, in], an embedding
/// table [vocab, dim]) stored once in bf16, row-major (one copy: 2 bytes per
/// value; rows padded to a multiple of 32 values, and 64-byte aligned, when
/// the matrix owns its storage). The same storage serves both products of a
/// linear, the kernels repacking small blocks of it into their tile layout
/// per call (a cost proportional to rows x cols, against m x rows x cols for
/// the product):
///   gemm(..., w, Transpose::Yes, ...)  C[m, rows] = A[m, cols] W^T  (forward)
///   gemm(..., w, Transpose::No, ...)   C[m, cols] = A[m, rows] W    (dA)
/// A view (viewBF16) reads bf16 data in place (e.g. a memory-mapped
/// safetensors tensor); the caller keeps that memory alive and unchanged.
/// Movable, not copyable.
class PackedMatrix {
public:
  PackedMatrix();
  ~PackedMatrix();
  PackedMatrix(PackedMatrix &&other) noexcept;
  PackedMatrix &operator=(PackedMatrix &&other) noexcept;
  PackedMatrix(const PackedMatrix &) = delete;
  PackedMatrix &operator=(const PackedMatrix &) = delete;

  /// Rounds fp32 w [rows, cols] (row stride ld, 0 = cols) to bf16.
  static PackedMatrix fromFloat(const float *w, int64_t rows, int64_t cols,
                                int64_t ld = 0);
  /// From little-endian values of `format` (row stride ld values, 0 = cols):
  /// BF16 is copied exactly, F16 and F32 are rounded to bf16 (to nearest
  /// even; an fp16 weight loses its 3 lowest mantissa bits).
  static PackedMatrix fromBits(const void *w, FloatFormat format, int64_t rows,
                               int64_t cols, int64_t ld = 0);
  /// Reads bf16 w [rows, cols] (row stride ld, 0 = cols) in place, no copy.
  static PackedMatrix viewBF16(const uint16_t *w, int64_t rows, int64_t cols,
                               int64_t ld = 0);

  /// Overwrites rows [row0, row0 + count) from fp32 src [count, cols] (row
  /// stride ld, 0 = cols), rounded to bf16: e.g. the rows of a tied
  /// embedding that changed. Cost: count x cols. Owned storage only (a view
  /// returns false and is left unchanged); false also for rows out of range.
  bool setRows(int64_t row0, int64_t count, const float *src, int64_t ld = 0);

  int64_t rows() const { return numRows; }
  int64_t cols() const { return numCols; }
  bool empty() const { return numRows == 0 || numCols == 0; }
  bool isView() const { return !owned; }
  /// bf16 bits of row r (cols() values; row stride stride()).
  const uint16_t *row(int64_t r) const { return base + r * rowStride; }
  int64_t stride() const { return rowStride; }
  /// W[r, c] as a float (exact: the stored bf16 value).
  float at(int64_t r, int64_t c) const { return bf16ToFloat(row(r)[c]); }
  /// Bytes this object owns (0 for a view).
  size_t ownedBytes() const;

private:
  struct Free {
    void operator()(uint16_t *p) const;
  };
  std::unique_ptr<uint16_t, Free> owned;
  const uint16_t *base = nullptr;
  int64_t numRows = 0, numCols = 0, rowStride = 0;
};

/// C[m, n] = alpha * A[m, k] op(W) + beta * C with a frozen matrix W:
///   op = Transpose::Yes: op(W) = W^T, k = W.cols(), n = W.rows();
///   op = Transpose::No:  op(W) = W,   k = W.rows(), n = W.cols().
/// A is fp32 row-major (row stride lda >= k), rounded to bf16 in the kernel;
/// C is fp32 row-major (row stride ldc >= n). beta == 0: C is only written
/// (NaN in C does not propagate). m == 0 or n == 0: nothing; k == 0: C =
/// beta * C. A and C must not overlap.
void gemm(int64_t m, const float *a, int64_t lda, const PackedMatrix &w,
          Transpose op, float *c, int64_t ldc, float alpha = 1.0f,
          float beta = 0.0f, const GemmOptions &options = {});

/// cblas_sgemm's row-major product on bf16-rounded operands (activation by
/// activation: attention's Q K^T and P V, a rotation gradient X^T G):
/// C[m, n] = alpha * op(A) op(B) + beta * C, op(A) [m, k], op(B) [k, n];
/// A is [m, k] (ta = No) or [k, m] (ta = Yes) with row stride lda, B is
/// [k, n] (tb = No) or [n, k] (tb = Yes) with row stride ldb, C [m, n] with
/// row stride ldc. Both operands are rounded to bf16 while the kernel packs
/// them (no copy of the whole operand); beta == 0 as in gemm above.
void gemmBF16(Transpose ta, Transpose tb, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, const float *b,
              int64_t ldb, float beta, float *c, int64_t ldc,
              const GemmOptions &options = {});

/// cblas_sgemm's row-major product in fp32 (same operands as gemmBF16, no
/// rounding to bf16): C[m, n] = alpha * op(A) op(B) + beta * C. On a CPU
/// with AVX-512F our own kernel (GemmF32.cpp) on `pool` (default: the
/// global pool), whose results do not depend on the number of threads;
/// elsewhere cblas_sgemm. beta == 0: C is only written. For large products
/// (the Cayley step's n x n matrices).
void gemmF32(Transpose ta, Transpose tb, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda, const float *b,
             int64_t ldb, float beta, float *c, int64_t ldc,
             ThreadPool *pool = nullptr);

/// Whether gemmF32 runs its own AVX-512F kernel here (else cblas_sgemm;
/// SQ_GEMM_F32=blas forces cblas_sgemm, for comparisons).
bool gemmF32Native();

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_GEMM_H
