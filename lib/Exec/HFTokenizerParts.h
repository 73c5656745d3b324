//===- HFTokenizerParts.h - the parts of a tokenizer.json (internal) -*- C++
//-*-===//
//
// What the files of the `hf:` tokenizer share (see HFTokenizer.cpp for the
// whole):
//   HFTokenizerSupport.cpp  UTF-8 repair, PCRE2 regexes and Split/Replace
//                           patterns, the JSON reader with paths for messages
//   HFPreTokenizers.cpp     normalizers and pre-tokenizers
//   HFBPE.cpp               the BPE model
//   HFDecoders.cpp          decoders and post-processors
//   HFTokenizer.cpp         added tokens, the encoder/decoder, the top level of
//                           tokenizer.json and tokenizer_config.json
// Each component kind is an interface with an `apply` and a `read*` function
// that builds it from its JSON object, or fails with the reader's one-line
// message.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_EXEC_HFTOKENIZERPARTS_H
#define SQ_LIB_EXEC_HFTOKENIZERPARTS_H

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct pcre2_real_code_8; // pcre2.h's pcre2_code (8-bit code units)

namespace sq {
namespace hftok {

//===----------------------------------------------------------------------===//
// UTF-8
//===----------------------------------------------------------------------===//

inline constexpr char kReplacementChar[] = "\xEF\xBF\xBD"; // U+FFFD

/// Replaces every ill-formed subsequence with U+FFFD, one per maximal
/// subpart (the WHATWG / Unicode "substitution of maximal subparts"
/// practice: what TextDecoder, Node's Buffer.toString and Rust's
/// String::from_utf8_lossy all do).
std::string toValidUtf8(llvm::StringRef s);

/// Length of the (valid) UTF-8 sequence starting with `lead`.
inline size_t utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

//===----------------------------------------------------------------------===//
// PCRE2 regexes and patterns
//===----------------------------------------------------------------------===//

class Regex {
public:
  ~Regex();
  /// Compiles `pattern` (UTF, Unicode properties for \s \w \d and POSIX
  /// classes); null with `error` when PCRE2 refuses it.
  static std::unique_ptr<Regex> compile(llvm::StringRef pattern,
                                        std::string &error);
  /// Every non-overlapping match of the regex in `text` (valid UTF-8), left
  /// to right, as [begin, end) byte offsets; an empty match moves the search
  /// on by one character.
  void findAll(llvm::StringRef text,
               std::vector<std::pair<size_t, size_t>> &matches) const;
  /// Whether the regex matches at byte `at` of `text` (anchored).
  bool matchesAt(llvm::StringRef text, size_t at) const;

private:
  Regex() = default;
  pcre2_real_code_8 *code = nullptr;
};

/// A Split/Replace pattern: {"String": s} (literal) or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  void findAll(llvm::StringRef text,
               std::vector<std::pair<size_t, size_t>> &matches) const;
};

/// Replaces every match of `pattern` in `s` with `content` (the Replace
/// normalizer and decoder).
void replaceAll(std::string &s, const Pattern &pattern,
                llvm::StringRef content);

//===----------------------------------------------------------------------===//
// JSON reading with paths for the messages
//===----------------------------------------------------------------------===//

/// Reads the entries of one file; the first failure is kept in `error` as
/// "FILE: JSON.PATH: what is wrong".
struct Reader {
  std::string file;
  std::string error;
  bool fail(const std::string &path, const llvm::Twine &what);
  static std::string at(const std::string &path, llvm::StringRef key) {
    return path.empty() ? key.str() : path + "." + key.str();
  }
  static std::string at(const std::string &path, size_t index) {
    return path + "[" + std::to_string(index) + "]";
  }
  const llvm::json::Object *object(const llvm::json::Value *v,
                                   const std::string &path);
  /// A component: an object with a string "type" (set in `type`).
  const llvm::json::Object *component(const llvm::json::Value *v,
                                      const std::string &path,
                                      std::string &type);
  /// Fails on `path`.type: `type` is not one of the `kind`s SQ reads.
  bool unsupported(const std::string &path, llvm::StringRef kind,
                   llvm::StringRef type, llvm::StringRef known);
  /// Calls `each` with every element of the array `o[key]` and its path,
  /// until one returns false; fails when `o[key]` is not an array.
  bool forEach(
      const llvm::json::Object &o, const std::string &path, llvm::StringRef key,
      llvm::function_ref<bool(const llvm::json::Value &, const std::string &)>
          each);
  /// Optional (absent or null: `out` unchanged) unless `required`.
  bool string(const llvm::json::Object &o, const std::string &path,
              llvm::StringRef key, std::string &out, bool required = true);
  /// Optional: absent or null leaves `out` unchanged.
  bool boolean(const llvm::json::Object &o, const std::string &path,
               llvm::StringRef key, bool &out);
  bool integer(const llvm::json::Object &o, const std::string &path,
               llvm::StringRef key, int64_t &out);
  /// o.pattern: {"String": ...} or {"Regex": ...} (compiled).
  bool pattern(const llvm::json::Object &o, const std::string &path,
               Pattern &out);
};

