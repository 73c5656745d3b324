//===- Cayley.h - Cayley SGD on the Stiefel manifold --------------*- C++
//-*-===//
//
// The optimizer SpinQuant learns its rotations with: SGD on the Stiefel
// manifold through the Cayley transform (Li, Fuxin and Todorovic, 2020,
// "Efficient Riemannian optimization on the Stiefel manifold via the Cayley
// transform"), as the official SGDG optimizer (train_utils/optimizer.py, from
// stiefel_optimizer.py) runs it on a square rotation. For a rotation X (n x n,
// row-major, X X^T = I) with loss gradient G = dL/dX and momentum buffer M:
//
//   U  = X with each row divided by (its norm + eps)   (~no-op, as `unit()`)
//   V  = beta M - G^T
//   W^ = V U - 1/2 U^T (U (V U))
//   W  = W^ - W^^T                                      (skew-symmetric)
//   alpha = min(lr, 2q / (||W||_1 + eps))   ||.||_1: max column sum of |W|
//   Y  = U^T + alpha V, then `iterations` times
//   Y  = U^T + alpha W (U^T + Y) / 2                   (fixed point of the
//        Cayley transform (I - alpha/2 W)^-1 (I + alpha/2 W) U^T)
//   X <- Y^T,  M <- W U^T
//
// The cap on alpha bounds alpha ||W||_1 <= 1 so the fixed-point iteration
// contracts, by alpha ||W||_2 / 2 per iteration. The truncated iteration
// leaves X off orthogonal by about that factor to the power `iterations`:
// with the official 5 and a binding cap, about 4e-8 per step at n = 256,
// 2e-6 at n = 64, but 2e-4 at n = 16 and 2e-3 at n = 8 (||W||_2 / ||W||_1
// grows as n shrinks). Callers re-orthonormalize with reorthonormalize()
// now and then (the official optimizer does it with probability 1/101
// before a step), and small rotations want more iterations or a QR every
// step. The learning rate schedule is the caller's (cosineSchedule()).
//
// The momentum recurrence is the one the official code means: its
// `V.copy_(V_new)` writes into the temporary `V = momentum * V - g.t()`, so
// its stored buffer stays zero and momentum > 0 has no effect there; the
// official runs use momentum 0, where both agree.
//
// Matrix products go to OpenBLAS dgemm, all in double (a 4096 x 4096 step
// is nine 4096^3 products, about 1.2 TFLOP), or with CayleyProducts::Float
// to sgemm on float copies (twice the rate, half the memory; without
// momentum the last product, M <- W U^T, is skipped: eight products). Plain
// C++: no MLIR or LLVM header.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_CAYLEY_H
#define SQ_NUMERICS_CAYLEY_H

#include <cstdint>
#include <vector>

namespace sq {
namespace numerics {

/// The precision of cayleyStep's n x n products. Double is the reference.
/// Float rounds U, V and W to float and multiplies with sgemm: each step
/// then moves X off orthogonal by float rounding (about 1e-7 relative),
/// which the callers' periodic reorthonormalize() removes; meant for large
/// rotations (a 7B/8B R1), where the step's cost matters.
enum class CayleyProducts { Double, Float };

struct CayleyOptions {
  /// The step cap of this step (the caller applies the schedule).
  double lr = 1.5;
  /// beta of V = beta M - G^T (0 in the official runs).
  double momentum = 0.0;
  /// alpha = min(lr, 2q / (||W||_1 + eps)).
  double q = 0.5;
  /// In the row normalization and in the step cap, as the official code.
  double eps = 1e-8;
  /// Fixed-point iterations of the Cayley transform.
  int iterations = 5;
  CayleyProducts products = CayleyProducts::Double;
};

/// One Cayley SGD step on the orthogonal n x n matrix X with the loss
/// gradient G (dL/dX, n x n). `momentum` is the optimizer state M (n x n);
/// an empty (or otherwise mis-sized) buffer is taken as zeros and resized.
/// After the step it holds W U^T (with CayleyProducts::Float and momentum 0,
/// where it is never read: zeros). Returns the step size alpha used.
double cayleyStep(std::vector<double> &X, const std::vector<double> &G,
                  int64_t n, std::vector<double> &momentum,
                  const CayleyOptions &opts);

/// The skew-symmetric generator W (n x n) of the step cayleyStep() would take
/// with the same inputs (opts.momentum and opts.eps are used); modifies
/// neither X nor the momentum buffer (which may be empty: zeros).
void cayleyGenerator(const std::vector<double> &X, const std::vector<double> &G,
                     int64_t n, const std::vector<double> &momentum,
                     const CayleyOptions &opts, std::vector<double> &W);

/// Re-orthonormalizes X in place: QR of X^T (Householder, LAPACK dgeqrf /
/// dorgqr, in double) with the signs fixed so that diag(R) > 0, X <- Q^T.
/// This is Gram-Schmidt on the rows of X in order, as the official
/// qr_retraction(); an orthogonal X is left unchanged (up to rounding) and a
/// nearly orthogonal one moves by about its error. A zero diagonal entry of
/// R (rank-deficient X) counts as positive.
void reorthonormalize(std::vector<double> &X, int64_t n);

/// max_ij |(X X^T - I)_ij|.
double orthogonalityError(const std::vector<double> &X, int64_t n);

/// The cosine learning rate at step `step` of `total` (0-based):
/// base * (1 + cos(pi * step / total)) / 2 (base when total <= 0).
double cosineSchedule(double base, int64_t step, int64_t total);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_CAYLEY_H
