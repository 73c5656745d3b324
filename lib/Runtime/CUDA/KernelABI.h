//===- KernelABI.h - the GPU kernels of a compiled model ---------*- C++
//-*-===//
//
// The contract between the kernel library (lib/Conversion/SQToNVVM/
// Kernels.mlir, compiled to PTX by LLVM's NVPTX backend and embedded in
// model.so) and the CUDA runtime that launches them (lib/Runtime/CUDA).
//
// Every kernel is a `gpu.func ... kernel` in `gpu.module @sq_kernels` with
// the symbol name below. Parameters, in order, are: device pointers (u64,
// `!llvm.ptr` in the kernel; 0 = absent where allowed), `i64`, `i32`, `f32`.
// Tensors are row-major fp32 unless said otherwise. `blockDim` and `gridDim`
// are what the runtime launches with; "dyn smem" is the dynamic shared
// memory in bytes. The numerics follow the CPU runtime (lib/Runtime/CPU) and
// the executor: SpinQuant's quantizer (lib/Numerics/Quantize.h: scale from
// the clipped min/max, zero point round(-min/scale), codes round-half-even,
// clamped), fp32 accumulation.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CUDA_KERNELABI_H
#define SQ_LIB_RUNTIME_CUDA_KERNELABI_H

namespace sq {
namespace cuda {

// Elementwise, n values: grid ceil(n / 256), block 256.
//   sq_add(out, a, b, n: i64)      out = a + b
//   sq_mul(out, a, b, n: i64)      out = a * b
//   sq_silu(out, a, n: i64)        out = a / (1 + exp(-a))
//
// sq_embedding(out, table, ids: i32*, tokens: i64, dim: i64, storage: i32)
//   out[t, :] = table[ids[t], :]; storage 0 fp32, 1 f16, 2 bf16 (widened).
//   grid tokens, block 128.
//
// sq_rms_norm(out, in, scale (0: none), rows: i64, dim: i64, eps: f32)
//   out = in / sqrt(mean(in^2) + eps) * scale, per row. grid rows, block 256.
//
// sq_rope(out, in, positions: i64*, rows: i64, dim: i64, heads: i64,
//         theta: f32, interleaved: i32, factor: f32, low_freq_factor: f32,
//         high_freq_factor: f32, original_max_positions: f32)
//   Rotary embedding of each head (head_dim = dim / heads), position
//   positions[row]; inv_freq[i] = 1 / theta^(2i / head_dim) in fp32, then
//   (factor > 0) LLaMA-3.1 scaling as numerics::scaleRopeFrequency;
//   rotate_half pairs (i, i + hd/2), interleaved pairs (2i, 2i+1).
//   grid rows, block 128.
//
// sq_hadamard(out, in, rows: i64, n: i64, q (m x m fp32, 0 when m == 1),
//             m: i64)
//   out = in (Q kron H_p) / sqrt(p) per row of n = m * p values (p a power
//   of two): the transform of numerics::orthogonalTransformInPlace (Q is
//   the m x m factor it uses: a Hadamard matrix of order m or the seeded
//   random orthogonal fallback, uploaded by the runtime). in == out allowed.
//   Q may be uploaded as the Hadamard matrix itself (entries +-1, as
//   numerics::hadamardMatrix gives; recognized by |Q[0][0]| == 1, then the
//   kernel scales by 1/sqrt(n), i.e. uses Q/sqrt(m): bit-identical to
//   hadamardTransformInPlace) or as any orthogonal m x m matrix (the
//   fallback, or H_m/sqrt(m); scale 1/sqrt(p), sums in f64).
//   grid rows, block 256, dyn smem 4 * n.
//
// sq_fake_quant(out, in, rows: i64, cols: i64, bits: i32, sym: i32,
//               group: i64 (0: the whole row), clip: f32)
//   Quantize-dequantize per group: (q - z) * s. grid rows, block 256.
//
// sq_quantize(codes: u8*, scales, zeros: i32*, x, m: i64, k: i64,
//             kpad: i64, bits: i32, sym: i32, group: i64, clip: f32,
//             q (0: no Hadamard), hm: i64, hadamard: i32)
//   Per row of x [m, k]: if `hadamard`, first x (Q kron H_p)/sqrt(p) with
//   n = k (as sq_hadamard); then per group of `group` values (0: the row)
//   SpinQuant's quantizer: codes[m, kpad] one unsigned byte per value
//   (symmetric codes stored + 2^(bits-1) with zero point 2^(bits-1)), the
//   tail k..kpad zero; scales/zeros [m, k / group] (ceil(k / group): a
//   short last group, as the CPU runtime, when group does not divide k).
//   grid m, block 256, dyn smem 4 * k.
//
// sq_qgemm_s8(out, codes: u8*, ascales, azeros: i32*, w: s8*, wscales,
//             wsums: i32*, bias (0: none), m: i64, n: i64, kpad: i64,
//             blockk: i64, ablocks: i64, wblocks: i64)
// sq_qgemm_s4(... the same, w: packed s4 ...)
//   out[m, n] = sum over blocks b of blockk values:
//     ascales[i, b / ablocks] * wscales[j, b / wblocks] *
//     (sum_k codes[i, k] w[j, k] - azeros[i, b / ablocks] * wsums[j, b])
//   (+ bias[j]). codes [m, kpad] as sq_quantize writes them; w [n, kpad]:
//   s8, one byte per value (sq_qgemm_s8, tensor-core mma m16n8k32
//   u8 x s8, any sm >= 80, blockk a multiple of 32), or two's-complement
//   nibbles, element 2j in the low nibble of byte j, kpad / 2 bytes per row
//   (sq_qgemm_s4, mma m16n8k64 u4 x s4: sm_80/86/89 only, codes < 16,
//   blockk a multiple of 64); zero padding beyond k. wsums [n, kpad /
//   blockk]. ablocks/wblocks: blocks per activation/weight scale (scales
//   hold kpad / blockk / ablocks entries per row, rounded up). kpad is a
//   multiple of blockk; codes, w and their rows are 16-byte aligned (true
//   for cudaMalloc'ed buffers: kpad is a multiple of 64). grid (ceil(n / 64),
//   ceil(m / 64)), block 128 (4 warps), tiles staged through shared memory
//   with cp.async.
//
// sq_linear16(out, x, w, bias (0: none), m: i64, k: i64, n: i64,
//             storage: i32)
//   out = x w^T + bias with w [n, k] fp32 (0), f16 (1) or bf16 (2): lm_head
//   and other float linears. grid (ceil(n / 8), m), block 256 (a warp per
//   output).
//
// KV cache [batch, capacity, features] per layer, for keys and values
// alike: bits == 0: fp32 values in `fp`; bits 2..8: codes (bits <= 4: two
// per byte, element 2j in the low nibble; else one byte) in `codes`, scale
// and zero point (fp32) per group of `group` features in scales/zeros
// [batch, capacity, features / group].
//
// sq_kv_append(codes, scales, zeros, fp, rows, batch: i64, seq: i64,
//              cached: i64, capacity: i64, features: i64, bits: i32,
//              sym: i32, group: i64, clip: f32)
//   Stores rows [batch * seq, features] at positions cached .. cached+seq-1
//   of each sequence, quantized as sq_fake_quant would. grid batch * seq,
//   block 128.
//
// sq_attention(out, q, kcodes, kscales, kzeros, kfp, vcodes, vscales,
//              vzeros, vfp, batch: i64, seq: i64, cached: i64,
//              capacity: i64, heads: i64, kv_heads: i64, head_dim: i64,
//              scale: f32, causal: i32, window: i64, kbits: i32,
//              ksym: i32, kgroup: i64, vbits: i32, vsym: i32, vgroup: i64)
//   Causal grouped-query attention of the seq new queries (q [batch * seq,
//   heads * head_dim]) over the cached + seq keys/values (already
//   appended), dequantized ((q - z) s) from the cache. Query i of a
//   sequence sees keys 0 .. cached + i; with a sliding window > 0 only
//   cached + i - window + 1 .. cached + i. out [batch * seq, heads *
//   head_dim].
//   grid (batch * heads, seq), block 128, dyn smem 4 * (cached + seq).

} // namespace cuda
} // namespace sq

#endif // SQ_LIB_RUNTIME_CUDA_KERNELABI_H
