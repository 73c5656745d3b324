//===- Calibrate.h - SpinQuant's Cayley calibration of R1/R2 -----*- C++
//-*-===//
//
// Learns the rotations R1 (hidden x hidden) and R2 (head_dim x head_dim per
// layer) as the official SpinQuant training does: the weights stay frozen,
// the rotations are applied to them on the fly (W R1 for readers of the
// residual stream, R1^T W for writers, R2 on v_proj's rows and o_proj's
// columns per head), the network runs fake-quantized (straight-through
// estimator), the loss is next-token cross-entropy, and R1/R2 move by
// Cayley SGD on the Stiefel manifold (numerics::cayleyStep).
//
// The model must be ready for R1: weightless RMSNorms (--sq-fuse-norms),
// optionally with the online Hadamards R3/R4 already in place (R4 stays
// fixed; R3 too unless CalibrationOptions::r3 learns it, beyond the paper).
// It is not rotated or changed here: the caller folds the learned matrices
// (--spinquant-rotate=mode=learned).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_CALIBRATE_H
#define SQ_TRANSFORMS_CALIBRATE_H

#include "sq/Exec/Executor.h"
#include "sq/Transforms/PassOptionTypes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/ArrayRef.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sq {

class Executor;
struct SoftTargets;

/// R1, one R2 per layer and, when R3 is learned too, one R3 per layer
/// (empty otherwise), row-major, in double.
struct Rotations {
  int64_t hidden = 0, headDim = 0;
  std::vector<double> r1;
  std::vector<std::vector<double>> r2;
  /// The online rotation of Q and K after RoPE (head_dim x head_dim, shared
  /// by the heads of a layer): x -> x R3. SpinQuant keeps it a fixed
  /// Hadamard; learning it reaches the key cache's quantization error,
  /// which R1 and R2 cannot (R1 cancels in K, R2 acts on V and O).
  std::vector<std::vector<double>> r3;
  /// Learned clipping (CalibrationOptions::clip; empty otherwise): the clip
  /// ratio of each activation / KV-cache quantizer of the training model
  /// (RotationObjective::clipSites() order), and of each output channel of
  /// every weight quantized in the loop, concatenated
  /// (RotationObjective::weightClipRows()). Not rotations: Adam moves them,
  /// within [kMinClip, 1].
  std::vector<double> actClips, weightClips;
  /// Learned diagonal scalings (CalibrationOptions::scales): the log-scales
  /// u (s = exp(u)) of each foldable site, in the order of
  /// RotationObjective::scaleNames(); empty when none are learned.
  std::vector<std::vector<double>> scales;
};

/// The smallest clip ratio learned clipping goes down to.
constexpr double kMinClip = 0.05;

