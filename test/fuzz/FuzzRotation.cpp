//===- FuzzRotation.cpp - fuzz the rotation-file (safetensors) reader -----===//
//
// sq::parseRotationFile (lib/Transforms/RotationFile.cpp, what
// --spinquant-rotate=mode=file reads) on the input bytes. It must never
// crash and every refusal must carry a message. When it accepts a file,
// every tensor of the header must be in the result with the declared n x n
// shape, each value must be the one stored at its data offset, and the
// tensors must survive writeRotationFile + readRotationFile unchanged.
//
// SQ_FUZZ_WRITE_SEEDS=DIR: LLVMFuzzerInitialize writes valid and damaged
// rotation files into DIR (make_corpora.sh uses it).
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/RotationFile.h"

#include "llvm/Support/JSON.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <unistd.h>

using sq::RotationMatrix;
using Tensors = std::map<std::string, RotationMatrix>;

[[noreturn]] static void fail(const std::string &why) {
  std::fprintf(stderr, "sq-fuzz-rotation: %s\n", why.c_str());
  std::abort();
}

static void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

/// A safetensors file by hand: `header` is the JSON text, `body` the data.
static std::string safetensors(std::string header, const std::string &body) {
  while (header.size() % 8)
    header.push_back(' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i)
    file[i] = char((uint64_t(header.size()) >> (8 * i)) & 0xFF);
  return file + header + body;
}

static RotationMatrix signedPermutation(int n, int shift) {
  RotationMatrix m(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    m[size_t(i) * n + (i + shift) % n] = i % 3 ? 1.0 : -1.0;
  return m;
}

static std::string f32Bytes(const RotationMatrix &m) {
  std::string s;
  for (double d : m) {
    float f = float(d);
    s.append(reinterpret_cast<const char *>(&f), 4);
  }
  return s;
}

static void writeSeeds(const std::string &dir) {
  std::string error;
  // What save=FILE writes (F64, __metadata__).
  if (!sq::writeRotationFile(dir + "/saved.safetensors",
                             {{"R1", signedPermutation(16, 3)},
                              {"layers.0.R2", signedPermutation(4, 1)},
                              {"layers.1.R2", signedPermutation(4, 2)}},
                             error))
    fail(error);
  // SpinQuant's names, F32.
  std::string r1 = f32Bytes(signedPermutation(8, 5));
  std::string r2 = f32Bytes(signedPermutation(2, 1));
  std::string official =
      "{\"model.R1.weight\":{\"dtype\":\"F32\",\"shape\":[8,8],"
      "\"data_offsets\":[0,256]},"
      "\"model.layers.0.self_attn.R2.weight\":{\"dtype\":\"F32\","
      "\"shape\":[2,2],\"data_offsets\":[256,272]}}";
  std::string valid = safetensors(official, r1 + r2);
  writeFile(dir + "/official.safetensors", valid);
  writeFile(dir + "/empty-header.safetensors", safetensors("{}", ""));
  // Damaged: truncated data, a header length past the end, not square,
  // NaN, a 3-D shape, a wrong dtype, deep nesting.
  writeFile(dir + "/truncated.safetensors", valid.substr(0, valid.size() - 3));
  std::string longHeader = valid;
  longHeader[1] = 0x7f;
  writeFile(dir + "/long-header.safetensors", longHeader);
  writeFile(dir + "/not-square.safetensors",
            safetensors("{\"R1\":{\"dtype\":\"F32\",\"shape\":[2,8],"
                        "\"data_offsets\":[0,64]}}",
                        r1.substr(0, 64)));
  RotationMatrix nan = signedPermutation(2, 0);
  nan[3] = std::nan("");
  writeFile(dir + "/nan.safetensors",
            safetensors("{\"R1\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                        "\"data_offsets\":[0,16]}}",
                        f32Bytes(nan)));
  writeFile(dir + "/3d.safetensors",
            safetensors("{\"R1\":{\"dtype\":\"F32\",\"shape\":[2,2,1],"
                        "\"data_offsets\":[0,16]}}",
                        r2));
  writeFile(dir + "/bf16.safetensors",
            safetensors("{\"R1\":{\"dtype\":\"BF16\",\"shape\":[2,2],"
                        "\"data_offsets\":[0,8]}}",
                        r2.substr(0, 8)));
  writeFile(dir + "/deep.safetensors",
            safetensors(std::string(100, '[') + std::string(100, ']'), ""));
}

static std::string tempPath;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const char *tmp = std::getenv("TMPDIR");
  tempPath = std::string(tmp && *tmp ? tmp : "/tmp") + "/sq-fuzz-rotation-" +
             std::to_string(getpid()) + ".safetensors";
  if (const char *dir = std::getenv("SQ_FUZZ_WRITE_SEEDS"))
    writeSeeds(dir);
  return 0;
}

static bool sameBits(double a, double b) {
  return std::memcmp(&a, &b, sizeof(double)) == 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  llvm::StringRef data(reinterpret_cast<const char *>(bytes), size);
  Tensors tensors;
  std::string error;
  if (!sq::parseRotationFile(data, "fuzz", tensors, error)) {
    if (error.empty())
      fail("refused without a message");
    return 0;
  }
  if (!error.empty())
    fail("accepted with an error: " + error);

  // Accepted: check the tensors against the header, independently.
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i)
    len |= uint64_t(uint8_t(data[i])) << (8 * i);
  auto header = llvm::json::parse(data.substr(8, len));
  if (!header || !header->getAsObject())
    fail("accepted a file whose header is not a JSON object");
  llvm::StringRef body = data.substr(8 + len);
  size_t declared = 0;
  for (const auto &[key, value] : *header->getAsObject()) {
    if (key == "__metadata__")
      continue;
    ++declared;
    auto it = tensors.find(key.str());
    if (it == tensors.end())
      fail("tensor '" + key.str() + "' of the header is missing");
    const llvm::json::Object *t = value.getAsObject();
    int64_t rows = *(*t->getArray("shape"))[0].getAsInteger();
    int64_t cols = *(*t->getArray("shape"))[1].getAsInteger();
    int64_t begin = *(*t->getArray("data_offsets"))[0].getAsInteger();
    bool f64 = *t->getString("dtype") == "F64";
    if (rows != cols || it->second.size() != uint64_t(rows) * uint64_t(cols))
      fail("tensor '" + key.str() + "' has " +
           std::to_string(it->second.size()) + " values, declared " +
           std::to_string(rows) + "x" + std::to_string(cols));
    for (size_t i = 0; i < it->second.size(); ++i) {
      double expect;
      if (f64) {
        std::memcpy(&expect, body.data() + begin + 8 * i, 8);
      } else {
        float f;
        std::memcpy(&f, body.data() + begin + 4 * i, 4);
        expect = f;
      }
      if (!sameBits(expect, it->second[i]) || !std::isfinite(expect))
        fail("tensor '" + key.str() + "' value " + std::to_string(i) +
             " differs from the file");
    }
  }
  if (declared != tensors.size())
    fail("more tensors than the header declares");

  // What was read writes and reads back the same.
  std::vector<std::pair<std::string, RotationMatrix>> list(tensors.begin(),
                                                           tensors.end());
  if (!sq::writeRotationFile(tempPath, list, error))
    fail("cannot write back: " + error);
  Tensors again;
  if (!sq::readRotationFile(tempPath, again, error))
    fail("written file does not read back: " + error);
  if (again.size() != tensors.size())
    fail("written file has another tensor count");
  for (const auto &[key, m] : tensors) {
    const RotationMatrix &n = again[key];
    if (n.size() != m.size())
      fail("tensor '" + key + "' changes size when written back");
    for (size_t i = 0; i < m.size(); ++i)
      if (!sameBits(m[i], n[i]))
        fail("tensor '" + key + "' changes when written back");
  }
  unlink(tempPath.c_str());
  return 0;
}
