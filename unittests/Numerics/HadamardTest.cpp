//===- HadamardTest.cpp - Hadamard constructions and transform ------------===//

#include "sq/Numerics/Hadamard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace sq::numerics;

namespace {

// H * H^T = m * I, exactly, for every base order with a construction.
class HadamardBase : public ::testing::TestWithParam<int> {};

TEST_P(HadamardBase, RowsAreOrthogonal) {
  int m = GetParam();
  std::vector<int8_t> H = hadamardMatrix(m);
  ASSERT_EQ(H.size(), size_t(m) * m) << "no construction for " << m;
  for (int8_t e : H)
    ASSERT_TRUE(e == 1 || e == -1);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      int dot = 0;
      for (int k = 0; k < m; ++k)
        dot += H[i * m + k] * H[j * m + k];
      ASSERT_EQ(dot, i == j ? m : 0) << "rows " << i << ", " << j;
    }
}

INSTANTIATE_TEST_SUITE_P(Orders, HadamardBase,
                         ::testing::ValuesIn(hadamardBaseOrders()),
                         [](const auto &info) {
                           return "m" + std::to_string(info.param);
                         });

TEST(Hadamard, SplitsLlamaSizes) {
  int m;
  int64_t p;
  ASSERT_TRUE(splitHadamardSize(4096, m, p));
  EXPECT_EQ(m * p, 4096);
  ASSERT_TRUE(splitHadamardSize(14336, m, p)); // LLaMA-3-8B = 28 * 512
  EXPECT_EQ(m, 28);
  EXPECT_EQ(p, 512);
  ASSERT_TRUE(splitHadamardSize(13824, m, p)); // LLaMA-2-13B = 108 * 128
  EXPECT_EQ(m, 108);
  ASSERT_TRUE(splitHadamardSize(3072, m, p)); // 12 * 256
  EXPECT_EQ(m, 12);
  ASSERT_TRUE(splitHadamardSize(11008, m, p)); // LLaMA-2-7B = 172 * 64
  EXPECT_EQ(m, 172);
  EXPECT_EQ(p, 64);
  ASSERT_TRUE(splitHadamardSize(9984, m, p)); // 156 * 64
  EXPECT_EQ(m, 156);
  // Qwen2.5's 29568 = 2^7 * 231, 13696 = 2^7 * 107 and 25600 = 2^10 * 25
  // have no Hadamard matrix here.
  EXPECT_FALSE(splitHadamardSize(29568, m, p));
  EXPECT_FALSE(splitHadamardSize(13696, m, p));
  EXPECT_FALSE(splitHadamardSize(25600, m, p));
}

// The fast transform is an orthonormal map equal to the dense product
// x * (H_m kron H_2^k) / sqrt(n).
TEST(Hadamard, FastTransformMatchesDenseKronecker) {
  for (int64_t n : {1, 2, 16, 12, 24, 96, 20 * 8, 28 * 4, 40 * 2, 52 * 4,
                    108 * 2, 140 * 4, 156, 156 * 2, 172 * 2, 172 * 8}) {
    int m;
    int64_t p;
    ASSERT_TRUE(splitHadamardSize(n, m, p)) << n;
    std::vector<int8_t> Hm = hadamardMatrix(m);
    std::mt19937 rng(n);
    std::normal_distribution<float> dist;
    std::vector<float> x(n), y(n);
    for (float &v : x)
      v = dist(rng);
    y = x;
    ASSERT_TRUE(hadamardTransformInPlace(y.data(), n));
    double norm2x = 0, norm2y = 0, maxErr = 0;
    for (int64_t j = 0; j < n; ++j) {
      // Column j = (a, b): H_n[i][j] = Hm[ia][a] * Sylvester(ib, b).
      double s = 0;
      for (int64_t i = 0; i < n; ++i) {
        int64_t ia = i / p, ib = i % p, ja = j / p, jb = j % p;
        int sylvester = __builtin_popcountll(ib & jb) % 2 ? -1 : 1;
        s += x[i] * Hm[ia * m + ja] * sylvester;
      }
      s /= std::sqrt(double(n));
      maxErr = std::max(maxErr, std::fabs(s - y[j]));
      norm2x += double(x[j]) * x[j];
      norm2y += double(y[j]) * y[j];
    }
    EXPECT_LT(maxErr, 1e-4) << "n = " << n;
    EXPECT_NEAR(norm2y, norm2x, 1e-4 * norm2x) << "n = " << n;
  }
}