struct CalibrationOptions {
  /// Text (tokenized with `tokenizer`) or pre-tokenized int32 ids (`.bin`);
  /// empty: the WikiText-2 excerpt embedded in SQ.
  std::string data;
  /// "byte", "sp:PATH" or "hf:DIR"; empty: byte for a byte-level model
  /// (vocabulary 256), an error otherwise.
  std::string tokenizer;
  int64_t samples = 128;
  /// 0: the model's context, at most 2048 (512 when the model does not
  /// record its context).
  int64_t seqlen = 0;
  int64_t batch = 4;
  int64_t steps = 100;
  double lr = 1.5;
  LRSchedule schedule = LRSchedule::Cosine;
  double momentum = 0.0;
  /// Seeds the sampling of the calibration windows.
  uint64_t seed = 0;
  /// The quantization the rotations are trained under (--quantize's
  /// language; weights, if at all, round-to-nearest or with `gptq`: GPTQ
  /// under the float model's Hessians seen through the rotations).
  QuantSpec quant = QuantSpec::bits(16, 4, 4, 4);
  /// Windows held out for validation (0: none): cut one after another from
  /// the end of the text, and the training windows are drawn from the text
  /// before them. With validation, the loss of the held-out windows is
  /// measured at the initialization, every `validateEvery` steps and at the
  /// end, and the rotations with the lowest one are kept (the
  /// initialization too, if no step beats it).
  int64_t validate = 0;
  int64_t validateEvery = 10;
  /// The summary's before/after loss: the mean loss of the first
  /// `evalWindows` calibration windows under the initial and the learned
  /// rotations (0: not measured). The "after" loss reuses the R3 search's
  /// forwards when it scored at least these windows. (The summary gives the
  /// time of the steps apart from that of the evaluations, the validation
  /// and the R3 search; under mpirun only rank 0 prints.)
  int64_t evalWindows = 8;
  /// R3, the online rotation of Q and K after RoPE: Hadamard keeps the
  /// model's online Hadamards fixed (SpinQuant); Search and Cayley learn
  /// one R3 per layer from `Rotations::r3` (the model's online Hadamards,
  /// sq.hadamard of head_dim, must be in place and become sq.rotate).
  /// search: after the Cayley steps, layer by layer, `r3Candidates`
  /// seeded signed permutations of the Hadamard matrix are tried against
  /// the current R3 on the loss of `r3Windows` fixed calibration windows,
  /// forward only (the straight-through gradient does not see how R3
  /// changes the key cache's rounding error); the best replaces it if its
  /// mean improvement over the windows exceeds `r3Sigma` standard errors of
  /// the paired per-window differences. cayley:
  /// R3 moves by Cayley SGD with R1/R2 on that gradient. (This API keeps
  /// the paper's Hadamard by default, which needs no `Rotations::r3`;
  /// --spinquant-rotate=mode=learned defaults to Search.)
  R3Mode r3 = R3Mode::Hadamard;
  int64_t r3Candidates = 16;
  int64_t r3Windows = 16;
  double r3Sigma = 2.0;
  /// Where R1/R2 act while training (the same loss and Riemannian gradient
  /// either way; see RotationApply).
  RotationApply apply = RotationApply::Auto;
  /// fp32 or bf16 products (see CalibPrecision).
  CalibPrecision precision = CalibPrecision::Auto;
  /// Print progress (a line per step on a terminal; in a log, every tenth
  /// of the steps or every minute; each with the time left) and a summary.
  bool progress = true;
  /// Learned clipping (ClipLearning), trained by Adam with the rotations at
  /// learning rate `clipLr` (the rotations' schedule); the learned ratios
  /// are written onto `module` for --sq-quantize (RotationObjective::
  /// annotateClips).
  ClipLearning clip = ClipLearning::None;
  double clipLr = 0.005;
  /// The loss of the steps, the validation, the R3 search and the summary
  /// (CalibLoss). kl and kl-top compare with the float model (`module`
  /// itself, run unquantized: the rotations do not change its function),
  /// whose next-token log-probabilities are computed once per window, the
  /// first time a process evaluates it, and cached (fp32; kl-top: the
  /// `klTopK` most likely tokens of each position as (id, log-probability)
  /// pairs, renormalized over them). A cache that could exceed `klCacheMB`
  /// MiB (all windows, training and held out) is refused.
  CalibLoss loss = CalibLoss::CrossEntropy;
  int64_t klTopK = 64;
  int64_t klCacheMB = 4096;
  /// Activation checkpointing of each step's backward (see Checkpointing).
  Checkpointing checkpoint = Checkpointing::Auto;
  /// Windows per forward and backward within a step (gradient
  /// accumulation, RotationObjective::setMicroBatch; 0: the whole batch).
  int64_t microBatch = 0;
  /// Learned: diagonal scalings at every exactly foldable site (the norm
  /// outputs into q/k/v and gate/up, the RoPE pairs between q_proj and
  /// k_proj, the value dims between v_proj and o_proj, the channels between
  /// up_proj and down_proj), trained with R1/R2 by Adam on their logarithm
  /// (`Rotations::scales`, which must then hold one vector per site). Needs
  /// the weights formulation (apply=weights or auto).
  ScaleMode scales = ScaleMode::None;
  /// Adam's learning rate for the log-scales (the same schedule as lr).
  double scalesLr = 0.01;
  /// Where learned scales start when Rotations::scales is empty: s = 1, or
  /// balanced from the float model (RotationObjective::smoothScales).
  ScaleInit scalesInit = ScaleInit::Smooth;
};

