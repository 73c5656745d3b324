//===- QGemm.h - integer GEMM/GEMM on packed int4/int8 weights ----*- C++
//-*-===//
//
// The heavy kernel of a compiled model: quantized activations (unsigned
// codes q with integer zero points z, per token or per group of the K axis)
// times signed int4 or int8 weights (per output channel or per group):
//
//   out[m, n] = sum over blocks b of
//       sa[m, b] * sw[n, b] * (sum_{k in b} q[m, k] * w[n, k] - za[m, b] *
//                              sum_{k in b} w[n, k])
//
// which equals the executor's sum_k ((q - z) sa) (w sw) up to float
// rounding (the integer part is exact). Plain C++ with per-function target
// attributes: AVX-512 VNNI, AVX2 and portable scalar paths, chosen once by
// CPU features (or SQ_CPU_KERNEL=amx|avx512vnni|avx2|scalar). No MLIR/LLVM.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CPU_QGEMM_H
#define SQ_LIB_RUNTIME_CPU_QGEMM_H

#include "sq/Numerics/ThreadPool.h"
#include "sq/Runtime/KernelLayout.h"

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace sq {
namespace rt {

/// The kernels' thread pool (shared with lib/Numerics' GEMM).
using numerics::ThreadPool;

/// Which instruction path the kernels use.
/// AMX: the AVX-512 VNNI path with AMX tiles (TDPBUSD) for GEMMs of 32 rows
/// or more (Sapphire Rapids and newer; Linux grants the tile state per
/// process).
enum class KernelPath { Scalar, AVX2, AVX512VNNI, AMX };
const char *kernelPathName(KernelPath path);
/// The best path this CPU supports, or the one SQ_CPU_KERNEL names (an
/// unknown or unsupported name falls back to the best with a warning in
/// `note`).
KernelPath selectKernelPath(std::string *note = nullptr);
/// Whether this CPU (and this build) can run `path`. qgemm falls back to the
/// best supported path when given one that is not.
bool kernelPathSupported(KernelPath path);

/// A weight [N, K] in the kernels' layout (sq/Runtime/KernelLayout.h): a
/// view of its three arrays, each 64-byte aligned. They lie in the mapped
/// weights sidecar (viewPackedWeight: the compiler wrote the layout) or in
/// memory the PackedWeight owns (packWeight: built here from the !sq.packed
/// rows, for unit tests and benchmarks). Copies share the owned memory.
struct PackedWeight : KernelLayout {
  const uint8_t *data = nullptr;      // panels x panelBytes()
  const int32_t *blockSums = nullptr; // [panels, blocks, 64]
  const float *blockScales = nullptr; // [panels, blocks, 64]
  std::shared_ptr<void> owned;        // packWeight's memory, if any
};

/// Builds a PackedWeight that owns its layout from `packed` (rows of
/// packedBytes(K, bits) bytes in the Pack.h format, two's complement) and
/// `scales` [N, groups]. `actGroup` is the activation's group along K (0 =
/// per token); the kernel blocks are the finer of the two groups. Returns
/// false with `error` on bad sizes.
bool packWeight(const uint8_t *packed, const float *scales, int64_t n,
                int64_t k, unsigned bits, int64_t weightGroup, int64_t actGroup,
                PackedWeight &out, std::string &error);

/// A PackedWeight over `bytes` (layout.bytes() of them, e.g. in the mapped
/// sidecar, which outlives the view), without copying. False with `error`
/// when `size` is not the layout's or `bytes` is not 64-byte aligned.
bool viewPackedWeight(const KernelLayout &layout, const uint8_t *bytes,
                      uint64_t size, PackedWeight &out, std::string &error);

/// Quantized activations [M, K] in the kernels' layout.
struct QuantizedActs {
  int64_t m = 0, k = 0, kPadded = 0; // kPadded: the row stride (>= K, zeros)
  int64_t group = 0;                 // K values per scale (0 = per token)
  std::vector<uint8_t> codes;        // [M, kPadded], q in [0, 2^bits - 1]
  std::vector<float> scales;         // [M, groups]
  std::vector<int32_t> zeros;        // [M, groups]
};

/// Quantizes x [M, K] (row-major, fp32) with SpinQuant's quantizer
/// (numerics::groupScale / quantizeValue: same scales, zero points and codes
/// as sq.fake_quant). Symmetric grids are stored as unsigned codes
/// q + 2^(bits-1) with zero point 2^(bits-1).
void quantizeActivations(const float *x, int64_t m, int64_t k, unsigned bits,
                         bool symmetric, int64_t group, double clip,
                         QuantizedActs &out, ThreadPool *pool = nullptr);

/// out [M, N] (row-major) = acts x weight^T as above. M = 1 takes the GEMV
/// path. `actGroup` of acts must match the one given to packWeight (on a
/// mismatch out is filled with NaN and a message goes to stderr). With no
/// pool the call runs on the calling thread only. Results do not depend on
/// the pool size, and the SIMD paths give the same bits as the scalar one.
void qgemm(const QuantizedActs &acts, const PackedWeight &weight, float *out,
           KernelPath path, ThreadPool *pool = nullptr);

} // namespace rt
} // namespace sq

#endif // SQ_LIB_RUNTIME_CPU_QGEMM_H
