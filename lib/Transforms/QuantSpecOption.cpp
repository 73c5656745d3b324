//===- QuantSpecOption.cpp - QuantSpec as an LLVM/MLIR option value -------===//

#include "sq/Transforms/QuantSpecOption.h"

bool sq::readQuantSpecArgument(llvm::StringRef text, QuantSpec &spec,
                               std::string &error) {
  text = text.trim();
  if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
      text.back() == text.front())
    text = text.drop_front().drop_back();
  text.consume_front("spec=");
  return parseQuantSpec(text.str(), spec, error);
}
