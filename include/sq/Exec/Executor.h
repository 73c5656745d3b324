//===- Executor.h - reference executor for sq modules ------------*- C++
//-*-===//
//
// Runs the @forward function of an sq module on the CPU in fp32: the oracle
// of every later step (rotation invariance, quantization, compiled code).
// Linear weights and embedding tables stored in f16/bf16 are read in place
// from the module's resources (the module must outlive the executor, and
// its weights must not be rewritten meanwhile; setWeightValues changes the
// executor's own copy) and widened to fp32 a panel at a time; other weights
// are widened once. Linear layers and the per-head products of attention go
// through OpenBLAS sgemm.
//
// The executor owns a KV cache per attention op: forward() continues after
// the tokens already cached (positions cached + i), so a prompt can be
// prefilled and then decoded one token at a time. This works for every
// imported model, whether its IR carries cache operands or not.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_EXECUTOR_H
#define SQ_EXEC_EXECUTOR_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sq {

namespace exec {
struct Tensor;
} // namespace exec

/// What the executor needs to know about a model (from sq.config when
/// present, otherwise from the IR).
struct ModelInfo {
  int64_t vocabSize = 0;
  int64_t numLayers = 0;
  /// 0 when unknown.
  int64_t maxPositions = 0;
};

/// How the executor multiplies activations by frozen weights.
enum class ExecPrecision {
  /// OpenBLAS sgemm in fp32 (16-bit weights widened a panel at a time).
  F32,
  /// Linear weights and embedding tables in bf16 (a bf16 resource is read
  /// in place, an f16 one read in place and rounded to bf16 a panel at a
  /// time as the products read it, an f32 one rounded to bf16 once), the
  /// linears' forward and input gradient, and sq.rotate, on the CPU's bf16
  /// units (numerics::gemm: AMX or AVX-512 BF16) with fp32 sums.
  BF16
};

/// Activation checkpointing in lossAndGradients.
enum class ExecCheckpoint {
  /// On when the tape of the whole forward (estimated from the shapes of
  /// the values the backward reads) would exceed a quarter of the
  /// machine's physical memory (at least 2 GiB).
  Auto,
  /// The forward keeps only the residual stream between transformer blocks
  /// (and the last block's values); the backward recomputes each block's
  /// forward from its saved input before running its backward. One more
  /// forward of all blocks but the last (about a third more work when the
  /// backward computes weight gradients, half when it does not); the same
  /// gradients bit for bit.
  On,
  /// The whole tape at once.
  Off
};

struct ExecutorOptions {
  ExecPrecision precision = ExecPrecision::F32;
  /// lossAndGradients' checkpointing.
  ExecCheckpoint checkpoint = ExecCheckpoint::Auto;
  /// Rows of logits the loss computes at a time when @forward ends in a
  /// linear head (0: about 64 MiB of logits; loss() and lossAndGradients()
  /// never hold the logits of all tokens).
  int64_t lossChunkRows = 0;
  /// lossAndGradients: sq.fake_quant's gradient also differentiates each
  /// group's scale through the group's extremes
  /// (numerics::fakeQuantRangeBackward; round() still passes straight
  /// through). Off: the plain straight-through estimator. (Learned scalings
  /// need it: without it a scaled-up channel looks free.)
  bool quantRangeGradient = false;
};

/// Reference distributions for the training loss (distillation): instead of
/// the cross-entropy of the next token, the loss of each scored position is
/// KL(p || q), p the reference distribution stored here and q the model's
/// softmax over the same tokens. Row r (= b * seq + s of a [batch, seq]
/// call; every row of the batch, the unscored last position included) has
/// `width` entries from r * width: log-probabilities `logProbs` of the
/// tokens `ids` (empty: the whole vocabulary in order, width == vocab). Over
/// a subset (OSTQuant's KL-Top), p's log-probabilities are taken as given
/// (the caller renormalizes them) and q is the softmax of the model's logits
/// of those tokens only, renormalized over them.
struct SoftTargets {
  int64_t width = 0;
  std::vector<int32_t> ids;
  std::vector<float> logProbs;
};

