//===- HFTokenizer.h - Hugging Face tokenizer.json (internal) ---*- C++ -*-===//
//
// The `hf:` tokenizer of sq/Exec/Tokenizer.h: a tokenizer.json (and the
// tokenizer_config.json beside it) read with llvm::json and run as the
// Hugging Face `tokenizers` library runs it. See HFTokenizer.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_EXEC_HFTOKENIZER_H
#define SQ_LIB_EXEC_HFTOKENIZER_H

#include "sq/Exec/Tokenizer.h"

namespace sq {

/// `path` is a directory holding tokenizer.json (and optionally
/// tokenizer_config.json), or the tokenizer.json file itself. Returns null
/// with a one-line `error` ("FILE: JSON.PATH: what is wrong") otherwise.
std::unique_ptr<Tokenizer> createHFTokenizer(llvm::StringRef path,
                                             std::string &error);

/// The same from the files' contents; `name`/`configName` name them in
/// messages, an empty `configName`: no tokenizer_config.json. For the fuzz
/// target.
std::unique_ptr<Tokenizer> createHFTokenizerFromJSON(llvm::StringRef json,
                                                     llvm::StringRef name,
                                                     llvm::StringRef config,
                                                     llvm::StringRef configName,
                                                     std::string &error);

} // namespace sq

#endif // SQ_LIB_EXEC_HFTOKENIZER_H
