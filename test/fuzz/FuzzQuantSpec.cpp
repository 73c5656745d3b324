//===- FuzzQuantSpec.cpp - fuzz the --quantize=SPEC parser ----------------===//
//
// sq::parseQuantSpec on arbitrary text; when it succeeds, str() must parse
// again to the same str().
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/QuantSpec.h"

#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  sq::QuantSpec spec;
  std::string error;
  if (!sq::parseQuantSpec(text, spec, error)) {
    if (error.empty()) {
      std::fprintf(stderr, "parse of '%s' failed without a message\n",
                   text.c_str());
      std::abort();
    }
    return 0;
  }
  std::string once = spec.str();
  sq::QuantSpec spec2;
  if (!sq::parseQuantSpec(once, spec2, error)) {
    std::fprintf(stderr, "'%s' parsed, its str() '%s' does not: %s\n",
                 text.c_str(), once.c_str(), error.c_str());
    std::abort();
  }
  std::string twice = spec2.str();
  if (once != twice) {
    std::fprintf(stderr, "'%s': str() '%s' re-parses to '%s'\n", text.c_str(),
                 once.c_str(), twice.c_str());
    std::abort();
  }
  return 0;
}
