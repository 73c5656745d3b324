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
// of the entry):
//   model        BPE: vocab, merges ("a b" strings or [a, b] pairs),
//                unk_token, fuse_unk, byte_fallback, ignore_merges,
//                continuing_subword_prefix, end_of_word_suffix
//   normalizer   Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD (ICU)
//   pre_tokenizer Sequence, Split (String or Regex pattern, the five
//                behaviors, invert), ByteLevel (add_prefix_space, use_regex:
//                the GPT-2 regex), Metaspace (replacement, prepend_scheme or
//                the older add_prefix_space, split), Digits
//   decoder      Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
//                Metaspace
//   post_processor TemplateProcessing, ByteLevel, Sequence, Roberta/Bert
//                Processing; tokenizer_config.json's add_bos_token /
//                add_eos_token, when present, decide BOS/EOS instead (as
//                transformers' LlamaTokenizerFast does)
//   added_tokens content, id, special, normalized, lstrip, rstrip,
//                single_word
// Regexes are PCRE2 with PCRE2_UTF | PCRE2_UCP (JIT when available): the
// Unicode classes (\p{L}, \p{N}, \s) come from PCRE2's tables.
//
//===----------------------------------------------------------------------===//

#include "HFTokenizer.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <cstring>
#include <queue>

using namespace llvm;

namespace sq {
namespace {

//===----------------------------------------------------------------------===//
// UTF-8
//===----------------------------------------------------------------------===//

const char kReplacementChar[] = "\xEF\xBF\xBD"; // U+FFFD

/// Replaces every ill-formed subsequence with U+FFFD, one per maximal
/// subpart (the WHATWG / Unicode "substitution of maximal subparts"
/// practice: what TextDecoder, Node's Buffer.toString and Rust's
/// String::from_utf8_lossy all do).
std::string toValidUtf8(StringRef s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(char(b));
      ++i;
      continue;
    }
    int need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
      need = 1;
    else if (b == 0xE0)
      need = 2, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
      need = 2;
    else if (b == 0xED)
      need = 2, hi = 0x9F;
    else if (b == 0xF0)
      need = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      need = 3;
    else if (b == 0xF4)
      need = 3, hi = 0x8F;
    else {
      out += kReplacementChar;
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n || (unsigned char)s[j] < lo || (unsigned char)s[j] > hi) {
        ok = false;
        break;
      }
      lo = 0x80, hi = 0xBF;
    }
    if (ok)
      out.append(s.data() + i, j - i);
    else
      out += kReplacementChar;
    i = j;
  }
  return out;
}

/// Length of the (valid) UTF-8 sequence starting with `lead`.
inline size_t utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

//===----------------------------------------------------------------------===//
// PCRE2
//===----------------------------------------------------------------------===//

class Regex {
public:
  ~Regex() {
    if (code)
      pcre2_code_free(code);
  }
  /// Compiles `pattern` (UTF, Unicode properties for \s \w \d and POSIX
  /// classes); null with `error` when PCRE2 refuses it.
  static std::unique_ptr<Regex> compile(StringRef pattern, std::string &error) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code *re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                   pattern.size(), PCRE2_UTF | PCRE2_UCP, &code,
                                   &offset, nullptr);
    if (!re) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(code, message, sizeof(message));
      error = "regex '" + pattern.str() + "' at offset " +
              std::to_string(offset) + ": " +
              reinterpret_cast<const char *>(message);
      return nullptr;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // the interpreter otherwise
    auto r = std::unique_ptr<Regex>(new Regex());
    r->code = re;
    return r;
  }
  /// Every non-overlapping match of the regex in `text` (valid UTF-8), left
  /// to right, as [begin, end) byte offsets; an empty match moves the search
  /// on by one character.
  void findAll(StringRef text,
               std::vector<std::pair<size_t, size_t>> &matches) const {
    matches.clear();
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()),
                           text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
        // The JIT's stack ran out (a pathological subject): the interpreter
        // keeps its backtracking on the heap.
        rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()),
                         text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                         md, nullptr);
      if (rc < 0)
        break;
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
      matches.emplace_back(ov[0], ov[1]);
      if (ov[1] > ov[0])
        start = ov[1];
      else if (ov[1] >= text.size())
        break;
      else
        start = ov[1] + utf8Length(text[ov[1]]);
    }
    pcre2_match_data_free(md);
  }
  bool matchesAt(StringRef text, size_t at) const {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, nullptr);
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()),
                         text.size(), at, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED,
                         md, nullptr);
    pcre2_match_data_free(md);
    return rc >= 0;
  }

