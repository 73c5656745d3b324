//===- Evaluate.cpp - perplexity and speed of a model ---------------------===//

#include "sq/Exec/Evaluate.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

using namespace llvm;

namespace sq {

namespace {
/// A one-line progress bar on stderr.
struct Progress {
  bool enabled;
  std::chrono::steady_clock::time_point start =
      std::chrono::steady_clock::now();
  explicit Progress(bool enabled) : enabled(enabled) {}
  void update(int64_t done, int64_t total, int64_t tokens) {
    if (!enabled)
      return;
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    double eta = done ? s / done * (total - done) : 0;
    errs() << format("\r[%lld/%lld windows] %.0f tok/s, ETA %dm%02ds   ",
                     (long long)done, (long long)total,
                     s > 0 ? tokens / s : 0.0, int(eta) / 60, int(eta) % 60);
  }
  void finish() {
    if (enabled)
      errs() << "\n";
  }
};

bool failWith(std::string &error, const Twine &message) {
  error = message.str();
  return false;
}
} // namespace

double logSoftmaxAt(const float *logits, int64_t vocab, int64_t target) {
  float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i)
    sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

bool evaluatePerplexity(ModelBackend &model, ArrayRef<int64_t> ids,
                        StringRef source, const PerplexityOptions &options,
                        PerplexityResult &result, std::string &error) {
  int64_t seqlen = options.seqlen;
  if (ids.empty())
    return failWith(error, source + ": no tokens (empty text)");
  if (seqlen < 2)
    return failWith(error,
                    "--seqlen must be at least 2 (got " + Twine(seqlen) + ")");
  int64_t ctx = options.context ? options.context : model.info().maxPositions;
  if (ctx && seqlen > ctx)
    return failWith(error, "--seqlen " + Twine(seqlen) +
                               " is larger than the model's context of " +
                               Twine(ctx) + " tokens");
  int64_t step = options.stride ? options.stride : seqlen;
  if (step <= 0 || step > seqlen)
    return failWith(error, "--stride must be in [1, seqlen]");
  if (options.prefill < 0 || options.prefill >= seqlen)
    if (options.prefill != 0)
      return failWith(error, "--prefill must be in [1, seqlen - 1] (got " +
                                 Twine(options.prefill) + ")");
  if (static_cast<int64_t>(ids.size()) < seqlen)
    return failWith(error, source + " has " + Twine(ids.size()) +
                               " tokens, fewer than one window of --seqlen " +
                               Twine(seqlen));
  int64_t windows = (static_cast<int64_t>(ids.size()) - seqlen) / step + 1;
  if (options.maxWindows > 0)
    windows = std::min<int64_t>(windows, options.maxWindows);
  int64_t vocab = model.info().vocabSize;

  Progress progress(options.progress);
  auto start = std::chrono::steady_clock::now();
  double nll = 0;
  int64_t predicted = 0;
  std::vector<float> logits;
  int64_t batch = std::max<int64_t>(1, options.batch);
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    int64_t nb = std::min(batch, windows - w0);
    std::vector<int64_t> tokens;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t *begin = ids.data() + (w0 + b) * step;
      tokens.insert(tokens.end(), begin, begin + seqlen);
    }
    model.reset();
    if (options.prefill > 0 && options.prefill < seqlen) {
      // The prompt, then one token at a time through the cache.
      logits.assign(nb * seqlen * vocab, 0.0f);
      std::vector<float> part;
      for (int64_t done = 0; done < seqlen;) {
        int64_t n = done == 0 ? options.prefill : 1;
        std::vector<int64_t> chunk;
        for (int64_t b = 0; b < nb; ++b)
          chunk.insert(chunk.end(), tokens.begin() + b * seqlen + done,
                       tokens.begin() + b * seqlen + done + n);
        if (!model.forward(chunk, nb, n, part, error))
          return false;
        for (int64_t b = 0; b < nb; ++b)
          std::copy(part.begin() + b * n * vocab,
                    part.begin() + (b + 1) * n * vocab,
                    logits.begin() + (b * seqlen + done) * vocab);
        done += n;
      }
    } else if (!model.forward(tokens, nb, seqlen, logits, error)) {
      return false;
    }
    if (w0 == 0 && options.firstWindowLogits &&
        !options.firstWindowLogits(
            ArrayRef<float>(logits).take_front(seqlen * vocab), error))
      return false;
    for (int64_t b = 0; b < nb; ++b) {
      // Later overlapping windows only score their last `step` tokens.
      int64_t first = (w0 + b == 0) ? 0 : seqlen - 1 - step;
      for (int64_t i = std::max<int64_t>(first, 0); i + 1 < seqlen; ++i) {
        nll -= logSoftmaxAt(logits.data() + (b * seqlen + i) * vocab, vocab,
                            tokens[b * seqlen + i + 1]);
        ++predicted;
      }
    }
    progress.update(w0 + nb, windows, (w0 + nb) * seqlen);
  }
  progress.finish();
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  result.meanNll = nll / predicted;
  result.perplexity = std::exp(result.meanNll);
  result.predicted = predicted;
  result.windows = windows;
  result.seqlen = seqlen;
  return true;
}