// Sizes without a Hadamard matrix get a seeded random orthogonal block
// times the Sylvester butterflies: still orthonormal, reproducible.
TEST(Hadamard, FallbackIsOrthonormalAndSeeded) {
  for (int64_t n : {231 * 128, 25 * 8, 43, 6}) {
    std::vector<float> x(n), y, z;
    std::mt19937 rng(n);
    std::normal_distribution<float> dist;
    for (float &v : x)
      v = dist(rng);
    y = x;
    z = x;
    EXPECT_FALSE(orthogonalTransformInPlace(y.data(), n, 3)) << n;
    EXPECT_FALSE(orthogonalTransformInPlace(z.data(), n, 3)) << n;
    EXPECT_EQ(y, z) << "not reproducible, n = " << n;
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < n; ++i) {
      nx += double(x[i]) * x[i];
      ny += double(y[i]) * y[i];
    }
    EXPECT_NEAR(ny, nx, 1e-4 * nx) << n;
    std::vector<float> w = x;
    orthogonalTransformInPlace(w.data(), n, 4);
    EXPECT_NE(w, y) << "the seed does not matter, n = " << n;
  }
  // Inner products are kept: the map is orthogonal, not just norm-keeping.
  const int64_t n = 100;
  std::vector<float> a(n), b(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = std::sin(0.1f * i);
    b[i] = std::cos(0.07f * i);
  }
  double dot = 0;
  for (int64_t i = 0; i < n; ++i)
    dot += double(a[i]) * b[i];
  orthogonalTransformInPlace(a.data(), n, 1);
  orthogonalTransformInPlace(b.data(), n, 1);
  double dot2 = 0;
  for (int64_t i = 0; i < n; ++i)
    dot2 += double(a[i]) * b[i];
  EXPECT_NEAR(dot2, dot, 1e-4);
  // With a Hadamard matrix the result is the Hadamard transform.
  std::vector<float> h(24, 1.0f), g(24, 1.0f);
  EXPECT_TRUE(orthogonalTransformInPlace(h.data(), 24, 9));
  hadamardTransformInPlace(g.data(), 24);
  EXPECT_EQ(h, g);
}

// The column transform equals the per-vector transform on every column.
TEST(Hadamard, ColumnTransformMatchesPerVector) {
  for (int64_t n : {16, 12 * 4, 172 * 2, 156}) {
    const int64_t width = 7;
    std::vector<float> x(n * width);
    std::mt19937 rng(n);
    std::normal_distribution<float> dist;
    for (float &v : x)
      v = dist(rng);
    std::vector<float> y = x;
    ASSERT_TRUE(hadamardTransformColumns(y.data(), n, width));
    for (int64_t c = 0; c < width; ++c) {
      std::vector<float> col(n);
      for (int64_t i = 0; i < n; ++i)
        col[i] = x[i * width + c];
      ASSERT_TRUE(hadamardTransformInPlace(col.data(), n));
      for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(y[i * width + c], col[i], 1e-5) << n << " " << i;
    }
  }
  std::vector<float> z(231 * 2);
  EXPECT_FALSE(hadamardTransformColumns(z.data(), 231, 2));
}

// The transposed transform is the inverse (T is orthogonal) and the adjoint:
// <x T, y> = <x, y T^T>. 12 * 4, 172 * 2 and 20 have non-symmetric base
// matrices; 231 * 2 takes the random orthogonal fallback.
TEST(Hadamard, TransposedTransformIsInverseAndAdjoint) {
  for (int64_t n : {12 * 4, 172 * 2, 20, 64, 231 * 2}) {
    const uint64_t seed = 5;
    std::vector<float> x(n), y(n);
    std::mt19937 rng(n);
    std::normal_distribution<float> dist;
    for (float &v : x)
      v = dist(rng);
    for (float &v : y)
      v = dist(rng);
    bool hadamard = n != 231 * 2;
    // T^T (T x) = x.
    std::vector<float> z = x;
    EXPECT_EQ(orthogonalTransformInPlace(z.data(), n, seed), hadamard) << n;
    EXPECT_EQ(orthogonalTransformTransposeInPlace(z.data(), n, seed), hadamard)
        << n;
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(z[i], x[i], 1e-5) << "n = " << n << ", i = " << i;
    // <x T, y> = <x, y T^T>.
    std::vector<float> tx = x, ty = y;
    orthogonalTransformInPlace(tx.data(), n, seed);
    orthogonalTransformTransposeInPlace(ty.data(), n, seed);
    double lhs = 0, rhs = 0, norm = 0;
    for (int64_t i = 0; i < n; ++i) {
      lhs += double(tx[i]) * y[i];
      rhs += double(x[i]) * ty[i];
      norm += std::fabs(double(x[i]) * y[i]);
    }
    EXPECT_NEAR(lhs, rhs, 1e-5 * norm) << n;
    // Not the forward transform again: T is not symmetric for these sizes.
    if (n != 64) {
      std::vector<float> fy = y;
      orthogonalTransformInPlace(fy.data(), n, seed);
      double diff = 0;
      for (int64_t i = 0; i < n; ++i)
        diff = std::max(diff, double(std::fabs(fy[i] - ty[i])));
      EXPECT_GT(diff, 1e-2) << n;
    }
  }
}

