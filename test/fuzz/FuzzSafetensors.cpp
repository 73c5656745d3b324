//===- FuzzSafetensors.cpp - fuzz the Hugging Face readers ----------------===//
//
// The input's first byte picks the reader, the rest is its input:
//   even: sq::safetensors::File::parse (lib/Import/HF/Safetensors.cpp) on
//         the bytes as a whole safetensors file. It must never crash and
//         every refusal must carry a message "NAME: ...". When it accepts
//         the file, the header's promises are checked independently: every
//         tensor's range lies in the data section, has exactly
//         product(shape) * dtype size bytes, no two non-empty ranges
//         overlap; every byte of every tensor is read, and F32/F16/BF16
//         tensors are converted to float and scanned for NaN/Inf as the
//         importer does.
//   odd:  sq::parseHFConfig (lib/Import/HF/HFConfig.cpp) on the bytes as a
//         config.json: no crash, refusals carry "config.json: ...", an
//         accepted configuration is consistent (positive sizes, kv heads
//         dividing heads, even head_dim).
//
//===----------------------------------------------------------------------===//

#include "sq/Import/HFConfig.h"
#include "sq/Import/Safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace st = sq::safetensors;

[[noreturn]] static void fail(const std::string &why) {
  std::fprintf(stderr, "sq-fuzz-safetensors: %s\n", why.c_str());
  std::abort();
}

static void fuzzSafetensors(llvm::StringRef bytes) {
  std::string error;
  std::unique_ptr<st::File> f =
      st::File::parse(bytes, "fuzz.safetensors", error);
  if (!f) {
    if (!llvm::StringRef(error).starts_with("fuzz.safetensors: "))
      fail("refusal without a message naming the file: '" + error + "'");
    return;
  }
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i)
    len |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  uint64_t dataSize = bytes.size() - 8 - len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  volatile uint64_t sum = 0;
  std::vector<float> floats;
  for (const st::Tensor &t : f->tensors()) {
    if (t.begin > t.end || t.end > dataSize)
      fail("accepted tensor '" + t.name + "' outside the data section");
    unsigned __int128 need = st::dtypeSize(t.dtype);
    for (int64_t d : t.shape)
      need *= uint64_t(d);
    if (need != t.end - t.begin)
      fail("accepted tensor '" + t.name + "' whose size is not its shape's");
    if (f->find(t.name) != &t)
      fail("find() does not give back tensor '" + t.name + "'");
    llvm::StringRef data = f->data(t);
    if (data.data() != bytes.data() + 8 + len + t.begin ||
        data.size() != t.end - t.begin)
      fail("data() of '" + t.name + "' is not its declared range");
    for (char c : data)
      sum = sum + uint8_t(c);
    if (st::isImportedFloat(t.dtype)) {
      floats.resize(size_t(t.numElements()));
      st::toFloat(data, t.dtype, floats.data());
      int64_t bad = st::firstNonFinite(data, t.dtype);
      if (bad >= t.numElements())
        fail("firstNonFinite past the end of '" + t.name + "'");
    }
    if (t.end > t.begin)
      ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail("accepted overlapping tensors");
}

static void fuzzConfig(llvm::StringRef text) {
  sq::HFModelConfig c;
  std::string error;
  if (!sq::parseHFConfig(text, "config.json", c, error)) {
    if (!llvm::StringRef(error).starts_with("config.json: "))
      fail("config refusal without a message naming the file: '" + error + "'");
    return;
  }
  if (c.vocabSize <= 0 || c.hiddenSize <= 0 || c.intermediateSize <= 0 ||
      c.numLayers <= 0 || c.numHeads <= 0 || c.numKvHeads <= 0 ||
      c.headDim <= 0 || c.maxPositions <= 0 || c.numHeads % c.numKvHeads ||
      c.headDim % 2 || !(c.rmsNormEps > 0) || !(c.ropeTheta > 0) ||
      c.slidingWindow < 0 || c.slidingWindow >= c.maxPositions + 1)
    fail("accepted an inconsistent config.json");
  if (c.ropeScaling &&
      !(c.ropeScaling->highFreqFactor > c.ropeScaling->lowFreqFactor &&
        c.ropeScaling->factor > 0 && c.ropeScaling->originalMaxPositions > 0))
    fail("accepted inconsistent llama3 rope_scaling");
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  llvm::StringRef rest(reinterpret_cast<const char *>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    // An exact-size copy, so that reads past the input are caught by ASan.
    std::vector<char> copy(rest.begin(), rest.end());
    fuzzSafetensors(llvm::StringRef(copy.data(), copy.size()));
  } else {
    fuzzConfig(rest);
  }
  return 0;
}
