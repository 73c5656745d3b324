//===- RotationObjectiveImpl.h - RotationObjective's state ----*- C++ -*-===//
//
// Private to lib/Transforms: the state of a RotationObjective, shared by
// RotationObjective.cpp (create(), learned clipping, GPTQ's Hessians) and
// RotationObjectiveEval.cpp (evaluate(): the loss and its gradient).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_ROTATIONOBJECTIVEIMPL_H
#define SQ_LIB_TRANSFORMS_ROTATIONOBJECTIVEIMPL_H

#include "ScaleSites.h"
#include "sq/Exec/Executor.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace sq {
namespace objective {

/// Output: the bias of a reader (v_proj's), on the output side, which R1
/// leaves alone (only R2 rotates it).
enum class Role { Embedding, Reader, Writer, Output };

/// A weight that R1 (and maybe R2) rotates, [rows, cols] row-major; a bias
/// [n] is a column [n, 1].
struct Entry {
  std::string name;
  Role role;
  int64_t rows = 0, cols = 0;
  /// v_proj (R2^T on the rows of each KV head) or o_proj (R2 on the
  /// columns of each head) of this layer; -1 for neither.
  int64_t r2Layer = -1;
  bool isValue = false;
  /// The embedding table read only by sq.embedding: only the rows of the
  /// batch's tokens are rotated (and contribute to dL/dR1).
  bool rowsOnly = false;
  /// Fake-quantized while training (linear weights but lm_head, when the
  /// spec quantizes weights).
  bool quantize = false;
  /// Training under gptq: the float model's Hessian of this weight's input
  /// (shared by the weights that read the same input: q/k/v, gate/up).
  std::shared_ptr<const std::vector<double>> hessian;
  /// The linear of the float module that reads this weight.
  mlir::Operation *linear = nullptr;
  /// The frozen weight (the executor's storage at creation, no copy: fp32,
  /// or 16-bit widened a block at a time), which the rotations are folded
  /// into at every step.
  Executor::WeightSnapshot base;
  /// W R1 (v_proj) or R1^T W (o_proj) of the current step, for dL/dR2.
  std::vector<float> partial;
  /// Learned scales (ScaleSites.h) on its rows (a bias's entries) and on
  /// its columns, applied after R1, and before R2 on R2's weights (then
  /// `partial` is scaled): the site's index (-1: none) and how it scales
  /// this weight.
  int64_t rowSite = -1, colSite = -1;
  ScaleUse rowUse, colUse;
  /// The scaled weight of the current step (before weight quantization),
  /// for dL/du, and (learned scales) its quantization, for the gradient
  /// through the quantization range (numerics::fakeQuantRangeBackward).
  std::vector<float> scaled;
  numerics::QuantizedWeight quantized;
  /// Learned weight clipping: the first of this weight's per-row ratios in
  /// Rotations::weightClips (-1: none), and the rotated weight before its
  /// fake quantization (for the clip-aware gradient).
  int64_t clipOffset = -1;
  std::vector<float> rotated;
  /// The weight before its learned-clip fake quantization: `rotated`, or
  /// `scaled` where that holds it (learned scales; `rotated` is then
  /// empty).
  const std::vector<float> &preClip() const {
    return rotated.empty() ? scaled : rotated;
  }
};

/// `e.base`'s values as fp32: in place where they are held so, else widened
/// into `scratch` (a transient of the weight's size).
inline const float *baseValues(const Entry &e, std::vector<float> &scratch) {
  if (const float *f = e.base.f32())
    return f;
  scratch.resize(e.rows * e.cols);
  e.base.widenRows(0, e.rows, scratch.data());
  return scratch.data();
}

/// Rows `ids` of `e.base` as fp32, one after the other.
inline std::vector<float> baseRows(const Entry &e,
                                   const std::vector<int64_t> &ids) {
  std::vector<float> rows(ids.size() * e.cols);
  for (size_t i = 0; i < ids.size(); ++i)
    e.base.widenRows(ids[i], 1, rows.data() + i * e.cols);
  return rows;
}

/// Calls fn(row, count, values) over `e.base`'s rows as fp32: all at once
/// where they are held so, else kBaseRows rows at a time widened into a
/// scratch buffer (a multiple of gemmF32's K block, so that products summed
/// over the rows add the same blocks in the same order).
template <typename Fn> void forBaseRows(const Entry &e, Fn fn) {
  if (const float *f = e.base.f32()) {
    fn(int64_t(0), e.rows, f);
    return;
  }
  constexpr int64_t kBaseRows = 2048;
  std::vector<float> block(std::min(kBaseRows, e.rows) * e.cols);
  for (int64_t r0 = 0; r0 < e.rows; r0 += kBaseRows) {
    int64_t count = std::min(kBaseRows, e.rows - r0);
    e.base.widenRows(r0, count, block.data());
    fn(r0, count, static_cast<const float *>(block.data()));
  }
}

/// An activation or KV-cache quantizer of the training clone whose clip
/// ratio is learned: its initial ratio and the ops of the source module
/// (with the attribute) that --sq-quantize reads the learned one from.
struct ClipSite {
  double init = 1.0;
  std::vector<std::pair<mlir::Operation *, const char *>> targets;
};

} // namespace objective

