//===- HFTokenizerTest.cpp - tokenizer.json parts the real files lack -----===//
//
// The four real tokenizer.json files are checked id for id against the
// oracle in test/Tokenizers. These cases cover what none of them uses, with
// ids worked out by hand from the tokenizers library's rules: Metaspace
// (prepend_scheme first/always, split), Digits, the Split behaviors,
// lstrip/rstrip added tokens, byte fallback and fused unknowns, the
// ByteFallback decoder on bad bytes, and tokenizer_config.json's
// add_bos_token/add_eos_token.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Tokenizer.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

using namespace sq;

namespace {

/// A folder with tokenizer.json (and tokenizer_config.json when given).
class TokenizerDir {
public:
  TokenizerDir(llvm::StringRef json, llvm::StringRef config = "") {
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("sq-hf-tok", dir));
    write("tokenizer.json", json);
    if (!config.empty())
      write("tokenizer_config.json", config);
  }
  ~TokenizerDir() { llvm::sys::fs::remove_directories(dir); }
  std::unique_ptr<Tokenizer> open() {
    std::string error;
    auto tok = Tokenizer::create("hf:" + std::string(dir), error);
    EXPECT_TRUE(tok) << error;
    return tok;
  }

private:
  void write(llvm::StringRef name, llvm::StringRef text) {
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, name);
    std::error_code ec;
    llvm::raw_fd_ostream os(p, ec);
    os << text;
  }
  llvm::SmallString<128> dir;
};

using Ids = std::vector<int64_t>;

// ▁ is U+2581.
const char *kMetaspace = R"({
  "added_tokens": [{"id": 5, "content": "<s>", "special": true,
                    "normalized": false, "lstrip": false, "rstrip": false,
                    "single_word": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                    "prepend_scheme": "SCHEME", "split": true},
  "post_processor": null,
  "decoder": {"type": "Metaspace", "replacement": "\u2581",
              "prepend_scheme": "SCHEME", "split": true},
  "model": {"type": "BPE", "vocab": {"\u2581a": 0, "\u2581b": 1, "\u2581": 2,
            "a": 3, "b": 4, "ab": 6, "\u2581ab": 7},
            "merges": ["\u2581 a", "\u2581 b", "a b", "\u2581a b"]}
})";

std::string withScheme(llvm::StringRef scheme) {
  std::string s = kMetaspace;
  for (size_t at; (at = s.find("SCHEME")) != std::string::npos;)
    s.replace(at, 6, scheme.str());
  return s;
}

TEST(HFTokenizerTest, MetaspaceFirst) {
  TokenizerDir d(withScheme("first"));
  auto tok = d.open();
  ASSERT_TRUE(tok);
  // "a b" -> "▁a▁b" -> split before each ▁: "▁a", "▁b".
  EXPECT_EQ(tok->encode("a b"), (Ids{0, 1}));
  // "ab" merges to "▁ab" (rank 3 after "▁ a" (0): "▁a"+"b").
  EXPECT_EQ(tok->encode("ab"), (Ids{7}));
  // After a special token the text is not at the start: no ▁ prepended.
  EXPECT_EQ(tok->encode("<s>a b"), (Ids{5, 3, 1}));
  // Decoding drops the ▁ of the first token only.
  EXPECT_EQ(tok->decode({0, 1}), "a b");
}

TEST(HFTokenizerTest, MetaspaceAlways) {
  TokenizerDir d(withScheme("always"));
  auto tok = d.open();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("<s>a b"), (Ids{5, 0, 1}));
}

const char *kSplits = R"({
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"String": "-"}, "behavior": "BEHAVIOR",
     "invert": false},
    {"type": "Digits", "individual_digits": INDIVIDUAL}]},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "-": 2, "1": 3, "2": 4,
            "a-": 5, "-b": 6, "12": 7, "ab": 8},
            "merges": ["a -", "- b", "1 2", "a b"]}
})";

std::vector<int64_t> splitIds(llvm::StringRef behavior, bool individual,
                              llvm::StringRef text) {
  std::string s = kSplits;
  s.replace(s.find("BEHAVIOR"), 8, behavior.str());
  s.replace(s.find("INDIVIDUAL"), 10, individual ? "true" : "false");
  TokenizerDir d(s);
  auto tok = d.open();
  return tok ? tok->encode(text) : Ids{-1};
}