void printPerplexity(raw_ostream &os, const PerplexityResult &r, bool json) {
  if (json)
    os << format("{\"ppl\": %.6f, \"nll\": %.6f, \"tokens\": %lld, "
                 "\"windows\": %lld, \"seqlen\": %lld, \"seconds\": %.3f}\n",
                 r.perplexity, r.meanNll, (long long)r.predicted,
                 (long long)r.windows, (long long)r.seqlen, r.seconds);
  else
    os << format("perplexity %.4f (mean NLL %.6f over %lld predicted "
                 "tokens, %lld windows of %lld, %.1f s)\n",
                 r.perplexity, r.meanNll, (long long)r.predicted,
                 (long long)r.windows, (long long)r.seqlen, r.seconds);
}

bool benchmark(ModelBackend &model, const BenchmarkOptions &options,
               BenchmarkResult &result, std::string &error) {
  int64_t vocab = model.info().vocabSize;
  int64_t promptLen = options.promptLength, numTokens = options.decodeTokens;
  if (promptLen < 1 || numTokens < 1 || options.repeats < 1)
    return failWith(error, "--bench needs --prompt-len, -n and --repeats >= 1");
  if (promptLen > kMaxTokens || numTokens > kMaxTokens)
    return failWith(error, "--prompt-len and -n must be at most " +
                               Twine(kMaxTokens) + " tokens");
  int64_t ctx = options.context ? options.context : model.info().maxPositions;
  if (ctx && promptLen + numTokens > ctx)
    return failWith(error, "--prompt-len + -n exceed the model's context of " +
                               Twine(ctx));
  std::mt19937 rng(options.seed);
  std::vector<int64_t> prompt(promptLen);
  for (int64_t &t : prompt)
    t = std::uniform_int_distribution<int64_t>(0, vocab - 1)(rng);
  std::vector<double> prefillTimes, decodeTimes;
  std::vector<float> logits;
  for (int64_t r = 0; r < options.repeats; ++r) {
    model.reset();
    auto t0 = std::chrono::steady_clock::now();
    if (!model.forward(prompt, 1, promptLen, logits, error))
      return false;
    auto t1 = std::chrono::steady_clock::now();
    int64_t next = std::max_element(logits.end() - vocab, logits.end()) -
                   logits.end() + vocab;
    for (int64_t i = 0; i < numTokens; ++i) {
      if (!model.forward({next}, 1, 1, logits, error))
        return false;
      next = std::max_element(logits.begin(), logits.end()) - logits.begin();
    }
    auto t2 = std::chrono::steady_clock::now();
    prefillTimes.push_back(std::chrono::duration<double>(t1 - t0).count());
    decodeTimes.push_back(std::chrono::duration<double>(t2 - t1).count());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  result.promptLength = promptLen;
  result.decodeTokens = numTokens;
  result.prefillSeconds = median(prefillTimes);
  result.decodeSeconds = median(decodeTimes);
  return true;
}

void printBenchmark(raw_ostream &os, const BenchmarkResult &r) {
  double p = r.prefillSeconds, d = r.decodeSeconds;
  os << format("{\"prefill_tokens\": %lld, \"prefill_seconds\": %.6f, "
               "\"prefill_tokens_per_s\": %.1f, \"decode_tokens\": %lld, "
               "\"decode_seconds\": %.6f, \"decode_tokens_per_s\": %.2f}\n",
               (long long)r.promptLength, p, r.promptLength / p,
               (long long)r.decodeTokens, d, r.decodeTokens / d);
}

} // namespace sq
