//===- HFTokenizer.cpp - Hugging Face tokenizer.json tokenizers -----------===//
//
// Runs a tokenizer.json the way the Hugging Face `tokenizers` library does:
//
//   text --(invalid UTF-8 -> U+FFFD)--> split out the added tokens (leftmost
//   longest; lstrip/rstrip/single_word) --> normalizer --> pre-tokenizer
//   (pieces) --> model (BPE on each piece) --> ids; post-processor: the BOS /
//   EOS ids that encodeWithSpecialTokens adds.
//   ids --> token strings --> decoder chain --> text.
//
// What is read (everything else is an error naming the file and the JSON path
// of the entry), and where:
//   model        BPE: vocab, merges ("a b" strings or [a, b] pairs),
//                unk_token, fuse_unk, byte_fallback, ignore_merges,
//                continuing_subword_prefix, end_of_word_suffix (HFBPE.cpp)
//   normalizer   Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD (ICU)
//                (HFPreTokenizers.cpp)
//   pre_tokenizer Sequence, Split (String or Regex pattern, the five
//                behaviors, invert), ByteLevel (add_prefix_space, use_regex:
//                the GPT-2 regex), Metaspace (replacement, prepend_scheme or
//                the older add_prefix_space, split), Digits
//                (HFPreTokenizers.cpp)
//   decoder      Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
//                Metaspace (HFDecoders.cpp)
//   post_processor TemplateProcessing, ByteLevel, Sequence, Roberta/Bert
//                Processing (HFDecoders.cpp); tokenizer_config.json's
//                add_bos_token / add_eos_token, when present, decide BOS/EOS
//                instead (as transformers' LlamaTokenizerFast does; here)
//   added_tokens content, id, special, normalized, lstrip, rstrip,
//                single_word (here)
// Regexes are PCRE2 with PCRE2_UTF | PCRE2_UCP (JIT when available): the
// Unicode classes (\p{L}, \p{N}, \s) come from PCRE2's tables
// (HFTokenizerSupport.cpp, with the UTF-8 repair and the JSON reader).
//
//===----------------------------------------------------------------------===//

#include "HFTokenizer.h"
#include "HFTokenizerParts.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <tuple>

using namespace llvm;

namespace sq {
// The parts (HFTokenizerParts.h) before llvm's names (llvm::Regex).
using namespace hftok;

namespace {

//===----------------------------------------------------------------------===//
// The tokenizer
//===----------------------------------------------------------------------===//

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, normalized, lstrip, rstrip, singleWord;
};

/// Leftmost-longest matching of the added tokens (as tokenizers'
/// aho-corasick with MatchKind::LeftmostLongest).
struct AddedSplitter {
  std::vector<const AddedToken *> byFirstByte[256]; // longest first
  std::unique_ptr<Regex> space, wordChar; // lstrip/rstrip, single_word
  bool empty() const {
    for (auto &v : byFirstByte)
      if (!v.empty())
        return false;
    return true;
  }
  void add(const AddedToken *t) {
    if (t->content.empty())
      return;
    auto &v = byFirstByte[(unsigned char)t->content[0]];
    v.push_back(t);
    // Longest first; two tokens of one length cannot both match at a place.
    std::sort(v.begin(), v.end(), [](auto *a, auto *b) {
      return a->content.size() > b->content.size();
    });
  }
  bool isWordCharBefore(StringRef s, size_t at) const {
    if (at == 0)
      return false;
    size_t b = at - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80)
      --b;
    return wordChar->matchesAt(s, b);
  }
  /// Splits `text` into (text, -1) and (token content, token index) parts.
  void
  split(StringRef text,
        std::vector<std::pair<std::string, const AddedToken *>> &out) const {
    size_t start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const AddedToken *found = nullptr;
      for (const AddedToken *t : byFirstByte[(unsigned char)text[i]]) {
        if (!text.substr(i).starts_with(t->content))
          continue;
        if (t->singleWord &&
            (isWordCharBefore(text, i) ||
             (i + t->content.size() < text.size() &&
              wordChar->matchesAt(text, i + t->content.size()))))
          continue;
        found = t;
        break;
      }
      if (!found)
        continue;
      if (i > start)
        out.emplace_back(text.substr(start, i - start).str(), nullptr);
      out.emplace_back(found->content, found);
      i += found->content.size();
      start = i;
      --i;
    }
    if (start < text.size())
      out.emplace_back(text.substr(start).str(), nullptr);
    // lstrip / rstrip: the whitespace beside the token goes with it.
    for (size_t k = 0; k < out.size(); ++k) {
      const AddedToken *t = out[k].second;
      if (!t)
        continue;
      if (t->lstrip && k > 0 && !out[k - 1].second) {
        std::string &s = out[k - 1].first;
        std::vector<std::pair<size_t, size_t>> m;
        space->findAll(s, m);
        if (!m.empty() && m.back().second == s.size())
          s.resize(m.back().first);
      }
      if (t->rstrip && k + 1 < out.size() && !out[k + 1].second) {
        std::string &s = out[k + 1].first;
        std::vector<std::pair<size_t, size_t>> m;
        space->findAll(s, m);
        if (!m.empty() && m.front().first == 0)
          s.erase(0, m.front().second);
      }
    }
  }
};

