//===- HFConfig.h - a Hugging Face config.json, checked --------*- C++ -*-===//
//
// The configuration of a Hugging Face causal LM as SQ imports it:
// `LlamaForCausalLM` (LLaMA-2, LLaMA-3/3.1/3.2 with rope_scaling of type
// llama3 and tie_word_embeddings), `Qwen2ForCausalLM` (q/k/v biases) and
// `MistralForCausalLM` (GQA, sliding_window). Every field whose value
// changes the computed function is read and either honoured or refused with
// an error naming the field; fields that do not change it (token ids,
// dropout, generation defaults, ...) are accepted; a field SQ does not know
// is reported as a warning (transformers ignores it too). Plain C++ over
// LLVM Support (no MLIR).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_HFCONFIG_H
#define SQ_IMPORT_HFCONFIG_H

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sq {

struct HFModelConfig {
  /// LlamaForCausalLM, Qwen2ForCausalLM or MistralForCausalLM.
  std::string architecture;
  int64_t vocabSize = 0, hiddenSize = 0, intermediateSize = 0, numLayers = 0,
          numHeads = 0, numKvHeads = 0, headDim = 0, maxPositions = 0;
  double rmsNormEps = 0, ropeTheta = 10000.0;
  /// rope_scaling {rope_type: llama3, ...}.
  struct Llama3Scaling {
    double factor = 0, lowFreqFactor = 0, highFreqFactor = 0;
    int64_t originalMaxPositions = 0;
  };
  std::optional<Llama3Scaling> ropeScaling;
  bool tieWordEmbeddings = false;
  /// Biases on q/k/v (Qwen2; LLaMA's attention_bias), on o_proj (LLaMA's
  /// attention_bias), on gate/up/down (LLaMA's mlp_bias).
  bool qkvBias = false, oBias = false, mlpBias = false;
  /// A sliding window that binds within max_position_embeddings (Mistral),
  /// 0 for none: every layer attends to the last `slidingWindow` keys.
  int64_t slidingWindow = 0;
  /// The weights' dtype as config.json states it ("" when absent).
  std::string torchDtype;
  /// Fields SQ does not know (transformers ignores them for these
  /// architectures): the importer warns.
  std::vector<std::string> unknownFields;
};

/// Parses and checks the text of `path` (config.json). False with a
/// one-line `error`, "PATH: field 'NAME': what".
bool parseHFConfig(llvm::StringRef text, llvm::StringRef path,
                   HFModelConfig &config, std::string &error);

/// Reads `dir`/config.json and parses it.
bool readHFConfig(llvm::StringRef dir, HFModelConfig &config,
                  std::string &error);

} // namespace sq

#endif // SQ_IMPORT_HFCONFIG_H