private:
  Regex() = default;
  pcre2_code *code = nullptr;
};

/// A Split/Replace pattern: {"String": s} (literal) or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  void findAll(StringRef text,
               std::vector<std::pair<size_t, size_t>> &matches) const {
    if (regex)
      return regex->findAll(text, matches);
    matches.clear();
    if (literal.empty())
      return;
    for (size_t at = text.find(literal); at != StringRef::npos;
         at = text.find(literal, at + literal.size()))
      matches.emplace_back(at, at + literal.size());
  }
};

//===----------------------------------------------------------------------===//
// JSON reading with paths for the messages
//===----------------------------------------------------------------------===//

struct Reader {
  std::string file;
  std::string error;
  bool fail(const std::string &path, const Twine &what) {
    if (error.empty())
      error = file + ": " + path + ": " + what.str();
    return false;
  }
  static std::string at(const std::string &path, StringRef key) {
    return path.empty() ? key.str() : path + "." + key.str();
  }
  static std::string at(const std::string &path, size_t index) {
    return path + "[" + std::to_string(index) + "]";
  }
  const json::Object *object(const json::Value *v, const std::string &path) {
    const json::Object *o = v ? v->getAsObject() : nullptr;
    if (!o)
      fail(path, "expected an object");
    return o;
  }
  bool string(const json::Object &o, const std::string &path, StringRef key,
              std::string &out, bool required = true) {
    const json::Value *v = o.get(key);
    if (!v || v->kind() == json::Value::Null) {
      if (required)
        return fail(at(path, key), "missing");
      return true;
    }
    std::optional<StringRef> s = v->getAsString();
    if (!s)
      return fail(at(path, key), "expected a string");
    out = s->str();
    return true;
  }
  bool boolean(const json::Object &o, const std::string &path, StringRef key,
               bool &out) {
    const json::Value *v = o.get(key);
    if (!v || v->kind() == json::Value::Null)
      return true;
    std::optional<bool> b = v->getAsBoolean();
    if (!b)
      return fail(at(path, key), "expected true or false");
    out = *b;
    return true;
  }
  bool integer(const json::Object &o, const std::string &path, StringRef key,
               int64_t &out) {
    const json::Value *v = o.get(key);
    if (!v || v->kind() == json::Value::Null)
      return true;
    std::optional<int64_t> i = v->getAsInteger();
    if (!i)
      return fail(at(path, key), "expected an integer");
    out = *i;
    return true;
  }
  /// The "type" of a component.
  bool type(const json::Object &o, const std::string &path, std::string &out) {
    return string(o, path, "type", out);
  }
  bool pattern(const json::Object &o, const std::string &path, Pattern &out) {
    std::string p = at(path, "pattern");
    const json::Object *po = object(o.get("pattern"), p);
    if (!po)
      return false;
    if (po->get("String"))
      return string(*po, p, "String", out.literal);
    std::string regex;
    if (!po->get("Regex"))
      return fail(p, "expected {\"String\": ...} or {\"Regex\": ...}");
    if (!string(*po, p, "Regex", regex))
      return false;
    std::string why;
    if (!(out.regex = Regex::compile(regex, why)))
      return fail(at(p, "Regex"), why);
    return true;
  }
};