/// The training problem: the loss of the fake-quantized model as a function
/// of R1/R2, and its gradient. `module` is cloned (the clone gets the
/// activation and KV-cache fake quantization of `quant`); the original is
/// not changed.
class RotationObjective {
public:
  ~RotationObjective();
  /// With `learnR3`, the online Hadamards on Q and K of every attention
  /// (which must be there) become trainable rotations of the clone, and
  /// evaluate() takes and differentiates `Rotations::r3`.
  /// `apply` chooses the formulation (RotationApply): Activations (the
  /// default for 16-bit weights) rewrites the clone so that R1 and R2 act
  /// where the activations are quantized, as sq.rotate by trainable
  /// weights, and never copies or differentiates the model's weights;
  /// Weights folds the rotations into copies of the weights at each step.
  static std::unique_ptr<RotationObjective>
  create(mlir::ModuleOp module, const QuantSpec &quant, std::string &error,
         bool learnR3 = false, RotationApply apply = RotationApply::Auto,
         CalibPrecision precision = CalibPrecision::F32,
         bool learnScales = false);
  /// With learnScales: the name and size of each scale site, in the order
  /// of Rotations::scales (ScaleSites.h: layers.L.attn_input.scale, ...).
  std::vector<std::string> scaleNames() const;
  std::vector<int64_t> scaleSizes() const;
  /// For tests: fold only the scale uses of one sign (+1: those by s, the
  /// norms included; -1: those by 1/s; 0: all, the default). One side alone
  /// changes the float model, so dL/du can be checked against finite
  /// differences without quantization (both sides cancel exactly).
  void setScaleSidesForTesting(int sign);
  /// True when R1/R2 act on activations (RotationApply::Activations).
  bool rotatesActivations() const;
  /// True when the products run in bf16 (CalibPrecision).
  bool computesInBF16() const;
  /// Activation checkpointing of evaluate()'s backward (Auto by default).
  void setCheckpointing(Checkpointing checkpoint);
  /// Executor::checkpointSegments of the training model.
  int64_t checkpointSegments() const;
  /// Gradient accumulation: evaluate() with a gradient runs at most
  /// `windows` windows per forward and backward and sums their weighted
  /// losses and gradients (0, the default: the whole batch at once).
  /// Activation memory then grows with `windows`, not with the batch.
  void setMicroBatch(int64_t windows);

  /// Learned clipping: turns on the clip ratios of the activation and
  /// KV-cache quantizers (`acts`) and per output channel of the weights
  /// fake-quantized in the loop (`weights`; round-to-nearest weights under
  /// apply=weights, an error otherwise). evaluate() then reads
  /// Rotations::actClips / weightClips and returns their gradients (the
  /// clip-aware estimator of numerics::fakeQuantRowsBackward replaces the
  /// straight-through one at those quantizers).
  bool enableLearnedClipping(bool acts, bool weights, std::string &error);
  /// The initial ratios: each activation site's attribute (the spec's
  /// aclip/kclip/vclip), 1 for the weights' channels.
  std::vector<double> initialActClips() const;
  std::vector<double> initialWeightClips() const;
  /// Writes learned ratios onto the ops of `module` (the module create()
  /// was given) that --sq-quantize reads: `sq.input_clip` (f64) on the
  /// linears an activation quantizer feeds, `sq.key_clip` / `sq.value_clip`
  /// on the attentions, `sq.weight_clip` (tensor<rows x f32>) on the linears
  /// whose weights were trained quantized.
  void annotateClips(mlir::ModuleOp module, const Rotations &r) const;

