//===- TokenLoader.h - token ids from a file, one loader --------*- C++ -*-===//
//
// The one way SQ reads the token stream it evaluates or calibrates on
// (sq-run --ppl/--tokens, the calibration of spinquant-rotate with data=,
// GPTQ's calib=): pre-tokenized little-endian int32 ids, or text through a
// tokenizer (sq/Exec/Tokenizer.h), with one set of checks and messages.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_EXEC_TOKENLOADER_H
#define SQ_EXEC_TOKENLOADER_H

#include "sq/Exec/Tokenizer.h"

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sq {

struct TokenSource {
  enum class Format {
    ByExtension, ///< ".bin": int32 ids; anything else: text
    Ids,         ///< little-endian int32 ids
    Text,        ///< text, through the tokenizer
  };
  /// The file to read; empty: `text` (an embedded default).
  std::string path;
  llvm::StringRef text;
  /// How messages name the source ("calibration data 'F'"); empty: path.
  std::string name;
  Format format = Format::ByExtension;
  /// For text: a tokenizer to use, else one made from `tokenizerSpec`
  /// ("byte", "sp:PATH" or "hf:DIR", as the user gave it; named in the vocabulary
  /// message), else from `defaultTokenizerSpec`. With none of the three,
  /// text is refused with `needsTokenizer` (say how to give one).
  const Tokenizer *tokenizer = nullptr;
  std::string tokenizerSpec;
  std::string defaultTokenizerSpec;
  std::string needsTokenizer;
  /// When > 0, every id must lie in [0, vocab).
  int64_t vocab = 0;
  /// Text: add the tokenizer's BOS/EOS (Tokenizer::encodeWithSpecialTokens).
  bool addSpecialTokens = false;
  /// Text: encode every line (split at '\n', without it) on its own and
  /// concatenate the ids (how per-line datasets are tokenized).
  bool eachLine = false;
};

/// Reads the ids of `source` into `ids`. Returns false with a one-line
/// `error`: NAME: not a regular file (a device or a pipe would be read
/// without end) | cannot read NAME: REASON | NAME: size N is not a multiple
/// of 4 (expected int32 token ids) | the tokenizer's own error |
/// `needsTokenizer` | NAME: token I is X, outside the model's vocabulary of
/// V [(tokenizer=SPEC)].
bool loadTokens(const TokenSource &source, std::vector<int64_t> &ids,
                std::string &error);

/// Writes `ids` to `path` as little-endian int32 (what loadTokens reads from
/// a .bin), through a temporary renamed into place: a failure leaves no
/// file. False with "PATH: cannot write: REASON" (or an id outside int32).
bool writeTokens(llvm::StringRef path, llvm::ArrayRef<int64_t> ids,
                 std::string &error);

} // namespace sq

#endif // SQ_EXEC_TOKENLOADER_H
