//===- QuantSpecOption.h - QuantSpec as an LLVM/MLIR option value -*- C++
//-*-===//
//
// `llvm::cl::parser<sq::QuantSpec>` makes a QuantSpec a typed option: of a
// pass (`Option<"quant", "quant", "::sq::QuantSpec", ...>` in Passes.td), of
// a pass pipeline (PassPipelineOptions) or of a tool (cl::opt). The text is
// parsed once, where the option is read, and the passes get the struct; a
// bad spec is an option error naming the bad part. Printing (pipeline
// dumps, reproducers) writes the canonical spelling, QuantSpec::str().
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_QUANTSPECOPTION_H
#define SQ_TRANSFORMS_QUANTSPECOPTION_H

#include "sq/Transforms/PassOptionTypes.h"
#include "sq/Transforms/QuantSpec.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

namespace sq {
/// A spec as the command line spells it, for every entry point that reads
/// one (pass and pipeline options, --sq-quantize's option string,
/// sq-compile's --quantize, sq_compile()): surrounding quotes and a `spec=`
/// prefix are dropped, then parseQuantSpec. The one caller of the parser.
bool readQuantSpecArgument(llvm::StringRef text, QuantSpec &spec,
                           std::string &error);

inline llvm::raw_ostream &operator<<(llvm::raw_ostream &os,
                                     const QuantSpec &spec) {
  return os << spec.str();
}
} // namespace sq

template <> struct sq::OptionText<sq::QuantSpec> {
  static bool parse(llvm::StringRef text, QuantSpec &spec, std::string &error) {
    return readQuantSpecArgument(text, spec, error);
  }
  static std::string str(const QuantSpec &spec) { return spec.str(); }
  static constexpr const char *valueName = "spec";
};
SQ_TEXT_OPTION_PARSER(sq::QuantSpec)

#endif // SQ_TRANSFORMS_QUANTSPECOPTION_H