TEST(HFTokenizerTest, SplitBehaviorsAndDigits) {
  // "a-b12": the "-" is split off, kept, merged left or right, or dropped;
  // then the digits are split off together (Contiguous) or one by one.
  EXPECT_EQ(splitIds("Isolated", false, "a-b12"), (Ids{0, 2, 1, 7}));
  EXPECT_EQ(splitIds("Removed", false, "a-b12"), (Ids{0, 1, 7}));
  EXPECT_EQ(splitIds("MergedWithPrevious", false, "a-b12"), (Ids{5, 1, 7}));
  EXPECT_EQ(splitIds("MergedWithNext", false, "a-b12"), (Ids{0, 6, 7}));
  EXPECT_EQ(splitIds("Isolated", true, "a-b12"), (Ids{0, 2, 1, 3, 4}));
  // Contiguous: runs of the pattern become one piece ("--" -> one piece,
  // but there is no "--" merge: two ids).
  EXPECT_EQ(splitIds("Contiguous", false, "ab--ab"), (Ids{8, 2, 2, 8}));
  // Without a pre-tokenizer split "ab" is merged; with one "a" and "b" are
  // not: a digit run in between.
  EXPECT_EQ(splitIds("Isolated", false, "a12b"), (Ids{0, 7, 1}));
}

TEST(HFTokenizerTest, AddedTokenStripAndFallback) {
  TokenizerDir d(R"({
    "added_tokens": [{"id": 9, "content": "<m>", "special": true,
                      "normalized": false, "lstrip": true, "rstrip": true,
                      "single_word": false},
                     {"id": 10, "content": "<n>", "special": true,
                      "normalized": false, "lstrip": false, "rstrip": false,
                      "single_word": false}],
    "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"},
                                                 {"type": "Fuse"}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
              "byte_fallback": true,
              "vocab": {"<unk>": 0, "a": 1, "b": 2, " ": 3, "<0x7A>": 4,
                        "<0xC3>": 5, "<0xA9>": 6},
              "merges": []}
  })",
                 R"({"bos_token": "<n>", "eos_token": {"content": "<m>"},
                     "add_bos_token": true, "add_eos_token": true})");
  auto tok = d.open();
  ASSERT_TRUE(tok);
  // lstrip/rstrip: the spaces beside <m> go with it; not beside <n>.
  EXPECT_EQ(tok->encode("a  <m>  b"), (Ids{1, 9, 2}));
  EXPECT_EQ(tok->encode("a <n> b"), (Ids{1, 3, 10, 3, 2}));
  // z has a byte token; é (C3 A9) too; ü (C3 BC) has not: unk, and two
  // unknown characters in a row fuse into one.
  EXPECT_EQ(tok->encode("zé"), (Ids{4, 5, 6}));
  EXPECT_EQ(tok->encode("aüüb"), (Ids{1, 0, 2}));
  // ByteFallback decoding: valid UTF-8 bytes become the character, a lone
  // lead byte one U+FFFD per byte.
  EXPECT_EQ(tok->decode({1, 5, 6}), "a\xC3\xA9");
  EXPECT_EQ(tok->decode({5, 2}), "\xEF\xBF\xBD"
                                 "b");
  // tokenizer_config.json: add_bos_token/add_eos_token decide.
  EXPECT_EQ(tok->encodeWithSpecialTokens("a"), (Ids{10, 1, 9}));
  EXPECT_EQ(tok->bos(), 10);
  EXPECT_EQ(tok->eos(), 9);
  EXPECT_EQ(tok->vocabSize(), 11);
}

TEST(HFTokenizerTest, ByteLevelWithPrefixSpaceAndNFKC) {
  // ByteLevel with add_prefix_space and the GPT-2 regex; NFKC maps the
  // ligature "ﬁ" to "fi". Ġ (U+0120) is the byte-level space.
  TokenizerDir d(R"({
    "normalizer": {"type": "NFKC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true,
                      "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"\u0120": 0, "f": 1, "i": 2,
              "\u0120f": 3, "\u0120fi": 4, "'": 5, "s": 6, "'s": 7},
              "merges": [["\u0120", "f"], ["\u0120f", "i"], ["'", "s"]]}
  })");
  auto tok = d.open();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("\xEF\xAC\x81's"), (Ids{4, 7}));
  EXPECT_EQ(tok->decode({4, 7}), " fi's");
  EXPECT_EQ(tok->bos(), -1);
}

} // namespace
