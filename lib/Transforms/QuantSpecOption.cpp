//===- QuantSpecOption.cpp - QuantSpec as an LLVM/MLIR option value -------===//

#include "sq/Transforms/QuantSpecOption.h"

namespace llvm {
namespace cl {

void parser<sq::QuantSpec>::anchor() {}

bool parser<sq::QuantSpec>::parse(Option &o, StringRef argName, StringRef arg,
                                  sq::QuantSpec &val) {
  StringRef text = arg.trim();
  if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
      text.back() == text.front())
    text = text.drop_front().drop_back();
  std::string error;
  if (!sq::parseQuantSpec(text.str(), val, error))
    return o.error(error, argName);
  return false;
}

void parser<sq::QuantSpec>::printOptionDiff(const Option &o,
                                            const sq::QuantSpec &v,
                                            const OptionValue<sq::QuantSpec> &,
                                            size_t width) const {
  printOptionName(o, width);
  outs() << "= " << v.str() << "\n";
}

} // namespace cl
} // namespace llvm