class Executor {
public:
  ~Executor();

  /// Prepares `module` (its @forward) for execution: loads and widens the
  /// weights. Returns null with a one-line `error` for IR it cannot run.
  static std::unique_ptr<Executor> create(mlir::ModuleOp module,
                                          std::string &error,
                                          const ExecutorOptions &options = {});

  const ModelInfo &info() const;

  /// Runs `tokens` ([batch, seq], row-major) after the cached tokens and
  /// returns the logits [batch, seq, vocab]. The batch size must stay the
  /// same until reset(). Returns false with `error` on bad input.
  bool forward(llvm::ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error);

  /// Called with each sq.linear / sq.qlinear's float input
  /// [rows = batch * seq, cols = in_features] before the op runs (GPTQ
  /// collects its Hessians this way). Empty to remove.
  using LinearObserver = std::function<void(
      mlir::Operation *linear, const float *input, int64_t rows, int64_t cols)>;
  void setLinearObserver(LinearObserver observer);

  /// Forgets the KV cache.
  void reset();
  /// Tokens per sequence in the KV cache.
  int64_t cachedTokens() const;

  //===--- Training (the Cayley calibration of R1/R2) ---------------------===//

  /// The fp32 values the executor runs for the float weight `name`
  /// (row-major, a copy); empty when there is no such weight.
  std::vector<float> weightValues(llvm::StringRef name) const;
  /// A float weight's values as the executor holds them now, without a
  /// copy (fp32, a 16-bit resource read in place, or bf16), still valid
  /// after setWeightValues / setWeightRows replace the executor's own: the
  /// frozen originals that the calibration folds its rotations into at
  /// every step. Read as weightValues' fp32 values, a block of rows at a
  /// time (a 1-D weight as one column). Empty (false) when there is no such
  /// float weight of rank 1 or 2.
  class WeightSnapshot {
  public:
    explicit operator bool() const { return t != nullptr; }
    int64_t rows() const;
    int64_t cols() const;
    /// The fp32 values (row-major) when they are held as fp32, else null.
    const float *f32() const;
    /// Rows [row, row + count) as fp32 into `out` ([count, cols]).
    void widenRows(int64_t row, int64_t count, float *out) const;

  private:
    friend class Executor;
    std::shared_ptr<const exec::Tensor> t;
  };
  WeightSnapshot weightSnapshot(llvm::StringRef name) const;
  /// Replaces the fp32 values of weight `name` (same number of elements);
  /// the IR is not touched. Returns false with `error` otherwise.
  bool setWeightValues(llvm::StringRef name, llvm::ArrayRef<float> values,
                       std::string &error);

  /// Replaces rows `rows` of the 2-D float weight `name` ([rows.size(),
  /// cols] values, row-major); the other rows keep their values.
  bool setWeightRows(llvm::StringRef name, llvm::ArrayRef<int64_t> rows,
                     llvm::ArrayRef<float> values, std::string &error);