class HFTokenizer : public Tokenizer {
public:
  std::vector<int64_t> encode(StringRef raw) const override {
    std::string text = toValidUtf8(raw);
    std::vector<std::pair<std::string, const AddedToken *>> sections;
    splitter.split(text, sections);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3);
    StringMap<std::vector<int32_t>> cache;
    size_t offset = 0;
    for (auto &[section, added] : sections) {
      bool atStart = offset == 0;
      offset += section.size() + 1; // any non-zero offset after the first
      if (added) {
        ids.push_back(added->id);
        continue;
      }
      std::string s = section;
      if (normalizer)
        normalizer->apply(s);
      if (s.empty())
        continue;
      // Added tokens marked "normalized" are found in the normalized text.
      std::vector<std::pair<std::string, const AddedToken *>> parts;
      if (normalizedSplitter.empty())
        parts.emplace_back(std::move(s), nullptr);
      else
        normalizedSplitter.split(s, parts);
      bool first = true;
      for (auto &[part, addedPart] : parts) {
        bool partAtStart = atStart && first;
        first = false;
        if (addedPart) {
          ids.push_back(addedPart->id);
          continue;
        }
        Pieces pieces{{std::move(part), partAtStart}};
        if (preTokenizer)
          preTokenizer->apply(pieces);
        for (const Piece &p : pieces) {
          if (p.text.size() < 256) {
            auto [it, inserted] = cache.try_emplace(p.text);
            if (inserted)
              bpe.encodeWord(p.text, it->second);
            ids.insert(ids.end(), it->second.begin(), it->second.end());
          } else {
            bpe.encodeWord(p.text, ids);
          }
        }
      }
    }
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

  std::vector<int64_t> encodeWithSpecialTokens(StringRef text) const override {
    std::vector<int64_t> ids(prefixIds.begin(), prefixIds.end());
    std::vector<int64_t> body = encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.insert(ids.end(), suffixIds.begin(), suffixIds.end());
    return ids;
  }

  std::string decode(ArrayRef<int64_t> ids) const override {
    Tokens tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids)
      if (id >= 0 && size_t(id) < idToToken.size() && hasToken[id])
        tokens.push_back(idToToken[id]);
    if (!decoder) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i)
        out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder->apply(tokens);
    std::string out;
    for (const std::string &t : tokens)
      out += t;
    return out;
  }

  int64_t bos() const override {
    return prefixIds.size() == 1 ? prefixIds[0] : -1;
  }
  int64_t eos() const override { return eosId; }
  int64_t vocabSize() const override { return idToToken.size(); }

  std::vector<AddedToken> added;
  AddedSplitter splitter, normalizedSplitter;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> preTokenizer;
  std::unique_ptr<Decoder> decoder;
  BPE bpe;
  std::vector<std::string> idToToken;
  std::vector<bool> hasToken;
  std::vector<int32_t> prefixIds, suffixIds;
  int64_t eosId = -1;
};

std::unique_ptr<json::Value> parseJson(StringRef text, const std::string &file,
                                       std::string &error) {
  Expected<json::Value> v = json::parse(text);
  if (!v) {
    error = file + ": not JSON: " + toString(v.takeError());
    return nullptr;
  }
  return std::make_unique<json::Value>(std::move(*v));
}