//===----------------------------------------------------------------------===//
// Normalizers
//===----------------------------------------------------------------------===//

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string &s) const = 0;
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string &s) const override {
    for (auto &p : parts)
      p->apply(s);
  }
};

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
  void apply(std::string &s) const override {
    std::vector<std::pair<size_t, size_t>> m;
    pattern.findAll(s, m);
    if (m.empty())
      return;
    std::string out;
    size_t prev = 0;
    for (auto [b, e] : m) {
      out.append(s, prev, b - prev);
      out += content;
      prev = e;
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }
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

std::unique_ptr<Normalizer> readNormalizer(Reader &r, const json::Value *v,
                                           const std::string &path) {
  const json::Object *o = r.object(v, path);
  std::string type;
  if (!o || !r.type(*o, path, type))
    return nullptr;
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    std::string p = Reader::at(path, "normalizers");
    const json::Array *a = o->getArray("normalizers");
    if (!a)
      return r.fail(p, "expected an array"), nullptr;
    for (size_t i = 0; i < a->size(); ++i) {
      auto n = readNormalizer(r, &(*a)[i], Reader::at(p, i));
      if (!n)
        return nullptr;
      seq->parts.push_back(std::move(n));
    }
    return seq;
  }
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
  r.fail(Reader::at(path, "type"),
         "unsupported normalizer '" + type +
             "' (SQ reads Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD)");
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Pre-tokenizers
//===----------------------------------------------------------------------===//

/// A piece of a section; `atStart`: it begins at offset 0 of the input (what
/// Metaspace's prepend_scheme "first" asks).
struct Piece {
  std::string text;
  bool atStart;
};
using Pieces = std::vector<Piece>;

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

/// GPT-2's byte <-> character table (bytes_to_unicode): printable bytes stand
/// for themselves, the others for U+0100 onwards.
struct ByteLevelTable {
  std::string byteToChar[256];
  DenseMap<uint32_t, uint8_t> charToByte;
  ByteLevelTable() {
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
  static const ByteLevelTable &get() {
    static ByteLevelTable table;
    return table;
  }
};

const char kGpt2Regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| "
                          "?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces &pieces) const = 0;
};

struct SequencePreTokenizer : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(Pieces &pieces) const override {
    for (auto &p : parts)
      p->apply(pieces);
  }
};

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
  enum { Always, First, Never } prepend = Always;
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

