//===- HFConfig.cpp - a Hugging Face config.json, checked -----------------===//
//
// Each architecture's fields follow transformers' LlamaConfig, Qwen2Config
// and MistralConfig (their defaults where a field may be absent). A field is
// in one of three classes: read (and honoured or refused), harmless (it does
// not change the logits: token ids, dropout at inference, generation
// defaults, bookkeeping), or unknown (reported as a warning).
//
//===----------------------------------------------------------------------===//

#include "sq/Import/HFConfig.h"

#include "sq/Support/BoundedJSON.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace sq {

namespace {

enum class Arch { Llama, Qwen2, Mistral };

/// Fields that do not change the function a causal LM computes.
const char *const kHarmless[] = {
    "model_type", "transformers_version", "_name_or_path", "torch_dtype",
    "dtype", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id",
    "sep_token_id", "decoder_start_token_id", "initializer_range",
    "attention_dropout", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "is_decoder", "tie_encoder_decoder", "chunk_size_feed_forward",
    "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix",
    "task_specific_params", "problem_type", "max_length", "min_length",
    "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "cross_attention_hidden_size",
    "_attn_implementation_autoset", "_attn_implementation",
    // pretraining_tp > 1 makes transformers compute the same matmuls in
    // slices (the same function up to rounding).
    "pretraining_tp",
    // Read below where they matter.
    "architectures", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    "rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor",
    "tie_word_embeddings", "quantization_config", "is_encoder_decoder",
    "add_cross_attention", "pruned_heads"};

class Parser {
public:
  Parser(const json::Object &obj, StringRef path, HFModelConfig &c,
         std::string &error)
      : obj(obj), path(path), c(c), error(error) {}
  bool run();

private:
  bool fail(StringRef field, const Twine &what) {
    error = (path + ": field '" + field + "': " + what).str();
    return false;
  }
  bool has(StringRef f) const {
    const json::Value *v = obj.get(f);
    return v && v->kind() != json::Value::Null;
  }
  /// A required (or defaulted) positive integer.
  bool positiveInt(StringRef f, int64_t &out, std::optional<int64_t> dflt) {
    const json::Value *v = obj.get(f);
    if (!v || v->kind() == json::Value::Null) {
      if (dflt) {
        out = *dflt;
        return true;
      }
      return fail(f, "missing (a positive integer is required)");
    }
    std::optional<int64_t> i = v->getAsInteger();
    if (!i || *i <= 0 || *i > (int64_t(1) << 31))
      return fail(f, "must be a positive integer below 2^31");
    out = *i;
    return true;
  }
  bool positiveNumber(StringRef f, double &out, std::optional<double> dflt) {
    const json::Value *v = obj.get(f);
    if (!v || v->kind() == json::Value::Null) {
      if (dflt) {
        out = *dflt;
        return true;
      }
      return fail(f, "missing (a positive number is required)");
    }
    std::optional<double> d = v->getAsNumber();
    if (!d || !(*d > 0) || !std::isfinite(*d))
      return fail(f, "must be a positive number");
    out = *d;
    return true;
  }
  bool boolean(StringRef f, bool &out, bool dflt) {
    const json::Value *v = obj.get(f);
    if (!v || v->kind() == json::Value::Null) {
      out = dflt;
      return true;
    }
    std::optional<bool> b = v->getAsBoolean();
    if (!b)
      return fail(f, "must be true or false");
    out = *b;
    return true;
  }
  bool architecture();
  bool rope();
  bool llama3(StringRef field, const json::Object &s);
  bool slidingWindow();
  bool harmlessValues();

