//===- CalibrationLoss.h - the calibration's loss of windows -*- C++ -*-===//
//
// Internal to lib/Transforms: the loss (and gradient) of calibration
// windows under given rotations, with the float model's targets of the
// distillation losses cached per window (WindowLoss), and the per-window
// losses of the evaluations, split across processes (evalLoss). Used by the
// training loop and the R3 search in Calibrate.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_TRANSFORMS_CALIBRATIONLOSS_H
#define SQ_LIB_TRANSFORMS_CALIBRATIONLOSS_H

#include "sq/Exec/Executor.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/PassOptionTypes.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace sq {

/// The calibration loss of a batch of windows under given rotations: the
/// objective's cross-entropy, or (loss=kl|kl-top) its KL divergence from
/// the float model's next-token distributions. Those come from an executor
/// of the float module, once per window (keyed by the window's address: the
/// window lists do not change during the calibration), the first time this
/// process evaluates the window; under mpirun each process caches only the
/// windows of its shares.
class WindowLoss {
public:
  WindowLoss(RotationObjective &objective, mlir::ModuleOp floatModule,
             const CalibrationOptions &options, int64_t seqlen)
      : objective(objective), floatModule(floatModule), options(options),
        seqlen(seqlen) {}

  /// The objective (its executor's prefix cache, for the R3 search).
  RotationObjective &rotationObjective() { return objective; }

  /// Refuses a cache that could outgrow options.klCacheMB for `windows`
  /// windows (all that may be evaluated).
  bool checkBudget(int64_t windows, std::string &error) const {
    if (options.loss == CalibLoss::CrossEntropy)
      return true;
    if (options.loss == CalibLoss::KLTop && options.klTopK <= 0) {
      error = "kl-top-k must be positive";
      return false;
    }
    double bytes = double(windows) * double(seqlen) * double(width()) *
                   (sparse() ? 8.0 : 4.0);
    double mb = bytes / (1024.0 * 1024.0);
    if (mb > double(options.klCacheMB)) {
      error = llvm::formatv(
          "loss={0} would cache {1} windows x {2} positions x {3} "
          "log-probabilities of the float model ({4:F0} MiB, over "
          "kl-cache-mb={5}): use loss=kl-top (kl-top-k={6}), fewer samples "
          "or a larger kl-cache-mb",
          spell(options.loss), windows, seqlen, width(), mb, options.klCacheMB,
          options.klTopK);
      return false;
    }
    return true;
  }

  /// The mean loss of `batch` (windows of seqlen tokens); with `grad`, its
  /// gradient; without, `sequenceLosses` (if given) per window.
  bool evaluate(const Rotations &r,
                llvm::ArrayRef<const std::vector<int64_t> *> batch,
                double &loss, Rotations *grad, std::string &error,
                std::vector<double> *sequenceLosses = nullptr) {
    std::vector<int64_t> tokens;
    for (const std::vector<int64_t> *w : batch)
      tokens.insert(tokens.end(), w->begin(), w->end());
    if (options.loss == CalibLoss::CrossEntropy)
      return objective.evaluate(r, tokens, batch.size(), seqlen, loss, grad,
                                error, sequenceLosses);
    if (!fill(batch, error))
      return false;
    SoftTargets soft;
    soft.width = width();
    for (const std::vector<int64_t> *w : batch) {
      const Cached &c = cache[w];
      soft.ids.insert(soft.ids.end(), c.ids.begin(), c.ids.end());
      soft.logProbs.insert(soft.logProbs.end(), c.logProbs.begin(),
                           c.logProbs.end());
    }
    return objective.evaluate(r, tokens, batch.size(), seqlen, loss, grad,
                              error, sequenceLosses, &soft);
  }

private:
  struct Cached {
    std::vector<int32_t> ids; // kl-top only
    std::vector<float> logProbs;
  };
  /// kl-top with k below the vocabulary: (id, log-probability) pairs.
  bool sparse() const {
    return options.loss == CalibLoss::KLTop &&
           options.klTopK < objective.vocabSize();
  }
  int64_t width() const {
    return sparse() ? options.klTopK : objective.vocabSize();
  }

