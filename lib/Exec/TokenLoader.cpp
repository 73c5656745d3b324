//===- TokenLoader.cpp - token ids from a file, one loader ----------------===//

#include "sq/Exec/TokenLoader.h"
#include "sq/Support/ToolSupport.h"

#include "llvm/Support/MemoryBuffer.h"

#include <cstring>
#include <memory>

using namespace llvm;

namespace sq {

bool loadTokens(const TokenSource &source, std::vector<int64_t> &ids,
                std::string &error) {
  std::string name = source.name.empty() ? source.path : source.name;
  StringRef bytes = source.text;
  std::unique_ptr<MemoryBuffer> file;
  if (!source.path.empty()) {
    if (!checkRegularFile(source.path, error)) {
      error = name + ": not a regular file";
      return false;
    }
    auto buffer = MemoryBuffer::getFile(source.path, /*IsText=*/false);
    if (!buffer) {
      error = "cannot read " + name + ": " + buffer.getError().message();
      return false;
    }
    file = std::move(*buffer);
    bytes = file->getBuffer();
  }
  bool pretokenized =
      source.format == TokenSource::Format::Ids ||
      (source.format == TokenSource::Format::ByExtension &&
       !source.path.empty() && StringRef(source.path).ends_with(".bin"));
  ids.clear();
  if (pretokenized) {
    if (bytes.size() % 4) {
      error = name + ": size " + std::to_string(bytes.size()) +
              " is not a multiple of 4 (expected int32 token ids)";
      return false;
    }
    ids.resize(bytes.size() / 4);
    for (size_t i = 0; i < ids.size(); ++i) {
      int32_t id;
      std::memcpy(&id, bytes.data() + 4 * i, 4);
      ids[i] = id;
    }
  } else {
    const Tokenizer *tokenizer = source.tokenizer;
    std::unique_ptr<Tokenizer> made;
    if (!tokenizer) {
      std::string spec = source.tokenizerSpec.empty()
                             ? source.defaultTokenizerSpec
                             : source.tokenizerSpec;
      if (spec.empty()) {
        error = source.needsTokenizer.empty()
                    ? name + ": text needs a tokenizer"
                    : source.needsTokenizer;
        return false;
      }
      if (!(made = Tokenizer::create(spec, error)))
        return false;
      tokenizer = made.get();
    }
    ids = tokenizer->encode(bytes);
  }
  if (source.vocab > 0)
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= source.vocab) {
        error = name + ": token " + std::to_string(i) + " is " +
                std::to_string(ids[i]) +
                ", outside the model's vocabulary of " +
                std::to_string(source.vocab) +
                (source.tokenizerSpec.empty()
                     ? std::string()
                     : " (tokenizer=" + source.tokenizerSpec + ")");
        return false;
      }
  return true;
}

} // namespace sq