  const json::Object &obj;
  StringRef path;
  HFModelConfig &c;
  std::string &error;
  Arch arch = Arch::Llama;
};

bool Parser::architecture() {
  const json::Value *v = obj.get("architectures");
  const json::Array *a = v ? v->getAsArray() : nullptr;
  if (!v)
    return fail("architectures",
                "missing (expected [\"LlamaForCausalLM\"], "
                "[\"Qwen2ForCausalLM\"] or [\"MistralForCausalLM\"])");
  if (!a || a->size() != 1 || !(*a)[0].getAsString())
    return fail("architectures", "must be a list of one class name");
  StringRef name = *(*a)[0].getAsString();
  const char *modelType;
  if (name == "LlamaForCausalLM") {
    arch = Arch::Llama;
    modelType = "llama";
  } else if (name == "Qwen2ForCausalLM") {
    arch = Arch::Qwen2;
    modelType = "qwen2";
  } else if (name == "MistralForCausalLM") {
    arch = Arch::Mistral;
    modelType = "mistral";
  } else {
    return fail("architectures",
                "'" + name +
                    "' is not supported (SQ imports LlamaForCausalLM, "
                    "Qwen2ForCausalLM and MistralForCausalLM)");
  }
  c.architecture = name.str();
  if (const json::Value *mt = obj.get("model_type")) {
    std::optional<StringRef> s = mt->getAsString();
    if (!s || *s != modelType)
      return fail("model_type",
                  "must be \"" + Twine(modelType) + "\" for " + name);
  }
  return true;
}

bool Parser::llama3(StringRef field, const json::Object &s) {
  for (const auto &[k, v] : s) {
    StringRef key = k;
    if (key != "rope_type" && key != "type" && key != "factor" &&
        key != "low_freq_factor" && key != "high_freq_factor" &&
        key != "original_max_position_embeddings" && key != "rope_theta")
      return fail((field + "." + key).str(),
                  "unknown in llama3 RoPE scaling (expected factor, "
                  "low_freq_factor, high_freq_factor, "
                  "original_max_position_embeddings)");
  }
  HFModelConfig::Llama3Scaling sc;
  auto number = [&](StringRef k, double &out) {
    std::optional<double> d = s.getNumber(k);
    if (!d || !(*d > 0) || !std::isfinite(*d))
      return fail((field + "." + k).str(),
                  d ? "must be a positive number"
                    : "missing (llama3 RoPE scaling needs it)");
    out = *d;
    return true;
  };
  if (!number("factor", sc.factor) ||
      !number("low_freq_factor", sc.lowFreqFactor) ||
      !number("high_freq_factor", sc.highFreqFactor))
    return false;
  if (!(sc.highFreqFactor > sc.lowFreqFactor))
    return fail((field + ".high_freq_factor").str(),
                "must be above low_freq_factor");
  std::optional<int64_t> orig =
      s.getInteger("original_max_position_embeddings");
  if (!orig || *orig <= 0)
    return fail((field + ".original_max_position_embeddings").str(),
                "missing or not a positive integer (llama3 RoPE scaling "
                "needs it)");
  sc.originalMaxPositions = *orig;
  c.ropeScaling = sc;
  return true;
}

bool Parser::rope() {
  if (!positiveNumber("rope_theta", c.ropeTheta, 10000.0))
    return false;
  // transformers 5 keeps rope_theta and the scaling in rope_parameters.
  for (StringRef field : {"rope_scaling", "rope_parameters"}) {
    const json::Value *v = obj.get(field);
    if (!v || v->kind() == json::Value::Null)
      continue;
    const json::Object *s = v->getAsObject();
    if (!s)
      return fail(field, "must be an object or null");
    std::optional<StringRef> type = s->getString("rope_type");
    if (!type)
      type = s->getString("type");
    if (!type)
      return fail(field, "has no rope_type");
    if (const json::Value *t = s->get("rope_theta")) {
      std::optional<double> d = t->getAsNumber();
      if (!d || !(*d > 0) || !std::isfinite(*d))
        return fail((field + ".rope_theta").str(), "must be a positive number");
      c.ropeTheta = *d;
    }
    if (*type == "default") {
      for (const auto &[k, val] : *s)
        if (StringRef(k) != "rope_type" && StringRef(k) != "type" &&
            StringRef(k) != "rope_theta")
          return fail((field + "." + StringRef(k)).str(),
                      "unknown with rope_type \"default\"");
      continue;
    }
    if (*type != "llama3")
      return fail(field, "rope_type '" + *type +
                             "' is not supported (SQ implements plain RoPE "
                             "and LLaMA-3.1's \"llama3\" scaling)");
    if (!llama3(field, *s))
      return false;
  }
  if (has("partial_rotary_factor")) {
    std::optional<double> f = obj.get("partial_rotary_factor")->getAsNumber();
    if (!f || *f != 1.0)
      return fail("partial_rotary_factor",
                  "must be 1 (RoPE on part of each head is not supported)");
  }
  return true;
}

bool Parser::slidingWindow() {
  std::optional<int64_t> window;
  StringRef windowField = "sliding_window";
  if (arch == Arch::Llama)
    return true; // not a LLaMA field: unknown fields are reported
  const json::Value *sw = obj.get("sliding_window");
  if (sw && sw->kind() != json::Value::Null) {
    std::optional<int64_t> w = sw->getAsInteger();
    if (!w || *w <= 0)
      return fail("sliding_window", "must be a positive integer or null");
    window = *w;
  }
  bool binds = window && *window < c.maxPositions;
  if (arch == Arch::Mistral) {
    // MistralAttention: every layer sees the last sliding_window keys.
    if (binds)
      c.slidingWindow = *window;
    return true;
  }
  // Qwen2: windows only with use_sliding_window, on the layers
  // layer_types names (default: those from max_window_layers on).
  bool use = false;
  if (!boolean("use_sliding_window", use, false))
    return false;
  int64_t fromLayer = 0;
  std::vector<bool> sliding(c.numLayers, false);
  if (const json::Value *lt = obj.get("layer_types");
      lt && lt->kind() != json::Value::Null) {
    const json::Array *a = lt->getAsArray();
    if (!a || int64_t(a->size()) != c.numLayers)
      return fail("layer_types", "must list num_hidden_layers entries");
    for (size_t i = 0; i < a->size(); ++i) {
      std::optional<StringRef> s = (*a)[i].getAsString();
      if (!s || (*s != "full_attention" && *s != "sliding_attention"))
        return fail("layer_types", "entries must be \"full_attention\" or "
                                   "\"sliding_attention\"");
      sliding[i] = *s == "sliding_attention";
    }
    windowField = "layer_types";
  } else {
    fromLayer = 28; // Qwen2Config's default
    if (has("max_window_layers")) {
      std::optional<int64_t> m = obj.get("max_window_layers")->getAsInteger();
      if (!m || *m < 0)
        return fail("max_window_layers", "must be a non-negative integer");
      fromLayer = *m;
    }
    for (int64_t i = fromLayer; i < c.numLayers; ++i)
      sliding[i] = true;
    windowField = "use_sliding_window";
  }
  if (!use || !binds)
    return true;
  int64_t n = std::count(sliding.begin(), sliding.end(), true);
  if (n == 0)
    return true;
  if (n != c.numLayers)
    return fail(windowField,
                "a sliding window of " + Twine(*window) + " (below " +
                    "max_position_embeddings " + Twine(c.maxPositions) +
                    ") on " + Twine(n) + " of " + Twine(c.numLayers) +
                    " layers is not supported (only on all layers)");
  c.slidingWindow = *window;
  return true;
}

/// Fields of the harmless class that would change the model if set
/// otherwise.
bool Parser::harmlessValues() {
  bool b = false;
  if (!boolean("is_encoder_decoder", b, false))
    return false;
  if (b)
    return fail("is_encoder_decoder", "must be false (a decoder-only LM)");
  if (!boolean("add_cross_attention", b, false))
    return false;
  if (b)
    return fail("add_cross_attention", "must be false");
  if (const json::Value *p = obj.get("pruned_heads")) {
    const json::Object *o = p->getAsObject();
    if (!o || !o->empty())
      return fail("pruned_heads", "must be empty (pruned heads are not "
                                  "supported)");
  }
  if (has("quantization_config")) {
    std::string method = "unknown method";
    if (const json::Object *q = obj.getObject("quantization_config"))
      if (std::optional<StringRef> m = q->getString("quant_method"))
        method = m->str();
    return fail("quantization_config",
                "pre-quantized checkpoints (" + method +
                    ") are not supported; SQ imports float32, float16 "
                    "and bfloat16 weights and quantizes them itself");
  }
  for (StringRef f : {"torch_dtype", "dtype"})
    if (has(f)) {
      std::optional<StringRef> s = obj.get(f)->getAsString();
      if (!s)
        return fail(f, "must be a string");
      c.torchDtype = s->str();
    }
  return true;
}

bool Parser::run() {
  if (!architecture() || !harmlessValues())
    return false;
  if (!positiveInt("vocab_size", c.vocabSize, std::nullopt) ||
      !positiveInt("hidden_size", c.hiddenSize, std::nullopt) ||
      !positiveInt("intermediate_size", c.intermediateSize, std::nullopt) ||
      !positiveInt("num_hidden_layers", c.numLayers, std::nullopt) ||
      !positiveInt("num_attention_heads", c.numHeads, std::nullopt) ||
      !positiveInt("max_position_embeddings", c.maxPositions, std::nullopt) ||
      !positiveNumber("rms_norm_eps", c.rmsNormEps, std::nullopt))
    return false;
  // LlamaConfig and Qwen2Config default num_key_value_heads to the heads;
  // MistralConfig to 8: required there rather than guessed.
  if (!positiveInt("num_key_value_heads", c.numKvHeads,
                   arch == Arch::Mistral ? std::nullopt
                                         : std::optional(c.numHeads)))
    return false;
  if (c.numHeads % c.numKvHeads)
    return fail("num_key_value_heads",
                Twine(c.numKvHeads) + " does not divide num_attention_heads " +
                    Twine(c.numHeads));
  if (has("head_dim")) {
    if (!positiveInt("head_dim", c.headDim, std::nullopt))
      return false;
  } else {
    if (c.hiddenSize % c.numHeads)
      return fail("hidden_size",
                  Twine(c.hiddenSize) + " is not a multiple of " +
                      "num_attention_heads " + Twine(c.numHeads) +
                      " and no head_dim is given");
    c.headDim = c.hiddenSize / c.numHeads;
  }
  if (c.headDim % 2)
    return fail("head_dim", Twine(c.headDim) + " is odd (RoPE rotates pairs)");
  if (const json::Value *act = obj.get("hidden_act")) {
    std::optional<StringRef> s = act->getAsString();
    if (!s || (*s != "silu" && *s != "swish"))
      return fail("hidden_act",
                  "'" + (s ? *s : StringRef("?")) +
                      "' is not supported (SQ implements SwiGLU: silu)");
  }
  if (!rope())
    return false;
  if (!boolean("tie_word_embeddings", c.tieWordEmbeddings, false))
    return false;
  StringSet<> known;
  for (const char *f : kHarmless)
    known.insert(f);
  switch (arch) {
  case Arch::Llama: {
    bool attn = false, mlp = false;
    if (!boolean("attention_bias", attn, false) ||
        !boolean("mlp_bias", mlp, false))
      return false;
    c.qkvBias = c.oBias = attn;
    c.mlpBias = mlp;
    known.insert("attention_bias");
    known.insert("mlp_bias");
    break;
  }
  case Arch::Qwen2:
    c.qkvBias = true; // Qwen2Attention: q/k/v with bias, o_proj without
    for (const char *f : {"sliding_window", "use_sliding_window",
                          "max_window_layers", "layer_types"})
      known.insert(f);
    break;
  case Arch::Mistral:
    known.insert("sliding_window");
    break;
  }
  if (!slidingWindow())
    return false;
  for (const auto &[k, v] : obj)
    if (!known.contains(StringRef(k)))
      c.unknownFields.push_back(StringRef(k).str());
  std::sort(c.unknownFields.begin(), c.unknownFields.end());
  return true;
}

} // namespace

