//===- TokenLoader.cpp - token ids from a file, one loader ----------------===//

#include "sq/Exec/TokenLoader.h"
#include "sq/Support/ToolSupport.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
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
    auto encode = [&](StringRef text) {
      return source.addSpecialTokens ? tokenizer->encodeWithSpecialTokens(text)
                                     : tokenizer->encode(text);
    };
    if (!source.eachLine) {
      ids = encode(bytes);
    } else {
      SmallVector<StringRef> lines;
      bytes.split(lines, '\n');
      for (StringRef line : lines) {
        std::vector<int64_t> part = encode(line);
        ids.insert(ids.end(), part.begin(), part.end());
      }
    }
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

bool writeTokens(StringRef path, ArrayRef<int64_t> ids, std::string &error) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < INT32_MIN || ids[i] > INT32_MAX) {
      error = path.str() + ": token " + std::to_string(i) + " is " +
              std::to_string(ids[i]) + ", outside int32";
      return false;
    }
  auto write = [&](raw_ostream &os, std::string &) {
    for (int64_t id : ids) {
      uint32_t v = static_cast<uint32_t>(static_cast<int32_t>(id));
      char b[4] = {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
      os.write(b, 4);
    }
    return true;
  };
  if (writeFileAtomically(path, write, error) == WriteStatus::Written)
    return true;
  error = path.str() + ": cannot write: " + error;
  return false;
}

} // namespace sq
