//===- FuzzManifest.cpp - fuzz the compiled model's manifest parser -------===//
//
// sq::rt::Manifest::parse on arbitrary text. When it succeeds, serialize()
// must parse again and serialize to the same text (a fixed point), and the
// sidecar layout of the manifest must be consistent.
//
//===----------------------------------------------------------------------===//

#include "sq/Runtime/ModelFormat.h"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace sq::rt;

static void fail(const char *what, const std::string &a, const std::string &b) {
  std::fprintf(stderr,
               "sq-fuzz-manifest: %s\n--- first:\n%s\n--- second:\n%s\n", what,
               a.c_str(), b.c_str());
  std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Manifest m;
  std::string error;
  if (!Manifest::parse(text, m, error)) {
    if (error.empty())
      fail("parse failed without a message", text, "");
    return 0;
  }
  std::string once = m.serialize();
  Manifest m2;
  if (!Manifest::parse(once, m2, error))
    fail(("serialize() does not parse: " + error).c_str(), text, once);
  std::string twice = m2.serialize();
  if (once != twice)
    fail("serialize/parse round trip is not stable", once, twice);

  // The sidecar layout: offsets aligned and increasing, every weight inside.
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, headerBytes, offsets, total);
  std::string header = sidecarHeader(m, fnv1a(once.data(), once.size()));
  if (header.size() != headerBytes)
    fail("sidecar header size", once, std::to_string(header.size()));
  uint64_t at = headerBytes;
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (offsets[i] < at || offsets[i] % kSidecarAlign)
      fail("sidecar offsets overlap or are misaligned", once, "");
    at = offsets[i] + m.weights[i].bytes();
  }
  if (total < at)
    fail("sidecar total smaller than its last weight", once, "");
  return 0;
}
