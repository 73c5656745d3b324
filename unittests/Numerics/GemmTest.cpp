//===- GemmTest.cpp - bf16 GEMM paths against a double reference ---------===//
//
// Every path (AMX, AVX-512 BF16, scalar; a path this machine lacks is
// skipped) against a double-precision product of the bf16-rounded inputs.
//
// Tolerance: a bf16 x bf16 product is exact in fp32 (8 x 8 significant
// bits), so a path differs from the exact sum of the rounded products only
// by its fp32 additions: k terms summed recursively (in any order, in blocks
// or in pairs) err by at most gamma_k = k u / (1 - k u) times sum |a b|,
// u = 2^-24; alpha and beta add a few roundings of |result|. We allow
// (k + 4) u sum|a b| |alpha| + 4 u (|alpha ab| + |beta c|). With k <= ~1100
// that stays far below the effect of one wrong or missing product
// (~ sum|a b| / k) or of an unrounded input (~ 2^-9 relative per term).
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/Float16.h"
#include "sq/Numerics/ThreadPool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

using namespace sq::numerics;

namespace sq {
namespace numerics {
void PrintTo(GemmPath path, std::ostream *os) { *os << gemmPathName(path); }
} // namespace numerics
} // namespace sq

namespace {

constexpr double kU = 1.0 / (1 << 24);

float roundedF(float x) { return bf16ToFloat(floatToBf16(x)); }

std::vector<float> randomVec(size_t n, std::mt19937 &rng, float scale = 1) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// A dense view for the reference: element (i, j) at p[i * rs + j * cs].
struct View {
  const float *p;
  int64_t rs, cs;
  float operator()(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

/// Checks c (fp32, ldc) against alpha * A B + beta * c0, A and B rounded to
/// bf16, with the tolerance of the file comment.
void expectClose(int64_t m, int64_t n, int64_t k, float alpha, View a, View b,
                 float beta, const std::vector<float> &c0,
                 const std::vector<float> &c, int64_t ldc,
                 const std::string &what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0, abs = 0;
      for (int64_t t = 0; t < k; ++t) {
        double p = double(roundedF(a(i, t))) * double(roundedF(b(t, j)));
        sum += p;
        abs += std::fabs(p);
      }
      double old = beta == 0.0f ? 0.0 : double(c0[i * ldc + j]);
      double want = double(alpha) * sum + double(beta) * old;
      double tol = (k + 4) * kU * abs * std::fabs(alpha) +
                   4 * kU * (std::fabs(alpha * sum) + std::fabs(beta * old)) +
                   1e-30;
      double got = c[i * ldc + j];
      if (!(std::fabs(got - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << what << ": C[" << i << ", " << j << "] = " << got
                      << ", want " << want << " (tol " << tol << ")";
    }
  EXPECT_EQ(bad, 0) << what;
}

class GemmPathTest : public ::testing::TestWithParam<GemmPath> {
protected:
  void SetUp() override {
    if (!gemmPathSupported(GetParam()))
      GTEST_SKIP() << gemmPathName(GetParam()) << " is not supported here";
  }
  GemmOptions options(ThreadPool *pool = nullptr) const {
    GemmOptions o;
    o.path = GetParam();
    o.pool = pool;
    return o;
  }
};

std::string shapeName(int64_t m, int64_t n, int64_t k, bool t, float alpha,
                      float beta) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) +
         " k=" + std::to_string(k) + (t ? " W^T" : " W") +
         " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
}

} // namespace

/// gemm with a PackedMatrix, both orientations, odd shapes (tails in every
/// dimension, several K and N blocks), strides, alpha and beta.
TEST_P(GemmPathTest, PackedMatrixBothOrientations) {
  std::mt19937 rng(7);
  ThreadPool pool(2);
  struct Shape {
    int64_t m, rows, cols;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{1, 16, 32}, Shape{17, 15, 31},
                  Shape{2, 33, 70}, Shape{33, 257, 47}, Shape{40, 20, 513},
                  Shape{5, 1, 1100}, Shape{64, 96, 64}})
    for (bool t : {true, false})
      for (auto [alpha, beta] :
           {std::pair<float, float>{1, 0}, {1, 1}, {-0.75f, 0.5f}}) {
        int64_t k = t ? s.cols : s.rows, n = t ? s.rows : s.cols;
        int64_t ldw = s.cols + 3, lda = k + 5, ldc = n + 2;
        std::vector<float> w = randomVec(s.rows * ldw, rng);
        std::vector<float> a = randomVec(s.m * lda, rng, 2.0f);
        std::vector<float> c0 = randomVec(s.m * ldc, rng);
        PackedMatrix pw =
            PackedMatrix::fromFloat(w.data(), s.rows, s.cols, ldw);
        std::vector<float> c = c0;
        gemm(s.m, a.data(), lda, pw, t ? Transpose::Yes : Transpose::No,
             c.data(), ldc, alpha, beta, options(&pool));
        View av{a.data(), lda, 1};
        View bv = t ? View{w.data(), 1, ldw} : View{w.data(), ldw, 1};
        expectClose(s.m, n, k, alpha, av, bv, beta, c0, c, ldc,
                    shapeName(s.m, n, k, t, alpha, beta));
        // Padding columns of C are not touched.
        for (int64_t i = 0; i < s.m; ++i)
          for (int64_t j = n; j < ldc; ++j)
            ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]);
      }
}