/// A token named in tokenizer_config.json: "TEXT" or {"content": "TEXT"}.
std::optional<std::string> configToken(const json::Object &config,
                                       StringRef key) {
  const json::Value *v = config.get(key);
  if (!v)
    return std::nullopt;
  if (auto s = v->getAsString())
    return s->str();
  if (auto *o = v->getAsObject())
    if (auto s = o->getString("content"))
      return s->str();
  return std::nullopt;
}

} // namespace

std::unique_ptr<Tokenizer> createHFTokenizer(StringRef spec,
                                             std::string &error) {
  std::string file = spec.str(), dir;
  if (sys::fs::is_directory(spec)) {
    dir = spec.str();
    SmallString<256> p(spec);
    sys::path::append(p, "tokenizer.json");
    file = std::string(p);
  } else {
    dir = sys::path::parent_path(spec).str();
  }
  if (!sys::fs::exists(file)) {
    error = "tokenizer '" + file + "' does not exist (hf:DIR needs " +
            "DIR/tokenizer.json)";
    return nullptr;
  }
  if (!sys::fs::is_regular_file(file)) {
    error = file + ": not a regular file";
    return nullptr;
  }
  auto buffer = MemoryBuffer::getFile(file, /*IsText=*/false);
  if (!buffer) {
    error = file + ": " + buffer.getError().message();
    return nullptr;
  }
  SmallString<256> configPath(dir);
  sys::path::append(configPath, "tokenizer_config.json");
  std::unique_ptr<MemoryBuffer> config;
  if (sys::fs::exists(configPath)) {
    auto c = MemoryBuffer::getFile(configPath, /*IsText=*/false);
    if (!c) {
      error = std::string(configPath) + ": " + c.getError().message();
      return nullptr;
    }
    config = std::move(*c);
  }
  return createHFTokenizerFromJSON((*buffer)->getBuffer(), file,
                                   config ? config->getBuffer() : "",
                                   config ? configPath.str() : "", error);
}

