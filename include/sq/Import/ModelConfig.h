//===- ModelConfig.h - the sq.config module attribute ----------*- C++ -*-===//
//
// Both importers (ONNX: recovered from the graph; Hugging Face: read from
// config.json) describe the model they built with the same `sq.config`
// dictionary on the module, written by this one function, so that the two
// routes cannot drift apart. Keys follow Hugging Face's config.json
// spelling; the optional ones are present only when they apply.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_MODELCONFIG_H
#define SQ_IMPORT_MODELCONFIG_H

#include "sq/Dialect/SQ/IR/SQ.h"

#include "mlir/IR/BuiltinAttributes.h"

#include <cstdint>
#include <optional>

namespace sq {

struct ImportedModelConfig {
  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0, numHeads = 0,
          numKvHeads = 0, headDim = 0, intermediateSize = 0;
  double ropeTheta = 10000.0, rmsNormEps = 1e-5;
  RopeLayout ropeLayout = RopeLayout::RotateHalf;
  /// LLaMA-3.1 (llama3) RoPE scaling; null for none.
  RopeScalingAttr ropeScaling;
  bool tieWordEmbeddings = false, kvCache = false;
  /// Written only when true.
  bool attentionBias = false, mlpBias = false, lmHeadBias = false;
  /// Written only when set (a window every layer shares; 0 = none).
  int64_t slidingWindow = 0;
  std::optional<int64_t> maxPositionEmbeddings;
};

/// The `sq.config` dictionary of `config`.
mlir::DictionaryAttr buildConfigAttr(mlir::MLIRContext *context,
                                     const ImportedModelConfig &config);

} // namespace sq

#endif // SQ_IMPORT_MODELCONFIG_H
