//===- SafetensorsTest.cpp - the safetensors reader and config.json -------===//

#include "sq/Import/Safetensors.h"
#include "sq/Import/HFConfig.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <gtest/gtest.h>
#include <string>

namespace st = sq::safetensors;

namespace {

/// A safetensors file: `header` is the JSON text, `body` the data.
std::string file(std::string header, const std::string &body) {
  while (header.size() % 8)
    header.push_back(' ');
  std::string f(8, '\0');
  for (int i = 0; i < 8; ++i)
    f[i] = char((uint64_t(header.size()) >> (8 * i)) & 0xFF);
  return f + header + body;
}

std::string bytes(const void *p, size_t n) {
  return std::string(static_cast<const char *>(p), n);
}

TEST(Safetensors, ReadsTensorsAsViews) {
  float a[4] = {1, -2, 3.5f, 0};
  uint16_t b[2] = {0x3F80, 0xC000}; // bf16 1, -2
  std::string data = file(
      R"({"__metadata__": {"format": "pt"},
          "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
          "empty": {"dtype": "F16", "shape": [0, 3], "data_offsets": [20, 20]}})",
      bytes(a, 16) + bytes(b, 4));
  std::string error;
  auto f = st::File::parse(data, "t.safetensors", error);
  ASSERT_TRUE(f) << error;
  ASSERT_EQ(f->tensors().size(), 3u);
  ASSERT_EQ(f->metadata().size(), 1u);
  const st::Tensor *ta = f->find("a");
  ASSERT_TRUE(ta);
  EXPECT_EQ(ta->shapeStr(), "[2, 2]");
  // A view into the input, not a copy.
  EXPECT_EQ(f->data(*ta).data(), data.data() + data.size() - 20);
  float out[4];
  st::toFloat(f->data(*ta), ta->dtype, out);
  EXPECT_EQ(std::memcmp(out, a, 16), 0);
  const st::Tensor *tb = f->find("b");
  st::toFloat(f->data(*tb), tb->dtype, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(f->find("empty")->numElements(), 0);
  // An empty tensor converts to nothing, even into a null buffer (what an
  // empty std::vector's data() may be; the fuzz target found the memcpy of
  // 0 bytes from/to null, undefined behaviour).
  st::toFloat(f->data(*f->find("empty")), st::DType::F16, nullptr);
  st::toFloat(llvm::StringRef(), st::DType::F32, nullptr);
  EXPECT_EQ(st::firstNonFinite(f->data(*ta), ta->dtype), -1);
}

TEST(Safetensors, RefusesLyingHeaders) {
  auto refuse = [](const std::string &header, size_t body,
                   llvm::StringRef expect) {
    std::string error;
    EXPECT_FALSE(st::File::parse(file(header, std::string(body, '\0')),
                                 "t.safetensors", error));
    EXPECT_NE(error.find(expect.str()), std::string::npos) << error;
    EXPECT_EQ(error.rfind("t.safetensors: ", 0), 0u) << error;
  };
  refuse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}})",
         16, "hold 12 bytes but shape [2] of F32 needs 8");
  refuse(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8,
         "run past the end of the data (8 bytes after the header)");
  refuse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
         16, "overlap those of 'a' [0, 8]");
  refuse(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", 8,
         "begin after they end");
  refuse(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}})", 8,
         "unknown dtype 'Q4'");
  refuse(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 8,
         "shape entries must be non-negative integers");
  refuse(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296],
             "data_offsets": [0, 4]}})",
         8, "absurdly large");
  refuse(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4],
             "extra": 1}})",
         8, "unknown field 'extra'");
  refuse(R"({"__metadata__": {"n": 1}})", 0, "is not a string");
  refuse(R"([1, 2])", 0, "not a JSON object");
  std::string error;
  std::string huge(16, '\0');
  huge[7] = 1; // 2^56 bytes of header
  EXPECT_FALSE(st::File::parse(huge, "t.safetensors", error));
  EXPECT_NE(error.find("runs past the end of the file"), std::string::npos);
}

