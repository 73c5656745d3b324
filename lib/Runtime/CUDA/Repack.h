//===- Repack.h - host-side preparation of the GPU kernels' data -*- C++
//-*-===//
//
// What the CUDA runtime computes on the host at load time for the kernels
// of KernelABI.h: the m x m factor of the online Hadamard transform, the
// integer-GEMM plan of a quantized linear (block size, padding, which
// kernel) and its weights repacked into the kernels' layout. Plain C++, no
// driver calls, so the unit tests check it on any machine.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CUDA_REPACK_H
#define SQ_LIB_RUNTIME_CUDA_REPACK_H

#include "sq/Runtime/ModelFormat.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace cuda {

/// The factor Q (m x m, row-major) of numerics::orthogonalTransformInPlace(
/// ., n, seed) written as x -> x (Q kron H_p) / sqrt(p), n = m p with p a
/// power of two, index a * p + b: when n has a Hadamard split
/// (numerics::splitHadamardSize), the +-1 Hadamard matrix H_m (the kernels
/// see |Q[0][0]| == 1 and scale by 1/sqrt(n), i.e. Q = H_m / sqrt(m)), else
/// the seeded random orthogonal matrix of the fallback (p the largest power
/// of two dividing n). `q` is empty when m == 1.
void hadamardFactor(int64_t n, uint64_t seed, int64_t &m,
                    std::vector<float> &q);

/// How a quantized linear runs on the GPU.
struct QGemmPlan {
  bool integer = false; // sq_quantize + sq_qgemm_s8/s4; else fp32 weights
  bool s4 = false;      // sq_qgemm_s4 (else sq_qgemm_s8)
  int64_t kpad = 0;     // K padded (multiple of blockk)
  int64_t blockk = 0;   // values per block (the finer of the two groups)
  int64_t blocks = 0;   // kpad / blockk
  int64_t ablocks = 1;  // blocks per activation scale
  int64_t wblocks = 1;  // blocks per weight scale
  std::string reason;   // why not integer (for the description)
};

/// The plan for `d` on a device of compute capability major.minor. As the
/// CPU runtime: the integer path needs symmetric 4/8-bit weights without
/// zero points and quantized activations (<= 8 bits) whose group nests with
/// the weight's; the GPU kernels also need blocks of a multiple of 32
/// values (64 for s4). sq_qgemm_s4 on sm_80/86/89 when the activation codes
/// fit in 4 bits, 4-bit weights and blockk % 64 == 0 (and `haveS4`).
QGemmPlan planQGemm(const rt::QLinearDesc &d, int major, int minor,
                    bool haveS4);

/// The weight [n, k] (!sq.packed rows, two's complement, `bits` 4 or 8) in
/// the layout of the plan's kernel: s8 bytes [n, kpad] or s4 nibbles [n,
/// kpad / 2] (element 2j in the low nibble of byte j), zeros beyond k; and
/// wsums [n, blocks], the sum of each block's values.
void repackWeight(const uint8_t *packed, int64_t n, int64_t k, unsigned bits,
                  const QGemmPlan &plan, std::vector<uint8_t> &w,
                  std::vector<int32_t> &wsums);

/// The weight dequantized to fp32 [n, k] ((v - zero) * scale, as the
/// executor): the float path of a quantized linear. `zeros` may be null.
void dequantizeWeight(const uint8_t *packed, const float *scales,
                      const float *zeros, const rt::QLinearDesc &d,
                      std::vector<float> &out);

} // namespace cuda
} // namespace sq

#endif // SQ_LIB_RUNTIME_CUDA_REPACK_H
