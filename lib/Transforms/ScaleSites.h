//===- ScaleSites.h - the exactly foldable diagonal scalings ----*- C++ -*-===//
//
// The sites where a learned diagonal scaling s (OSTQuant's, SmoothQuant's)
// sits between two linear maps and folds into the weights exactly, read off
// the structure of a model ready for R1 (weightless RMSNorms):
//
// - attn-input / mlp-input: the normalized residual stream into q/k/v and
//   into gate/up (hidden). The RMSNorm gets the weight s again and the
//   readers' columns 1/s. In the R1-rotated basis: orthogonal, then
//   diagonal (x -> Q(n(x R1) s), readers W R1 diag(1/s)).
// - qk: one s per RoPE pair of each KV head (head_dim / 2 per KV head): the
//   k_proj rows of both members of the pair (i and i + head_dim/2 for
//   rotate_half RoPE, 2i and 2i + 1 for interleaved) and its bias get s, the
//   q_proj rows (and bias) of every query head of the group 1/s. RoPE
//   rotates each pair by an angle, which commutes with a scalar on the pair,
//   so Q K^T is unchanged; the key cache's quantizer (after R3) sees the
//   scaled keys.
// - value: one s per dimension of each KV head: v_proj rows (and bias)
//   get s, the o_proj columns of every query head of the group 1/s, in the
//   heads' own basis, before R2 (v diag(s) R2, o_proj R2^T diag(1/s) ...):
//   an outlier dimension of v_proj and o_proj is undone there, where after
//   R2 it is spread over the head. R1 commutes with it.
// - up: one s per intermediate channel: up_proj rows (and bias) get s,
//   down_proj columns 1/s (silu(gate) * up is linear in up). When down_proj
//   reads through the online Hadamard R4 (its weight already W T), the scale
//   goes before T: W <- (W T^T diag(1/s)) T.
//
// The parameters are log-scales u (s = exp(u)), one vector per site, in the
// order findScaleSites returns them (per layer: attn-input, qk, value,
// mlp-input, up).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_SCALESITES_H
#define SQ_LIB_TRANSFORMS_SCALESITES_H

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Transforms/PassOptionTypes.h"

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sq {

enum class ScaleKind { AttnInput, QK, Value, MlpInput, Up };

/// One weight (or bias) that a site scales: entry i of its rows (a bias's
/// entries) or of its columns is multiplied by exp(sign * u[index[i]]).
struct ScaleUse {
  std::string name;  ///< the sq.weight's name
  LinearOp user;     ///< the linear that reads it
  bool bias = false; ///< its bias (else its weight)
  bool columns = false;
  int sign = 1; ///< +1: s, -1: 1/s
  std::vector<int64_t> index;
  /// Columns read through an online transform T (R4, sq.hadamard of the
  /// whole input): the scale applies before it, W <- (W T^T D) T.
  bool transformed = false;
  uint64_t seed = 0; ///< T's seed (numerics::orthogonalTransformInPlace)
};

struct ScaleSite {
  ScaleKind kind;
  int64_t layer = 0;
  int64_t size = 0;
  /// attn-input / mlp-input: the RMSNorm whose output gets s.
  RMSNormOp norm;
  std::vector<ScaleUse> uses;
  /// "layers.L.attn_input.scale" etc. (the rotation file's name).
  std::string name() const;
};

/// The sites of `module` (weightless RMSNorms; R3/R4 may be in place,
/// R1/R2 folded or not). False with `error` when the structure is not the
/// LLaMA-style one the sites need.
bool findScaleSites(mlir::ModuleOp module, std::vector<ScaleSite> &sites,
                    std::string &error);

/// exp(sign * u[index[i]]) for each entry of `use`.
std::vector<double> scaleFactors(const ScaleUse &use,
                                 const std::vector<double> &logScales);

/// Multiplies the [rows, cols] weight `w` as `use` says (`factors` from
/// scaleFactors). The columns of a transformed use: w <- (w T^T D) T.
void applyScale(const ScaleUse &use, const std::vector<double> &factors,
                float *w, int64_t rows, int64_t cols);

/// Each of the `rows` rows x of `w` ([rows, n]) becomes x T (x T^T with
/// `transpose`), T the transform of sq.hadamard of size n with `seed`
/// (numerics::orthogonalTransformInPlace); as one dense product where the
/// fast transform is slow (numerics::preferDenseTransform).
void transformRows(float *w, int64_t rows, int64_t n, uint64_t seed,
                   bool transpose);

/// Folds the scales exp(logScales[k]) of `sites` (findScaleSites of this
/// module) into its weights: the norms get a weight s (fp32), the weights
/// and biases of each use are rewritten (storage as WeightStorage).
mlir::LogicalResult
foldScales(mlir::ModuleOp module, const std::vector<ScaleSite> &sites,
           const std::vector<std::vector<double>> &logScales,
           WeightStorage storage);

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_SCALESITES_H