TEST(Safetensors, ShardsThroughTheIndex) {
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("sq-st-test", dir));
  auto write = [&](llvm::StringRef name, const std::string &text) {
    llvm::SmallString<128> p(dir);
    llvm::sys::path::append(p, name);
    std::error_code ec;
    llvm::raw_fd_ostream os(p, ec);
    os << text;
  };
  float one = 1;
  write("s1.safetensors",
        file(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
             bytes(&one, 4)));
  write("s2.safetensors",
        file(R"({"y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
             bytes(&one, 4)));
  write("model.safetensors.index.json",
        R"({"metadata": {}, "weight_map": {"x": "s1.safetensors",
            "y": "s2.safetensors"}})");
  std::string error;
  auto ck = st::Checkpoint::open(dir, error);
  ASSERT_TRUE(ck) << error;
  EXPECT_EQ(ck->names().size(), 2u);
  ASSERT_TRUE(ck->find("y"));
  EXPECT_EQ(llvm::sys::path::filename(ck->find("y")->file->path()),
            "s2.safetensors");
  EXPECT_EQ(ck->totalBytes(), 8u);

  write("model.safetensors.index.json",
        R"({"weight_map": {"x": "s2.safetensors", "y": "s2.safetensors"}})");
  EXPECT_FALSE(st::Checkpoint::open(dir, error));
  EXPECT_NE(error.find("tensor 'x': listed in model.safetensors.index.json "
                       "but not in this shard"),
            std::string::npos)
      << error;
  write("model.safetensors.index.json",
        R"({"weight_map": {"x": "../s1.safetensors"}})");
  EXPECT_FALSE(st::Checkpoint::open(dir, error));
  EXPECT_NE(error.find("is not a file name in the folder"), std::string::npos)
      << error;
  llvm::sys::fs::remove_directories(dir);
}

TEST(HFConfig, DefaultsAndRefusals) {
  const char *base = R"({"architectures": ["LlamaForCausalLM"],
    "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5)";
  sq::HFModelConfig c;
  std::string error;
  ASSERT_TRUE(
      sq::parseHFConfig(std::string(base) + "}", "config.json", c, error))
      << error;
  EXPECT_EQ(c.numKvHeads, 4);
  EXPECT_EQ(c.headDim, 4);
  EXPECT_EQ(c.ropeTheta, 10000.0);
  EXPECT_FALSE(c.tieWordEmbeddings);
  EXPECT_FALSE(c.ropeScaling);
  ASSERT_TRUE(sq::parseHFConfig(
      std::string(base) +
          R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000,
          "factor": 32, "low_freq_factor": 1, "high_freq_factor": 4,
          "original_max_position_embeddings": 8192}, "foo": 1})",
      "config.json", c, error))
      << error;
  EXPECT_EQ(c.ropeTheta, 500000.0);
  ASSERT_TRUE(c.ropeScaling);
  EXPECT_EQ(c.ropeScaling->factor, 32.0);
  ASSERT_EQ(c.unknownFields.size(), 1u);
  EXPECT_EQ(c.unknownFields[0], "foo");
  EXPECT_FALSE(sq::parseHFConfig(
      std::string(base) +
          R"(, "rope_scaling": {"type": "dynamic", "factor": 2}})",
      "config.json", c, error));
  EXPECT_EQ(error, "config.json: field 'rope_scaling': rope_type 'dynamic' is "
                   "not supported (SQ implements plain RoPE and LLaMA-3.1's "
                   "\"llama3\" scaling)");
  EXPECT_FALSE(sq::parseHFConfig(std::string(base) + R"(, "head_dim": 5})",
                                 "config.json", c, error));
  EXPECT_EQ(error, "config.json: field 'head_dim': 5 is odd (RoPE rotates "
                   "pairs)");
}

} // namespace
