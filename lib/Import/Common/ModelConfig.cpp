//===- ModelConfig.cpp - the sq.config module attribute -------------------===//

#include "sq/Import/ModelConfig.h"

#include "mlir/IR/Builders.h"

using namespace mlir;

namespace sq {

DictionaryAttr buildConfigAttr(MLIRContext *context,
                               const ImportedModelConfig &c) {
  Builder b(context);
  SmallVector<NamedAttribute> config = {
      b.getNamedAttr("vocab_size", b.getI64IntegerAttr(c.vocabSize)),
      b.getNamedAttr("hidden_size", b.getI64IntegerAttr(c.hiddenSize)),
      b.getNamedAttr("num_hidden_layers", b.getI64IntegerAttr(c.numLayers)),
      b.getNamedAttr("num_attention_heads", b.getI64IntegerAttr(c.numHeads)),
      b.getNamedAttr("num_key_value_heads", b.getI64IntegerAttr(c.numKvHeads)),
      b.getNamedAttr("head_dim", b.getI64IntegerAttr(c.headDim)),
      b.getNamedAttr("intermediate_size",
                     b.getI64IntegerAttr(c.intermediateSize)),
      b.getNamedAttr("rope_theta", b.getF64FloatAttr(c.ropeTheta)),
      b.getNamedAttr("rope_layout",
                     b.getStringAttr(stringifyRopeLayout(c.ropeLayout))),
      b.getNamedAttr("rms_norm_eps", b.getF64FloatAttr(c.rmsNormEps)),
      b.getNamedAttr("tie_word_embeddings", b.getBoolAttr(c.tieWordEmbeddings)),
      b.getNamedAttr("kv_cache", b.getBoolAttr(c.kvCache)),
  };
  // Only when present, so that the configuration of a plain LLaMA keeps its
  // keys (Hugging Face's LLaMA config spells them this way).
  if (c.attentionBias)
    config.push_back(b.getNamedAttr("attention_bias", b.getBoolAttr(true)));
  if (c.mlpBias)
    config.push_back(b.getNamedAttr("mlp_bias", b.getBoolAttr(true)));
  if (c.lmHeadBias)
    config.push_back(b.getNamedAttr("lm_head_bias", b.getBoolAttr(true)));
  if (c.slidingWindow > 0)
    config.push_back(
        b.getNamedAttr("sliding_window", b.getI64IntegerAttr(c.slidingWindow)));
  if (c.maxPositionEmbeddings)
    config.push_back(
        b.getNamedAttr("max_position_embeddings",
                       b.getI64IntegerAttr(*c.maxPositionEmbeddings)));
  if (RopeScalingAttr s = c.ropeScaling) {
    config.push_back(b.getNamedAttr(
        "rope_scaling",
        b.getDictionaryAttr({
            b.getNamedAttr("rope_type", b.getStringAttr("llama3")),
            b.getNamedAttr("factor",
                           b.getF64FloatAttr(s.getFactor().convertToDouble())),
            b.getNamedAttr(
                "low_freq_factor",
                b.getF64FloatAttr(s.getLowFreqFactor().convertToDouble())),
            b.getNamedAttr(
                "high_freq_factor",
                b.getF64FloatAttr(s.getHighFreqFactor().convertToDouble())),
            b.getNamedAttr(
                "original_max_position_embeddings",
                b.getI64IntegerAttr(s.getOriginalMaxPositionEmbeddings())),
        })));
  }
  return b.getDictionaryAttr(config);
}

} // namespace sq