  /// Computes the float model's targets of the windows of `batch` not yet
  /// cached, in one forward.
  bool fill(llvm::ArrayRef<const std::vector<int64_t> *> batch,
            std::string &error) {
    std::vector<const std::vector<int64_t> *> missing;
    for (const std::vector<int64_t> *w : batch)
      if (!cache.count(w) && llvm::find(missing, w) == missing.end())
        missing.push_back(w);
    if (missing.empty())
      return true;
    if (!floatEx) {
      floatEx = Executor::create(floatModule, error);
      if (!floatEx) {
        error = "the float model for loss=" + std::string(spell(options.loss)) +
                ": " + error;
        return false;
      }
    }
    std::vector<int64_t> tokens;
    for (const std::vector<int64_t> *w : missing)
      tokens.insert(tokens.end(), w->begin(), w->end());
    std::vector<float> logits;
    floatEx->reset();
    if (!floatEx->forward(tokens, missing.size(), seqlen, logits, error))
      return false;
    floatEx->reset();
    int64_t vocab = objective.vocabSize(), k = width();
    if (int64_t(logits.size()) != int64_t(missing.size()) * seqlen * vocab) {
      error = "the float model's logits do not match its vocabulary";
      return false;
    }
    std::vector<int32_t> order(vocab);
    for (size_t i = 0; i < missing.size(); ++i) {
      Cached &c = cache[missing[i]];
      c.logProbs.resize(seqlen * k);
      if (sparse())
        c.ids.resize(seqlen * k);
      for (int64_t s = 0; s < seqlen; ++s) {
        const float *z = logits.data() + (i * seqlen + s) * vocab;
        float *lp = c.logProbs.data() + s * k;
        const int32_t *ids = nullptr;
        if (sparse()) {
          for (int64_t j = 0; j < vocab; ++j)
            order[j] = j;
          // The k largest logits, ties by id (deterministic).
          std::partial_sort(order.begin(), order.begin() + k, order.end(),
                            [&](int32_t a, int32_t b) {
                              return z[a] > z[b] || (z[a] == z[b] && a < b);
                            });
          std::copy(order.begin(), order.begin() + k, c.ids.data() + s * k);
          ids = c.ids.data() + s * k;
        }
        // log-softmax over the k tokens (all of the vocabulary for kl).
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t j = 0; j < k; ++j)
          mx = std::max(mx, double(z[ids ? ids[j] : j]));
        for (int64_t j = 0; j < k; ++j)
          sum += std::exp(double(z[ids ? ids[j] : j]) - mx);
        double logSum = mx + std::log(sum);
        for (int64_t j = 0; j < k; ++j)
          lp[j] = float(double(z[ids ? ids[j] : j]) - logSum);
      }
    }
    return true;
  }

  RotationObjective &objective;
  mlir::ModuleOp floatModule;
  const CalibrationOptions &options;
  int64_t seqlen;
  std::unique_ptr<Executor> floatEx;
  llvm::DenseMap<const std::vector<int64_t> *, Cached> cache;
};

/// The loss of each of the first `count` windows (at most windows.size()),
/// in window order, on every process: the windows are evaluated in batches
/// of up to 8 (windows 0-7, 8-15, ...; the weights are folded once per set
/// of rotations), each process takes its share of whole batches, and the
/// per-window losses are summed across the processes. Each window's loss
/// comes from one process (the others add zeros) and from the same batch
/// whatever the number of processes, so every process, and a single
/// process, gets the same values bit for bit (the R3 search's decisions do
/// not depend on the process count). `loss` is their mean.
bool evalLoss(WindowLoss &objective, const Rotations &r,
              const std::vector<std::vector<int64_t>> &windows, int64_t count,
              int64_t seqlen, double &loss, std::string &error,
              std::vector<double> *windowLosses = nullptr);

} // namespace sq

#endif // SQ_LIB_TRANSFORMS_CALIBRATIONLOSS_H
