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

namespace llvm {
namespace cl {

void parser<sq::QuantSpec>::anchor() {}

bool parser<sq::QuantSpec>::parse(Option &o, StringRef argName, StringRef arg,
                                  sq::QuantSpec &val) {
  std::string error;
  if (!sq::readQuantSpecArgument(arg, val, error))
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