bool parseHFConfig(StringRef text, StringRef path, HFModelConfig &config,
                   std::string &error) {
  auto json = parseBoundedJSON(text, 32);
  if (!json) {
    error =
        (path + ": invalid JSON (" + toString(json.takeError()) + ")").str();
    return false;
  }
  const json::Object *obj = json->getAsObject();
  if (!obj) {
    error = (path + ": not a JSON object").str();
    return false;
  }
  config = HFModelConfig();
  return Parser(*obj, path, config, error).run();
}

bool readHFConfig(StringRef dir, HFModelConfig &config, std::string &error) {
  SmallString<256> path(dir);
  sys::path::append(path, "config.json");
  sys::fs::file_status st;
  if (sys::fs::status(path, st) || !sys::fs::is_regular_file(st)) {
    error = std::string(path) + ": " +
            (sys::fs::exists(st) ? "not a regular file" : "no such file") +
            " (a Hugging Face model folder has a config.json)";
    return false;
  }
  auto buffer = MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer) {
    error = std::string(path) + ": cannot read: " + buffer.getError().message();
    return false;
  }
  if ((*buffer)->getBufferSize() > (size_t(16) << 20)) {
    error = std::string(path) + ": larger than 16 MB; not a config.json";
    return false;
  }
  return parseHFConfig((*buffer)->getBuffer(), path, config, error);
}

} // namespace sq