  int64_t hidden() const;
  int64_t headDim() const;
  int64_t numLayers() const;
  int64_t vocabSize() const;
  int64_t maxPositions() const;

  /// Training under gptq (`quant` with `gptq`): collects the float model's
  /// GPTQ Hessians over `windows`; each step then quantizes the rotated
  /// weights with GPTQ under the Hessians seen through the rotations. A no-op
  /// for round-to-nearest specs. Call before evaluate().
  bool prepareGPTQ(const std::vector<std::vector<int64_t>> &windows,
                   std::string &error);

  /// Executor::setPrefixCache of the training executor: loss-only
  /// evaluations of the same windows start at the first transformer block
  /// whose weights changed (the R3 search); 0 turns it off. And the
  /// segments its forwards ran (Executor::segmentCounts).
  void setPrefixCache(int64_t maxBytes);
  Executor::SegmentCounts segmentCounts() const;

  /// scales-init=smooth (learned scales): initial log-scales that balance
  /// the float model's magnitudes on the two sides of each site, as
  /// SmoothQuant with alpha = 0.5: u = (log m- - log m+) / 2, m+ the RMS of
  /// what gets s (k_proj's, v_proj's, up_proj's outputs over `windows`,
  /// from the Hessians of their inputs) and m- of what gets 1/s (q_proj's
  /// outputs; o_proj's and down_proj's weight columns, down_proj's before
  /// R4), centred per site; 0 at the norm sites (their basis is R1's,
  /// which training moves). Equivariant: a function-preserving rescaling of
  /// a site's two sides (an outlier channel) moves u by its inverse, so
  /// the scaled model is the same. Biases are not counted.
  bool smoothScales(const std::vector<std::vector<int64_t>> &windows,
                    std::vector<std::vector<double>> &logScales,
                    std::string &error) const;

  /// Loss of `tokens` ([batch, seq]) with the rotations `r` folded into the
  /// frozen weights; with `grad`, dL/dR1 and dL/dR2 as well (and dL/dR3 when
  /// R3 is learned, dL/du for the log-scales when scales are learned; the
  /// matrices need not be orthogonal: the loss is defined for any). Without
  /// `grad`, `sequenceLosses` (if given) receives the mean loss of each of the
  /// `batch` sequences. With `soft`, the loss is the KL divergence from those
  /// reference distributions (Executor::loss).
  bool evaluate(const Rotations &r, llvm::ArrayRef<int64_t> tokens,
                int64_t batch, int64_t seq, double &loss, Rotations *grad,
                std::string &error,
                std::vector<double> *sequenceLosses = nullptr,
                const SoftTargets *soft = nullptr);

private:
  RotationObjective();
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// Reads the calibration tokens of `options` (the file, or the embedded
/// excerpt) and cuts `samples` windows of `seqlen` at seeded offsets.
bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::string &error);
/// The same, and `options.validate` held-out windows from the end of the
/// text (the training windows are drawn from the text before them).
bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::vector<std::vector<int64_t>> &heldOut,
                            std::string &error);

/// The embedded default calibration text (a WikiText-2 excerpt).
llvm::StringRef defaultCalibrationText();

/// Runs Cayley SGD from `rotations` (the initialization, overwritten with
/// the learned matrices). Deterministic for a given seed, thread count and
/// process count. Under mpirun (sq/Support/Distributed.h) every process
/// calls it alike: the windows of each step, of the validation and of the
/// R3 search are split across the processes and their results summed, so
/// that the rotations equal a single process's to float rounding.
mlir::LogicalResult calibrateRotations(mlir::ModuleOp module,
                                       const CalibrationOptions &options,
                                       Rotations &rotations);

} // namespace sq

#endif // SQ_TRANSFORMS_CALIBRATE_H
