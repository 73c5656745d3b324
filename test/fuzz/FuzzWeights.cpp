//===- FuzzWeights.cpp - fuzz the weights sidecar reader ------------------===//
//
// rt::WeightsFile::open on the input bytes (written to a temporary file)
// against a fixed manifest with four weights (fp32, bf16, packed int4 rows,
// int4 in the CPU kernels' layout).
// It must never crash; when it accepts a file, the file must hold the exact
// header the manifest plans and every weight must lie inside it (each byte
// is read, so a bad offset faults).
//
// SQ_FUZZ_WRITE_SEEDS=DIR: LLVMFuzzerInitialize writes the valid sidecar and
// a few damaged ones into DIR (make_corpora.sh uses it).
//
//===----------------------------------------------------------------------===//

#include "sq/Runtime/ModelFormat.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace sq::rt;

static const char *kManifestText = "sq-model 2\n"
                                   "config vocab=16 hidden=8\n"
                                   "description fuzz\n"
                                   "slots 4\n"
                                   "weight 0 0 0 4 8 0 embed\n"
                                   "weight 1 0 2 3 5 0 norm\n"
                                   "weight 2 4 0 8 7 0 packed\n"
                                   "weight 3 4 0 8 64 32 kernel\n"
                                   "end\n";

static const Manifest &manifest() {
  static Manifest m = [] {
    Manifest m;
    std::string error;
    if (!Manifest::parse(kManifestText, m, error)) {
      std::fprintf(stderr, "sq-fuzz-weights: %s\n", error.c_str());
      std::abort();
    }
    return m;
  }();
  return m;
}

static std::string validFile() {
  const Manifest &m = manifest();
  std::string text = kManifestText;
  std::string file = sidecarHeader(m, fnv1a(text.data(), text.size()));
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, headerBytes, offsets, total);
  file.resize(total, '\0');
  for (size_t i = 0; i < offsets.size(); ++i)
    std::memset(&file[offsets[i]], int(0x11 * (i + 1)), m.weights[i].bytes());
  return file;
}

static void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

static std::string tempPath;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const char *tmp = std::getenv("TMPDIR");
  tempPath = std::string(tmp && *tmp ? tmp : "/tmp") + "/sq-fuzz-weights-" +
             std::to_string(getpid()) + ".weights";
  if (const char *dir = std::getenv("SQ_FUZZ_WRITE_SEEDS")) {
    std::string valid = validFile();
    writeFile(std::string(dir) + "/valid.weights", valid);
    writeFile(std::string(dir) + "/truncated.weights",
              valid.substr(0, valid.size() - 1));
    writeFile(std::string(dir) + "/header-only.weights", valid.substr(0, 96));
    std::string bad = valid;
    bad[40] ^= 1; // the first weight's size
    writeFile(std::string(dir) + "/bad-entry.weights", bad);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  writeFile(tempPath, std::string(reinterpret_cast<const char *>(data), size));
  const Manifest &m = manifest();
  WeightsFile file;
  std::string error;
  bool io = false;
  bool ok = file.open(tempPath, m, kManifestText, error, io);
  unlink(tempPath.c_str());
  if (!ok) {
    if (error.empty() || io) {
      std::fprintf(stderr, "sq-fuzz-weights: rejected with io=%d '%s'\n",
                   int(io), error.c_str());
      std::abort();
    }
    return 0;
  }
  // Accepted: the header is the planned one, the file holds every weight.
  std::string text = kManifestText;
  std::string header = sidecarHeader(m, fnv1a(text.data(), text.size()));
  size_t checked = 32 + 16 * m.weights.size();
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  planSidecar(m, headerBytes, offsets, total);
  if (size < total || file.size() != size ||
      std::memcmp(data, header.data(), checked) != 0) {
    std::fprintf(stderr, "sq-fuzz-weights: accepted a corrupt file\n");
    std::abort();
  }
  unsigned sum = 0;
  for (const WeightDesc &w : m.weights) {
    const uint8_t *p = file.data(w.slot);
    if (p < file.data(0) || p + w.bytes() > file.data(0) - offsets[0] + size)
      std::abort();
    for (uint64_t i = 0; i < w.bytes(); ++i)
      sum += p[i];
  }
  return sum == 0xFFFFFFFFu; // keeps the reads
}