TEST(Hadamard, RejectsUnsupportedSizes) {
  std::vector<float> x(231 * 128, 1.0f);
  EXPECT_FALSE(hadamardTransformInPlace(x.data(), 231 * 128));
  EXPECT_FALSE(hadamardTransformInPlace(x.data(), 6));
}

//===----------------------------------------------------------------------===//
// The transforms' dense factors against the loops they replaced (kept here
// as the reference): the same sums in the same order, so identical bits.
//===----------------------------------------------------------------------===//

void refButterflies(float *x, int64_t m, int64_t p) {
  for (int64_t a = 0; a < m; ++a) {
    float *v = x + a * p;
    for (int64_t len = 1; len < p; len <<= 1)
      for (int64_t i = 0; i < p; i += 2 * len)
        for (int64_t j = i; j < i + len; ++j) {
          float u = v[j], w = v[j + len];
          v[j] = u + w;
          v[j + len] = u - w;
        }
  }
}

/// The old hadamardTransform.
bool refHadamard(float *x, int64_t n, bool transpose) {
  int m;
  int64_t p;
  if (!splitHadamardSize(n, m, p))
    return false;
  refButterflies(x, m, p);
  if (m > 1) {
    std::vector<int8_t> H = hadamardMatrix(m);
    std::vector<float> scratch(x, x + n);
    const float *src = scratch.data();
    for (int a = 0; a < m; ++a) {
      float *out = x + a * p;
      for (int64_t b = 0; b < p; ++b)
        out[b] = 0.0f;
      for (int c = 0; c < m; ++c) {
        const float *row = src + c * p;
        if ((transpose ? H[a * m + c] : H[c * m + a]) > 0)
          for (int64_t b = 0; b < p; ++b)
            out[b] += row[b];
        else
          for (int64_t b = 0; b < p; ++b)
            out[b] -= row[b];
      }
    }
  }
  float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int64_t i = 0; i < n; ++i)
    x[i] *= scale;
  return true;
}

/// The old orthogonalTransform (the random orthogonal fallback).
bool refOrthogonal(float *x, int64_t n, uint64_t seed, bool transpose) {
  if (refHadamard(x, n, transpose))
    return true;
  int64_t p = n & -n;
  int64_t m = n / p;
  std::vector<double> q = randomOrthogonalMatrix(m, seed);
  refButterflies(x, m, p);
  std::vector<double> column(m);
  float scale = 1.0f / std::sqrt(static_cast<float>(p));
  for (int64_t b = 0; b < p; ++b) {
    for (int64_t c = 0; c < m; ++c)
      column[c] = x[c * p + b];
    for (int64_t a = 0; a < m; ++a) {
      double s = 0;
      for (int64_t c = 0; c < m; ++c)
        s += column[c] * (transpose ? q[a * m + c] : q[c * m + a]);
      x[a * p + b] = static_cast<float>(s) * scale;
    }
  }
  return false;
}

TEST(Hadamard, TransformsMatchTheOldLoopsBitForBit) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  // Hadamard sizes (LLaMA-2-7B's R4 172 * 64, the byte model's 172 * 2,
  // 12 * 2, 28 * 16, a bare 172, a power of two) and fallback sizes (231 *
  // 128, 107 * 128, 15, 25 * 2, 45 * 4).
  for (int64_t n : {11008, 344, 24, 448, 172, 256, 29568, 13696, 15, 50, 180})
    for (bool transpose : {false, true}) {
      std::vector<float> x(n);
      for (float &v : x)
        v = dist(rng);
      x[1] = 0.0f;
      x[n - 1] = -0.0f;
      std::vector<float> got = x, want = x;
      bool hadamard =
          transpose ? orthogonalTransformTransposeInPlace(got.data(), n, 17)
                    : orthogonalTransformInPlace(got.data(), n, 17);
      EXPECT_EQ(hadamard, refOrthogonal(want.data(), n, 17, transpose)) << n;
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float)))
          << n << (transpose ? " transposed" : "");
      EXPECT_NE(0, std::memcmp(got.data(), x.data(), n * sizeof(float)));
      if (hadamard) {
        std::vector<float> h = x;
        ASSERT_TRUE(hadamardTransformInPlace(h.data(), n));
        std::vector<float> r = x;
        refHadamard(r.data(), n, false);
        EXPECT_EQ(0, std::memcmp(h.data(), r.data(), n * sizeof(float))) << n;
      }
    }
}

} // namespace
