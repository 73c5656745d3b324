//===- GPTQ.cpp - GPTQ weight quantization --------------------------------===//

#include "sq/Transforms/GPTQ.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

// LAPACK from OpenBLAS (Fortran interface).
extern "C" void dpotrf_(const char *uplo, const int *n, double *a,
                        const int *lda, int *info);
extern "C" void dpotri_(const char *uplo, const int *n, double *a,
                        const int *lda, int *info);

namespace sq {

void HessianAccumulator::add(const float *rows, int64_t count) {
  if (count <= 0)
    return;
  // H <- H * n / (n + count) + (2 / (n + count)) X^T X
  double total = double(n + count);
  double keep = double(n) / total;
  for (double &v : h)
    v *= keep;
  std::vector<double> x(rows, rows + count * cols);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, count, 2.0 / total,
              x.data(), cols, 1.0, h.data(), cols);
  for (int64_t i = 0; i < cols; ++i) // mirror the upper triangle
    for (int64_t j = 0; j < i; ++j)
      h[i * cols + j] = h[j * cols + i];
  n += count;
}

namespace {

/// In place: the upper Cholesky factor U of A^-1 (A = U^T U ... as torch's
/// cholesky(cholesky_inverse(cholesky(H)), upper=True)). Row-major n x n.
bool inverseCholeskyUpper(std::vector<double> &a, int n) {
  int info = 0;
  // Row-major upper == column-major lower: factor, invert, refactor.
  dpotrf_("L", &n, a.data(), &n, &info);
  if (info)
    return false;
  dpotri_("L", &n, a.data(), &n, &info);
  if (info)
    return false;
  // dpotri filled the lower triangle (column-major) = upper row-major;
  // mirror to a full symmetric matrix.
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j)
      a[i * n + j] = a[j * n + i];
  dpotrf_("L", &n, a.data(), &n, &info);
  if (info)
    return false;
  // Column-major lower L (A^-1 = L L^T) is row-major upper U = L^T with
  // A^-1 = U^T U. Zero the other triangle.
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j)
      a[i * n + j] = 0;
  return true;
}

} // namespace

bool quantizeGPTQ(const float *w0, int64_t rows, int64_t cols,
                  const std::vector<double> &hessian,
                  const numerics::QuantGrid &grid, const GPTQOptions &options,
                  numerics::QuantizedWeight &out, std::string &error) {
  int64_t group = grid.group > 0 ? grid.group : cols;
  if (cols % group) {
    error = "group size " + std::to_string(group) + " does not divide " +
            std::to_string(cols) + " columns";
    return false;
  }
  if (int64_t(hessian.size()) != cols * cols) {
    error =
        "Hessian is not " + std::to_string(cols) + "x" + std::to_string(cols);
    return false;
  }
  // Scales: per row from the whole weight, or static groups from the
  // unmodified weight (what act-order needs; also without it, so that every
  // group's scale is fixed before its columns move).
  if (!numerics::quantizeRTN(w0, rows, cols, grid, options.clipSearch, out,
                             error, options.rowClips))
    return false;
  std::vector<double> H = hessian;
  std::vector<double> W(w0, w0 + rows * cols);
  for (int64_t i = 0; i < cols; ++i)
    if (H[i * cols + i] == 0) { // dead input: never active
      H[i * cols + i] = 1;
      for (int64_t r = 0; r < rows; ++r)
        W[r * cols + i] = 0;
    }
  std::vector<int64_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (options.actOrder)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return H[a * cols + a] > H[b * cols + b];
    });
  // Permuted copies: Hp = H[perm][:, perm], Wp = W[:, perm].
  std::vector<double> Hp(cols * cols), Wp(rows * cols);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j)
      Hp[i * cols + j] = H[perm[i] * cols + perm[j]];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      Wp[r * cols + j] = W[r * cols + perm[j]];
  double mean = 0;
  for (int64_t i = 0; i < cols; ++i)
    mean += Hp[i * cols + i];
  mean /= double(cols);
  for (int64_t i = 0; i < cols; ++i)
    Hp[i * cols + i] += options.damp * mean;
  if (!inverseCholeskyUpper(Hp, static_cast<int>(cols))) {
    error = "the Hessian is not positive definite after dampening (damp = " +
            std::to_string(options.damp) + ")";
    return false;
  }
  const std::vector<double> &U = Hp; // upper Cholesky factor of H^-1
  int64_t block = std::max<int64_t>(1, options.block);
  std::vector<double> err(rows * block);
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    int64_t i2 = std::min(cols, i1 + block), count = i2 - i1;
    for (int64_t i = 0; i < count; ++i) {
      int64_t col = i1 + i, orig = perm[col];
      double d = U[col * cols + col];
      for (int64_t r = 0; r < rows; ++r) {
        int64_t g = r * out.groups + orig / group;
        float scale = out.scales[g], zero = out.zeros[g];
        double wv = Wp[r * cols + col];
        int64_t q = numerics::quantizeValue(float(wv), scale, zero, grid);
        out.values[r * cols + orig] = static_cast<int16_t>(q);
        double deq = (double(q) - zero) * scale;
        double e = (wv - deq) / d;
        err[r * block + i] = e;
        // Within the block: W[:, col+1 : i2] -= e * U[col, col+1 : i2].
        for (int64_t j = col + 1; j < i2; ++j)
          Wp[r * cols + j] -= e * U[col * cols + j];
      }
    }
    // Lazy batch: W[:, i2:] -= Err[:, :count] * U[i1:i2, i2:].
    if (i2 < cols)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2,
                  count, -1.0, err.data(), block, U.data() + i1 * cols + i2,
                  cols, 1.0, Wp.data() + i2, cols);
  }
  return true;
}

} // namespace sq
