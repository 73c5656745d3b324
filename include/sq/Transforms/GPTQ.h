//===- GPTQ.h - GPTQ weight quantization ---------------------------*- C++
//-*-===//
//
// GPTQ (Frantar et al. 2022) as the official SpinQuant/QuaRot code runs it:
// columns quantized one at a time, the rounding error spread over the
// columns not yet quantized through the inverse Hessian's Cholesky factor,
// in blocks with lazy batch updates; dampening, optional act-order.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_GPTQ_H
#define SQ_TRANSFORMS_GPTQ_H

#include "sq/Numerics/Quantize.h"

#include <string>
#include <vector>

namespace sq {

struct GPTQOptions {
  double damp = 0.01;      ///< fraction of mean(diag(H)) added to the diagonal
  int64_t block = 128;     ///< columns per lazy-batch block
  bool actOrder = false;   ///< quantize columns by decreasing diag(H)
  bool clipSearch = false; ///< MSE clip search for the scales
  /// Learned per-output-channel clip ratios for the scales ([rows]; null:
  /// the grid's clip).
  const float *rowClips = nullptr;
};

/// Accumulates the GPTQ Hessian H = (2 / n) sum x^T x of a linear layer's
/// inputs, one row of `cols` values per token.
class HessianAccumulator {
public:
  explicit HessianAccumulator(int64_t cols = 0) : cols(cols), h(cols * cols) {}
  void add(const float *rows, int64_t count);
  /// H, [cols, cols] row-major, with the running 2/n normalization.
  const std::vector<double> &hessian() const { return h; }
  int64_t samples() const { return n; }
  int64_t columns() const { return cols; }
  /// Replaces the state with H = sum / samples: a data-parallel collection
  /// sums hessian() * samples() and samples() over the processes.
  void assign(std::vector<double> sum, int64_t samples) {
    h = std::move(sum);
    n = samples;
    if (n > 0)
      for (double &v : h)
        v /= double(n);
  }

private:
  int64_t cols, n = 0;
  std::vector<double> h;
};

/// Quantizes `w` [rows, cols] with GPTQ under `grid`, given the Hessian of
/// its inputs. Fails with `error` on non-finite weights, a group that does
/// not divide `cols`, or a Hessian that stays singular after dampening.
bool quantizeGPTQ(const float *w, int64_t rows, int64_t cols,
                  const std::vector<double> &hessian,
                  const numerics::QuantGrid &grid, const GPTQOptions &options,
                  numerics::QuantizedWeight &out, std::string &error);

} // namespace sq

#endif // SQ_TRANSFORMS_GPTQ_H
