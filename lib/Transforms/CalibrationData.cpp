//===- CalibrationData.cpp - the calibration text and its windows ---------===//
//
// The WikiText-2 excerpt compiled into SQ (the default calibration text)
// and the seeded windows the calibration draws from a text or from
// pre-tokenized ids, with the held-out validation windows (see
// Calibrate.h).
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/TokenLoader.h"
#include "sq/Transforms/Calibrate.h"

#include <random>

using namespace mlir;

namespace sq {

//===----------------------------------------------------------------------===//
// The embedded calibration text
//===----------------------------------------------------------------------===//

static const char defaultText[] = {
#include "DefaultCalibrationText.inc"
};

StringRef defaultCalibrationText() {
  return StringRef(defaultText, sizeof(defaultText));
}

bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::string &error) {
  std::vector<std::vector<int64_t>> heldOut;
  CalibrationOptions noValidation = options;
  noValidation.validate = 0;
  return loadCalibrationWindows(noValidation, seqlen, vocab, windows, heldOut,
                                error);
}

bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::vector<std::vector<int64_t>> &heldOut,
                            std::string &error) {
  std::vector<int64_t> tokens;
  std::string what =
      options.data.empty()
          ? std::string("the embedded calibration text (WikiText-2)")
          : "calibration data '" + options.data + "'";
  TokenSource source;
  source.path = options.data;
  source.text = defaultCalibrationText();
  source.name = what;
  source.tokenizerSpec = options.tokenizer;
  // No tokenizer given: bytes, which only a byte-level model reads.
  if (vocab == 256)
    source.defaultTokenizerSpec = "byte";
  source.needsTokenizer =
      "calibration text needs the model's tokenizer: give "
      "tokenizer=sp:PATH (its SentencePiece model; byte-level "
      "models, vocabulary 256, default to tokenizer=byte), "
      "tokenizer=hf:DIR (its tokenizer.json) or "
      "pre-tokenized data=FILE.bin (this model's vocabulary is " +
      std::to_string(vocab) + ")";
  source.vocab = vocab;
  if (!loadTokens(source, tokens, error))
    return false;
  heldOut.clear();
  if (options.validate > 0) {
    int64_t need = (options.validate + 1) * seqlen + 1;
    if (int64_t(tokens.size()) < need) {
      error = what + " has " + std::to_string(tokens.size()) +
              " tokens: validate=" + std::to_string(options.validate) +
              " needs at least " + std::to_string(need) + " at seqlen " +
              std::to_string(seqlen);
      return false;
    }
    size_t end = tokens.size();
    for (int64_t i = 0; i < options.validate; ++i, end -= seqlen)
      heldOut.emplace_back(tokens.begin() + end - seqlen, tokens.begin() + end);
    tokens.resize(end);
  }
  if (int64_t(tokens.size()) <= seqlen) {
    error = what + " has " + std::to_string(tokens.size()) +
            " tokens, fewer than seqlen " + std::to_string(seqlen);
    return false;
  }
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int64_t> start(0, tokens.size() - seqlen - 1);
  windows.clear();
  for (int64_t i = 0; i < options.samples; ++i) {
    int64_t s = start(rng);
    windows.emplace_back(tokens.begin() + s, tokens.begin() + s + seqlen);
  }
  return true;
}

} // namespace sq