/// The activation-by-activation product, every transposition.
TEST_P(GemmPathTest, Float32Operands) {
  std::mt19937 rng(11);
  ThreadPool pool(2);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                         {17, 33, 31},
                         {64, 16, 70},
                         {35, 50, 600}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 3, ldc = n;
        std::vector<float> a = randomVec((ta ? k : m) * lda, rng);
        std::vector<float> b = randomVec((tb ? n : k) * ldb, rng);
        std::vector<float> c0 = randomVec(m * ldc, rng);
        std::vector<float> c = c0;
        gemmBF16(ta ? Transpose::Yes : Transpose::No,
                 tb ? Transpose::Yes : Transpose::No, m, n, k, 0.5f, a.data(),
                 lda, b.data(), ldb, 1.0f, c.data(), ldc, options(&pool));
        View av = ta ? View{a.data(), 1, lda} : View{a.data(), lda, 1};
        View bv = tb ? View{b.data(), 1, ldb} : View{b.data(), ldb, 1};
        expectClose(m, n, k, 0.5f, av, bv, 1.0f, c0, c, ldc,
                    std::string("ta=") + (ta ? "T" : "N") +
                        " tb=" + (tb ? "T" : "N") + " " +
                        shapeName(m, n, k, tb, 0.5f, 1.0f));
      }
}

