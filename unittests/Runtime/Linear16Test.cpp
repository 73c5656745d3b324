//===- Linear16Test.cpp - the 16-bit-weight linear of the CPU runtime -----===//
//
// linear16 (lib/Runtime/CPU/Ops.h) reads f16/bf16 weights (the lm_head and
// the embedding-sized linears) and widens them on the fly. On x86 with AVX2
// it sums 16 lanes with fused multiply-adds, then the two halves, then the
// 8 lanes in order; the AVX-512 version must give the same bits. The
// reference below is that arithmetic in scalar code.
//
//===----------------------------------------------------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include "sq/Numerics/Float16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace sq::rt;

namespace {

float referenceDot(const float *x, const uint16_t *w, int64_t n, bool bf16) {
  auto widen = [&](uint16_t v) {
    return bf16 ? sq::numerics::bf16ToFloat(v) : sq::numerics::halfToFloat(v);
  };
  float a[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l)
      a[l] = std::fma(x[i + l], widen(w[i + l]), a[l]);
  float s = 0;
  for (int l = 0; l < 8; ++l)
    s += a[l] + a[l + 8];
  // The kernels' tails are contracted to fused multiply-adds too.
  for (; i < n; ++i)
    s = std::fma(x[i], widen(w[i]), s);
  return s;
}

TEST(Linear16, SameBitsAsTheAVX2Sums) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("f16c"))
    GTEST_SKIP() << "no AVX2/FMA/F16C: linear16 takes its scalar sums";
#else
  GTEST_SKIP() << "not x86";
#endif
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  ThreadPool pool(2);
  for (bool bf16 : {false, true})
    for (int64_t k : {16, 100, 4096, 4103})
      for (int64_t m : {1, 3}) {
        const int64_t n = 97;
        std::vector<float> x(m * k), bias(n), out(m * n);
        std::vector<uint16_t> w(n * k);
        for (float &v : x)
          v = normal(rng);
        for (float &v : bias)
          v = normal(rng);
        for (uint16_t &v : w) {
          float f = 0.05f * normal(rng);
          uint32_t bits;
          std::memcpy(&bits, &f, 4);
          v = bf16 ? uint16_t(bits >> 16) : sq::numerics::floatToHalf(f);
        }
        linear16(x.data(), w.data(),
                 bf16 ? FloatStorage::BF16 : FloatStorage::F16, bias.data(), m,
                 k, n, out.data(), &pool);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            float want =
                referenceDot(x.data() + i * k, w.data() + j * k, k, bf16) +
                bias[j];
            ASSERT_EQ(out[i * n + j], want)
                << (bf16 ? "bf16" : "f16") << " k=" << k << " m=" << m << " at "
                << i << "," << j;
          }
      }
}

} // namespace
