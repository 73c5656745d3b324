//===- Tokenizer.h - text <-> token ids for sq-run ---------------*- C++
//-*-===//
//
//   byte      raw UTF-8 bytes are the ids 0..255 (byte-level models)
//   sp:PATH   a SentencePiece .model (LLaMA-2, llama2.c), via libsentencepiece
//   hf:DIR    a Hugging Face tokenizer.json (DIR/tokenizer.json, or the file
//             itself) with DIR/tokenizer_config.json: byte-level BPE
//             (LLaMA-3, Qwen2.5/3) and SentencePiece-converted BPE with byte
//             fallback (LLaMA-2, Mistral); see docs/tokenizers.md
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_TOKENIZER_H
#define SQ_EXEC_TOKENIZER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sq {

class Tokenizer {
public:
  virtual ~Tokenizer();
  /// `spec` is "byte", "sp:PATH" or "hf:DIR". Returns null with a one-line
  /// `error` otherwise.
  static std::unique_ptr<Tokenizer> create(llvm::StringRef spec,
                                           std::string &error);
  /// The ids of `text` without BOS/EOS (Hugging Face's
  /// add_special_tokens=False; special-token strings in the text still
  /// become their ids). Invalid UTF-8 is read as U+FFFD by hf: (as the
  /// Hugging Face libraries read it).
  virtual std::vector<int64_t> encode(llvm::StringRef text) const = 0;
  /// The ids a model is fed: encode(text) with the BOS/EOS the tokenizer
  /// adds (add_special_tokens=True). Default: bos() when there is one.
  virtual std::vector<int64_t>
  encodeWithSpecialTokens(llvm::StringRef text) const;
  virtual std::string decode(llvm::ArrayRef<int64_t> ids) const = 0;
  /// Beginning-of-sequence id that encoding prepends, or -1 when the
  /// tokenizer has none (hf: whatever its post-processor or
  /// tokenizer_config.json's add_bos_token says).
  virtual int64_t bos() const = 0;
  /// End-of-sequence id, or -1.
  virtual int64_t eos() const = 0;
  virtual int64_t vocabSize() const = 0;
};

} // namespace sq

#endif // SQ_EXEC_TOKENIZER_H
