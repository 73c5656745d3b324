//===- Evaluate.h - perplexity and speed of a model -------------*- C++ -*-===//
//
// The perplexity protocol of SQ (sq-run --ppl and --tokens; calibration and
// GPTQ can call it on a ModelBackend for the same number, see
// createExecutorBackend; python/sq's Model.perplexity mirrors it in numpy):
// the token stream is cut into windows of `seqlen` tokens, one every `stride`
// tokens; each window runs from an empty KV cache, `batch` windows at a time;
// the first window scores every next-token prediction, a later overlapping
// one only its last `stride`; the result is exp(mean NLL), log-softmax in
// double. And the decode benchmark of sq-run --bench.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_EVALUATE_H
#define SQ_EXEC_EVALUATE_H

#include "sq/Exec/ModelBackend.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <functional>
#include <string>

namespace sq {

/// A bound on prompt lengths and token counts when the model's context is
/// unknown, so that a typo cannot ask for terabytes before anything runs.
constexpr int64_t kMaxTokens = int64_t(1) << 24;

/// log softmax(logits)[target] over `vocab` logits, in double.
double logSoftmaxAt(const float *logits, int64_t vocab, int64_t target);

struct PerplexityOptions {
  int64_t seqlen = 0;     ///< window length in tokens, at least 2
  int64_t stride = 0;     ///< a window every `stride` tokens; 0: seqlen
  int64_t maxWindows = 0; ///< evaluate at most this many; 0: all
  int64_t batch = 1;      ///< windows per forward
  int64_t context = 0;    ///< the model's context; 0: from the model
  bool progress = false;  ///< a one-line progress bar on stderr
  /// When in [1, seqlen): each window's first `prefill` tokens go through
  /// the model at once, then the others one at a time through its KV cache,
  /// as in generation (to check the cached path); 0: one forward a window.
  int64_t prefill = 0;
  /// When set, called with the logits of the first window ([seqlen,
  /// vocab]); returning false (with `error`) stops the evaluation.
  std::function<bool(llvm::ArrayRef<float> logits, std::string &error)>
      firstWindowLogits;
};

struct PerplexityResult {
  double perplexity = 0, meanNll = 0;
  int64_t predicted = 0, windows = 0, seqlen = 0;
  double seconds = 0;
};

/// The perplexity of `model` on `tokens` (from `source`, named in
/// messages). Returns false with a one-line `error` for options that do not
/// fit the tokens or the model, or when the model fails.
bool evaluatePerplexity(ModelBackend &model, llvm::ArrayRef<int64_t> tokens,
                        llvm::StringRef source,
                        const PerplexityOptions &options,
                        PerplexityResult &result, std::string &error);

/// sq-run's result line: "perplexity P (mean NLL ...)", or one JSON object.
void printPerplexity(llvm::raw_ostream &os, const PerplexityResult &result,
                     bool json);

struct BenchmarkOptions {
  int64_t promptLength = 128; ///< seeded random tokens prefilled at once
  int64_t decodeTokens = 64;  ///< then decoded one at a time (greedy)
  int64_t repeats = 3;        ///< the median is reported
  int64_t context = 0;        ///< the model's context; 0: from the model
  unsigned seed = 0;
};

struct BenchmarkResult {
  int64_t promptLength = 0, decodeTokens = 0;
  double prefillSeconds = 0, decodeSeconds = 0; ///< medians
};

/// Measures prefill and decode speed. False with `error` for bad options
/// or when the model fails.
bool benchmark(ModelBackend &model, const BenchmarkOptions &options,
               BenchmarkResult &result, std::string &error);

/// One JSON object with tokens/s.
void printBenchmark(llvm::raw_ostream &os, const BenchmarkResult &result);

} // namespace sq

#endif // SQ_EXEC_EVALUATE_H
