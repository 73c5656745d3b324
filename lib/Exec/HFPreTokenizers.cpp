//===- HFPreTokenizers.cpp - tokenizer.json normalizers, pre-tokenizers ---===//
//
// normalizer     Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD (ICU)
// pre_tokenizer  Sequence, Split (String or Regex pattern, the five
//                behaviors, invert), ByteLevel (add_prefix_space, use_regex:
//                the GPT-2 regex), Metaspace (replacement, prepend_scheme or
//                the older add_prefix_space, split), Digits
//
//===----------------------------------------------------------------------===//

#include "HFTokenizerParts.h"

#include "llvm/ADT/StringSwitch.h"

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <optional>

using namespace llvm;

namespace sq {
namespace hftok {
namespace {

//===----------------------------------------------------------------------===//
// Normalizers
//===----------------------------------------------------------------------===//

struct PrependNormalizer : Normalizer {
  std::string prepend;
  void apply(std::string &s) const override {
    if (!s.empty())
      s.insert(0, prepend);
  }
};

struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(std::string &s) const override { replaceAll(s, pattern, content); }
};

/// NFC/NFD/NFKC/NFKD through ICU (UTF-8 -> UTF-16 -> normalize -> UTF-8).
struct UnicodeNormalizer : Normalizer {
  const UNormalizer2 *norm = nullptr;
  void apply(std::string &s) const override {
    bool ascii = true;
    for (char c : s)
      if (static_cast<unsigned char>(c) >= 0x80) {
        ascii = false;
        break;
      }
    if (ascii)
      return; // ASCII is invariant under every normalization form
    UErrorCode status = U_ZERO_ERROR;
    int32_t len16 = 0;
    u_strFromUTF8(nullptr, 0, &len16, s.data(), s.size(), &status);
    status = U_ZERO_ERROR;
    std::vector<UChar> src(len16 + 1);
    u_strFromUTF8(src.data(), src.size(), &len16, s.data(), s.size(), &status);
    if (U_FAILURE(status))
      return;
    std::vector<UChar> dst(len16 * 3 + 16);
    int32_t n = unorm2_normalize(norm, src.data(), len16, dst.data(),
                                 dst.size(), &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      status = U_ZERO_ERROR;
      dst.resize(n + 1);
      n = unorm2_normalize(norm, src.data(), len16, dst.data(), dst.size(),
                           &status);
    }
    if (U_FAILURE(status))
      return;
    int32_t len8 = 0;
    status = U_ZERO_ERROR;
    u_strToUTF8(nullptr, 0, &len8, dst.data(), n, &status);
    std::string out(len8, '\0');
    status = U_ZERO_ERROR;
    u_strToUTF8(out.data(), len8, &len8, dst.data(), n, &status);
    if (U_SUCCESS(status) || status == U_STRING_NOT_TERMINATED_WARNING)
      s = std::move(out);
  }
};

//===----------------------------------------------------------------------===//
// Pre-tokenizers
//===----------------------------------------------------------------------===//

enum class Behavior {
  Removed,
  Isolated,
  MergedWithPrevious,
  MergedWithNext,
  Contiguous
};

/// Splits every piece by `pattern` as tokenizers' NormalizedString::split.
void splitPieces(Pieces &pieces, const Pattern &pattern, Behavior behavior,
                 bool invert) {
  Pieces out;
  std::vector<std::pair<size_t, size_t>> m;
  struct Seg {
    size_t b, e;
    bool match;
  };
  std::vector<Seg> segs, merged;
  for (Piece &piece : pieces) {
    const std::string &s = piece.text;
    segs.clear();
    if (s.empty()) {
      segs.push_back({0, 0, false});
    } else {
      pattern.findAll(s, m);
      size_t prev = 0;
      for (auto [b, e] : m) {
        if (prev != b)
          segs.push_back({prev, b, false});
        segs.push_back({b, e, true});
        prev = e;
      }
      if (prev != s.size())
        segs.push_back({prev, s.size(), false});
    }
    if (invert)
      for (Seg &g : segs)
        g.match = !g.match;
    merged.clear();
    bool previousMatch = false;
    switch (behavior) {
    case Behavior::Removed:
      for (Seg &g : segs)
        if (!g.match)
          merged.push_back(g);
      break;
    case Behavior::Isolated:
      merged = segs;
      break;
    case Behavior::MergedWithPrevious:
      for (Seg &g : segs) {
        if (g.match && !previousMatch && !merged.empty())
          merged.back().e = g.e;
        else
          merged.push_back({g.b, g.e, false});
        previousMatch = g.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !previousMatch && !merged.empty())
          merged.back().b = it->b;
        else
          merged.push_back({it->b, it->e, false});
        previousMatch = it->match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    case Behavior::Contiguous:
      for (Seg &g : segs) {
        if (g.match == previousMatch && !merged.empty())
          merged.back().e = g.e;
        else
          merged.push_back({g.b, g.e, false});
        previousMatch = g.match;
      }
      break;
    }
    for (Seg &g : merged)
      if (g.e > g.b)
        out.push_back({s.substr(g.b, g.e - g.b), piece.atStart && g.b == 0});
  }
  pieces = std::move(out);
}

const char kGpt2Regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| "
                          "?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct SplitPreTokenizer : PreTokenizer {
  Pattern pattern;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  void apply(Pieces &pieces) const override {
    splitPieces(pieces, pattern, behavior, invert);
  }
};

struct ByteLevelPreTokenizer : PreTokenizer {
  bool addPrefixSpace = true;
  Pattern gpt2; // set when use_regex
  bool useRegex = true;
  void apply(Pieces &pieces) const override {
    if (addPrefixSpace)
      for (Piece &p : pieces)
        if (p.text.empty() || p.text[0] != ' ')
          p.text.insert(0, " ");
    if (useRegex)
      splitPieces(pieces, gpt2, Behavior::Isolated, false);
    const ByteLevelTable &t = ByteLevelTable::get();
    for (Piece &p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text)
        mapped += t.byteToChar[c];
      p.text = std::move(mapped);
    }
  }
};

