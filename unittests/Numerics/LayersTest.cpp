//===- LayersTest.cpp - the shared attention softmax ----------------------===//
//
// numerics::attentionSoftmaxRows serves the executor's forward and backward
// attention and the CPU runtime: checked here against a naive double
// softmax, and bit for bit against the fp32 loop the three used to carry.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Layers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace sq::numerics;

namespace {

std::vector<float> randomScores(int64_t n, unsigned seed, float range) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-range, range);
  std::vector<float> v(n);
  for (float &x : v)
    x = u(rng);
  return v;
}

/// The per-row fp32 loop that Exec/Kernels.cpp, Exec/Grad.cpp and
/// Runtime/CPU/Ops.cpp each had before they shared softmaxPrefix.
void oldLoop(float *scores, int64_t rows, int64_t total, int64_t offset,
             bool causal) {
  for (int64_t i = 0; i < rows; ++i) {
    float *row = scores + i * total;
    int64_t visible = causal ? std::min(total, i + offset + 1) : total;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < visible; ++j)
      mx = std::max(mx, row[j]);
    float sum = 0;
    for (int64_t j = 0; j < visible; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < visible; ++j)
      row[j] *= inv;
    for (int64_t j = visible; j < total; ++j)
      row[j] = 0.0f;
  }
}

TEST(Layers, AttentionSoftmaxMatchesNaiveDouble) {
  for (bool causal : {true, false})
    for (int64_t cached : {0, 3}) {
      int64_t rows = 7, total = rows + cached;
      std::vector<float> s = randomScores(rows * total, 1, 8.0f);
      std::vector<float> p = s;
      attentionSoftmaxRows(p.data(), rows, total, cached, causal);
      for (int64_t i = 0; i < rows; ++i) {
        int64_t visible = causal ? i + cached + 1 : total;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < visible; ++j)
          mx = std::max(mx, double(s[i * total + j]));
        for (int64_t j = 0; j < visible; ++j)
          sum += std::exp(double(s[i * total + j]) - mx);
        for (int64_t j = 0; j < total; ++j) {
          double want =
              j < visible ? std::exp(double(s[i * total + j]) - mx) / sum : 0;
          EXPECT_NEAR(p[i * total + j], want, 1e-6)
              << "row " << i << " key " << j << " causal " << causal;
          if (j >= visible)
            EXPECT_EQ(p[i * total + j], 0.0f);
        }
      }
    }
}

TEST(Layers, AttentionSoftmaxSlidingWindow) {
  // Query i (at key position i + cached) sees keys (p - window, p].
  for (int64_t window : {1, 3, 8})
    for (int64_t cached : {0, 4}) {
      int64_t rows = 6, total = rows + cached;
      std::vector<float> s = randomScores(rows * total, 3, 8.0f), p = s;
      attentionSoftmaxRows(p.data(), rows, total, cached, true, window);
      for (int64_t i = 0; i < rows; ++i) {
        int64_t pos = i + cached, lo = std::max<int64_t>(0, pos - window + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = lo; j <= pos; ++j)
          mx = std::max(mx, double(s[i * total + j]));
        for (int64_t j = lo; j <= pos; ++j)
          sum += std::exp(double(s[i * total + j]) - mx);
        for (int64_t j = 0; j < total; ++j) {
          bool visible = j >= lo && j <= pos;
          double want =
              visible ? std::exp(double(s[i * total + j]) - mx) / sum : 0;
          EXPECT_NEAR(p[i * total + j], want, 1e-6)
              << "row " << i << " key " << j << " window " << window;
          if (!visible)
            EXPECT_EQ(p[i * total + j], 0.0f);
        }
      }
    }
}

TEST(Layers, AttentionSoftmaxIsTheOldLoopBitForBit) {
  for (bool causal : {true, false})
    for (int64_t cached : {0, 1, 17})
      for (float range : {1.0f, 30.0f, 1e4f}) {
        int64_t rows = 33, total = rows + cached;
        std::vector<float> a = randomScores(rows * total, 7, range), b = a;
        attentionSoftmaxRows(a.data(), rows, total, cached, causal);
        oldLoop(b.data(), rows, total, cached, causal);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
            << "causal " << causal << " cached " << cached << " range "
            << range;
      }
}

TEST(Layers, SoftmaxPrefixZeroesTheMaskedTail) {
  std::vector<float> row = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  softmaxPrefix(row.data(), 2, 5);
  EXPECT_FLOAT_EQ(row[0] + row[1], 1.0f);
  EXPECT_GT(row[1], row[0]);
  EXPECT_EQ(row[2], 0.0f);
  EXPECT_EQ(row[3], 0.0f);
  EXPECT_EQ(row[4], 0.0f);
  // A single visible key gets all the weight.
  std::vector<float> one = {-3.0f, 9.0f};
  softmaxPrefix(one.data(), 1, 2);
  EXPECT_EQ(one[0], 1.0f);
  EXPECT_EQ(one[1], 0.0f);
}

} // namespace

// LLaMA-3.1 RoPE scaling (transformers' _compute_llama3_parameters) against
// the formula in double: head_dim 128, theta 500000, factor 8, 1, 4, 8192
// gives all three bands (kept, interpolated, divided by the factor).
TEST(Layers, Llama3RopeScalingBands) {
  RopeScaling scaling{8.0, 1.0, 4.0, 8192.0};
  std::vector<float> plain = ropeInverseFrequencies(128, 500000.0);
  std::vector<float> scaled = ropeInverseFrequencies(128, 500000.0, scaling);
  ASSERT_EQ(scaled.size(), 64u);
  int kept = 0, divided = 0, between = 0;
  for (size_t i = 0; i < scaled.size(); ++i) {
    double inv = std::pow(500000.0, -2.0 * double(i) / 128.0);
    double wavelen = 2 * M_PI / inv, expected = inv;
    if (wavelen > 8192.0) {
      expected = inv / 8;
      ++divided;
    } else if (wavelen >= 2048.0) {
      double s = (8192.0 / wavelen - 1.0) / 3.0;
      expected = (1 - s) * inv / 8 + s * inv;
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8);
      ++between;
    } else {
      EXPECT_EQ(scaled[i], plain[i]);
      ++kept;
    }
    EXPECT_NEAR(scaled[i], expected, 1e-6 * expected) << "frequency " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(between, 0);
  EXPECT_GT(divided, 0);
  // No scaling (factor 0) is the plain table.
  EXPECT_EQ(ropeInverseFrequencies(128, 500000.0, RopeScaling{}), plain);
}
