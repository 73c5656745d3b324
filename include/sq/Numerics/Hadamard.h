//===- Hadamard.h - Hadamard matrices and the fast transform -----*- C++
//-*-===//
//
// Hadamard matrices of order n = m * 2^k (H * H^T = n * I, entries +-1) and
// the orthonormal transform x -> x * (H / sqrt(n)) in O(n log n + n m).
// Base orders m come from published constructions:
//   Sylvester (m = 1, and doubling), Paley I (q + 1 for a prime q = 3 mod 4),
//   Paley II (2 (q + 1) for q = 1 mod 4, over GF(q), q prime or 25).
// Plain C++: no MLIR or LLVM header.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_NUMERICS_HADAMARD_H
#define SQ_NUMERICS_HADAMARD_H

#include <cstdint>
#include <vector>

namespace sq {
namespace numerics {

/// The base orders with a construction here.
const std::vector<int> &hadamardBaseOrders();

/// A Hadamard matrix of order `m` (row-major, +-1), or an empty vector when
/// no construction for `m` is implemented.
std::vector<int8_t> hadamardMatrix(int m);

/// Splits n = m * 2^k with m the largest base order dividing n such that
/// n / m is a power of two. Returns false when there is none.
bool splitHadamardSize(int64_t n, int &m, int64_t &pow2);

/// x <- x * (H_n / sqrt(n)) in place for one vector of length n = m * 2^k,
/// with H_n = H_m (kron) H_{2^k} (Sylvester). Returns false when n has no
/// supported split.
bool hadamardTransformInPlace(float *x, int64_t n);

/// hadamardTransformInPlace on each of the `width` columns of the row-major
/// n x width matrix x (x <- (H_n / sqrt(n))^T x), with whole rows as the
/// butterflies' operands (contiguous, vectorized). Same sizes as above.
bool hadamardTransformColumns(float *x, int64_t n, int64_t width);

/// The transform of sq.hadamard for any size: x <- x * (Q (kron) H_{2^k}) /
/// sqrt(2^k) where n = m * 2^k with 2^k the largest power of two dividing
/// n. it is the Hadamard transform when n has a supported split
/// (hadamardTransformInPlace), otherwise a random orthogonal m x m matrix
/// drawn from `seed` (Gram-Schmidt on seeded Gaussians). Returns true when
/// the transform is a true Hadamard transform, false for the fallback.
bool orthogonalTransformInPlace(float *x, int64_t n, uint64_t seed);

/// x <- x * T^T where T is the matrix of orthogonalTransformInPlace(., n,
/// seed): its inverse, and its vector-Jacobian product. Same return value.
bool orthogonalTransformTransposeInPlace(float *x, int64_t n, uint64_t seed);

/// Whether x T (T of orthogonalTransformInPlace) is faster as a dense
/// product: the fast transform's m x m factor runs over rows of length 2^k,
/// which do not vectorize when 2^k is small (R4 of the shared byte model is
/// 172 * 2).
bool preferDenseTransform(int64_t n);

/// The n x n matrix T of orthogonalTransformInPlace (x -> x T), row-major,
/// built once per (n, seed) from the transforms of the unit vectors and
/// kept for the process. Thread-safe.
const std::vector<float> &denseTransform(int64_t n, uint64_t seed);

/// The seeded random orthogonal m x m matrix of the fallback (row-major).
std::vector<double> randomOrthogonalMatrix(int64_t m, uint64_t seed);

} // namespace numerics
} // namespace sq

#endif // SQ_NUMERICS_HADAMARD_H