std::unique_ptr<Tokenizer>
createHFTokenizerFromJSON(StringRef text, StringRef name, StringRef configText,
                          StringRef configName, std::string &error) {
  std::string file = name.str();
  std::unique_ptr<json::Value> root = parseJson(text, file, error);
  if (!root)
    return nullptr;
  Reader r;
  r.file = file;
  auto fail = [&]() -> std::unique_ptr<Tokenizer> {
    error = r.error;
    return nullptr;
  };
  const json::Object *top = root->getAsObject();
  if (!top) {
    r.fail("(top level)", "expected an object");
    return fail();
  }
  auto tok = std::make_unique<HFTokenizer>();

  // model
  const json::Object *model = r.object(top->get("model"), "model");
  if (!model)
    return fail();
  std::string type;
  if (!r.string(*model, "model", "type", type, /*required=*/false))
    return fail();
  if (type.empty() && model->get("merges"))
    type = "BPE"; // files written before "type"
  if (type != "BPE") {
    r.fail("model.type", "unsupported model type '" + type +
                             "' (SQ reads BPE models: byte-level BPE and "
                             "SentencePiece-converted BPE)");
    return fail();
  }
  if (!readBPE(r, *model, tok->bpe, tok->idToToken))
    return fail();

  // added_tokens
  if (const json::Value *v = top->get("added_tokens");
      v && v->kind() != json::Value::Null) {
    const json::Array *a = v->getAsArray();
    if (!a) {
      r.fail("added_tokens", "expected an array");
      return fail();
    }
    tok->added.reserve(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
      std::string p = Reader::at("added_tokens", i);
      const json::Object *o = r.object(&(*a)[i], p);
      AddedToken t{"", -1, false, false, false, false, false};
      int64_t id = -1;
      if (!o || !r.string(*o, p, "content", t.content) ||
          !r.integer(*o, p, "id", id) ||
          !r.boolean(*o, p, "special", t.special) ||
          !r.boolean(*o, p, "normalized", t.normalized) ||
          !r.boolean(*o, p, "lstrip", t.lstrip) ||
          !r.boolean(*o, p, "rstrip", t.rstrip) ||
          !r.boolean(*o, p, "single_word", t.singleWord))
        return fail();
      if (id < 0 || id >= (int64_t(1) << 30)) {
        r.fail(Reader::at(p, "id"), "expected an id in [0, 2^30)");
        return fail();
      }
      if (t.content.empty()) {
        r.fail(Reader::at(p, "content"), "empty");
        return fail();
      }
      t.id = int32_t(id);
      if (size_t(id) >= tok->idToToken.size())
        tok->idToToken.resize(id + 1);
      tok->idToToken[id] = t.content;
      tok->added.push_back(std::move(t));
    }
  }
  tok->hasToken.assign(tok->idToToken.size(), false);
  for (auto &entry : tok->bpe.vocab)
    tok->hasToken[entry.second] = true;
  for (const AddedToken &t : tok->added)
    tok->hasToken[t.id] = true;

  // normalizer, pre_tokenizer, decoder (each may be null)
  auto present = [&](StringRef key) {
    const json::Value *v = top->get(key);
    return v && v->kind() != json::Value::Null ? v : nullptr;
  };
  if (auto *v = present("normalizer"))
    if (!(tok->normalizer = readNormalizer(r, v, "normalizer")))
      return fail();
  for (const AddedToken &t : tok->added)
    ((t.normalized && tok->normalizer) ? tok->normalizedSplitter
                                       : tok->splitter)
        .add(&t);
  for (AddedSplitter *s : {&tok->splitter, &tok->normalizedSplitter}) {
    std::string why;
    s->space = Regex::compile("\\p{White_Space}+", why);
    s->wordChar = Regex::compile("[\\p{Alphabetic}\\p{N}_]", why);
    if (!s->space || !s->wordChar) {
      error = "PCRE2 lacks Unicode properties: " + why;
      return nullptr;
    }
  }
  if (auto *v = present("pre_tokenizer"))
    if (!(tok->preTokenizer = readPreTokenizer(r, v, "pre_tokenizer")))
      return fail();
  if (auto *v = present("decoder"))
    if (!(tok->decoder = readDecoder(r, v, "decoder")))
      return fail();

  StringMap<int32_t> allIds;
  for (auto &e : tok->bpe.vocab)
    allIds[e.first()] = e.second;
  for (const AddedToken &t : tok->added)
    allIds[t.content] = t.id;
  if (auto *v = present("post_processor"))
    if (!readPostProcessor(r, v, "post_processor", allIds, tok->prefixIds,
                           tok->suffixIds))
      return fail();

  // tokenizer_config.json: BOS/EOS.
  if (!configName.empty()) {
    std::string cfgFile = configName.str();
    std::unique_ptr<json::Value> cfgRoot =
        parseJson(configText, cfgFile, error);
    if (!cfgRoot)
      return nullptr;
    const json::Object *cfg = cfgRoot->getAsObject();
    if (!cfg) {
      error = cfgFile + ": expected an object";
      return nullptr;
    }
    auto idOf = [&](StringRef key, int32_t &id) {
      std::optional<std::string> name = configToken(*cfg, key);
      if (!name)
        return true; // absent or null
      auto it = allIds.find(*name);
      if (it == allIds.end()) {
        error = cfgFile + ": " + key.str() + ": '" + *name +
                "' is not a token of " + file;
        return false;
      }
      id = it->second;
      return true;
    };
    int32_t bosId = -1, eosId = -1;
    if (!idOf("bos_token", bosId) || !idOf("eos_token", eosId))
      return nullptr;
    tok->eosId = eosId;
    // add_bos_token / add_eos_token, where given, rebuild the template
    // around the sequence (transformers' update_post_processor).
    for (auto [key, tokenId, ids] :
         {std::make_tuple("add_bos_token", bosId, &tok->prefixIds),
          std::make_tuple("add_eos_token", eosId, &tok->suffixIds)}) {
      const json::Value *v = cfg->get(key);
      if (!v)
        continue;
      std::optional<bool> add = v->getAsBoolean();
      if (!add) {
        error = cfgFile + ": " + key + ": expected true or false";
        return nullptr;
      }
      ids->clear();
      if (*add && tokenId >= 0)
        ids->push_back(tokenId);
    }
  }
  if (tok->eosId < 0 && tok->suffixIds.size() == 1)
    tok->eosId = tok->suffixIds[0];
  return tok;
}

} // namespace sq
