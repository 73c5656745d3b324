//===- Grad.h - fp32 backward kernels of the executor -----------*- C++ -*-===//
//
// Internal to lib/Exec. The vector-Jacobian products of the forward kernels
// of Kernels.h, for the backward pass of Executor::lossAndGradients, and the
// next-token cross-entropy with its gradient. Every output gradient is a
// freshly allocated tensor with the shape of the corresponding input, fully
// written (never accumulated into). Matrix products through OpenBLAS sgemm.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_EXEC_GRAD_H
#define SQ_LIB_EXEC_GRAD_H

#include "Kernels.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sq {
namespace exec {

/// embedding(): dTable [vocab, dim] is zero except the rows of the ids used,
/// which get the sum of the rows of dOut ([ids..., dim]) looking them up.
/// Ids outside [0, vocab) (rejected by the forward) are ignored.
void embeddingBackward(const Tensor &ids, const Tensor &dOut, int64_t vocab,
                       Tensor &dTable);

/// rmsNorm(): y = x * r * g per row of the last dim, r = 1 / sqrt(mean(x^2) +
/// eps), g = scale (or 1). With `dScale` (and a scale), also dL/dg =
/// sum over the rows of dOut * x * r (summed in double).
void rmsNormBackward(const Tensor &x, const Tensor *scale, double eps,
                     const Tensor &dOut, Tensor &dx, Tensor *dScale = nullptr);

/// fakeQuant()'s range part of the VJP (numerics::fakeQuantRangeBackward),
/// added to `dx`, which holds the straight-through dy on entry.
void fakeQuantRangeBackward(const Tensor &x, unsigned bits, bool symmetric,
                            int granularity, int64_t groupSize, double clip,
                            Tensor &dx);

/// linear(): y = x W^T (+ b), x [..., in], W [out, in]. dx = dOut W (when dx
/// is not null); dW = dOut^T x, [out, in], summed over all rows of x (when
/// dW is not null); db = dOut summed over all rows, [out] (when db is not
/// null).
void linearBackward(const Tensor &x, const Tensor &w, const Tensor &dOut,
                    Tensor *dx, Tensor *dW, Tensor *db = nullptr);

/// rope(): a rotation of every pair by pos * inv_freq; its VJP is the
/// rotation by the negated angle (same layouts, same float32 angles).
/// Components in no pair (an odd head dim) pass through.
void ropeBackward(const Tensor &dOut, const Tensor &positions, int64_t heads,
                  double theta, bool interleaved, Tensor &dx,
                  const numerics::RopeScaling &scaling = {});

/// attention() without KV cache (cached = 0): q [b, s, heads * d], k and v
/// [b, t, kvHeads * d]. The probabilities are recomputed as the forward
/// does; dk and dv sum over the heads of each group.
void attentionBackward(const Tensor &q, const Tensor &k, const Tensor &v,
                       int64_t heads, int64_t kvHeads, double scale,
                       bool causal, int64_t window, const Tensor &dOut,
                       Tensor &dq, Tensor &dk, Tensor &dv);

/// silu(): y = x * sigmoid(x).
void siluBackward(const Tensor &x, const Tensor &dOut, Tensor &dx);

/// binary() with add = false (a and b of the same shape): da = dOut * b,
/// db = dOut * a.
void mulBackward(const Tensor &a, const Tensor &b, const Tensor &dOut,
                 Tensor &da, Tensor &db);

/// rotate(): y = x R (x R^T when transposed) on every n-block of the last
/// dim, R [n, n]. dx = dOut R^T (dOut R when transposed).
void rotateBackward(const Tensor &dOut, const Tensor &r, bool transposed,
                    Tensor &dx, bool bf16 = false);

/// rotate()'s gradient with respect to R [n, n] (a learned online rotation,
/// SpinQuant's R3 when it is trained): dR = sum over the n-blocks of x^T dOut
/// (dOut^T x when transposed).
void rotateMatrixBackward(const Tensor &x, const Tensor &dOut, int64_t n,
                          bool transposed, Tensor &dR, bool bf16 = false);

/// hadamard(): the transposed transform of numerics::orthogonalTransformInPlace
/// (numerics::orthogonalTransformTransposeInPlace) on every block. Fails
/// when the block size is not positive or does not divide the elements.
bool hadamardBackward(const Tensor &dOut, int64_t block, uint64_t seed,
                      Tensor &dx, std::string &error);

/// Next-token cross-entropy. logits [b, s, vocab] (any leading shape);
/// targets holds one id per row of logits, and only ids in [0, vocab) are
/// scored (-1: not scored). Returns the mean negative log-likelihood over the
/// scored rows (log-sum-exp in double), 0 when none is; `count` is their
/// number. dLogits = (softmax - onehot(target)) / count on scored rows, 0
/// elsewhere. With `rowLoss`, also each row's negative log-likelihood (0 on
/// rows not scored). Without `withGradient`, dLogits is left alone (the
/// loss alone allocates nothing of the logits' size).
double crossEntropy(const Tensor &logits, const std::vector<int64_t> &targets,
                    Tensor &dLogits, int64_t &count,
                    std::vector<double> *rowLoss = nullptr,
                    bool withGradient = true);

} // namespace exec
} // namespace sq

#endif // SQ_LIB_EXEC_GRAD_H