  /// The next-token loss of `tokens` ([batch, seq]) and its gradient with
  /// respect to the weights named in `wrt`: a forward from position 0 (the
  /// KV cache is neither used nor changed) that keeps every intermediate,
  /// the mean cross-entropy of predicting token i + 1 from the prefix up to
  /// i, then the backward pass, op by op in reverse (each op's
  /// vector-Jacobian product; sq.fake_quant passes gradients straight
  /// through). `grads[k]` is dL/d(weight wrt[k]) with the weight's shape.
  /// Only the intermediates some backward step reads are kept (a linear's
  /// input only when its weight is in `wrt`), each freed once the backward
  /// has passed its first use, and no weight outside `wrt` gets a gradient.
  /// When @forward ends in a linear head, its logits, the loss and their
  /// gradient are computed a chunk of rows at a time (lossChunkRows); with
  /// checkpointing (ExecCheckpoint) only one transformer block's
  /// intermediates exist at a time.
  bool lossAndGradients(llvm::ArrayRef<int64_t> tokens, int64_t batch,
                        int64_t seq, llvm::ArrayRef<std::string> wrt,
                        double &loss, std::vector<std::vector<float>> &grads,
                        std::string &error, const SoftTargets *soft = nullptr);
  /// lossAndGradients, each weight's gradient handed to `sink` as soon as
  /// it is complete (the backward has passed the first op, in program
  /// order, that reads the weight) and freed after the call: one weight's
  /// gradient exists at a time instead of all of them (the weights
  /// formulation of the calibration: 4 bytes per trained value less).
  /// `sink(k, grad, error)` gets dL/d(weight wrt[k]) with the weight's
  /// shape, row-major, to read or overwrite; weights the loss does not
  /// reach get zeros. Order: the backward's (the last-read weight first).
  /// A false return stops the pass with `error`. The gradients are the
  /// other overload's bit for bit.
  using GradientSink = llvm::function_ref<bool(
      size_t k, llvm::MutableArrayRef<float> grad, std::string &error)>;
  bool lossAndGradients(llvm::ArrayRef<int64_t> tokens, int64_t batch,
                        int64_t seq, llvm::ArrayRef<std::string> wrt,
                        double &loss, GradientSink sink, std::string &error,
                        const SoftTargets *soft = nullptr);
  /// The same loss without the backward pass (nothing is kept). With
  /// `sequenceLosses`, also the mean cross-entropy of each of the `batch`
  /// sequences.
  /// With `soft` (both functions), the loss is the mean KL divergence from
  /// those reference distributions at the same positions (SoftTargets;
  /// `tokens` are still the input), the gradient exact.
  bool loss(llvm::ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
            double &loss, std::string &error,
            std::vector<double> *sequenceLosses = nullptr,
            const SoftTargets *soft = nullptr);

  /// Learned clipping: the clip ratios of the sq.fake_quant ops of
  /// @forward, one per op in program order (numFakeQuantSites()), replacing
  /// their attributes' ratios in every run until cleared (empty `clips`).
  /// While set, lossAndGradients differentiates each fake quantization with
  /// respect to its input and its clip ratio
  /// (numerics::fakeQuantRowsBackward: zero for clamped values, the range's
  /// terms to the values that set it) instead of passing the gradient
  /// straight through, and clipGradients() holds dL/dclip per site
  /// afterwards.
  int64_t numFakeQuantSites() const;
  bool setFakeQuantClips(llvm::ArrayRef<double> clips, std::string &error);
  const std::vector<double> &clipGradients() const;

  /// Changes lossAndGradients' checkpointing (ExecutorOptions::checkpoint).
  void setCheckpoint(ExecCheckpoint checkpoint);
  /// The segments checkpointing recomputes one at a time: the embedding,
  /// each transformer block, the final norm (1: the model has no cut where
  /// only the residual stream is live, and is never checkpointed).
  int64_t checkpointSegments() const;

  /// Forward-prefix reuse for repeated loss() calls on the same windows
  /// while only later blocks' weights change (the R3 search tries one
  /// layer's candidates at a time): loss() keeps the input of every
  /// checkpoint segment (checkpointSegments) of the token batches it ran,
  /// least recently used dropped beyond `maxBytes` in all, and starts the
  /// forward of a batch it holds at the first segment whose weights
  /// changed since (setWeightValues / setWeightRows, changed values;
  /// setFakeQuantClips with other ratios changes every segment). The same
  /// arithmetic: losses bit for bit those of a whole forward. 0 (the
  /// default) turns it off and frees what it holds; kPrefixCacheAuto
  /// allows a quarter of the machine's physical memory. Not used while a
  /// linear observer is set.
  static constexpr int64_t kPrefixCacheAuto = -1;
  void setPrefixCache(int64_t maxBytes);
  /// The segments the forwards of loss() and lossAndGradients() ran since
  /// the executor was created, and those whole forwards would have run
  /// (the prefix cache's saving; for tests and the R3 search's report).
  struct SegmentCounts {
    int64_t run = 0, whole = 0;
  };
  SegmentCounts segmentCounts() const;

  /// Internal state (opaque).
  struct Impl;

private:
  Executor();
  std::unique_ptr<Impl> impl;
};

} // namespace sq

#endif // SQ_EXEC_EXECUTOR_H
