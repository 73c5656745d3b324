//===- Tokenizer.h - text <-> token ids for sq-run ---------------*- C++
//-*-===//
//
//   byte      raw UTF-8 bytes are the ids 0..255 (byte-level models)
//   sp:PATH   a SentencePiece .model (LLaMA-2, llama2.c), via libsentencepiece
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
  /// `spec` is "byte" or "sp:PATH". Returns null with `error` otherwise.
  static std::unique_ptr<Tokenizer> create(llvm::StringRef spec,
                                           std::string &error);
  virtual std::vector<int64_t> encode(llvm::StringRef text) const = 0;
  virtual std::string decode(llvm::ArrayRef<int64_t> ids) const = 0;
  /// Beginning-of-sequence id, or -1 when the tokenizer has none.
  virtual int64_t bos() const = 0;
  /// End-of-sequence id, or -1.
  virtual int64_t eos() const = 0;
  virtual int64_t vocabSize() const = 0;
};

} // namespace sq

#endif // SQ_EXEC_TOKENIZER_H
