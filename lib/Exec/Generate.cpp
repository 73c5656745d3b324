//===- Generate.cpp - text generation and token sampling ------------------===//

#include "sq/Exec/Generate.h"
#include "sq/Exec/Evaluate.h"

#include "llvm/ADT/Twine.h"

#include <algorithm>
#include <cmath>
#include <vector>

using namespace llvm;

namespace sq {

int64_t sampleToken(const float *logits, int64_t vocab,
                    const SamplingOptions &options, std::mt19937 &rng) {
  double temperature = options.temperature;
  if (temperature <= 0)
    return std::max_element(logits, logits + vocab) - logits;
  std::vector<std::pair<double, int64_t>> probs(vocab);
  float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    double p = std::exp((logits[i] - mx) / temperature);
    probs[i] = {p, i};
    sum += p;
  }
  std::sort(probs.begin(), probs.end(),
            [](auto &a, auto &b) { return a.first > b.first; });
  double keep = 0;
  size_t n = 0;
  while (n < probs.size() && keep < options.topP * sum)
    keep += probs[n++].first;
  std::uniform_real_distribution<double> u(0.0, keep);
  double r = u(rng);
  for (size_t i = 0; i < n; ++i) {
    r -= probs[i].first;
    if (r <= 0)
      return probs[i].second;
  }
  return probs[n - 1].second;
}

bool generate(ModelBackend &model, const Tokenizer &tok, StringRef prompt,
              const GenerateOptions &options, raw_ostream &out,
              std::string &error) {
  int64_t numTokens = options.numTokens;
  if (numTokens < 0 || numTokens > kMaxTokens) {
    error = ("-n must be in [0, " + Twine(kMaxTokens) + "]").str();
    return false;
  }
  std::vector<int64_t> ids;
  if (tok.bos() >= 0)
    ids.push_back(tok.bos());
  std::vector<int64_t> promptIds = tok.encode(prompt);
  ids.insert(ids.end(), promptIds.begin(), promptIds.end());
  if (ids.empty()) {
    error = "the prompt is empty and the tokenizer has no BOS token";
    return false;
  }
  int64_t ctx = options.context ? options.context : model.info().maxPositions;
  if (ctx && static_cast<int64_t>(ids.size()) + numTokens > ctx) {
    error = ("prompt and -n need " + Twine(ids.size() + numTokens) +
             " positions, more than the model's context of " + Twine(ctx))
                .str();
    return false;
  }
  int64_t vocab = model.info().vocabSize;
  std::mt19937 rng(options.seed);
  std::vector<float> logits;
  model.reset();
  if (!model.forward(ids, 1, ids.size(), logits, error))
    return false;
  size_t textStart = tok.bos() >= 0 ? 1 : 0;
  std::string shown = tok.decode(ArrayRef<int64_t>(ids).drop_front(textStart));
  out << shown;
  out.flush();
  const float *last = logits.data() + (ids.size() - 1) * vocab;
  for (int64_t i = 0; i < numTokens; ++i) {
    int64_t next = sampleToken(last, vocab, options.sampling, rng);
    if (next == tok.eos())
      break;
    ids.push_back(next);
    std::string text = tok.decode(ArrayRef<int64_t>(ids).drop_front(textStart));
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0)
      out << text.substr(shown.size());
    shown = text;
    out.flush();
    if (i + 1 == numTokens)
      break;
    if (!model.forward({next}, 1, 1, logits, error))
      return false;
    last = logits.data();
  }
  out << "\n";
  return true;
}

} // namespace sq
