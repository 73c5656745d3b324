//===- GemmF32Test.cpp - fp32 GEMM against a double reference -------------===//
//
// gemmF32 (our AVX-512F kernel where the CPU has it, cblas_sgemm elsewhere)
// against a double-precision product of the same fp32 inputs. Tolerance:
// each fp32 product rounds once (u |a b|, u = 2^-24) and k terms summed in
// any order err by at most gamma_k sum |a b|; alpha and beta add a few
// roundings: (k + 5) u sum|a b| |alpha| + 4 u (|alpha ab| + |beta c|). With
// k = 1100 (three K blocks) that is ~1e-4 of sum |a b|, far below a missing
// or repeated K block or a wrong transpose.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/ThreadPool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

using namespace sq::numerics;

namespace {

constexpr double kU = 1.0 / (1 << 24);

std::vector<float> randomVec(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  float alpha, beta;
  std::string name() const {
    return "m=" + std::to_string(m) + " n=" + std::to_string(n) +
           " k=" + std::to_string(k) + (ta ? " A^T" : " A") +
           (tb ? " B^T" : " B") + " alpha=" + std::to_string(alpha) +
           " beta=" + std::to_string(beta);
  }
};

/// Runs one case with padded strides (ld = logical width + 3) and checks
/// every element; returns C.
std::vector<float> runAndCheck(const Case &t, std::mt19937 &rng,
                               ThreadPool *pool = nullptr) {
  // op(A) is [m, k]: stored [m, k] or [k, m]; op(B) [k, n]: [k, n] or [n, k].
  int64_t aRows = t.ta ? t.k : t.m, aCols = t.ta ? t.m : t.k;
  int64_t bRows = t.tb ? t.n : t.k, bCols = t.tb ? t.k : t.n;
  int64_t lda = aCols + 3, ldb = bCols + 3, ldc = t.n + 3;
  std::vector<float> a = randomVec(size_t(aRows * lda), rng);
  std::vector<float> b = randomVec(size_t(bRows * ldb), rng);
  std::vector<float> c0 = randomVec(size_t(t.m * ldc), rng);
  if (t.beta == 0.0f) // beta 0: C is only written, NaN does not propagate
    std::fill(c0.begin(), c0.end(), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> c = c0;
  gemmF32(t.ta ? Transpose::Yes : Transpose::No,
          t.tb ? Transpose::Yes : Transpose::No, t.m, t.n, t.k, t.alpha,
          a.data(), lda, b.data(), ldb, t.beta, c.data(), ldc, pool);
  auto A = [&](int64_t i, int64_t p) {
    return double(t.ta ? a[p * lda + i] : a[i * lda + p]);
  };
  auto B = [&](int64_t p, int64_t j) {
    return double(t.tb ? b[j * ldb + p] : b[p * ldb + j]);
  };
  int64_t bad = 0;
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = 0; j < t.n; ++j) {
      double sum = 0, abs = 0;
      for (int64_t p = 0; p < t.k; ++p) {
        double x = A(i, p) * B(p, j);
        sum += x;
        abs += std::fabs(x);
      }
      double old = t.beta == 0.0f ? 0.0 : double(c0[i * ldc + j]);
      double want = double(t.alpha) * sum + double(t.beta) * old;
      double tol =
          (t.k + 5) * kU * abs * std::fabs(t.alpha) +
          4 * kU * (std::fabs(t.alpha * sum) + std::fabs(t.beta * old)) + 1e-30;
      double got = c[i * ldc + j];
      if (!(std::fabs(got - want) <= tol) && bad++ < 5)
        ADD_FAILURE() << t.name() << ": C[" << i << ", " << j << "] = " << got
                      << ", want " << want << " (tol " << tol << ")";
    }
  EXPECT_EQ(bad, 0) << t.name();
  // The padding between rows of C is never written.
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = t.n; j < ldc; ++j) {
      float was = c0[i * ldc + j], is = c[i * ldc + j];
      EXPECT_TRUE(std::memcmp(&was, &is, sizeof(float)) == 0)
          << t.name() << ": padding C[" << i << ", " << j << "] written";
    }
  return c;
}

} // namespace

/// Every transpose pair, tails in every dimension (rows past a 12-row
/// panel, columns past a 32-column panel), several K blocks, alpha and beta.
TEST(GemmF32, MatchesDoubleReference) {
  std::mt19937 rng(7);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                         {13, 45, 7},
                         {12, 32, 512},
                         {37, 70, 600},
                         {250, 33, 1100},
                         {25, 64, 1025},
                         {3, 8300, 20}}) // N over the 4096-column cap
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f},
                                   {0.5f, -1.5f},
                                   {-2.0f, 1.0f}})
          runAndCheck({m, n, k, ta, tb, alpha, beta}, rng);
}

/// k == 0 leaves beta C; m or n == 0 writes nothing.
TEST(GemmF32, EmptyShapes) {
  std::vector<float> a(4, 1.0f), b(4, 1.0f), c = {1, 2, 3, 4};
  gemmF32(Transpose::No, Transpose::No, 2, 2, 0, 1.0f, a.data(), 1, b.data(), 2,
          2.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{2, 4, 6, 8}));
  gemmF32(Transpose::No, Transpose::No, 0, 2, 2, 1.0f, a.data(), 2, b.data(), 2,
          0.0f, c.data(), 2);
  gemmF32(Transpose::No, Transpose::No, 2, 0, 2, 1.0f, a.data(), 2, b.data(), 2,
          0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{2, 4, 6, 8}));
}

/// The same bits with 1, 2 and 3 threads: the K order is fixed by the
/// blocking, whether the threads split columns or (n small) rows.
TEST(GemmF32, ThreadCountDoesNotChangeResults) {
  ThreadPool one(1), two(2), three(3);
  for (Case t : {Case{300, 40, 1100, false, true, 1.0f, 0.0f},
                 Case{70, 530, 600, true, false, 0.5f, 1.0f}}) {
    std::mt19937 r1(11), r2(11), r3(11);
    std::vector<float> c1 = runAndCheck(t, r1, &one);
    std::vector<float> c2 = runAndCheck(t, r2, &two);
    std::vector<float> c3 = runAndCheck(t, r3, &three);
    size_t bytes = c1.size() * sizeof(float); // NaN padding: compare bits
    EXPECT_EQ(std::memcmp(c1.data(), c2.data(), bytes), 0) << t.name();
    EXPECT_EQ(std::memcmp(c1.data(), c3.data(), bytes), 0) << t.name();
  }
}