struct MetaspacePreTokenizer : PreTokenizer {
  std::string replacement = "\xE2\x96\x81"; // U+2581
  enum Prepend { Always, First, Never } prepend = Always;
  bool split = true;
  Pattern replacementPattern;
  void apply(Pieces &pieces) const override {
    for (Piece &p : pieces) {
      std::string out;
      for (char c : p.text)
        if (c == ' ')
          out += replacement;
        else
          out.push_back(c);
      bool starts = StringRef(out).starts_with(replacement);
      if (!starts && (prepend == Always || (prepend == First && p.atStart)))
        out.insert(0, replacement);
      p.text = std::move(out);
    }
    if (split)
      splitPieces(pieces, replacementPattern, Behavior::MergedWithNext, false);
  }
};

} // namespace

std::unique_ptr<Normalizer> readNormalizer(Reader &r, const json::Value *v,
                                           const std::string &path) {
  std::string type;
  const json::Object *o = r.component(v, path, type);
  if (!o)
    return nullptr;
  if (type == "Sequence")
    return readSequence<Normalizer, std::string>(r, *o, path, "normalizers",
                                                 readNormalizer);
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    if (!r.string(*o, path, "prepend", n->prepend))
      return nullptr;
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    if (!r.pattern(*o, path, n->pattern) ||
        !r.string(*o, path, "content", n->content))
      return nullptr;
    return n;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    UErrorCode status = U_ZERO_ERROR;
    auto n = std::make_unique<UnicodeNormalizer>();
    n->norm = type == "NFC"    ? unorm2_getNFCInstance(&status)
              : type == "NFD"  ? unorm2_getNFDInstance(&status)
              : type == "NFKC" ? unorm2_getNFKCInstance(&status)
                               : unorm2_getNFKDInstance(&status);
    if (U_FAILURE(status) || !n->norm)
      return r.fail(path, "ICU has no " + type + " normalizer"), nullptr;
    return n;
  }
  r.unsupported(path, "normalizer", type,
                "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
  return nullptr;
}

