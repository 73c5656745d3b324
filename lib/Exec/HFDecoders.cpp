//===- HFDecoders.cpp - tokenizer.json decoders and post-processors -------===//
//
// decoder         Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
//                 Metaspace
// post_processor  TemplateProcessing, ByteLevel, Sequence, Roberta/Bert
//                 Processing: the ids put around a single sequence
//
//===----------------------------------------------------------------------===//

#include "HFTokenizerParts.h"

using namespace llvm;

namespace sq {
namespace hftok {
namespace {

struct ByteLevelDecoder : Decoder {
  void apply(Tokens &tokens) const override {
    const ByteLevelTable &t = ByteLevelTable::get();
    std::string bytes;
    for (const std::string &tok : tokens) {
      std::string mapped;
      bool ok = true;
      for (size_t i = 0; i < tok.size() && ok;) {
        unsigned char c = tok[i];
        size_t len = utf8Length(c);
        uint32_t cp = len == 1   ? c
                      : len == 2 ? ((c & 0x1F) << 6) | (tok[i + 1] & 0x3F)
                                 : 0x110000; // not in the table
        auto it = t.charToByte.find(cp);
        if (it == t.charToByte.end())
          ok = false;
        else
          mapped.push_back(char(it->second));
        i += len;
      }
      bytes += ok ? mapped : tok;
    }
    tokens.assign(1, toValidUtf8(bytes));
  }
};

struct ReplaceDecoder : Decoder {
  Pattern pattern;
  std::string content;
  void apply(Tokens &tokens) const override {
    for (std::string &t : tokens)
      replaceAll(t, pattern, content);
  }
};

struct ByteFallbackDecoder : Decoder {
  void apply(Tokens &tokens) const override {
    Tokens out;
    std::string pending;
    size_t pendingCount = 0;
    auto flush = [&] {
      if (!pendingCount)
        return;
      if (toValidUtf8(pending) == pending)
        out.push_back(pending);
      else
        for (size_t i = 0; i < pendingCount; ++i)
          out.push_back(kReplacementChar);
      pending.clear();
      pendingCount = 0;
    };
    for (std::string &t : tokens) {
      unsigned byte = 0;
      if (t.size() == 6 && StringRef(t).starts_with("<0x") && t[5] == '>' &&
          !StringRef(t).substr(3, 2).getAsInteger(16, byte)) {
        pending.push_back(char(byte));
        ++pendingCount;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDecoder : Decoder {
  void apply(Tokens &tokens) const override {
    std::string all;
    for (const std::string &t : tokens)
      all += t;
    tokens.assign(1, all);
  }
};

struct StripDecoder : Decoder {
  std::string content;
  int64_t start = 0, stop = 0;
  void apply(Tokens &tokens) const override {
    for (std::string &t : tokens) {
      StringRef s(t);
      for (int64_t i = 0; i < start && s.starts_with(content); ++i)
        s = s.drop_front(content.size());
      for (int64_t i = 0; i < stop && s.ends_with(content); ++i)
        s = s.drop_back(content.size());
      t = s.str();
    }
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool stripFirst = true; // prepend_scheme != never
  void apply(Tokens &tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      StringRef s(tokens[i]);
      while (!s.empty()) {
        if (s.starts_with(replacement)) {
          out.push_back(' ');
          s = s.drop_front(replacement.size());
        } else {
          out.push_back(s.front());
          s = s.drop_front();
        }
      }
      if (i == 0 && stripFirst && !out.empty() && out[0] == ' ')
        out.erase(0, 1);
      tokens[i] = std::move(out);
    }
  }
};

} // namespace

std::unique_ptr<Decoder> readDecoder(Reader &r, const json::Value *v,
                                     const std::string &path) {
  std::string type;
  const json::Object *o = r.component(v, path, type);
  if (!o)
    return nullptr;
  if (type == "Sequence")
    return readSequence<Decoder, Tokens>(r, *o, path, "decoders", readDecoder);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    if (!r.pattern(*o, path, d->pattern) ||
        !r.string(*o, path, "content", d->content))
      return nullptr;
    return d;
  }
  if (type == "ByteFallback")
    return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse")
    return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    if (!r.string(*o, path, "content", d->content) ||
        !r.integer(*o, path, "start", d->start) ||
        !r.integer(*o, path, "stop", d->stop))
      return nullptr;
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    std::string scheme;
    bool add = true;
    if (!r.string(*o, path, "replacement", d->replacement) ||
        !r.string(*o, path, "prepend_scheme", scheme, false) ||
        !r.boolean(*o, path, "add_prefix_space", add))
      return nullptr;
    d->stripFirst = scheme.empty() ? add : scheme != "never";
    return d;
  }
  r.unsupported(path, "decoder", type,
                "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                "Metaspace");
  return nullptr;
}

bool readPostProcessor(Reader &r, const json::Value *v, const std::string &path,
                       const StringMap<int32_t> &ids,
                       std::vector<int32_t> &prefix,
                       std::vector<int32_t> &suffix) {
  std::string type;
  const json::Object *o = r.component(v, path, type);
  if (!o)
    return false;
  if (type == "Sequence")
    return r.forEach(*o, path, "processors",
                     [&](const json::Value &p, const std::string &at) {
                       return readPostProcessor(r, &p, at, ids, prefix, suffix);
                     });
  if (type == "ByteLevel")
    return true; // offsets only
  if (type == "TemplateProcessing") {
    const json::Object *specials = o->getObject("special_tokens");
    bool seenSequence = false;
    return r.forEach(
        *o, path, "single", [&](const json::Value &v, const std::string &pi) {
          const json::Object *item = r.object(&v, pi);
          if (!item)
            return false;
          if (item->get("Sequence")) {
            seenSequence = true;
            return true;
          }
          const json::Object *st = item->getObject("SpecialToken");
          std::string name;
          if (!st || !r.string(*st, Reader::at(pi, "SpecialToken"), "id", name))
            return r.fail(pi, "expected {\"Sequence\": ...} or "
                              "{\"SpecialToken\": {\"id\": ...}}");
          const json::Object *def =
              specials ? specials->getObject(name) : nullptr;
          const json::Array *defIds = def ? def->getArray("ids") : nullptr;
          if (!defIds)
            return r.fail(Reader::at(path, "special_tokens"),
                          "no ids for '" + name + "'");
          for (const json::Value &idv : *defIds) {
            std::optional<int64_t> id = idv.getAsInteger();
            if (!id)
              return r.fail(
                  Reader::at(Reader::at(path, "special_tokens"), name),
                  "expected integer ids");
            (seenSequence ? suffix : prefix).push_back(int32_t(*id));
          }
          return true;
        });
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (StringRef key : {"cls", "sep"}) {
      const json::Array *a = o->getArray(key);
      std::optional<int64_t> id =
          a && a->size() == 2 ? (*a)[1].getAsInteger() : std::nullopt;
      if (!id)
        return r.fail(Reader::at(path, key), "expected [token, id]");
      (key == "cls" ? prefix : suffix).push_back(int32_t(*id));
    }
    return true;
  }
  return r.unsupported(path, "post-processor", type,
                       "TemplateProcessing, ByteLevel, Sequence, "
                       "RobertaProcessing, BertProcessing");
}

} // namespace hftok
} // namespace sq
