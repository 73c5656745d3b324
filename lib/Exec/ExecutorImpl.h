//===- ExecutorImpl.h - the reference executor's state (private) -*- C++
//-*-===//
//
// Executor::Impl and the forward helpers that Executor.cpp (loading,
// inference) and ExecutorTraining.cpp (weights by name, loss and
// gradients) share. Private to lib/Exec.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_EXEC_EXECUTORIMPL_H
#define SQ_LIB_EXEC_EXECUTORIMPL_H

#include "Kernels.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace sq {

using llvm::SmallVector;
using mlir::Operation;
using mlir::Value;

struct Executor::Impl {
  mlir::func::FuncOp func;
  ModelInfo info;
  llvm::DenseMap<Operation *, exec::Tensor> weights;
  /// Float weights by name (for training).
  llvm::StringMap<Operation *> weightByName;
  /// sq.qlinear's weights, dequantized to fp32 once at load.
  llvm::DenseMap<Operation *, exec::Tensor> qweights;
  LinearObserver observer;
  /// Per attention op (in program order): keys and values so far,
  /// [batch, cached, kv_features].
  struct Cache {
    std::shared_ptr<exec::FloatBuffer> keys, values;
  };
  llvm::DenseMap<Operation *, Cache> caches;
  int64_t cached = 0, cachedBatch = 0;
  /// For each op, the values whose last use it is.
  llvm::DenseMap<Operation *, SmallVector<Value>> lastUses;
  /// For each op, the values whose first use it is (the backward pass frees
  /// them from the tape after that op).
  llvm::DenseMap<Operation *, SmallVector<Value>> firstUses;
  /// ExecPrecision::BF16.
  bool bf16 = false;
  /// Learned clipping: each sq.fake_quant's index in program order, the
  /// clip ratios that replace the attributes' (empty: none) and the last
  /// dL/dclip.
  llvm::DenseMap<Operation *, int64_t> fakeQuantSite;
  std::vector<double> clips, clipGrads;
  /// The loss: the sq.linear computing the logits (lm_head) when @forward
  /// returns one directly; its logits are then computed a chunk of
  /// `lossChunkRows` rows at a time with the loss (exec::headLoss). Null:
  /// the whole logits, then the loss.
  LinearOp head;
  int64_t lossChunkRows = 0;
  /// Checkpointing (lossAndGradients): the first op of each segment (one
  /// transformer block; the first starts the body) and the one activation
  /// live there (null for the first), see findSegments.
  SmallVector<Operation *> segmentStart;
  SmallVector<Value> segmentInput;
  ExecCheckpoint checkpoint = ExecCheckpoint::Auto;
  bool quantRangeGradient = false;
  /// The first segment whose ops read each weight (segmentStart.size():
  /// read only after the last, by the head).
  llvm::DenseMap<Operation *, size_t> weightSegment;
  /// Executor::setPrefixCache: the segment inputs of recent loss() batches.
  struct Prefix {
    std::vector<int64_t> tokens;
    int64_t batch = 0, seq = 0;
    std::vector<exec::Tensor> inputs; ///< per segment (the first: none)
    /// The first segment whose weights changed since `inputs` were made
    /// (the inputs of segments up to it are still valid).
    size_t dirtyFrom = SIZE_MAX;
    uint64_t used = 0;
    int64_t bytes = 0;
  };
  std::vector<Prefix> prefixes;
  int64_t prefixMaxBytes = 0;
  uint64_t prefixClock = 0;
  Executor::SegmentCounts segmentCounts;
  /// A change of the weights read from `segment` on.
  void invalidateFrom(size_t segment) {
    for (Prefix &p : prefixes)
      p.dirtyFrom = std::min(p.dirtyFrom, segment);
  }
  void invalidateWeight(Operation *weight) {
    if (prefixes.empty())
      return;
    auto it = weightSegment.find(weight);
    invalidateFrom(it == weightSegment.end() ? 0 : it->second);
  }
};

namespace detail {
/// An error unless every id of `tokens` is in [0, vocabSize).
bool checkTokenIds(const ModelInfo &info, llvm::ArrayRef<int64_t> tokens,
                   std::string &error);
/// The ids and positions of `tokens` ([batch, seq]; positions from
/// `cached` on) as @forward's first two arguments in `values`.
void setInputs(Executor::Impl &impl, llvm::ArrayRef<int64_t> tokens,
               int64_t batch, int64_t seq, int64_t cached,
               llvm::DenseMap<Value, exec::Tensor> &values);
/// Runs the ops of @forward from `begin` up to (not including) `end` (null:
/// to the end) on `values`, freeing each value after its last use unless
/// `keep` holds it (a tape for the backward pass); `training`: positions
/// from 0 and no KV cache; `observe`: call the linear observer.
bool runOps(Executor::Impl &impl, Operation *begin, Operation *end,
            bool training, llvm::DenseMap<Value, exec::Tensor> &values,
            std::string &error, const llvm::DenseSet<Value> *keep = nullptr,
            bool observe = true);
} // namespace detail

} // namespace sq

#endif // SQ_LIB_EXEC_EXECUTORIMPL_H