ByteLevelTable::ByteLevelTable() {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                     (b >= 0xAE && b <= 0xFF);
    uint32_t cp = printable ? b : 256 + n++;
    std::string &u = byteToChar[b];
    if (cp < 0x80)
      u.push_back(char(cp));
    else {
      u.push_back(char(0xC0 | (cp >> 6)));
      u.push_back(char(0x80 | (cp & 0x3F)));
    }
    charToByte[cp] = uint8_t(b);
  }
}

const ByteLevelTable &ByteLevelTable::get() {
  static ByteLevelTable table;
  return table;
}

std::unique_ptr<PreTokenizer> readPreTokenizer(Reader &r, const json::Value *v,
                                               const std::string &path) {
  std::string type;
  const json::Object *o = r.component(v, path, type);
  if (!o)
    return nullptr;
  if (type == "Sequence")
    return readSequence<PreTokenizer, Pieces>(r, *o, path, "pretokenizers",
                                              readPreTokenizer);
  if (type == "Split") {
    auto s = std::make_unique<SplitPreTokenizer>();
    std::string behavior;
    if (!r.pattern(*o, path, s->pattern) ||
        !r.string(*o, path, "behavior", behavior) ||
        !r.boolean(*o, path, "invert", s->invert))
      return nullptr;
    std::optional<Behavior> b =
        StringSwitch<std::optional<Behavior>>(behavior)
            .Case("Removed", Behavior::Removed)
            .Case("Isolated", Behavior::Isolated)
            .Case("MergedWithPrevious", Behavior::MergedWithPrevious)
            .Case("MergedWithNext", Behavior::MergedWithNext)
            .Case("Contiguous", Behavior::Contiguous)
            .Default(std::nullopt);
    if (!b)
      return r.fail(Reader::at(path, "behavior"),
                    "unknown split behavior '" + behavior + "'"),
             nullptr;
    s->behavior = *b;
    return s;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelPreTokenizer>();
    if (!r.boolean(*o, path, "add_prefix_space", b->addPrefixSpace) ||
        !r.boolean(*o, path, "use_regex", b->useRegex))
      return nullptr;
    if (b->useRegex) {
      std::string why;
      b->gpt2.regex = Regex::compile(kGpt2Regex, why);
      if (!b->gpt2.regex)
        return r.fail(path, why), nullptr;
    }
    return b;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePreTokenizer>();
    if (!r.string(*o, path, "replacement", m->replacement))
      return nullptr;
    if (m->replacement.empty())
      return r.fail(Reader::at(path, "replacement"), "empty"), nullptr;
    std::string scheme;
    if (!r.string(*o, path, "prepend_scheme", scheme, /*required=*/false))
      return nullptr;
    using Prepend = MetaspacePreTokenizer::Prepend;
    if (scheme.empty()) {
      // Files written before prepend_scheme: add_prefix_space.
      bool add = true;
      if (!r.boolean(*o, path, "add_prefix_space", add))
        return nullptr;
      m->prepend = add ? Prepend::Always : Prepend::Never;
    } else {
      std::optional<Prepend> p = StringSwitch<std::optional<Prepend>>(scheme)
                                     .Case("always", Prepend::Always)
                                     .Case("first", Prepend::First)
                                     .Case("never", Prepend::Never)
                                     .Default(std::nullopt);
      if (!p)
        return r.fail(Reader::at(path, "prepend_scheme"),
                      "unknown scheme '" + scheme + "'"),
               nullptr;
      m->prepend = *p;
    }
    if (!r.boolean(*o, path, "split", m->split))
      return nullptr;
    m->replacementPattern.literal = m->replacement;
    return m;
  }
  if (type == "Digits") {
    auto s = std::make_unique<SplitPreTokenizer>();
    bool individual = false;
    if (!r.boolean(*o, path, "individual_digits", individual))
      return nullptr;
    std::string why;
    s->pattern.regex = Regex::compile("\\p{N}", why);
    if (!s->pattern.regex)
      return r.fail(path, why), nullptr;
    s->behavior = individual ? Behavior::Isolated : Behavior::Contiguous;
    return s;
  }
  r.unsupported(path, "pre-tokenizer", type,
                "Sequence, Split, ByteLevel, Metaspace, Digits");
  return nullptr;
}

} // namespace hftok
} // namespace sq