/// With W = I the product is bf16(A) exactly: the activations are rounded
/// to nearest, ties to even (1 + 2^-8 -> 1, 1 + 3 2^-8 -> 1 + 2^-6).
TEST_P(GemmPathTest, ActivationsRoundToNearestEven) {
  int64_t k = 40, m = 3;
  std::vector<float> eye(k * k, 0.0f);
  for (int64_t i = 0; i < k; ++i)
    eye[i * k + i] = 1.0f;
  PackedMatrix pw = PackedMatrix::fromFloat(eye.data(), k, k);
  std::vector<float> a(m * k);
  std::mt19937 rng(3);
  for (int64_t i = 0; i < m * k; ++i)
    a[i] = i % 4 == 0   ? 1.0f + std::ldexp(1.0f, -8)
           : i % 4 == 1 ? -(1.0f + 3 * std::ldexp(1.0f, -8))
           : i % 4 == 2 ? 3.0f + std::ldexp(1.0f, -7) // tie -> 3
                        : std::normal_distribution<float>(0, 100)(rng);
  for (Transpose op : {Transpose::Yes, Transpose::No}) {
    std::vector<float> c(m * k, std::numeric_limits<float>::quiet_NaN());
    gemm(m, a.data(), k, pw, op, c.data(), k, 1.0f, 0.0f, options());
    for (int64_t i = 0; i < m * k; ++i)
      ASSERT_EQ(c[i], roundedF(a[i])) << i << " " << a[i];
  }
  EXPECT_EQ(roundedF(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(roundedF(1.0f + 3 * std::ldexp(1.0f, -8)),
            1.0f + std::ldexp(1.0f, -6));
}

/// The same path gives the same bits with 1 and 2 threads (the K order is
/// fixed by the blocking), including with rows split across threads.
TEST_P(GemmPathTest, ThreadCountDoesNotChangeResults) {
  std::mt19937 rng(5);
  ThreadPool one(1), two(2);
  for (auto [m, rows, cols] :
       {std::tuple<int64_t, int64_t, int64_t>{70, 600, 530}, {300, 40, 100}})
    for (Transpose op : {Transpose::Yes, Transpose::No}) {
      std::vector<float> w = randomVec(rows * cols, rng);
      PackedMatrix pw = PackedMatrix::fromFloat(w.data(), rows, cols);
      int64_t k = op == Transpose::Yes ? cols : rows,
              n = op == Transpose::Yes ? rows : cols;
      std::vector<float> a = randomVec(m * k, rng);
      std::vector<float> c1(m * n), c2(m * n);
      gemm(m, a.data(), k, pw, op, c1.data(), n, 1, 0, options(&one));
      gemm(m, a.data(), k, pw, op, c2.data(), n, 1, 0, options(&two));
      ASSERT_EQ(c1, c2);
    }
}

/// beta == 0 does not read C; k == 0 scales C; m or n == 0 do nothing; more
/// rows than one M block.
TEST_P(GemmPathTest, EdgeCases) {
  std::mt19937 rng(9);
  std::vector<float> w = randomVec(20 * 24, rng);
  PackedMatrix pw = PackedMatrix::fromFloat(w.data(), 20, 24);
  int64_t m = 4100; // > two M blocks of 2048 rows
  std::vector<float> a = randomVec(m * 24, rng);
  std::vector<float> c(m * 20, std::numeric_limits<float>::quiet_NaN());
  gemm(m, a.data(), 24, pw, Transpose::Yes, c.data(), 20, 1, 0, options());
  std::vector<float> none;
  expectClose(m, 20, 24, 1, View{a.data(), 24, 1}, View{w.data(), 1, 24}, 0,
              none, c, 20, "m=4100");

  std::vector<float> c2 = {1, 2, 3, 4};
  gemmBF16(Transpose::No, Transpose::No, 2, 2, 0, 1, nullptr, 1, nullptr, 2,
           0.5f, c2.data(), 2, options());
  EXPECT_EQ(c2, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  gemmBF16(Transpose::No, Transpose::No, 0, 2, 3, 1, nullptr, 3, nullptr, 2,
           0.5f, c2.data(), 2, options());
  EXPECT_EQ(c2, (std::vector<float>{0.5f, 1, 1.5f, 2}));
}

/// Every path against the scalar one on a calibration-like shape (several
/// K blocks, ragged N), within twice the single-path tolerance.
TEST_P(GemmPathTest, AgreesWithScalarPath) {
  std::mt19937 rng(13);
  int64_t m = 96, rows = 300, cols = 1030;
  std::vector<float> w = randomVec(rows * cols, rng);
  std::vector<float> a = randomVec(m * cols, rng);
  PackedMatrix pw = PackedMatrix::fromFloat(w.data(), rows, cols);
  std::vector<float> c(m * rows), s(m * rows);
  gemm(m, a.data(), cols, pw, Transpose::Yes, c.data(), rows, 1, 0, options());
  GemmOptions scalar;
  scalar.path = GemmPath::Scalar;
  gemm(m, a.data(), cols, pw, Transpose::Yes, s.data(), rows, 1, 0, scalar);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < rows; ++j) {
      double abs = 0;
      for (int64_t t = 0; t < cols; ++t)
        abs += std::fabs(double(roundedF(a[i * cols + t])) *
                         roundedF(w[j * cols + t]));
      ASSERT_NEAR(c[i * rows + j], s[i * rows + j], 2 * (cols + 4) * kU * abs)
          << i << ", " << j;
    }
}

INSTANTIATE_TEST_SUITE_P(Paths, GemmPathTest,
                         ::testing::Values(GemmPath::AMX, GemmPath::AVX512BF16,
                                           GemmPath::Scalar),
                         [](const ::testing::TestParamInfo<GemmPath> &info) {
                           return std::string(gemmPathName(info.param));
                         });

TEST(PackedMatrix, FormatsViewsAndRowUpdates) {
  std::mt19937 rng(1);
  int64_t rows = 5, cols = 37, ld = 40;
  std::vector<float> w = randomVec(rows * ld, rng);
  PackedMatrix f = PackedMatrix::fromFloat(w.data(), rows, cols, ld);
  ASSERT_EQ(f.rows(), rows);
  ASSERT_EQ(f.cols(), cols);
  EXPECT_FALSE(f.isView());
  EXPECT_EQ(f.stride() % 32, 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.row(0)) % 64, 0u);
  EXPECT_EQ(f.ownedBytes(), size_t(rows * f.stride() * 2));

  std::vector<uint16_t> b16(rows * ld), h16(rows * ld);
  for (int64_t i = 0; i < rows * ld; ++i) {
    b16[i] = floatToBf16(w[i]);
    h16[i] = floatToHalf(w[i]);
  }
  PackedMatrix b =
      PackedMatrix::fromBits(b16.data(), FloatFormat::BF16, rows, cols, ld);
  PackedMatrix h =
      PackedMatrix::fromBits(h16.data(), FloatFormat::F16, rows, cols, ld);
  PackedMatrix v = PackedMatrix::viewBF16(b16.data(), rows, cols, ld);
  EXPECT_TRUE(v.isView());
  EXPECT_EQ(v.ownedBytes(), 0u);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      ASSERT_EQ(f.row(r)[c], floatToBf16(w[r * ld + c]));
      ASSERT_EQ(b.row(r)[c], b16[r * ld + c]);
      ASSERT_EQ(v.row(r)[c], b16[r * ld + c]);
      ASSERT_EQ(h.at(r, c), roundedF(halfToFloat(h16[r * ld + c])));
    }

  // Row updates: only the named rows change; a view refuses.
  std::vector<float> fresh = randomVec(2 * cols, rng);
  ASSERT_TRUE(f.setRows(2, 2, fresh.data()));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(f.row(r)[c], (r == 2 || r == 3)
                                 ? floatToBf16(fresh[(r - 2) * cols + c])
                                 : floatToBf16(w[r * ld + c]));
  EXPECT_FALSE(f.setRows(4, 2, fresh.data()));
  EXPECT_FALSE(v.setRows(0, 1, fresh.data()));

  // A view gives the same products as the owned copy.
  std::vector<float> a = randomVec(3 * cols, rng), c1(3 * rows), c2(3 * rows);
  gemm(3, a.data(), cols, b, Transpose::Yes, c1.data(), rows);
  gemm(3, a.data(), cols, v, Transpose::Yes, c2.data(), rows);
  EXPECT_EQ(c1, c2);

  PackedMatrix moved = std::move(f);
  EXPECT_EQ(moved.rows(), rows);
  EXPECT_TRUE(f.empty());
}

TEST(GemmPaths, NamesAndDefault) {
  EXPECT_TRUE(gemmPathSupported(GemmPath::Scalar));
  EXPECT_TRUE(gemmPathSupported(gemmDefaultPath()));
  EXPECT_NE(gemmDefaultPath(), GemmPath::Auto);
  EXPECT_STREQ(gemmPathName(GemmPath::AVX512BF16), "avx512bf16");
  // AMX implies the AVX-512 BF16 path (its packers and epilogue).
  if (gemmPathSupported(GemmPath::AMX))
    EXPECT_TRUE(gemmPathSupported(GemmPath::AVX512BF16));
}
