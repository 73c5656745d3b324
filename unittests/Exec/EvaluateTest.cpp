//===- EvaluateTest.cpp - perplexity, sampling and generation, alone ------===//
//
// sq/Exec/Evaluate.h and sq/Exec/Generate.h against a fake ModelBackend
// whose logits are known: the window protocol (stride, batch, counts), the
// option errors, sampling and the generation loop.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Evaluate.h"
#include "sq/Exec/Generate.h"

#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace sq;

namespace {

/// Logits that depend only on the current token: the next token t + 1
/// (mod vocab) gets logit `peak`, all others 0. Counts its calls.
class FakeBackend : public ModelBackend {
public:
  FakeBackend(int64_t vocab, int64_t maxPositions, float peak = 2.0f)
      : peak(peak) {
    modelInfo.vocabSize = vocab;
    modelInfo.maxPositions = maxPositions;
  }
  bool forward(llvm::ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error) override {
    ++forwards;
    batches.insert(batch);
    int64_t vocab = modelInfo.vocabSize;
    logits.assign(batch * seq * vocab, 0.0f);
    for (int64_t i = 0; i < batch * seq; ++i)
      logits[i * vocab + (tokens[i] + 1) % vocab] = peak;
    return true;
  }
  void reset() override {}
  float peak;
  int forwards = 0;
  std::set<int64_t> batches;
};

TEST(Evaluate, LogSoftmaxAt) {
  std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(logSoftmaxAt(logits.data(), 3, 2), 3.0 - z, 1e-12);
  EXPECT_NEAR(logSoftmaxAt(logits.data(), 3, 0), 1.0 - z, 1e-12);
}

TEST(Evaluate, PerplexityWindowsStrideAndBatch) {
  int64_t vocab = 8;
  FakeBackend model(vocab, 0);
  // A stream the fake predicts perfectly (t + 1): every NLL is the same.
  std::vector<int64_t> ids(100);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = i % vocab;
  double nll = -(2.0 - std::log(std::exp(2.0) + (vocab - 1)));
  PerplexityOptions options;
  options.seqlen = 10;
  PerplexityResult r;
  std::string error;
  ASSERT_TRUE(evaluatePerplexity(model, ids, "s", options, r, error)) << error;
  EXPECT_EQ(r.windows, 10);
  EXPECT_EQ(r.predicted, 90);
  EXPECT_EQ(r.seqlen, 10);
  EXPECT_NEAR(r.meanNll, nll, 1e-9);
  EXPECT_NEAR(r.perplexity, std::exp(nll), 1e-9);

  // Overlapping windows: the first scores 9, each later one its last 4.
  options.stride = 4;
  options.maxWindows = 5;
  options.batch = 2;
  int calls = 0;
  options.firstWindowLogits = [&](llvm::ArrayRef<float> logits, std::string &) {
    ++calls;
    EXPECT_EQ(logits.size(), size_t(10 * vocab));
    return true;
  };
  FakeBackend batched(vocab, 0);
  ASSERT_TRUE(evaluatePerplexity(batched, ids, "s", options, r, error))
      << error;
  EXPECT_EQ(r.windows, 5);
  EXPECT_EQ(r.predicted, 9 + 4 * 4);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(batched.forwards, 3); // 2 + 2 + 1 windows
  EXPECT_EQ(batched.batches, (std::set<int64_t>{1, 2}));

  // The hook can stop the evaluation with its error.
  options.firstWindowLogits = [](llvm::ArrayRef<float>, std::string &e) {
    e = "no space";
    return false;
  };
  EXPECT_FALSE(evaluatePerplexity(batched, ids, "s", options, r, error));
  EXPECT_EQ(error, "no space");
}

TEST(Evaluate, PerplexityErrors) {
  FakeBackend model(8, 16);
  std::vector<int64_t> ids(12, 1);
  PerplexityOptions options;
  PerplexityResult r;
  std::string error;
  options.seqlen = 4;
  EXPECT_FALSE(evaluatePerplexity(model, {}, "f.bin", options, r, error));
  EXPECT_EQ(error, "f.bin: no tokens (empty text)");
  options.seqlen = 1;
  EXPECT_FALSE(evaluatePerplexity(model, ids, "f", options, r, error));
  EXPECT_EQ(error, "--seqlen must be at least 2 (got 1)");
  options.seqlen = 20;
  EXPECT_FALSE(evaluatePerplexity(model, ids, "f", options, r, error));
  EXPECT_EQ(error, "--seqlen 20 is larger than the model's context of 16 "
                   "tokens");
  options.seqlen = 8;
  options.context = 6;
  EXPECT_FALSE(evaluatePerplexity(model, ids, "f", options, r, error));
  EXPECT_EQ(error, "--seqlen 8 is larger than the model's context of 6 tokens");
  options.context = 0;
  options.stride = 9;
  EXPECT_FALSE(evaluatePerplexity(model, ids, "f", options, r, error));
  EXPECT_EQ(error, "--stride must be in [1, seqlen]");
  options.stride = 0;
  options.seqlen = 13;
  EXPECT_FALSE(evaluatePerplexity(model, ids, "f", options, r, error));
  EXPECT_EQ(error, "f has 12 tokens, fewer than one window of --seqlen 13");
}

TEST(Evaluate, PrintPerplexity) {
  PerplexityResult r;
  r.perplexity = 2.5;
  r.meanNll = std::log(2.5);
  r.predicted = 90;
  r.windows = 10;
  r.seqlen = 10;
  r.seconds = 1.25;
  std::string text, json;
  llvm::raw_string_ostream t(text), j(json);
  printPerplexity(t, r, /*json=*/false);
  printPerplexity(j, r, /*json=*/true);
  EXPECT_EQ(text, "perplexity 2.5000 (mean NLL 0.916291 over 90 predicted "
                  "tokens, 10 windows of 10, 1.2 s)\n");
  EXPECT_EQ(json, "{\"ppl\": 2.500000, \"nll\": 0.916291, \"tokens\": 90, "
                  "\"windows\": 10, \"seqlen\": 10, \"seconds\": 1.250}\n");
}

TEST(Evaluate, Benchmark) {
  FakeBackend model(8, 0);
  BenchmarkOptions options;
  options.promptLength = 5;
  options.decodeTokens = 3;
  options.repeats = 2;
  BenchmarkResult r;
  std::string error;
  ASSERT_TRUE(benchmark(model, options, r, error)) << error;
  EXPECT_EQ(r.promptLength, 5);
  EXPECT_EQ(r.decodeTokens, 3);
  EXPECT_EQ(model.forwards, 2 * (1 + 3));
  options.repeats = 0;
  EXPECT_FALSE(benchmark(model, options, r, error));
  EXPECT_EQ(error, "--bench needs --prompt-len, -n and --repeats >= 1");
}

TEST(Generate, GreedyIsTheArgmax) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
  std::mt19937 rng(0);
  EXPECT_EQ(sampleToken(logits.data(), 4, SamplingOptions(), rng), 1);
}

