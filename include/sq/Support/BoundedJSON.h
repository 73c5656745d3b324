//===- BoundedJSON.h - llvm::json::parse with a nesting limit ---*- C++ -*-===//
//
// llvm::json::parse recurses once per '[' / '{': about 100000 nested
// brackets (a 200 KB file) overflow the stack. Files SQ reads (safetensors
// headers, config.json) are a few levels deep, so the text is first scanned
// (linear time, strings skipped) and refused beyond `maxDepth` levels.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_BOUNDEDJSON_H
#define SQ_SUPPORT_BOUNDEDJSON_H

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

namespace sq {

inline llvm::Expected<llvm::json::Value>
parseBoundedJSON(llvm::StringRef text, unsigned maxDepth = 64) {
  unsigned depth = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\')
        ++i; // the escaped character cannot end the string
      else if (c == '"')
        inString = false;
    } else if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      if (++depth > maxDepth)
        return llvm::createStringError(
            llvm::inconvertibleErrorCode(),
            "JSON nested deeper than %u levels at offset %zu", maxDepth, i);
    } else if ((c == ']' || c == '}') && depth) {
      --depth;
    }
  }
  return llvm::json::parse(text);
}

} // namespace sq

#endif // SQ_SUPPORT_BOUNDEDJSON_H
