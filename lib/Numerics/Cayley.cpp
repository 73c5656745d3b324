//===- Cayley.cpp - Cayley SGD on the Stiefel manifold --------------------===//

#include "sq/Numerics/Cayley.h"

#include "sq/Numerics/Buffer.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/ThreadPool.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

// LAPACK from OpenBLAS (Fortran interface).
extern "C" void dgeqrf_(const int *m, const int *n, double *a, const int *lda,
                        double *tau, double *work, const int *lwork, int *info);
extern "C" void dorgqr_(const int *m, const int *n, const int *k, double *a,
                        const int *lda, const double *tau, double *work,
                        const int *lwork, int *info);

namespace sq {
namespace numerics {

namespace {

enum class Op { N, T };

/// C <- alpha op(A) op(B) + beta C for n x n row-major matrices.
void gemm(Op a, Op b, int64_t n, double alpha, const double *A, const double *B,
          double beta, double *C) {
  cblas_dgemm(CblasRowMajor, a == Op::T ? CblasTrans : CblasNoTrans,
              b == Op::T ? CblasTrans : CblasNoTrans, n, n, n, alpha, A, n, B,
              n, beta, C, n);
}
/// The float products: gemmF32 (our AVX-512F kernel where the CPU has it,
/// thread-count independent; cblas_sgemm elsewhere).
void gemm(Op a, Op b, int64_t n, float alpha, const float *A, const float *B,
          float beta, float *C) {
  gemmF32(a == Op::T ? Transpose::Yes : Transpose::No,
          b == Op::T ? Transpose::Yes : Transpose::No, n, n, n, alpha, A, n, B,
          n, beta, C, n);
}

// The element-wise work of a step (n^2 per loop, against n^3 per product)
// runs on the pool too: at n = 4096 it was 6 % of a 7B-layer calibration
// step on one thread. Every element is computed as before, so results do
// not depend on the threads.

/// fn(i0, i1, j0, j1) over the 64 x 64 tiles of an n x n matrix, tile rows
/// in parallel (transposed reads stay within a few pages per tile).
template <typename F> void forTiles(int64_t n, F &&fn) {
  constexpr int64_t kT = 64;
  ThreadPool::global().parallelFor(
      (n + kT - 1) / kT, [&](int64_t b0, int64_t b1) {
        for (int64_t i0 = b0 * kT; i0 < std::min(n, b1 * kT); i0 += kT)
          for (int64_t j0 = 0; j0 < n; j0 += kT)
            fn(i0, std::min(n, i0 + kT), j0, std::min(n, j0 + kT));
      });
}

/// fn(i) for each row i of n, in parallel.
template <typename F> void forRows(int64_t n, F &&fn) {
  ThreadPool::global().parallelFor(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      fn(i);
  });
}

template <typename S, typename D> void transpose(const S *A, int64_t n, D *T) {
  forTiles(n, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = i0; i < i1; ++i)
        T[j * n + i] = A[i * n + j];
  });
}

/// U = X with rows divided by (norm + eps): the official `unit(p, dim=1)`.
template <typename T>
void unitRows(const double *X, int64_t n, double eps, T *U) {
  forRows(n, [&](int64_t i) {
    const double *row = X + i * n;
    double s = 0;
    for (int64_t k = 0; k < n; ++k)
      s += row[k] * row[k];
    double inv = 1.0 / (std::sqrt(s) + eps);
    for (int64_t k = 0; k < n; ++k)
      U[i * n + k] = T(row[k] * inv);
  });
}

/// V = beta M - G^T (M empty or mis-sized: zeros). V may be M itself.
template <typename T>
void tangent(const std::vector<double> &G, int64_t n,
             const std::vector<double> &M, double beta, T *V) {
  bool haveM = beta != 0 && M.size() == size_t(n * n);
  forTiles(n, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        double m = haveM ? beta * M[i * n + j] : 0.0;
        V[i * n + j] = T(m - G[j * n + i]);
      }
  });
}

