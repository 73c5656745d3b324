//===- FuzzHFTokenizer.cpp - fuzz the tokenizer.json reader and encoder ---===//
//
// Two targets in one (the first input byte picks):
//  - even: the rest is a tokenizer.json. Reading it either fails with a
//    one-line message or gives a tokenizer that encodes a fixed text to ids
//    in [0, vocabSize()) and decodes them without crashing.
//  - odd: the rest is text for a fixed byte-level BPE tokenizer (the LLaMA-3
//    pre-tokenizer regex, all 256 byte characters and a few merges, an added
//    token): ids in range, and decode(encode(x)) == x for valid UTF-8 x
//    (byte-level BPE is lossless); invalid UTF-8 never crashes.
//
//===----------------------------------------------------------------------===//

#include "../../lib/Exec/HFTokenizer.h"

#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/JSON.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

/// GPT-2's byte -> character table, as in tokenizers.
std::string byteChar(int b) {
  static int next = 256;
  static int map[256] = {0};
  static bool built = false;
  if (!built) {
    for (int c = 0; c < 256; ++c) {
      bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) ||
                       (c >= 0xAE && c <= 0xFF);
      map[c] = printable ? c : next++;
    }
    built = true;
  }
  std::string s;
  uint32_t cp = map[b];
  if (cp < 0x80)
    s.push_back(char(cp));
  else {
    s.push_back(char(0xC0 | (cp >> 6)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  }
  return s;
}

const sq::Tokenizer &byteLevel() {
  static std::unique_ptr<sq::Tokenizer> tok = [] {
    llvm::json::Object vocab;
    for (int b = 0; b < 256; ++b)
      vocab[byteChar(b)] = b;
    std::string g = byteChar(' ');
    vocab[g + "t"] = 256;
    vocab[g + "th"] = 257;
    vocab["he"] = 258;
    vocab[g + "the"] = 259;
    llvm::json::Array merges{
        llvm::json::Array{g, "t"}, llvm::json::Array{g + "t", "h"},
        llvm::json::Array{"h", "e"}, llvm::json::Array{g + "th", "e"}};
    llvm::json::Object root{
        {"added_tokens",
         llvm::json::Array{llvm::json::Object{{"id", 260},
                                              {"content", "<|end|>"},
                                              {"special", true},
                                              {"normalized", false}}}},
        {"pre_tokenizer",
         llvm::json::Object{
             {"type", "Sequence"},
             {"pretokenizers",
              llvm::json::Array{
                  llvm::json::Object{
                      {"type", "Split"},
                      {"pattern",
                       llvm::json::Object{
                           {"Regex",
                            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]"
                            "?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]"
                            "*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                      {"behavior", "Isolated"},
                      {"invert", false}},
                  llvm::json::Object{{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"use_regex", false}}}}}},
        {"decoder", llvm::json::Object{{"type", "ByteLevel"}}},
        {"model", llvm::json::Object{{"type", "BPE"},
                                     {"ignore_merges", true},
                                     {"vocab", std::move(vocab)},
                                     {"merges", std::move(merges)}}}};
    std::string json;
    llvm::raw_string_ostream(json) << llvm::json::Value(std::move(root));
    std::string error;
    auto t = sq::createHFTokenizerFromJSON(json, "fixed", "", "", error);
    if (!t) {
      std::fprintf(stderr, "sq-fuzz-hftokenizer: %s\n", error.c_str());
      std::abort();
    }
    return t;
  }();
  return *tok;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  llvm::StringRef rest(reinterpret_cast<const char *>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    std::string error;
    auto tok = sq::createHFTokenizerFromJSON(rest, "t.json", "", "", error);
    if (!tok) {
      if (error.empty() || error.find('\n') != std::string::npos)
        std::abort();
      return 0;
    }
    std::vector<int64_t> ids =
        tok->encodeWithSpecialTokens("Hello, world! 12345 <|x|> \xC3\xA9\xFF");
    for (int64_t id : ids)
      if (id < 0 || id >= tok->vocabSize())
        std::abort();
    (void)tok->decode(ids);
    return 0;
  }
  const sq::Tokenizer &tok = byteLevel();
  std::vector<int64_t> ids = tok.encode(rest);
  for (int64_t id : ids)
    if (id < 0 || id >= tok.vocabSize())
      std::abort();
  std::string back = tok.decode(ids);
  const auto *begin = reinterpret_cast<const llvm::UTF8 *>(rest.data());
  if (llvm::isLegalUTF8String(&begin, begin + rest.size()) && back != rest) {
    std::fprintf(stderr, "sq-fuzz-hftokenizer: decode(encode(x)) != x\n");
    std::abort();
  }
  return 0;
}
