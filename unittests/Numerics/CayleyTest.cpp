//===- CayleyTest.cpp - Cayley SGD on the Stiefel manifold ----------------===//

#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

using namespace sq::numerics;

namespace {

using Matrix = std::vector<double>;

Matrix gaussian(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Matrix m(n * n);
  for (double &v : m)
    v = dist(rng);
  return m;
}

/// A op(B), naive (the reference the library's dgemm is checked against).
Matrix mul(const Matrix &A, const Matrix &B, int64_t n, bool transB = false) {
  Matrix C(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < n; ++j)
        C[i * n + j] += A[i * n + k] * (transB ? B[j * n + k] : B[k * n + j]);
  return C;
}

Matrix transposed(const Matrix &A, int64_t n) {
  Matrix T(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      T[j * n + i] = A[i * n + j];
  return T;
}

double maxAbsDiff(const Matrix &A, const Matrix &B) {
  double e = 0;
  for (size_t i = 0; i < A.size(); ++i)
    e = std::max(e, std::fabs(A[i] - B[i]));
  return e;
}

double dot(const Matrix &A, const Matrix &B) {
  double s = 0;
  for (size_t i = 0; i < A.size(); ++i)
    s += A[i] * B[i];
  return s;
}

/// The toy problem L(X) = ||X A - B||_F^2, dL/dX = 2 (X A - B) A^T.
struct Procrustes {
  int64_t n;
  Matrix A, B;
  double loss(const Matrix &X) const {
    Matrix R = mul(X, A, n);
    double s = 0;
    for (size_t i = 0; i < R.size(); ++i)
      s += (R[i] - B[i]) * (R[i] - B[i]);
    return s;
  }
  Matrix gradient(const Matrix &X) const {
    Matrix R = mul(X, A, n);
    for (size_t i = 0; i < R.size(); ++i)
      R[i] = 2 * (R[i] - B[i]);
    return mul(R, A, n, /*transB=*/true);
  }
};

/// B = Q0 A with Q0 = R^2 for a random orthogonal R, so det Q0 = +1: the
/// Cayley transform never leaves SO(n), so a start at the identity can only
/// reach targets in it. A = I + 0.3 N(0, 1/n) is well conditioned.
Procrustes makeProcrustes(int64_t n, uint64_t seed) {
  Matrix R = randomOrthogonalMatrix(n, seed);
  Matrix Q0 = mul(R, R, n);
  Matrix A = gaussian(n, seed + 1, 0.3 / std::sqrt(double(n)));
  for (int64_t i = 0; i < n; ++i)
    A[i * n + i] += 1;
  return {n, A, mul(Q0, A, n)};
}

TEST(Cayley, GeneratorIsSkewSymmetric) {
  const int64_t n = 16;
  Matrix X = randomOrthogonalMatrix(n, 7);
  Matrix G = gaussian(n, 8);
  for (double beta : {0.0, 0.9}) {
    CayleyOptions opts;
    opts.momentum = beta;
    Matrix M = beta == 0 ? Matrix() : gaussian(n, 9);
    Matrix W;
    cayleyGenerator(X, G, n, M, opts, W);
    ASSERT_EQ(W.size(), size_t(n * n));
    double skew = 0, size = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        skew = std::max(skew, std::fabs(W[i * n + j] + W[j * n + i]));
        size = std::max(size, std::fabs(W[i * n + j]));
      }
    EXPECT_LT(skew, 1e-12) << "beta " << beta;
    EXPECT_GT(size, 0.1) << "beta " << beta;
    // For an orthogonal X, U = X and U^T U = I, so with V = beta M - G^T
    // the generator is W = (V X - X^T V^T) / 2. eps = 0 makes U = X to
    // rounding (eps = 1e-8 scales U, hence W, by 1 - 1e-8).
    opts.eps = 0;
    cayleyGenerator(X, G, n, M, opts, W);
    Matrix V = transposed(G, n);
    for (size_t i = 0; i < V.size(); ++i)
      V[i] = (beta == 0 ? 0.0 : beta * M[i]) - V[i];
    Matrix VX = mul(V, X, n);
    Matrix closed(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        closed[i * n + j] = 0.5 * (VX[i * n + j] - VX[j * n + i]);
    EXPECT_LT(maxAbsDiff(W, closed), 1e-12) << "beta " << beta;
  }
}

// cayleyStep against the official SGDG step transcribed literally with naive
// products (unity = unit(p), V = momentum V - g^T, ..., Cayley_loop, V_new =
// W unity^T), on a slightly non-orthogonal X with a non-zero momentum buffer.
TEST(Cayley, StepMatchesOfficialFormulas) {
  const int64_t n = 8;
  Matrix P = randomOrthogonalMatrix(n, 71), noise = gaussian(n, 72, 1e-3);
  for (size_t i = 0; i < P.size(); ++i)
    P[i] += noise[i];
  Matrix g = gaussian(n, 73), buffer = gaussian(n, 74);
  CayleyOptions opts;
  opts.momentum = 0.9;
  for (double lr : {1.5, 1e-2}) {
    opts.lr = lr;
    Matrix unity(n * n);
    for (int64_t i = 0; i < n; ++i) {
      double norm = 0;
      for (int64_t k = 0; k < n; ++k)
        norm += P[i * n + k] * P[i * n + k];
      for (int64_t k = 0; k < n; ++k)
        unity[i * n + k] = P[i * n + k] / (std::sqrt(norm) + 1e-8);
    }
    Matrix gt = transposed(g, n), V(n * n);
    for (size_t i = 0; i < V.size(); ++i)
      V[i] = 0.9 * buffer[i] - gt[i];
    Matrix MX = mul(V, unity, n);
    Matrix XMX = mul(unity, MX, n);
    Matrix XXMX = mul(transposed(unity, n), XMX, n);
    Matrix What(n * n), W(n * n);
    for (size_t i = 0; i < What.size(); ++i)
      What[i] = MX[i] - 0.5 * XXMX[i];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        W[i * n + j] = What[i * n + j] - What[j * n + i];
    double norm1 = 0;
    for (int64_t j = 0; j < n; ++j) {
      double col = 0;
      for (int64_t i = 0; i < n; ++i)
        col += std::fabs(W[i * n + j]);
      norm1 = std::max(norm1, col);
    }
    double alpha = std::min(0.5 * 2 / (norm1 + 1e-8), lr);
    Matrix Xt = transposed(unity, n), Y(n * n);
    for (size_t i = 0; i < Y.size(); ++i)
      Y[i] = Xt[i] + alpha * V[i];
    for (int it = 0; it < 5; ++it) {
      Matrix Z(n * n);
      for (size_t i = 0; i < Z.size(); ++i)
        Z[i] = 0.5 * (Xt[i] + Y[i]);
      Matrix WZ = mul(W, Z, n);
      for (size_t i = 0; i < Y.size(); ++i)
        Y[i] = Xt[i] + alpha * WZ[i];
    }
    Matrix pNew = transposed(Y, n), vNew = mul(W, Xt, n);

    Matrix X = P, M = buffer;
    double used = cayleyStep(X, g, n, M, opts);
    EXPECT_NEAR(used, alpha, 1e-15) << "lr " << lr;
    EXPECT_LT(maxAbsDiff(X, pNew), 1e-12) << "lr " << lr;
    EXPECT_LT(maxAbsDiff(M, vNew), 1e-12) << "lr " << lr;
    Matrix Wlib;
    cayleyGenerator(P, g, n, buffer, opts, Wlib);
    EXPECT_LT(maxAbsDiff(Wlib, W), 1e-12) << "lr " << lr;
  }
}

// alpha = min(lr, 2q / (||W||_1 + eps)) and the new momentum buffer is W X^T.
TEST(Cayley, StepSizeIsCappedAndMomentumIsWXt) {
  const int64_t n = 16;
  Matrix X0 = randomOrthogonalMatrix(n, 11);
  Matrix G = gaussian(n, 12);
  CayleyOptions opts;
  opts.eps = 0; // U = X0 to rounding, so that M = W X0^T to 1e-12
  Matrix W;
  cayleyGenerator(X0, G, n, {}, opts, W);
  double norm1 = 0;
  for (int64_t j = 0; j < n; ++j) {
    double col = 0;
    for (int64_t i = 0; i < n; ++i)
      col += std::fabs(W[i * n + j]);
    norm1 = std::max(norm1, col);
  }
  double cap = 2 * opts.q / (norm1 + opts.eps);
  ASSERT_LT(cap, opts.lr) << "the gradient should be large enough to cap";
  for (double lr : {1.5, cap / 4}) {
    opts.lr = lr;
    Matrix X = X0, M; // empty buffer: zeros, resized by the step
    double alpha = cayleyStep(X, G, n, M, opts);
    EXPECT_NEAR(alpha, std::min(lr, cap), 1e-15) << "lr " << lr;
    ASSERT_EQ(M.size(), size_t(n * n));
    EXPECT_LT(maxAbsDiff(M, mul(W, X0, n, /*transB=*/true)), 1e-12);
    EXPECT_GT(maxAbsDiff(X, X0), 1e-3) << "the step should move X";
  }
}

// 200 steps with random N(0, 1) gradients (lr 1.5, cosine schedule) keep
// X X^T = I to 1e-5. The truncated fixed point leaves an error of about
// (alpha ||W||_2 / 2)^iterations per step, and with the cap alpha ||W||_1 = 1
// that ratio is large for small n: the official 5 iterations hold 1e-5 from
// n = 128 (about 1e-6 there), n = 16 and 64 need 10 (see
// FixedPointConvergesToOrthogonal for n = 16 at 5).
struct StepsCase {
  int64_t n;
  double momentum;
  int iterations;
};

class CayleySteps : public ::testing::TestWithParam<StepsCase> {};

TEST_P(CayleySteps, StayOrthogonal) {
  const StepsCase c = GetParam();
  const int64_t steps = 200;
  Matrix X = randomOrthogonalMatrix(c.n, 21), M;
  CayleyOptions opts;
  opts.momentum = c.momentum;
  opts.iterations = c.iterations;
  double worst = 0;
  for (int64_t s = 0; s < steps; ++s) {
    opts.lr = cosineSchedule(1.5, s, steps);
    Matrix G = gaussian(c.n, 1000 + s);
    double alpha = cayleyStep(X, G, c.n, M, opts);
    ASSERT_GE(alpha, 0);
    ASSERT_LE(alpha, opts.lr);
    worst = std::max(worst, orthogonalityError(X, c.n));
  }
  EXPECT_LT(worst, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Cayley, CayleySteps,
    ::testing::Values(StepsCase{16, 0.0, 10}, StepsCase{16, 0.9, 10},
                      StepsCase{64, 0.0, 10}, StepsCase{64, 0.9, 10},
                      StepsCase{128, 0.0, 5}, StepsCase{128, 0.9, 5}),
    [](const auto &info) {
      return "n" + std::to_string(info.param.n) +
             (info.param.momentum == 0 ? "_nomomentum" : "_momentum09") +
             "_it" + std::to_string(info.param.iterations);
    });

// The loop is a fixed-point iteration for the Cayley transform
// Y = (I - alpha/2 W)^-1 (I + alpha/2 W) X^T, which is exactly orthogonal:
// the orthogonality error of one step falls with the iteration count, and at
// 60 iterations Y solves (I - alpha/2 W) Y = (I + alpha/2 W) X^T.
TEST(Cayley, FixedPointConvergesToOrthogonal) {
  const int64_t n = 16;
  Matrix X0 = randomOrthogonalMatrix(n, 61);
  Matrix G = gaussian(n, 62);
  CayleyOptions opts;
  opts.eps = 0; // U = X0, so that the residual below is rounding only
  std::vector<double> errors;
  for (int iterations : {5, 10, 20, 60}) {
    opts.iterations = iterations;
    Matrix X = X0, M;
    double alpha = cayleyStep(X, G, n, M, opts);
    ASSERT_LT(alpha, opts.lr) << "the cap should bind";
    errors.push_back(orthogonalityError(X, n));
    if (iterations != 60)
      continue;
    Matrix W;
    cayleyGenerator(X0, G, n, {}, opts, W);
    Matrix Y = transposed(X, n), X0t = transposed(X0, n);
    Matrix WY = mul(W, Y, n), WX = mul(W, X0t, n);
    double residual = 0;
    for (size_t i = 0; i < Y.size(); ++i)
      residual = std::max(residual, std::fabs((Y[i] - alpha / 2 * WY[i]) -
                                              (X0t[i] + alpha / 2 * WX[i])));
    EXPECT_LT(residual, 1e-12);
  }
  // The official 5 iterations are not enough at this size (about 2e-4).
  EXPECT_GT(errors[0], 1e-5);
  EXPECT_LT(errors[1], 1e-5);
  EXPECT_LT(errors[2], errors[1]);
  EXPECT_LT(errors[3], 1e-12);
}

TEST(Cayley, ReorthonormalizeRestoresOrthogonality) {
  const int64_t n = 64;
  Matrix Q = randomOrthogonalMatrix(n, 31);
  // An orthogonal matrix is a fixed point (diag(R) = +1).
  Matrix same = Q;
  reorthonormalize(same, n);
  EXPECT_LT(maxAbsDiff(same, Q), 1e-12);

  Matrix P = Q, noise = gaussian(n, 32, 1e-4);
  for (size_t i = 0; i < P.size(); ++i)
    P[i] += noise[i];
  ASSERT_GT(orthogonalityError(P, n), 1e-5);
  Matrix X = P;
  reorthonormalize(X, n);
  EXPECT_LT(orthogonalityError(X, n), 1e-12);
  EXPECT_LT(maxAbsDiff(X, Q), 1e-2) << "should stay close to the original";
  // The official convention: QR of X^T, X^T = Q R, so P = R^T X and
  // P X^T = R^T is lower triangular with a positive diagonal.
  Matrix Rt = mul(P, X, n, /*transB=*/true);
  double upper = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(Rt[i * n + i], 0) << "row " << i;
    for (int64_t j = i + 1; j < n; ++j)
      upper = std::max(upper, std::fabs(Rt[i * n + j]));
  }
  EXPECT_LT(upper, 1e-12);
}

// Procrustes toy problem from the identity with the official options and a
// constant lr 0.05, 300 steps: the loss falls from about 14 to about 1e-12
// (it is at 2e-5 after 100 steps). At lr 0.1 or more the cap alpha ||W||_1 =
// 1 binds early and 5 iterations at n = 8 leave X orthogonal only to 1e-5
// to 1e-3, which then also floors the loss.
TEST(Cayley, LowersProcrustesLoss) {
  const int64_t n = 8;
  Procrustes p = makeProcrustes(n, 41);
  Matrix X(n * n, 0.0), M;
  for (int64_t i = 0; i < n; ++i)
    X[i * n + i] = 1;
  CayleyOptions opts;
  opts.lr = 0.05;
  double before = p.loss(X);
  ASSERT_GT(before, 1.0);
  for (int s = 0; s < 300; ++s)
    cayleyStep(X, p.gradient(X), n, M, opts);
  double after = p.loss(X);
  EXPECT_LT(after, before * 1e-6) << "before " << before << ", after " << after;
  EXPECT_LT(orthogonalityError(X, n), 1e-5);
}

// One small step: L(X_new) - L(X) = <G, X_new - X> + O(alpha^2), and for an
// orthogonal X, X_new - X = -alpha X W + O(alpha^2), so the change is
// -alpha ||W||_F^2 to first order.
TEST(Cayley, SmallStepFollowsFirstOrder) {
  const int64_t n = 8;
  Procrustes p = makeProcrustes(n, 51);
  Matrix X = randomOrthogonalMatrix(n, 52), M;
  Matrix G = p.gradient(X);
  CayleyOptions opts;
  opts.lr = 1e-3;
  Matrix W;
  cayleyGenerator(X, G, n, M, opts, W);
  double before = p.loss(X);
  Matrix Xnew = X;
  double alpha = cayleyStep(Xnew, G, n, M, opts);
  ASSERT_EQ(alpha, 1e-3) << "the cap should not bind for this step";
  double change = p.loss(Xnew) - before;
  double predicted = -alpha * dot(W, W);
  EXPECT_LT(change, 0);
  EXPECT_NEAR(change / predicted, 1.0, 1e-2)
      << "change " << change << ", predicted " << predicted;
}

TEST(Cayley, CosineSchedule) {
  EXPECT_DOUBLE_EQ(cosineSchedule(1.5, 0, 100), 1.5);
  EXPECT_NEAR(cosineSchedule(1.5, 50, 100), 0.75, 1e-15);
  EXPECT_NEAR(cosineSchedule(1.5, 100, 100), 0.0, 1e-15);
  EXPECT_NEAR(cosineSchedule(2.0, 25, 100), 1.0 + std::sqrt(0.5), 1e-15);
  for (int64_t s = 1; s <= 100; ++s)
    EXPECT_LT(cosineSchedule(1.5, s, 100), cosineSchedule(1.5, s - 1, 100));
}

// CayleyProducts::Float takes the double step's formulas with float
// products: the same step to float rounding (alpha to 1e-5 relative, X to
// 1e-5 absolute on entries of about 1/sqrt(n)), with and without momentum,
// and X stays orthogonal to float rounding.
TEST(Cayley, FloatProductsTakeTheSameStep) {
  for (int64_t n : {64, 256})
    for (double beta : {0.0, 0.9}) {
      Matrix X0 = randomOrthogonalMatrix(n, 81), G = gaussian(n, 82);
      Matrix M0 = gaussian(n, 83, 0.1);
      CayleyOptions opts;
      opts.momentum = beta;
      Matrix Xd = X0, Md = M0, Xf = X0, Mf = M0;
      double ad = cayleyStep(Xd, G, n, Md, opts);
      opts.products = CayleyProducts::Float;
      double af = cayleyStep(Xf, G, n, Mf, opts);
      EXPECT_NEAR(af, ad, 1e-5 * ad) << "n " << n << " beta " << beta;
      EXPECT_GT(maxAbsDiff(Xd, X0), 1e-3) << "the step should move X";
      EXPECT_LT(maxAbsDiff(Xf, Xd), 1e-5) << "n " << n << " beta " << beta;
      EXPECT_LT(orthogonalityError(Xf, n), orthogonalityError(Xd, n) + 1e-5);
      if (beta != 0)
        EXPECT_LT(maxAbsDiff(Mf, Md),
                  1e-4 * (1 + maxAbsDiff(Md, Matrix(n * n))));
      else
        EXPECT_EQ(maxAbsDiff(Mf, Matrix(n * n)), 0.0) << "momentum 0: zeros";
    }
}

} // namespace
