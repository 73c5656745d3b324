//===- Generate.h - text generation and token sampling ----------*- C++ -*-===//
//
// sq-run --generate: the prompt (after BOS when the tokenizer has one) is
// prefilled at once, then one token at a time is picked from the last
// logits (greedy, or temperature + top-p sampling) and decoded, printing
// the text as it grows, until -n tokens or EOS.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_GENERATE_H
#define SQ_EXEC_GENERATE_H

#include "sq/Exec/ModelBackend.h"
#include "sq/Exec/Tokenizer.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <random>
#include <string>

namespace sq {

struct SamplingOptions {
  double temperature = 0; ///< 0: greedy (the most likely token)
  double topP = 1;        ///< nucleus: the smallest set with this much mass
};

/// The next token from `vocab` logits: the argmax when temperature <= 0,
/// otherwise a draw from the top-p nucleus of softmax(logits / T).
int64_t sampleToken(const float *logits, int64_t vocab,
                    const SamplingOptions &options, std::mt19937 &rng);

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t numTokens = 64; ///< tokens to generate at most
  int64_t context = 0;    ///< the model's context; 0: from the model
  unsigned seed = 0;      ///< of the sampler
};

/// Generates text after `prompt`, streaming the prompt and then each new
/// piece of text to `out` (flushed as it grows), and a final newline.
/// Returns false with a one-line `error` (the text so far stays written).
bool generate(ModelBackend &model, const Tokenizer &tokenizer,
              llvm::StringRef prompt, const GenerateOptions &options,
              llvm::raw_ostream &out, std::string &error);

} // namespace sq

#endif // SQ_EXEC_GENERATE_H
