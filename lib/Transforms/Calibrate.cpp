//===- Calibrate.cpp - SpinQuant's Cayley calibration of R1/R2 ------------===//
//
// The embedded training loop of SpinQuant (see Calibrate.h): Cayley SGD
// steps on the loss of RotationObjective
// (RotationObjective.cpp: the rotations folded into the frozen weights, the
// fake-quantized model forward and backward, dL/dR by the chain rule), the
// held-out validation and the R3 search.
//
// Data parallel (sq/Support/Distributed.h: mpirun -np P): every process
// draws the same windows and holds the same rotations; each step's batch is
// split across the processes, each computes the loss and gradient of the
// mean over its windows, weighted by its share of the batch, and a
// reduction sums them on rank 0 into the gradient of the whole batch; rank
// 0 takes the Cayley step and broadcasts the rotations, so that every
// process holds the same ones bit for bit. Evaluations (validation, the R3
// search, the before/after loss) split their windows the same way and
// gather the per-window losses, so every process takes the same decisions.
// Only rank 0 prints.
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/Calibrate.h"
#include "CalibrationLoss.h"
#include "QuantizeCalibration.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Support/Distributed.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

using namespace mlir;

namespace sq {

//===----------------------------------------------------------------------===//
// The training loop
//===----------------------------------------------------------------------===//

/// The rotations Cayley SGD moves (R3 only when it trains it: a searched R3
/// is exactly orthogonal and stays as found).
/// From this size on, R1's Cayley step multiplies in float
/// (numerics::CayleyProducts::Float); smaller rotations stay in double.
static constexpr int64_t kFloatCayleyFrom = 1024;

static std::vector<std::vector<double> *> rotationList(Rotations &r,
                                                       bool withR3) {
  std::vector<std::vector<double> *> list{&r.r1};
  for (auto &m : r.r2)
    list.push_back(&m);
  if (withR3)
    for (auto &m : r.r3)
      list.push_back(&m);
  return list;
}

/// Seconds since `t0`.
/// "42 s", "7 min 5 s", "2 h 13 min".
static std::string formatDuration(double seconds) {
  auto s = int64_t(std::lround(std::max(0.0, seconds)));
  if (s < 60)
    return std::to_string(s) + " s";
  if (s < 3600)
    return std::to_string(s / 60) + " min " + std::to_string(s % 60) + " s";
  return std::to_string(s / 3600) + " h " + std::to_string(s % 3600 / 60) +
         " min";
}

static double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

/// The rotations as one flat array (R1, the R2, the R3) and back: what the
/// processes sum (gradients, on rank 0) and broadcast (rotations).
static void flatten(const Rotations &r, std::vector<double> &flat) {
  flat.assign(r.r1.begin(), r.r1.end());
  for (const auto &m : r.r2)
    flat.insert(flat.end(), m.begin(), m.end());
  for (const auto &m : r.r3)
    flat.insert(flat.end(), m.begin(), m.end());
  flat.insert(flat.end(), r.actClips.begin(), r.actClips.end());
  flat.insert(flat.end(), r.weightClips.begin(), r.weightClips.end());
  for (const auto &m : r.scales)
    flat.insert(flat.end(), m.begin(), m.end());
}
static void unflatten(const std::vector<double> &flat, Rotations &r) {
  const double *p = flat.data();
  auto take = [&](std::vector<double> &m) {
    std::copy(p, p + m.size(), m.begin());
    p += m.size();
  };
  take(r.r1);
  for (auto &m : r.r2)
    take(m);
  for (auto &m : r.r3)
    take(m);
  take(r.actClips);
  take(r.weightClips);
  for (auto &m : r.scales)
    take(m);
}

/// One Adam step (betas 0.9, 0.999) of learned clip ratios, projected onto
/// [kMinClip, 1]. `m` and `v` are the moment estimates (sized on first
/// use), `t` the step number from 1.
/// One Adam step (Kingma & Ba, bias-corrected, beta1 0.9, beta2 0.999) on
/// `u` (the log-scales, or clip ratios) with gradient `g`; `m`/`v` are the
/// moments and `t` the step number from 1.
static void adamStep(std::vector<double> &u, const std::vector<double> &g,
                     std::vector<double> &m, std::vector<double> &v, int64_t t,
                     double lr) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  if (m.size() != u.size()) {
    m.assign(u.size(), 0.0);
    v.assign(u.size(), 0.0);
  }
  double c1 = 1.0 - std::pow(b1, double(t)), c2 = 1.0 - std::pow(b2, double(t));
  for (size_t i = 0; i < u.size(); ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    u[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
  }
}

/// adamStep on learned clip ratios, then projected onto [kMinClip, 1].
static void adamClipStep(std::vector<double> &clips,
                         const std::vector<double> &grad,
                         std::vector<double> &m, std::vector<double> &v,
                         int64_t t, double lr) {
  adamStep(clips, grad, m, v, t, lr);
  for (double &c : clips)
    c = std::min(1.0, std::max(kMinClip, c));
}

/// The mean of the paired differences a[i] - b[i] and its standard error.
static std::pair<double, double> pairedDifference(ArrayRef<double> a,
                                                  ArrayRef<double> b) {
  size_t k = a.size();
  double mean = 0, var = 0;
  for (size_t i = 0; i < k; ++i)
    mean += (a[i] - b[i]) / double(k);
  for (size_t i = 0; i < k; ++i)
    var += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
  double se = k > 1 ? std::sqrt(var / double(k - 1) / double(k)) : 0.0;
  return {mean, se};
}

/// The R3 search keeps no gain below this fraction of the loss (with
/// r3-sigma > 0).
static constexpr double kMinR3RelativeGain = 1e-5;

/// r3=search (after the Cayley steps): layer by layer, seeded signed
/// permutations of the Hadamard matrix (x -> x P D H: the same spreading of
/// the key's channels, other ones mixed) against the current R3, on the
/// forward loss of fixed windows under the training quantization. The
/// candidate with the lowest mean loss replaces the current R3 only if its
/// mean paired improvement over the windows exceeds `r3Sigma` standard
/// errors of that improvement: a choice among many on few windows otherwise
/// keeps differences that are noise (never worse on those windows).
///
/// `finalEach` receives the per-window losses of the rotations it returns
/// (for the summary's "after" loss, which then costs no forward).
static bool searchR3(WindowLoss &objective, Rotations &rotations,
                     const std::vector<std::vector<int64_t>> &windows,
                     int64_t seqlen, const CalibrationOptions &options,
                     bool progress, std::vector<double> &finalEach,
                     std::string &error) {
  int64_t d = rotations.headDim, count = options.r3Windows;
  bool terminal = progress && llvm::sys::Process::StandardErrIsDisplayed();
  auto start = std::chrono::steady_clock::now();
  // A candidate for layer l changes only layer l's R3: each evaluation of
  // the same windows starts at that layer, from the block inputs the
  // executor kept (bit-identical losses); a quarter of the memory at most.
  RotationObjective &objective0 = objective.rotationObjective();
  objective0.setPrefixCache(Executor::kPrefixCacheAuto);
  llvm::scope_exit dropCache([&] { objective0.setPrefixCache(0); });
  const Executor::SegmentCounts before = objective0.segmentCounts();
  double first = 0, current = 0, lastLine = 0;
  std::vector<double> currentEach;
  if (!evalLoss(objective, rotations, windows, count, seqlen, current, error,
                &currentEach))
    return false;
  first = current;
  const std::vector<float> &h = numerics::denseTransform(d, /*seed=*/0);
  std::mt19937_64 rng(options.seed * 0x9e3779b97f4a7c15ULL + 3);
  int64_t kept = 0;
  const auto began = start; // `start` is a layer's R3 in the loop
  for (size_t l = 0; l < rotations.r3.size(); ++l) {
    double layerStart = current, bestLoss = current;
    std::vector<double> start = rotations.r3[l], best, bestEach;
    for (int64_t c = 0; c < options.r3Candidates; ++c) {
      std::vector<int64_t> perm(d);
      for (int64_t i = 0; i < d; ++i)
        perm[i] = i;
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<double> &r = rotations.r3[l];
      for (int64_t i = 0; i < d; ++i) {
        double sign = (rng() & 1) ? -1.0 : 1.0;
        for (int64_t j = 0; j < d; ++j)
          r[i * d + j] = sign * h[perm[i] * d + j];
      }
      double loss;
      std::vector<double> each;
      if (!evalLoss(objective, rotations, windows, count, seqlen, loss, error,
                    &each))
        return false;
      if (loss < bestLoss) {
        bestLoss = loss;
        best = r;
        bestEach = std::move(each);
      }
    }
    auto [gain, se] = best.empty() ? std::pair<double, double>{0.0, 0.0}
                                   : pairedDifference(currentEach, bestEach);
    // Significant, and (with r3-sigma > 0) above the float noise: a gain
    // under 1e-5 of the loss is what rounding moves (the per-window losses
    // of one and of several processes, whose R1/R2 differ in their last
    // bits, differ by ~1e-8), and keeping it would make the decision hang
    // on those bits.
    bool accept = !best.empty() && gain > options.r3Sigma * se &&
                  (options.r3Sigma == 0 ||
                   gain > kMinR3RelativeGain * std::fabs(layerStart));
    // (Before `best` is moved from below.)
    double shown = best.empty() ? layerStart : layerStart - gain;
    if (accept) {
      ++kept;
      current = bestLoss;
      currentEach = std::move(bestEach);
      rotations.r3[l] = std::move(best);
    } else {
      rotations.r3[l] = std::move(start);
    }
    // A line per layer on a terminal; into a log, one when a minute has
    // passed since the last (a 1B model's search takes many minutes).
    double now = secondsSince(began);
    if (terminal || (progress && now - lastLine >= 60.0)) {
      lastLine = now;
      llvm::errs() << llvm::format(
          "calibrate: R3 of layer %zu/%zu: loss %.4f, best of %lld candidates "
          "%.4f (gain %.4f +- %.4f): %s\n",
          l + 1, rotations.r3.size(), layerStart,
          (long long)options.r3Candidates, shown, gain, se,
          accept ? "kept" : "not significant");
    }
  }
  if (progress) {
    // What the search's forwards ran, in transformer blocks, against
    // whole forwards (the cache's saving).
    const Executor::SegmentCounts after = objective0.segmentCounts();
    double blocks = double(after.run - before.run),
           whole = double(after.whole - before.whole);
    llvm::errs() << llvm::format(
        "calibrate: R3 search: %lld of %zu layers changed, loss on %lld "
        "windows %.4f -> %.4f in %.1f s (%.0f%% of the blocks of whole "
        "forwards)\n",
        (long long)kept, rotations.r3.size(),
        (long long)std::min<int64_t>(count, windows.size()), first, current,
        secondsSince(start), whole > 0 ? 100.0 * blocks / whole : 0.0);
  }
  finalEach = std::move(currentEach);
  return true;
}

LogicalResult calibrateRotations(ModuleOp module,
                                 const CalibrationOptions &options,
                                 Rotations &rotations) {
  auto fail = [&](const Twine &msg) {
    return emitError(module.getLoc()) << "spinquant calibration: " << msg;
  };
  if (options.steps < 0 || options.samples <= 0 || options.batch <= 0 ||
      options.seqlen < 0 || !(options.lr > 0) || options.momentum < 0 ||
      options.momentum >= 1 || options.validate < 0 ||
      options.validateEvery <= 0)
    return fail("steps >= 0, samples > 0, batch > 0, seqlen >= 0, lr > 0, "
                "0 <= momentum < 1, validate >= 0 and validate-every > 0 are "
                "required");
  std::string error;
  if (options.r3Candidates < 0 || options.r3Windows <= 0 ||
      !(options.r3Sigma >= 0) || options.evalWindows < 0)
    return fail("r3-candidates >= 0, r3-windows > 0, r3-sigma >= 0 and "
                "eval-windows >= 0 are required");
  if (options.microBatch < 0)
    return fail("micro-batch >= 0 is required");
  const bool learnScales = options.scales == ScaleMode::Learned;
  if (learnScales && !(options.scalesLr > 0))
    return fail("scales-lr > 0 is required");
  bool learnR3 = options.r3 != R3Mode::Hadamard;
  auto objective =
      RotationObjective::create(module, options.quant, error, learnR3,
                                options.apply, options.precision, learnScales);
  if (!objective)
    return fail(error);
  if (!(options.clipLr > 0))
    return fail("clip-lr > 0 is required");
  if (options.clip != ClipLearning::None) {
    // clip=learned: activations, and weights where the loop quantizes them
    // round-to-nearest; clip=acts / clip=weights: only those (an error when
    // there are none).
    const QuantSpec &q = options.quant;
    bool rtnWeights =
        q.quantizesWeights() && !q.gptq && !objective->rotatesActivations();
    bool acts = options.clip != ClipLearning::Weights;
    bool weights = options.clip == ClipLearning::Weights ||
                   (options.clip == ClipLearning::Learned && rtnWeights);
    if (!objective->enableLearnedClipping(acts, weights, error))
      return fail(error);
    rotations.actClips = objective->initialActClips();
    rotations.weightClips = objective->initialWeightClips();
    if (options.clip == ClipLearning::Acts && rotations.actClips.empty())
      return fail("clip=acts: quant=" + q.str() +
                  " quantizes no activation or KV cache");
  } else {
    rotations.actClips.clear();
    rotations.weightClips.clear();
  }
  objective->setCheckpointing(options.checkpoint);
  objective->setMicroBatch(options.microBatch);
  if (!learnScales)
    rotations.scales.clear();
  int64_t n = objective->hidden(), d = objective->headDim();
  if (rotations.r1.size() != size_t(n * n) ||
      int64_t(rotations.r2.size()) != objective->numLayers() ||
      int64_t(rotations.r3.size()) != (learnR3 ? objective->numLayers() : 0))
    return fail("the initial rotations do not match the model");
  int64_t seqlen = options.seqlen;
  if (!seqlen)
    // The official 2048, within the model's context; a model that does not
    // record its context gets a conservative 512 (training past a model's
    // context hurts, shorter windows only cost samples).
    seqlen = objective->maxPositions() > 0
                 ? std::min<int64_t>(objective->maxPositions(), 2048)
                 : 512;
  if (objective->maxPositions() > 0 && seqlen > objective->maxPositions())
    return fail("seqlen " + std::to_string(seqlen) +
                " exceeds the model's context of " +
                std::to_string(objective->maxPositions()));
  std::vector<std::vector<int64_t>> windows, heldOut;
  if (!loadCalibrationWindows(options, seqlen, objective->vocabSize(), windows,
                              heldOut, error))
    return fail(error);
  if (learnScales) {
    // No initial scales given: s = 1 (u = 0) at every site, or balanced
    // from the float model over the training windows.
    std::vector<int64_t> sizes = objective->scaleSizes();
    if (rotations.scales.empty() && options.scalesInit == ScaleInit::Smooth) {
      // RMS statistics: a few windows are plenty.
      std::vector<std::vector<int64_t>> some(
          windows.begin(),
          windows.begin() + std::min<size_t>(windows.size(), 32));
      auto t0 = std::chrono::steady_clock::now();
      if (!objective->smoothScales(some, rotations.scales, error))
        return fail(error);
      if (options.progress && distributed::rank() == 0)
        llvm::errs() << llvm::format("calibrate: scales-init=smooth over %zu "
                                     "windows in %.1f s\n",
                                     some.size(), secondsSince(t0));
    }
    if (rotations.scales.empty())
      for (int64_t size : sizes)
        rotations.scales.emplace_back(size, 0.0);
    bool match = rotations.scales.size() == sizes.size();
    for (size_t k = 0; match && k < sizes.size(); ++k)
      match = int64_t(rotations.scales[k].size()) == sizes[k];
    if (!match)
      return fail("the initial scales do not match the model's sites");
  }
  WindowLoss windowLoss(*objective, module, options, seqlen);
  if (!windowLoss.checkBudget(windows.size() + heldOut.size(), error))
    return fail(error);
  // Every process runs this function with the same options and windows
  // (the seeded sampling is the same everywhere); only rank 0 reports.
  const int processes = distributed::size();
  const bool progress = options.progress && distributed::rank() == 0;
  const bool terminal =
      progress && llvm::sys::Process::StandardErrIsDisplayed();
  if (options.quant.gptq) {
    auto t0 = std::chrono::steady_clock::now();
    if (!objective->prepareGPTQ(windows, error))
      return fail(error);
    if (progress)
      llvm::errs() << llvm::format(
          "calibrate: GPTQ Hessians of the float model over %zu windows in "
          "%.1f s\n",
          windows.size(), secondsSince(t0));
  }

  std::vector<double> m1;
  std::vector<std::vector<double>> m2(rotations.r2.size()),
      m3(rotations.r3.size());
  // Adam's moments of the log-scales.
  std::vector<std::vector<double>> sm(rotations.scales.size()),
      sv(rotations.scales.size());
  numerics::CayleyOptions cayley;
  cayley.momentum = options.momentum;
  // The before/after loss on the first evalWindows windows (the summary's
  // comparison, independent of which batches the steps saw; 0: none).
  // (Decided alike on every process: they all take part in evaluations.)
  const int64_t evalCount =
      options.progress ? std::min<int64_t>(options.evalWindows, windows.size())
                       : 0;
  double before = 0, after = 0, evalSecs = 0, validateSecs = 0;
  if (evalCount > 0) {
    auto t0 = std::chrono::steady_clock::now();
    if (!evalLoss(windowLoss, rotations, windows, evalCount, seqlen, before,
                  error))
      return fail(error);
    evalSecs += secondsSince(t0);
  }
  // Validation: the held-out loss at the initialization, every
  // validateEvery steps and at the end; the best rotations are kept.
  Rotations best;
  double bestLoss = 0, lastLoss = 0;
  int64_t bestStep = 0;
  auto validate = [&](int64_t step) -> bool {
    auto t0 = std::chrono::steady_clock::now();
    double l;
    if (!evalLoss(windowLoss, rotations, heldOut, heldOut.size(), seqlen, l,
                  error))
      return false;
    lastLoss = l;
    if (step == 0 || l < bestLoss) {
      bestLoss = l;
      bestStep = step;
      best = rotations;
    }
    validateSecs += secondsSince(t0);
    if (terminal)
      llvm::errs() << llvm::format(
          "calibrate: step %3lld  held-out loss %.4f%s\n", (long long)step, l,
          bestStep == step ? "  (best)" : "");
    return true;
  };
  if (!heldOut.empty() && !validate(0))
    return fail(error);

  // The gradient of an empty share: zeros of the rotations' shapes.
  auto zeros = [&]() {
    Rotations z;
    z.hidden = n;
    z.headDim = d;
    z.r1.assign(n * n, 0.0);
    z.r2.assign(rotations.r2.size(), std::vector<double>(d * d, 0.0));
    if (options.r3 == R3Mode::Cayley)
      z.r3.assign(rotations.r3.size(), std::vector<double>(d * d, 0.0));
    z.actClips.assign(rotations.actClips.size(), 0.0);
    z.weightClips.assign(rotations.weightClips.size(), 0.0);
    for (const auto &u : rotations.scales)
      z.scales.emplace_back(u.size(), 0.0);
    return z;
  };
  // Adam's moments of the learned clip ratios.
  std::vector<double> actM, actV, wM, wV;
  double stepSecs = 0, lastReport = 0;
  int64_t next = 0;
  std::vector<double> flat;
  // micro-batch=N under mpirun, with every process's share a whole number
  // of micro-batches: the reduction keeps each micro-batch apart (batch / N
  // times the traffic) and rank 0 sums them in window order, so that the
  // run takes the steps of one process with the same micro-batch bit for
  // bit (given the same BLAS thread count), instead of to float rounding,
  // which fake quantization can amplify from step to step.
  const int64_t micro = options.microBatch;
  const int64_t chunks = micro > 0 ? (options.batch + micro - 1) / micro : 0;
  bool ordered = processes > 1 && micro > 0 && options.batch > micro;
  for (int p = 0; ordered && p < processes; ++p) {
    auto [b, e] = distributed::share(options.batch, p, processes);
    ordered = b == e || b % micro == 0;
  }
  for (int64_t step = 0; step < options.steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    // This process's share of the step's windows (the windows are taken in
    // order, wrapping around; every process advances `next` alike).
    auto [first, last] = distributed::share(options.batch);
    std::vector<const std::vector<int64_t> *> batch;
    for (int64_t b = first; b < last; ++b)
      batch.push_back(&windows[(next + b) % windows.size()]);
    next = (next + options.batch) % int64_t(windows.size());
    double loss = 0;
    Rotations grad;
    int64_t mine = last - first;
    // One process takes the step: the sum of the shares goes to rank 0,
    // which moves the rotations and broadcasts them (with the loss), so
    // that every process goes on from the same rotations bit for bit.
    const bool stepper = processes == 1 || distributed::rank() == 0;
    if (ordered) {
      // Each micro-batch's weighted loss and gradient go to rank 0 in a slot
      // of their own (zeros in the others' slots: the reduction adds only
      // zeros to them), which sums the slots in window order, exactly as one
      // process accumulates its micro-batches (RotationObjective::evaluate).
      Rotations shape = zeros();
      flatten(shape, flat);
      const size_t width = flat.size() + 1;
      std::vector<double> slots(size_t(chunks) * width, 0.0);
      for (int64_t c0 = first; c0 < last; c0 += micro) {
        int64_t nb = std::min(micro, last - c0);
        double l = 0;
        Rotations part;
        if (!windowLoss.evaluate(rotations,
                                 ArrayRef(batch).slice(c0 - first, nb), l,
                                 &part, error))
          return fail(error);
        if (options.r3 != R3Mode::Cayley)
          part.r3.clear(); // not trained: not summed either
        flatten(part, flat);
        double w = double(nb) / double(options.batch);
        double *slot = slots.data() + size_t(c0 / micro) * width;
        for (size_t i = 0; i < flat.size(); ++i)
          slot[i] = w * flat[i];
        slot[width - 1] = w * l;
      }
      distributed::reduceSum(slots.data(), slots.size(), 0);
      if (stepper) {
        std::vector<double> sum(width - 1, 0.0);
        for (int64_t c = 0; c < chunks; ++c) {
          const double *slot = slots.data() + size_t(c) * width;
          for (size_t i = 0; i + 1 < width; ++i)
            sum[i] += slot[i];
          loss += slot[width - 1];
        }
        grad = std::move(shape);
        unflatten(sum, grad);
      }
    } else {
      if (mine > 0 &&
          !windowLoss.evaluate(rotations, batch, loss, &grad, error))
        return fail(error);
      if (mine == 0)
        grad = zeros();
    }
    if (processes > 1 && !ordered) {
      if (options.r3 != R3Mode::Cayley)
        grad.r3.clear(); // not trained: not summed either
      // The batch's loss is the mean over its windows (all of seqlen
      // tokens): this share's mean and gradient count for mine / batch.
      double weight = double(mine) / double(options.batch);
      flatten(grad, flat);
      for (double &v : flat)
        v *= weight;
      flat.push_back(loss * weight);
      distributed::reduceSum(flat.data(), flat.size(), 0);
      if (stepper) {
        loss = flat.back();
        flat.pop_back();
        unflatten(flat, grad);
      }
    }
    cayley.lr = options.schedule == LRSchedule::Cosine
                    ? numerics::cosineSchedule(options.lr, step, options.steps)
                    : options.lr;
    double alpha = 0;
    if (stepper) {
      // (Under mpirun rank 0's failure aborts the others, which wait in
      // the broadcast below: distributed::exitCode.)
      if (!std::isfinite(loss))
        return fail("the loss is not finite at step " + std::to_string(step));
      // R1 of a real model (hidden >= 1024): the step's eight or nine
      // n^3 products in float (17 s in double at n = 4096 on two cores);
      // the QR every 20 steps below removes the float rounding it leaves.
      numerics::CayleyOptions r1Step = cayley;
      if (n >= kFloatCayleyFrom)
        r1Step.products = numerics::CayleyProducts::Float;
      alpha = numerics::cayleyStep(rotations.r1, grad.r1, n, m1, r1Step);
      for (size_t l = 0; l < rotations.r2.size(); ++l)
        numerics::cayleyStep(rotations.r2[l], grad.r2[l], d, m2[l], cayley);
      if (options.r3 == R3Mode::Cayley)
        for (size_t l = 0; l < rotations.r3.size(); ++l)
          numerics::cayleyStep(rotations.r3[l], grad.r3[l], d, m3[l], cayley);
      // Learned clip ratios: Adam on the rotations' schedule.
      double clipLr = options.clipLr * cayley.lr / options.lr;
      if (!rotations.actClips.empty())
        adamClipStep(rotations.actClips, grad.actClips, actM, actV, step + 1,
                     clipLr);
      if (!rotations.weightClips.empty())
        adamClipStep(rotations.weightClips, grad.weightClips, wM, wV, step + 1,
                     clipLr);
      // The log-scales by Adam, on the rotations' schedule.
      double scalesLr =
          options.schedule == LRSchedule::Cosine
              ? numerics::cosineSchedule(options.scalesLr, step, options.steps)
              : options.scalesLr;
      for (size_t k = 0; k < rotations.scales.size(); ++k)
        adamStep(rotations.scales[k], grad.scales[k], sm[k], sv[k], step + 1,
                 scalesLr);
      // Five fixed-point iterations solve the Cayley equation only
      // approximately, and for small matrices the step is large relative
      // to their size (about 1e-4 off orthogonal per step at n = 16): a QR
      // pulls them back, every step for small matrices (cheap), every 20
      // for large.
      for (auto *r : rotationList(rotations, options.r3 == R3Mode::Cayley))
        if (int64_t(std::lround(std::sqrt(double(r->size())))) <= 512 ||
            (step + 1) % 20 == 0)
          numerics::reorthonormalize(*r,
                                     std::lround(std::sqrt(double(r->size()))));
    }
    if (processes > 1) {
      flatten(rotations, flat);
      flat.push_back(loss);
      flat.push_back(alpha);
      distributed::broadcast(flat.data(), flat.size(), 0);
      alpha = flat.back();
      flat.pop_back();
      loss = flat.back();
      flat.pop_back();
      unflatten(flat, rotations);
    }
    double secs = secondsSince(t0);
    stepSecs += secs;
    // A line per step on a terminal; into a log (not a terminal), a line
    // every tenth of the steps or every minute, whichever comes first, so
    // that a long calibration shows it is alive. Both with the time left at
    // the mean pace so far.
    bool report = terminal;
    if (progress && !terminal) {
      int64_t every = std::max<int64_t>(1, options.steps / 10);
      report = (step + 1) % every == 0 || step + 1 == options.steps ||
               stepSecs - lastReport >= 60.0;
    }
    if (report) {
      lastReport = stepSecs;
      double left =
          stepSecs / double(step + 1) * double(options.steps - step - 1);
      llvm::errs() << llvm::format("calibrate: step %3lld/%lld  loss %.4f  "
                                   "lr %.3f  R1 step %.4f  %.2f s  ",
                                   (long long)step + 1,
                                   (long long)options.steps, loss, cayley.lr,
                                   alpha, secs)
                   << formatDuration(left) << " left\n";
    }
    if (!heldOut.empty() &&
        ((step + 1) % options.validateEvery == 0 ||
         step + 1 == options.steps) &&
        !validate(step + 1))
      return fail(error);
  }
  if (!heldOut.empty() && bestStep != options.steps)
    rotations = best;
  numerics::reorthonormalize(rotations.r1, n);
  for (auto &r : rotations.r2)
    numerics::reorthonormalize(r, d);
  if (options.r3 == R3Mode::Cayley)
    for (auto &r : rotations.r3)
      numerics::reorthonormalize(r, d);
  // The R3 search comes last, against the final R1/R2: it can only lower
  // the loss of its windows from there. (It reports its own time.) Its
  // per-window losses of the final rotations are the "after" loss when they
  // cover the evaluation windows (the same first windows).
  std::vector<double> searchEach;
  if (options.r3 == R3Mode::Search &&
      !searchR3(windowLoss, rotations, windows, seqlen, options, progress,
                searchEach, error))
    return fail(error);
  if (evalCount > 0) {
    if (int64_t(searchEach.size()) >= evalCount) {
      after = 0;
      for (int64_t i = 0; i < evalCount; ++i)
        after += searchEach[i];
      after /= double(evalCount);
    } else {
      auto t0 = std::chrono::steady_clock::now();
      if (!evalLoss(windowLoss, rotations, windows, evalCount, seqlen, after,
                    error))
        return fail(error);
      evalSecs += secondsSince(t0);
    }
  }
  if (progress) {
    std::string processText =
        processes > 1 ? ", " + std::to_string(processes) + " processes" : "";
    llvm::errs() << llvm::format(
        "calibrate: %lld steps of %lld x %lld tokens under %s%s in %.1f s "
        "(%.3f s/step%s)",
        (long long)options.steps, (long long)options.batch, (long long)seqlen,
        options.quant.str().c_str(),
        options.loss == CalibLoss::CrossEntropy
            ? ""
            : (std::string(", loss ") + spell(options.loss)).c_str(),
        stepSecs, options.steps ? stepSecs / options.steps : 0.0,
        processText.c_str());
    if (evalCount > 0)
      llvm::errs() << llvm::format(
          "; loss on %lld fixed windows %.4f -> %.4f (evaluation %.1f s)\n",
          (long long)evalCount, before, after, evalSecs);
    else
      llvm::errs() << "; no before/after evaluation (eval-windows=0)\n";
  }
  if (progress && !heldOut.empty())
    llvm::errs() << llvm::format(
        "calibrate: held-out loss on %lld windows: %.4f at step %lld kept "
        "(%.4f at the end); validation %.1f s\n",
        (long long)heldOut.size(), bestLoss, (long long)bestStep, lastLoss,
        validateSecs);
  if (options.clip != ClipLearning::None) {
    objective->annotateClips(module, rotations);
    if (progress) {
      auto range = [](const std::vector<double> &v) {
        double lo = 1, hi = 0, mean = 0;
        for (double x : v) {
          lo = std::min(lo, x);
          hi = std::max(hi, x);
          mean += x / double(v.size());
        }
        return std::make_tuple(lo, mean, hi);
      };
      if (!rotations.actClips.empty()) {
        auto [lo, mean, hi] = range(rotations.actClips);
        llvm::errs() << llvm::format(
            "calibrate: learned clip ratios of %zu activation/KV quantizers: "
            "min %.3f, mean %.3f, max %.3f\n",
            rotations.actClips.size(), lo, mean, hi);
      }
      if (!rotations.weightClips.empty()) {
        auto [lo, mean, hi] = range(rotations.weightClips);
        llvm::errs() << llvm::format(
            "calibrate: learned clip ratios of %zu weight channels: min "
            "%.3f, mean %.3f, max %.3f\n",
            rotations.weightClips.size(), lo, mean, hi);
      }
    }
  }
  if (progress && learnScales) {
    double lo = 0, hi = 0;
    size_t count = 0;
    for (const auto &u : rotations.scales)
      for (double v : u) {
        lo = count ? std::min(lo, v) : v;
        hi = count ? std::max(hi, v) : v;
        ++count;
      }
    llvm::errs() << llvm::format(
        "calibrate: %zu learned scales at %zu sites, from %.4g to %.4g\n",
        count, rotations.scales.size(), std::exp(lo), std::exp(hi));
  }
  return success();
}

} // namespace sq