TEST(Generate, SamplingStaysInTheNucleusAndFollowsTheSeed) {
  // Probabilities at T = 1 ~ 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps two.
  std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
  SamplingOptions options;
  options.temperature = 1.0;
  options.topP = 0.8;
  std::mt19937 a(5), b(5);
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    int64_t x = sampleToken(logits.data(), 4, options, a);
    EXPECT_EQ(x, sampleToken(logits.data(), 4, options, b));
    seen.insert(x);
  }
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  // A nucleus of one token is greedy.
  options.topP = 0.1;
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(sampleToken(logits.data(), 4, options, a), 0);
}

TEST(Generate, StreamsThePromptAndTheNewText) {
  std::string error;
  std::unique_ptr<Tokenizer> byte = Tokenizer::create("byte", error);
  ASSERT_TRUE(byte);
  FakeBackend model(256, 0);
  GenerateOptions options;
  options.numTokens = 3;
  std::string out;
  llvm::raw_string_ostream os(out);
  ASSERT_TRUE(generate(model, *byte, "ab", options, os, error)) << error;
  EXPECT_EQ(out, "abcde\n");
  EXPECT_EQ(model.forwards, 3); // the prompt, then two decode steps

  options.numTokens = -1;
  EXPECT_FALSE(generate(model, *byte, "ab", options, os, error));
  EXPECT_EQ(error, "-n must be in [0, 16777216]");
  options.numTokens = 4;
  options.context = 5;
  EXPECT_FALSE(generate(model, *byte, "ab", options, os, error));
  EXPECT_EQ(error, "prompt and -n need 6 positions, more than the model's "
                   "context of 5");
  options.context = 0;
  EXPECT_FALSE(generate(model, *byte, "", options, os, error));
  EXPECT_EQ(error, "the prompt is empty and the tokenizer has no BOS token");
}

} // namespace