std::unique_ptr<PreTokenizer> readPreTokenizer(Reader &r, const json::Value *v,
                                               const std::string &path) {
  const json::Object *o = r.object(v, path);
  std::string type;
  if (!o || !r.type(*o, path, type))
    return nullptr;
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    std::string p = Reader::at(path, "pretokenizers");
    const json::Array *a = o->getArray("pretokenizers");
    if (!a)
      return r.fail(p, "expected an array"), nullptr;
    for (size_t i = 0; i < a->size(); ++i) {
      auto n = readPreTokenizer(r, &(*a)[i], Reader::at(p, i));
      if (!n)
        return nullptr;
      seq->parts.push_back(std::move(n));
    }
    return seq;
  }
  if (type == "Split") {
    auto s = std::make_unique<SplitPreTokenizer>();
    std::string behavior;
    if (!r.pattern(*o, path, s->pattern) ||
        !r.string(*o, path, "behavior", behavior) ||
        !r.boolean(*o, path, "invert", s->invert))
      return nullptr;
    if (behavior == "Removed")
      s->behavior = Behavior::Removed;
    else if (behavior == "Isolated")
      s->behavior = Behavior::Isolated;
    else if (behavior == "MergedWithPrevious")
      s->behavior = Behavior::MergedWithPrevious;
    else if (behavior == "MergedWithNext")
      s->behavior = Behavior::MergedWithNext;
    else if (behavior == "Contiguous")
      s->behavior = Behavior::Contiguous;
    else
      return r.fail(Reader::at(path, "behavior"),
                    "unknown split behavior '" + behavior + "'"),
             nullptr;
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
    if (scheme.empty()) {
      // Files written before prepend_scheme: add_prefix_space.
      bool add = true;
      if (!r.boolean(*o, path, "add_prefix_space", add))
        return nullptr;
      m->prepend =
          add ? MetaspacePreTokenizer::Always : MetaspacePreTokenizer::Never;
    } else if (scheme == "always")
      m->prepend = MetaspacePreTokenizer::Always;
    else if (scheme == "first")
      m->prepend = MetaspacePreTokenizer::First;
    else if (scheme == "never")
      m->prepend = MetaspacePreTokenizer::Never;
    else
      return r.fail(Reader::at(path, "prepend_scheme"),
                    "unknown scheme '" + scheme + "'"),
             nullptr;
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
  r.fail(Reader::at(path, "type"),
         "unsupported pre-tokenizer '" + type +
             "' (SQ reads Sequence, Split, ByteLevel, Metaspace, Digits)");
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Decoders (each maps the token strings to token strings, as decode_chain)
//===----------------------------------------------------------------------===//

using Tokens = std::vector<std::string>;

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(Tokens &tokens) const = 0;
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(Tokens &tokens) const override {
    for (auto &p : parts)
      p->apply(tokens);
  }
};

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
  ReplaceNormalizer replace;
  void apply(Tokens &tokens) const override {
    for (std::string &t : tokens)
      replace.apply(t);
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

std::unique_ptr<Decoder> readDecoder(Reader &r, const json::Value *v,
                                     const std::string &path) {
  const json::Object *o = r.object(v, path);
  std::string type;
  if (!o || !r.type(*o, path, type))
    return nullptr;
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    std::string p = Reader::at(path, "decoders");
    const json::Array *a = o->getArray("decoders");
    if (!a)
      return r.fail(p, "expected an array"), nullptr;
    for (size_t i = 0; i < a->size(); ++i) {
      auto n = readDecoder(r, &(*a)[i], Reader::at(p, i));
      if (!n)
        return nullptr;
      seq->parts.push_back(std::move(n));
    }
    return seq;
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    if (!r.pattern(*o, path, d->replace.pattern) ||
        !r.string(*o, path, "content", d->replace.content))
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
  r.fail(Reader::at(path, "type"),
         "unsupported decoder '" + type +
             "' (SQ reads Sequence, ByteLevel, Replace, ByteFallback, Fuse, "
             "Strip, Metaspace)");
  return nullptr;
}

//===----------------------------------------------------------------------===//
// BPE
//===----------------------------------------------------------------------===//

struct BPE {
  StringMap<int32_t> vocab;
  /// (left id, right id) -> (rank, merged id)
  DenseMap<uint64_t, std::pair<int32_t, int32_t>> merges;
  int32_t unk = -1;
  bool fuseUnk = false, byteFallback = false, ignoreMerges = false;
  std::string prefix, suffix; // continuing_subword_prefix, end_of_word_suffix
  int32_t byteIds[256];

  static uint64_t key(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }

  /// Appends the ids of `word` (one pre-tokenized piece) to `out`.
  void encodeWord(StringRef word, std::vector<int32_t> &out) const {
    if (word.empty())
      return;
    if (ignoreMerges) {
      auto it = vocab.find(word);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    auto add = [&](int32_t id) {
      int32_t i = sym.size();
      sym.push_back({id, i - 1, -1, true});
      if (i > 0)
        sym[i - 1].next = i;
    };
    int32_t pendingUnk = -1; // an unknown run not yet added (fuse_unk)
    std::string scratch;
    for (size_t i = 0; i < word.size();) {
      size_t len = std::min(utf8Length(word[i]), word.size() - i);
      StringRef ch = word.substr(i, len);
      bool first = i == 0, last = i + len == word.size();
      i += len;
      StringRef s = ch;
      if ((!first && !prefix.empty()) || (last && !suffix.empty())) {
        scratch =
            ((!first ? prefix : std::string()) + ch + (last ? suffix : ""))
                .str();
        s = scratch;
      }
      auto it = vocab.find(s);
      if (it != vocab.end()) {
        if (pendingUnk >= 0)
          add(pendingUnk), pendingUnk = -1;
        add(it->second);
        continue;
      }
      if (byteFallback) {
        bool all = true;
        for (unsigned char c : s)
          all &= byteIds[c] >= 0;
        if (all) {
          if (pendingUnk >= 0)
            add(pendingUnk), pendingUnk = -1;
          for (unsigned char c : s)
            add(byteIds[c]);
          continue;
        }
      }
      if (unk < 0)
        continue; // tokenizers fails (MissingUnkToken); the char is dropped
      if (pendingUnk >= 0 && !fuseUnk)
        add(pendingUnk);
      pendingUnk = unk;
    }
    if (pendingUnk >= 0)
      add(pendingUnk);

    // Merge: lowest rank first, then leftmost (tokenizers' Word::merge_all).
    struct Merge {
      int32_t rank, pos, id;
      bool operator>(const Merge &o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
    auto consider = [&](int32_t pos) {
      int32_t next = sym[pos].next;
      if (next < 0)
        return;
      auto it = merges.find(key(sym[pos].id, sym[next].id));
      if (it != merges.end())
        queue.push({it->second.first, pos, it->second.second});
    };
    for (int32_t p = 0; p + 1 < int32_t(sym.size()); ++p)
      consider(p);
    while (!queue.empty()) {
      Merge top = queue.top();
      queue.pop();
      Symbol &left = sym[top.pos];
      if (!left.alive || left.next < 0)
        continue;
      Symbol &right = sym[left.next];
      auto it = merges.find(key(left.id, right.id));
      if (it == merges.end() || it->second.second != top.id)
        continue; // stale
      left.id = top.id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0)
        sym[right.next].prev = top.pos;
      if (left.prev >= 0)
        consider(left.prev);
      consider(top.pos);
    }
    for (const Symbol &s : sym)
      if (s.alive)
        out.push_back(s.id);
  }
};

bool readBPE(Reader &r, const json::Object &model, BPE &bpe,
             std::vector<std::string> &idToToken) {
  const std::string path = "model";
  const json::Object *vocab = model.getObject("vocab");
  if (!vocab)
    return r.fail("model.vocab", "expected an object of token -> id");
  for (const auto &[k, v] : *vocab) {
    std::optional<int64_t> id = v.getAsInteger();
    if (!id || *id < 0 || *id >= (int64_t(1) << 30))
      return r.fail("model.vocab." + k.str(), "expected an id in [0, 2^30)");
    bpe.vocab[k.str()] = int32_t(*id);
    if (size_t(*id) >= idToToken.size())
      idToToken.resize(*id + 1);
    idToToken[*id] = k.str();
  }
  const json::Array *merges = model.getArray("merges");
  if (!merges)
    return r.fail("model.merges", "expected an array");
  bpe.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json::Value &m = (*merges)[i];
    std::string a, b;
    if (std::optional<StringRef> s = m.getAsString()) {
      auto [l, rr] = s->split(' ');
      if (rr.empty() && !s->contains(' '))
        return r.fail(Reader::at("model.merges", i),
                      "'" + *s + "' is not two tokens separated by a space");
      a = l.str(), b = rr.str();
    } else if (const json::Array *pair = m.getAsArray();
               pair && pair->size() == 2 && (*pair)[0].getAsString() &&
               (*pair)[1].getAsString()) {
      a = (*pair)[0].getAsString()->str();
      b = (*pair)[1].getAsString()->str();
    } else {
      return r.fail(Reader::at("model.merges", i),
                    "expected \"A B\" or [\"A\", \"B\"]");
    }
    auto ia = bpe.vocab.find(a), ib = bpe.vocab.find(b),
         iab = bpe.vocab.find(a + b);
    if (ia == bpe.vocab.end() || ib == bpe.vocab.end() ||
        iab == bpe.vocab.end())
      return r.fail(Reader::at("model.merges", i),
                    "'" + a + "' + '" + b + "': " +
                        (ia == bpe.vocab.end()   ? "'" + a + "'"
                         : ib == bpe.vocab.end() ? "'" + b + "'"
                                                 : "'" + a + b + "'") +
                        " is not in the vocabulary");
    // The first of duplicate merges wins (its rank is the lower).
    bpe.merges.try_emplace(BPE::key(ia->second, ib->second), int32_t(i),
                           iab->second);
  }
  std::string unk;
  if (!r.string(model, path, "unk_token", unk, false) ||
      !r.boolean(model, path, "fuse_unk", bpe.fuseUnk) ||
      !r.boolean(model, path, "byte_fallback", bpe.byteFallback) ||
      !r.boolean(model, path, "ignore_merges", bpe.ignoreMerges) ||
      !r.string(model, path, "continuing_subword_prefix", bpe.prefix, false) ||
      !r.string(model, path, "end_of_word_suffix", bpe.suffix, false))
    return false;
  if (const json::Value *d = model.get("dropout");
      d && d->kind() != json::Value::Null && d->getAsNumber() &&
      *d->getAsNumber() != 0.0)
    return r.fail("model.dropout",
                  "BPE dropout is for training; SQ encodes without it");
  if (!unk.empty()) {
    auto it = bpe.vocab.find(unk);
    if (it == bpe.vocab.end())
      return r.fail("model.unk_token",
                    "'" + unk + "' is not in the vocabulary");
    bpe.unk = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe.vocab.find(name);
    bpe.byteIds[b] = it == bpe.vocab.end() ? -1 : it->second;
  }
  return true;
}

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

/// The special tokens a post-processor puts around a single sequence.
bool readPostProcessor(Reader &r, const json::Value *v, const std::string &path,
                       const StringMap<int32_t> &ids,
                       std::vector<int32_t> &prefix,
                       std::vector<int32_t> &suffix) {
  const json::Object *o = r.object(v, path);
  std::string type;
  if (!o || !r.type(*o, path, type))
    return false;
  if (type == "Sequence") {
    std::string p = Reader::at(path, "processors");
    const json::Array *a = o->getArray("processors");
    if (!a)
      return r.fail(p, "expected an array");
    for (size_t i = 0; i < a->size(); ++i)
      if (!readPostProcessor(r, &(*a)[i], Reader::at(p, i), ids, prefix,
                             suffix))
        return false;
    return true;
  }
  if (type == "ByteLevel")
    return true; // offsets only
  if (type == "TemplateProcessing") {
    std::string p = Reader::at(path, "single");
    const json::Array *single = o->getArray("single");
    const json::Object *specials = o->getObject("special_tokens");
    if (!single)
      return r.fail(p, "expected an array");
    bool seenSequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      std::string pi = Reader::at(p, i);
      const json::Object *item = r.object(&(*single)[i], pi);
      if (!item)
        return false;
      if (item->get("Sequence")) {
        seenSequence = true;
        continue;
      }
      const json::Object *st = item->getObject("SpecialToken");
      std::string name;
      if (!st || !r.string(*st, Reader::at(pi, "SpecialToken"), "id", name))
        return r.fail(pi, "expected {\"Sequence\": ...} or "
                          "{\"SpecialToken\": {\"id\": ...}}");
      const json::Object *def = specials ? specials->getObject(name) : nullptr;
      const json::Array *defIds = def ? def->getArray("ids") : nullptr;
      if (!defIds)
        return r.fail(Reader::at(path, "special_tokens"),
                      "no ids for '" + name + "'");
      for (const json::Value &idv : *defIds) {
        std::optional<int64_t> id = idv.getAsInteger();
        if (!id)
          return r.fail(Reader::at(Reader::at(path, "special_tokens"), name),
                        "expected integer ids");
        (seenSequence ? suffix : prefix).push_back(int32_t(*id));
      }
    }
    return true;
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
  return r.fail(Reader::at(path, "type"),
                "unsupported post-processor '" + type +
                    "' (SQ reads TemplateProcessing, ByteLevel, Sequence, "
                    "RobertaProcessing, BertProcessing)");
}

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