/// W = W^ - W^^T with W^ = V U - 1/2 U^T (U (V U)); t1, t2 are n x n scratch.
template <typename T>
void generator(const T *U, const T *V, int64_t n, T *W, T *t1, T *t2) {
  gemm(Op::N, Op::N, n, 1.0, V, U, 0.0, t1);  // MX = V U
  gemm(Op::N, Op::N, n, 1.0, U, t1, 0.0, t2); // XMX = U MX
  gemm(Op::T, Op::N, n, 1.0, U, t2, 0.0, W);  // XXMX = U^T XMX
  forRows(n, [&](int64_t i) {                 // W^ = MX - XXMX / 2
    for (int64_t j = i * n; j < (i + 1) * n; ++j)
      t1[j] -= T(0.5) * W[j];
  });
  forTiles(n, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j)
        W[i * n + j] = t1[i * n + j] - t1[j * n + i];
  });
}

/// max over columns of sum_i |W_ij| (torch: abs, sum over dim 0, max).
template <typename T> double normOne(const T *W, int64_t n) {
  std::vector<double> col(n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      col[j] += std::fabs(W[i * n + j]);
  double m = 0;
  for (double c : col)
    m = std::max(m, c);
  return m;
}

/// cayleyStep with the n x n products in float (see CayleyProducts): the
/// same formulas on float copies of U, V and W; X is written back in double.
double cayleyStepFloat(std::vector<double> &X, const std::vector<double> &G,
                       int64_t n, std::vector<double> &momentum,
                       const CayleyOptions &opts) {
  size_t nn = size_t(n * n);
  // Every element is written before it is read; FloatBuffer reuses the
  // previous step's mappings (no 5 x 64 MB of fresh zeroed pages a step at
  // n = 4096).
  FloatBuffer U(nn), V(nn), W(nn), t1(nn), t2(nn);
  for (FloatBuffer *b : {&U, &V, &W, &t1, &t2})
    if (b->size() != int64_t(nn)) {
      std::fprintf(stderr, "sq: out of memory in the Cayley step (n = %lld)\n",
                   (long long)n);
      std::abort();
    }
  unitRows(X.data(), n, opts.eps, U.data());
  tangent(G, n, momentum, opts.momentum, V.data());
  generator(U.data(), V.data(), n, W.data(), t1.data(), t2.data());
  double alpha =
      std::min(2.0 * opts.q / (normOne(W.data(), n) + opts.eps), opts.lr);
  float a = float(alpha);
  float *Xt = t1.data(), *Y = t2.data(), *Z = U.data();
  transpose(U.data(), n, Xt);
  forRows(n, [&](int64_t i) {
    for (int64_t j = i * n; j < (i + 1) * n; ++j)
      Y[j] = Xt[j] + a * V[j];
  });
  for (int it = 0; it < opts.iterations; ++it) {
    forRows(n, [&](int64_t i) {
      for (int64_t j = i * n; j < (i + 1) * n; ++j) {
        Z[j] = 0.5f * (Xt[j] + Y[j]);
        Y[j] = Xt[j];
      }
    });
    gemm(Op::N, Op::N, n, a, W.data(), Z, 1.0f, Y);
  }
  transpose(Y, n, X.data());
  if (opts.momentum != 0) { // M <- W U^T, read by the next step's V
    gemm(Op::N, Op::N, n, 1.0f, W.data(), Xt, 0.0f, V.data());
    std::copy(V.begin(), V.end(), momentum.begin());
  } else { // never read with beta = 0: no product for it
    std::fill(momentum.begin(), momentum.end(), 0.0);
  }
  return alpha;
}

} // namespace

void cayleyGenerator(const std::vector<double> &X, const std::vector<double> &G,
                     int64_t n, const std::vector<double> &momentum,
                     const CayleyOptions &opts, std::vector<double> &W) {
  size_t nn = size_t(n * n);
  std::vector<double> U(nn), V(nn), t1(nn), t2(nn);
  W.assign(nn, 0.0);
  unitRows(X.data(), n, opts.eps, U.data());
  tangent(G, n, momentum, opts.momentum, V.data());
  generator(U.data(), V.data(), n, W.data(), t1.data(), t2.data());
}

