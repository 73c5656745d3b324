//===- FuzzTokenizer.cpp - fuzz the byte tokenizer ------------------------===//
//
// The byte tokenizer: decode(encode(text)) == text, every id in
// [0, vocabSize()); decode of arbitrary ids (read as int64 from the input)
// drops the out-of-range ones and never crashes. (The SentencePiece
// tokenizer goes through a shim that cannot be loaded under ASan.)
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

static const sq::Tokenizer &byteTokenizer() {
  static std::unique_ptr<sq::Tokenizer> tok = [] {
    std::string error;
    auto t = sq::Tokenizer::create("byte", error);
    if (!t) {
      std::fprintf(stderr, "sq-fuzz-tokenizer: %s\n", error.c_str());
      std::abort();
    }
    return t;
  }();
  return *tok;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const sq::Tokenizer &tok = byteTokenizer();
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  std::vector<int64_t> ids = tok.encode(text);
  for (int64_t id : ids)
    if (id < 0 || id >= tok.vocabSize())
      std::abort();
  if (tok.decode(ids) != text) {
    std::fprintf(stderr, "sq-fuzz-tokenizer: decode(encode(x)) != x\n");
    std::abort();
  }
  // Arbitrary ids: in-range ones decode to their byte, others are dropped.
  std::vector<int64_t> raw(size / sizeof(int64_t));
  if (!raw.empty())
    std::memcpy(raw.data(), data, raw.size() * sizeof(int64_t));
  std::string decoded = tok.decode(raw);
  size_t valid = 0;
  for (int64_t id : raw)
    valid += id >= 0 && id < tok.vocabSize();
  if (decoded.size() != valid)
    std::abort();
  // Unknown specs are errors, not crashes ("sp:PATH" and "hf:DIR" would
  // touch the file system, and the SentencePiece shim is refused under ASan:
  // skipped; sq-fuzz-hftokenizer fuzzes the tokenizer.json reader).
  std::string error;
  if (!text.starts_with("sp:") && !text.starts_with("hf:")) {
    bool created = sq::Tokenizer::create(text, error) != nullptr;
    if (created != (text == "byte") || (!created && error.empty()))
      std::abort();
  }
  return 0;
}