struct RotationObjective::Impl {
  using Entry = objective::Entry;
  using ClipSite = objective::ClipSite;
  /// The weights formulation: the rotated values, those a quantizer or a
  /// scale site reads, and the bytes it was estimated to add (create()).
  int64_t rotatedValues = 0, preQuantValues = 0, plannedBytes = 0;
  /// An error (the one-line refusal) unless `need` more bytes fit in what
  /// this process may add (SQ_MEMORY_BUDGET_MB, else MemAvailable).
  bool checkMemory(int64_t need, std::string &error) const;
  mlir::ModuleOp source;
  mlir::OwningOpRef<mlir::ModuleOp> clone;
  std::unique_ptr<Executor> ex;
  QuantSpec spec;
  std::vector<Entry> entries;
  /// The trainable R3 weights of the clone, one per layer (learnR3).
  std::vector<std::string> r3Names;
  /// The R1/R2 and embedding rows of the last complete fold: the executor
  /// holds its weights (and the entries their `partial`) while they match.
  bool folded = false;
  std::vector<double> foldedR1;
  std::vector<std::vector<double>> foldedR2;
  /// The embedding rows the executor holds rotated by foldedR1.
  std::set<int64_t> rowsRotated;
  int64_t hidden = 0, headDim = 0, layers = 0, vocab = 0, maxPositions = 0;
  /// The activations formulation: the clone's trainable R1 and, per layer,
  /// R2 (empty name: no R2 site in that layer, nothing quantized between
  /// v_proj and o_proj).
  bool activations = false;
  bool bf16 = false;
  /// Windows per forward/backward (0: the whole batch at once).
  int64_t microBatch = 0;
  std::string r1Name;
  std::vector<std::string> r2Names;
  /// Learned clipping (enableLearnedClipping).
  bool learnActClips = false, learnWeightClips = false;
  std::vector<ClipSite> clipSites;
  int64_t weightClipCount = 0;
  std::vector<double> foldedWClips;
  /// Learned scales: the clone's sites, the trainable weight each norm site
  /// gives its RMSNorm (empty for the other sites), and the log-scales of
  /// the last complete fold.
  bool learnScales = false;
  std::vector<ScaleSite> scaleSites;
  std::vector<std::string> normScaleNames;
  std::vector<std::vector<double>> foldedScales;
  /// setScaleSidesForTesting: 0 both sides, +1 / -1 only the uses that
  /// multiply by s / by 1/s (the norms count as s).
  int scaleSides = 0;
};

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_ROTATIONOBJECTIVEIMPL_H