double cayleyStep(std::vector<double> &X, const std::vector<double> &G,
                  int64_t n, std::vector<double> &momentum,
                  const CayleyOptions &opts) {
  size_t nn = size_t(n * n);
  if (momentum.size() != nn)
    momentum.assign(nn, 0.0);
  if (opts.products == CayleyProducts::Float)
    return cayleyStepFloat(X, G, n, momentum, opts);
  // Buffers are reused so that a step needs three n x n scratch matrices
  // besides the caller's three (800 MB at n = 4096): U lives in X, V in the
  // momentum buffer.
  double *U = X.data(), *V = momentum.data();
  unitRows(U, n, opts.eps, U);
  tangent(G, n, momentum, opts.momentum, V);
  std::vector<double> W(nn), t1(nn), t2(nn);
  generator(U, V, n, W.data(), t1.data(), t2.data());

  double t = 2.0 * opts.q / (normOne(W.data(), n) + opts.eps);
  double alpha = std::min(t, opts.lr);

  // Cayley_loop(U^T, W, V, alpha): Y = Xt + alpha V, then
  // Y = Xt + alpha W (0.5 (Xt + Y)), on Xt = U^T.
  double *Xt = t1.data(), *Y = t2.data();
  transpose(U, n, Xt);
  for (size_t i = 0; i < nn; ++i)
    Y[i] = Xt[i] + alpha * V[i];
  double *Z = U; // U is no longer needed apart from Xt = U^T
  for (int it = 0; it < opts.iterations; ++it) {
    for (size_t i = 0; i < nn; ++i)
      Z[i] = 0.5 * (Xt[i] + Y[i]);
    std::copy(Xt, Xt + nn, Y);
    gemm(Op::N, Op::N, n, alpha, W.data(), Z, 1.0, Y);
  }
  transpose(Y, n, X.data());                                      // P_new = Y^T
  gemm(Op::N, Op::N, n, 1.0, W.data(), Xt, 0.0, momentum.data()); // W U^T
  return alpha;
}

void reorthonormalize(std::vector<double> &X, int64_t n) {
  if (n <= 0)
    return;
  // The row-major X read column-major is X^T: factor it in place.
  int N = int(n), info = 0, lwork = -1;
  std::vector<double> tau(n);
  double query = 0;
  dgeqrf_(&N, &N, X.data(), &N, tau.data(), &query, &lwork, &info);
  lwork = std::max(int(query), N);
  std::vector<double> work(lwork);
  dgeqrf_(&N, &N, X.data(), &N, tau.data(), work.data(), &lwork, &info);
  // sign(diag R); R_ii is element (i, i) either way.
  std::vector<double> sign(n);
  for (int64_t i = 0; i < n; ++i)
    sign[i] = X[i * n + i] < 0 ? -1.0 : 1.0;
  lwork = -1;
  dorgqr_(&N, &N, &N, X.data(), &N, tau.data(), &query, &lwork, &info);
  lwork = std::max(int(query), N);
  work.resize(lwork);
  dorgqr_(&N, &N, &N, X.data(), &N, tau.data(), work.data(), &lwork, &info);
  // The buffer now holds Q column-major, i.e. Q^T row-major: row i of the
  // result is column i of Q, times sign(R_ii).
  for (int64_t i = 0; i < n; ++i)
    if (sign[i] < 0)
      for (int64_t k = 0; k < n; ++k)
        X[i * n + k] = -X[i * n + k];
}

double orthogonalityError(const std::vector<double> &X, int64_t n) {
  std::vector<double> P(size_t(n * n));
  gemm(Op::N, Op::T, n, 1.0, X.data(), X.data(), 0.0, P.data());
  double e = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      e = std::max(e, std::fabs(P[i * n + j] - (i == j ? 1.0 : 0.0)));
  return e;
}

double cosineSchedule(double base, int64_t step, int64_t total) {
  if (total <= 0)
    return base;
  return base * 0.5 *
         (1.0 + std::cos(std::acos(-1.0) * double(step) / double(total)));
}

} // namespace numerics
} // namespace sq