/// The `Sequence` of a component kind: its parts applied in order.
template <typename Base, typename Arg> struct SequenceOf : Base {
  std::vector<std::unique_ptr<Base>> parts;
  void apply(Arg &x) const override {
    for (auto &p : parts)
      p->apply(x);
  }
};

/// Reads the array `o[key]` of components with `read(r, value, path)` into a
/// SequenceOf<Base, Arg>; null on the first failure.
template <typename Base, typename Arg, typename ReadFn>
std::unique_ptr<Base> readSequence(Reader &r, const llvm::json::Object &o,
                                   const std::string &path, llvm::StringRef key,
                                   ReadFn read) {
  auto seq = std::make_unique<SequenceOf<Base, Arg>>();
  if (!r.forEach(o, path, key,
                 [&](const llvm::json::Value &v, const std::string &p) {
                   std::unique_ptr<Base> part = read(r, &v, p);
                   if (!part)
                     return false;
                   seq->parts.push_back(std::move(part));
                   return true;
                 }))
    return nullptr;
  return seq;
}

//===----------------------------------------------------------------------===//
// Normalizers and pre-tokenizers (HFPreTokenizers.cpp)
//===----------------------------------------------------------------------===//

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string &s) const = 0;
};

std::unique_ptr<Normalizer>
readNormalizer(Reader &r, const llvm::json::Value *v, const std::string &path);

/// A piece of a section; `atStart`: it begins at offset 0 of the input (what
/// Metaspace's prepend_scheme "first" asks).
struct Piece {
  std::string text;
  bool atStart;
};
using Pieces = std::vector<Piece>;

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces &pieces) const = 0;
};

std::unique_ptr<PreTokenizer> readPreTokenizer(Reader &r,
                                               const llvm::json::Value *v,
                                               const std::string &path);

/// GPT-2's byte <-> character table (bytes_to_unicode): printable bytes stand
/// for themselves, the others for U+0100 onwards. The ByteLevel
/// pre-tokenizer maps bytes to characters, the ByteLevel decoder back.
struct ByteLevelTable {
  std::string byteToChar[256];
  llvm::DenseMap<uint32_t, uint8_t> charToByte;
  static const ByteLevelTable &get();

private:
  ByteLevelTable();
};

//===----------------------------------------------------------------------===//
// The BPE model (HFBPE.cpp)
//===----------------------------------------------------------------------===//

struct BPE {
  llvm::StringMap<int32_t> vocab;
  /// (left id, right id) -> (rank, merged id)
  llvm::DenseMap<uint64_t, std::pair<int32_t, int32_t>> merges;
  int32_t unk = -1;
  bool fuseUnk = false, byteFallback = false, ignoreMerges = false;
  std::string prefix, suffix; // continuing_subword_prefix, end_of_word_suffix
  int32_t byteIds[256];

  static uint64_t key(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }

  /// Appends the ids of `word` (one pre-tokenized piece) to `out`.
  void encodeWord(llvm::StringRef word, std::vector<int32_t> &out) const;
};

/// tokenizer.json's "model" of type BPE; `idToToken` gets the vocabulary.
bool readBPE(Reader &r, const llvm::json::Object &model, BPE &bpe,
             std::vector<std::string> &idToToken);

//===----------------------------------------------------------------------===//
// Decoders and post-processors (HFDecoders.cpp)
//===----------------------------------------------------------------------===//

using Tokens = std::vector<std::string>;

/// Maps the token strings to token strings, as tokenizers' decode_chain.
struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(Tokens &tokens) const = 0;
};

std::unique_ptr<Decoder> readDecoder(Reader &r, const llvm::json::Value *v,
                                     const std::string &path);

/// The special tokens a post-processor puts around a single sequence:
/// appended to `prefix` and `suffix`; `ids` maps token strings to ids.
bool readPostProcessor(Reader &r, const llvm::json::Value *v,
                       const std::string &path,
                       const llvm::StringMap<int32_t> &ids,
                       std::vector<int32_t> &prefix,
                       std::vector<int32_t> &suffix);

} // namespace hftok
} // namespace sq

#endif // SQ_LIB_EXEC_HFTOKENIZERPARTS_H
