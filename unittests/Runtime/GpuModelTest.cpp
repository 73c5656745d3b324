//===- GpuModelTest.cpp - the GPU model.so against the CPU one ------------===//
//
// Compiles the import fixtures for --target=nvptx and for the CPU, and
// compares their logits through the C API (prefill of two sequences, then
// decode steps through the KV caches), with the tolerance of
// CompiledModelTest (float paths to 1e-4 of the largest logit; quantized
// ones at 95% of the positions). Needs a CUDA device: every case is skipped
// with the runtime's message on a machine without one (like this
// project's development and CI machines), so these checks have not run
// there. SQ_TEST_SM picks the architecture (default 80: the PTX is
// JIT-compiled for newer GPUs).
//
//===----------------------------------------------------------------------===//

#include "CompiledModelSupport.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

namespace {

using namespace sqtest;

struct Case {
  const char *fixture;
  const char *quant;
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << c.fixture << " " << c.quant;
}

class GpuModel : public ::testing::TestWithParam<Case> {};

TEST_P(GpuModel, MatchesCpu) {
  Case c = GetParam();
  std::string input =
      std::string(SQ_SOURCE_DIR "/test/Import/Inputs/") + c.fixture + ".onnx";
  std::string name = std::string(c.fixture) + "-" + c.quant;
  for (char &ch : name)
    if (ch == ',')
      ch = '_';
  std::string base = tempDir() + "/" + name;
  const char *smEnv = std::getenv("SQ_TEST_SM");
  std::string sm = smEnv && *smEnv ? smEnv : "80";
  std::vector<std::string> flags = {"--rotate=hadamard",
                                    std::string("--quantize=") + c.quant};
  std::vector<std::string> gpuFlags = flags;
  gpuFlags.push_back("--target=nvptx");
  gpuFlags.push_back("--sm=" + sm);
  const char *home = std::getenv("CUDA_HOME");
  std::string cuda = home && *home ? home : "/usr/local/cuda";
  if (!llvm::sys::fs::exists(cuda + "/nvvm/libdevice/libdevice.10.bc"))
    GTEST_SKIP() << "no CUDA toolkit at " << cuda
                 << " (sq-compile --target=nvptx needs its libdevice)";
  ASSERT_EQ(compile(input, base + "-gpu.so", gpuFlags), 0) << input;

  const int64_t batch = 2, seq = 12, steps = 4;
  Compiled gpu;
  if (!gpu.open(base + "-gpu.so", seq + steps, batch)) {
    if (gpu.status == SQ_ERR_NO_DEVICE)
      GTEST_SKIP() << gpu.error;
    FAIL() << gpu.error;
  }
  ASSERT_EQ(compile(input, base + "-cpu.so", flags), 0) << input;
  Compiled cpu;
  ASSERT_TRUE(cpu.open(base + "-cpu.so", seq + steps, batch)) << cpu.error;
  int64_t vocab = cpu.vocab;
  ASSERT_EQ(gpu.vocab, vocab);

  std::mt19937 rng(11);
  std::vector<int32_t> ids(batch * seq);
  for (int32_t &t : ids)
    t = std::uniform_int_distribution<int32_t>(0, vocab - 1)(rng);
  std::vector<float> want(batch * seq * vocab), got(want.size());
  sq_error *err = nullptr;
  ASSERT_EQ(cpu.forward(cpu.ctx, ids.data(), batch, seq, want.data(), &err),
            SQ_OK);
  ASSERT_EQ(gpu.forward(gpu.ctx, ids.data(), batch, seq, got.data(), &err),
            SQ_OK);
  std::vector<float> allWant = want, allGot = got;
  std::vector<float> last(batch * vocab);
  for (int64_t b = 0; b < batch; ++b)
    std::copy(want.begin() + ((b + 1) * seq - 1) * vocab,
              want.begin() + (b + 1) * seq * vocab, last.begin() + b * vocab);
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> next(batch);
    for (int64_t b = 0; b < batch; ++b) {
      const float *row = last.data() + b * vocab;
      next[b] = int32_t(std::max_element(row, row + vocab) - row);
    }
    std::vector<float> stepGpu(batch * vocab);
    ASSERT_EQ(cpu.decode(cpu.ctx, next.data(), last.data(), &err), SQ_OK);
    ASSERT_EQ(gpu.decode(gpu.ctx, next.data(), stepGpu.data(), &err), SQ_OK);
    allWant.insert(allWant.end(), last.begin(), last.end());
    allGot.insert(allGot.end(), stepGpu.begin(), stepGpu.end());
  }
  Agreement a = compare(allGot, allWant, vocab);
  std::string what =
      name + ": max |diff| " + std::to_string(a.maxAbs) + " (max |logit| " +
      std::to_string(a.maxRef) +
      "), positions within 1e-4: " + std::to_string(a.closePositions);
  std::printf("%s\n", what.c_str());
  std::string q = c.quant;
  if (q == "none" || q == "w4a16" || q == "w16a16kv4")
    EXPECT_EQ(a.closePositions, 1.0) << what;
  else
    EXPECT_GE(a.closePositions, 0.95) << what;
}

const Case kCases[] = {
    {"gqa-opset17", "none"},
    {"gqa-opset17", "w4a16"},
    {"gqa-opset17", "w16a16kv4"},
    {"gqa-opset17", "w4a4kv4"},
    {"gqa-opset17", "w8a8kv8"},
    // The 8-bit lm_head (int8 x int8 qlinear; tied: its own copy).
    {"gqa-opset17", "w4a4kv4,head=8"},
    {"tied-opset17", "w4a4kv4,head=8"},
    {"mha-opset17", "w4a4kv4"},
    {"interleaved-opset17", "w4a4kv4"},
    {"tied-opset17", "w4a4kv4"},
    {"genai-gqa-fp16", "w4a4kv4"},
    {"bf16-opset17", "w4a8kv8"},
    {"kvcache-opset17", "w4a4kv4"},
    {"posids-opset17", "w4a4kv4,wgroup=8"},
    // Biases (the GEMM kernels' bias operand) and an explicit head_dim.
    {"headdim-bias", "w4a16"},
    {"headdim-bias", "w4a4kv4"},
    {"qwen2-bias", "w4a4kv4"},
    {"torch-headdim-opset17", "w4a4kv4"},
};

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuModel, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case> &info) {
                           std::string name = std::string(info.param.fixture) +
                                              "_" + info.param.quant;
                           for (char &ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch)))
                               ch = '_';
                           return name;
                         });

} // namespace
