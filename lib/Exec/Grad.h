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
                       Tensor &dq, Tensor &dk, Tensor &dv, bool bf16 = false);

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

/// The reference distributions of a distillation loss (sq::SoftTargets
/// seen as raw arrays): row r of the logits has `width` reference
/// log-probabilities logProbs[r * width + j] of the tokens ids[r * width +
/// j] (ids null: token j, and width is the vocabulary).
struct SoftRows {
  int64_t width = 0;
  const int32_t *ids = nullptr;
  const float *logProbs = nullptr;
};

/// The loss of one row of logits ([vocab]) and, with `dLogits` (vocab
/// entries, every one written), `scale` times its gradient. Without `soft`:
/// the negative log-likelihood of `token` (in [0, vocab)), gradient
/// softmax - onehot(token). With `soft` (one row: `width` entries of `ids`,
/// or the whole vocabulary, and `logProbs`): KL(p || q) = sum_j p_j (log p_j
/// - log q_j) over those tokens, p_j = exp(logProbs[j]), q the softmax of
/// the logits restricted to them; gradient q_j * sum(p) - p_j on those
/// tokens (q_j - p_j when p sums to 1), 0 elsewhere. Log-sum-exp in double;
/// terms with p_j = 0 count 0. `scratch` is reused between calls.
double rowLoss(const float *logits, int64_t vocab, int64_t token,
               const SoftRows *soft, float *dLogits, double scale,
               std::vector<double> &scratch);

/// Next-token cross-entropy. logits [b, s, vocab] (any leading shape);
/// targets holds one id per row of logits, and only ids in [0, vocab) are
/// scored (-1: not scored). Returns the mean negative log-likelihood over the
/// scored rows (log-sum-exp in double), 0 when none is; `count` is their
/// number. dLogits = (softmax - onehot(target)) / count on scored rows, 0
/// elsewhere. With `rowLosses`, also each row's negative log-likelihood (0 on
/// rows not scored). Without `withGradient`, dLogits is left alone (the
/// loss alone allocates nothing of the logits' size). With `soft` (one
/// reference distribution per row of logits), the scored rows' loss is
/// their KL divergence from it instead (rowLoss above), the target ids only
/// choosing which rows are scored.
double crossEntropy(const Tensor &logits, const std::vector<int64_t> &targets,
                    Tensor &dLogits, int64_t &count,
                    std::vector<double> *rowLosses = nullptr,
                    bool withGradient = true, const SoftRows *soft = nullptr);

/// A loss that is the mean, over the rows of the logits that it scores, of
/// a per-row loss: what headLoss() computes a chunk of rows at a time, so
/// that the logits [tokens, vocab] and their gradient never exist whole.
/// The next-token loss is one (NextTokenRows: cross-entropy, or KL to
/// cached float distributions).
class RowLoss {
public:
  virtual ~RowLoss() = default;
  /// The number of scored rows (the mean's denominator; 0: the loss is 0).
  virtual int64_t count() const = 0;
  /// Rows [first, first + rows) of the logits (`logits`, [rows, vocab],
  /// row-major): each row's loss to `loss[i]` (0 on rows not scored) and,
  /// when `grad` is not null, `scale` times d(row loss)/d(logits) to `grad`
  /// ([rows, vocab]; 0 on rows not scored; it may be `logits` itself).
  virtual void rows(int64_t first, int64_t rows, const float *logits,
                    int64_t vocab, double *loss, float *grad, double scale) = 0;
};

/// The next-token loss as a RowLoss: row r is scored when targets[r] is in
/// [0, vocab); its loss (rowLoss) is the negative log-likelihood of the
/// target (gradient softmax - onehot(target)), or with `soft` (a reference
/// distribution for every row of the logits) the KL divergence of the
/// logits' distribution from row r's.
class NextTokenRows : public RowLoss {
public:
  NextTokenRows(const std::vector<int64_t> &targets, int64_t vocab,
                const SoftRows *soft = nullptr);
  int64_t count() const override { return scored; }
  void rows(int64_t first, int64_t rows, const float *logits, int64_t vocab,
            double *loss, float *grad, double scale) override;

private:
  const std::vector<int64_t> &targets;
  SoftRows soft; // logProbs null: cross-entropy
  int64_t scored = 0;
};

/// Rows of logits headLoss() computes at a time for `vocab` (about 64 MiB
/// of fp32 logits, 16 to 512 rows).
int64_t headLossChunkRows(int64_t vocab);

/// The output head and the loss together: logits = x W^T (+ bias) for
/// `chunkRows` rows of x ([..., hidden]) at a time (exactly the rows
/// linear() would compute), `loss` on each chunk, then, when asked, the
/// chunk's contribution to dx ([..., hidden], the rows of the chunk), dW
/// (like W, fp32, accumulated over chunks) and db (summed in double over
/// all rows). Returns the mean loss over the scored rows (summed in row
/// order: the value crossEntropy() gives on the whole logits); `rowLoss`
/// (if given) receives every row's loss. Peak memory: two chunks of logits.
double headLoss(const Tensor &x, const Tensor &w, const Tensor *bias,
                RowLoss &loss, int64_t chunkRows, std::vector<double> *rowLoss,
                Tensor *dx, Tensor *dW, Tensor *db);

} // namespace exec
} // namespace sq

#endif // SQ_LIB_EXEC_GRAD_H
