//===- Hadamard.cpp - Hadamard matrices and the fast transform ------------===//

#include "sq/Numerics/Hadamard.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <tuple>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sq {
namespace numerics {

namespace {

/// A finite field GF(q), q = p or p^2, with elements numbered 0..q-1 (for
/// p^2: a + b*alpha with alpha^2 = r, r a non-residue mod p).
struct Field {
  int p, q, r = 0;
  int add(int x, int y) const {
    if (q == p)
      return (x + y) % p;
    return ((x % p + y % p) % p) + p * ((x / p + y / p) % p);
  }
  int neg(int x) const {
    if (q == p)
      return (p - x) % p;
    return ((p - x % p) % p) + p * ((p - x / p) % p);
  }
  int mul(int x, int y) const {
    if (q == p)
      return x * y % p;
    int a = x % p, b = x / p, c = y % p, d = y / p;
    return ((a * c + b * d * r) % p) + p * ((a * d + b * c) % p);
  }
  /// Quadratic character: 0 for 0, 1 for non-zero squares, -1 otherwise.
  std::vector<int> character() const {
    std::vector<int> chi(q, -1);
    chi[0] = 0;
    for (int x = 1; x < q; ++x)
      chi[mul(x, x)] = 1;
    return chi;
  }
};

bool isPrime(int n) {
  if (n < 2)
    return false;
  for (int d = 2; d * d <= n; ++d)
    if (n % d == 0)
      return false;
  return true;
}

/// GF(q) for a prime q, or q = p^2 with a non-residue r mod p.
bool makeField(int q, Field &f) {
  if (isPrime(q)) {
    f = {q, q, 0};
    return true;
  }
  int p = static_cast<int>(std::lround(std::sqrt(double(q))));
  if (p * p != q || !isPrime(p) || p == 2)
    return false;
  f = {p, q, 0};
  for (int r = 2; r < p; ++r) {
    bool square = false;
    for (int x = 1; x < p; ++x)
      square |= x * x % p == r;
    if (!square) {
      f.r = r;
      return true;
    }
  }
  return false;
}

/// The Jacobsthal matrix Q[i][j] = chi(x_j - x_i) of GF(q).
std::vector<int> jacobsthal(const Field &f) {
  std::vector<int> chi = f.character(), Q(f.q * f.q);
  for (int i = 0; i < f.q; ++i)
    for (int j = 0; j < f.q; ++j)
      Q[i * f.q + j] = chi[f.add(j, f.neg(i))];
  return Q;
}

/// Paley I: q = 3 mod 4, order q + 1: H = I + S, S = [[0, 1^T], [-1, Q]].
std::vector<int8_t> paleyI(int q) {
  Field f;
  if (q % 4 != 3 || !makeField(q, f))
    return {};
  std::vector<int> Q = jacobsthal(f);
  int n = q + 1;
  std::vector<int8_t> H(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      int s =
          i == 0 ? (j == 0 ? 0 : 1) : (j == 0 ? -1 : Q[(i - 1) * q + (j - 1)]);
      H[i * n + j] = static_cast<int8_t>(s + (i == j ? 1 : 0));
    }
  return H;
}

/// Paley II: q = 1 mod 4, order 2 (q + 1): in C = [[0, 1^T], [1, Q]],
/// replace 0 by [[1, -1], [-1, -1]] and +-1 by +-[[1, 1], [1, -1]].
std::vector<int8_t> paleyII(int q) {
  Field f;
  if (q % 4 != 1 || !makeField(q, f))
    return {};
  std::vector<int> Q = jacobsthal(f);
  int c = q + 1, n = 2 * c;
  std::vector<int8_t> H(n * n);
  for (int i = 0; i < c; ++i)
    for (int j = 0; j < c; ++j) {
      int e = (i == 0 || j == 0) ? (i == j ? 0 : 1) : Q[(i - 1) * q + (j - 1)];
      static const int zero[2][2] = {{1, -1}, {-1, -1}},
                       one[2][2] = {{1, 1}, {1, -1}};
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          H[(2 * i + a) * n + 2 * j + b] =
              static_cast<int8_t>(e == 0 ? zero[a][b] : e * one[a][b]);
    }
  return H;
}

/// H (kron) [[1, 1], [1, -1]].
std::vector<int8_t> doubled(const std::vector<int8_t> &H, int m) {
  int n = 2 * m;
  std::vector<int8_t> D(n * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j)
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          D[(2 * i + a) * n + 2 * j + b] =
              static_cast<int8_t>(H[i * m + j] * (a && b ? -1 : 1));
  return D;
}

/// Williamson quadruples: first rows of four symmetric circulant +-1
/// matrices A, B, C, D of order w with A^2 + B^2 + C^2 + D^2 = 4w I.
/// w = 43: M. Hall Jr., Combinatorial Theory, 2nd ed. (1986), table of
/// Williamson matrices (order 172). w = 39: S. London, Constructing new Turyn
/// type sequences, T-sequences and Hadamard matrices, PhD thesis, University
/// of Illinois at Chicago (2013) (order 156). The unit tests check the
/// periodic autocorrelation condition and H H^T = n I.
const char *williamsonRows(int w, int which) {
  static const char *w39[4] = {"+++--+-+-----+--++----++--+-----+-+--++",
                               "+++--++-+---+-+--+----+--+-+---+-++--++",
                               "++++---+--++----+-+--+-+----++--+---+++",
                               "+---++-+-+-----+++-++-+++-----+-+-++---"};
  static const char *w43[4] = {"++---++++-+--+--++--------++--+--+-++++---+",
                               "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
                               "++-++++++----+-+--++-++-++--+-+----++++++-+",
                               "+---++--++++-+-+++-++--++-+++-+-++++--++---"};
  if (w == 39)
    return w39[which];
  if (w == 43)
    return w43[which];
  return nullptr;
}

/// The Williamson array [[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B],
/// [-D, -C, B, A]] over the circulants of williamsonRows(w): a Hadamard
/// matrix of order 4w (Williamson 1944).
std::vector<int8_t> williamson(int w) {
  static const int sign[4][4] = {
      {1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  static const int block[4][4] = {
      {0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  int n = 4 * w;
  std::vector<int8_t> H(static_cast<size_t>(n) * n);
  for (int bi = 0; bi < 4; ++bi)
    for (int bj = 0; bj < 4; ++bj) {
      const char *row = williamsonRows(w, block[bi][bj]);
      for (int i = 0; i < w; ++i)
        for (int j = 0; j < w; ++j) {
          int v = row[((j - i) % w + w) % w] == '+' ? 1 : -1;
          H[(bi * w + i) * n + bj * w + j] =
              static_cast<int8_t>(v * sign[bi][bj]);
        }
    }
  return H;
}

} // namespace

#if defined(__x86_64__)
/// AVX-512F and FMA (the AVX-512 butterflies and row sums).
static bool haveAVX512() {
  static const bool avx512 = __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("fma") &&
                             __builtin_cpu_supports("avx2");
  return avx512;
}

/// One butterfly stage of span `len` < 16 inside each 16-float vector: lane
/// j of a pair (j, j + len) becomes v[j] + v[j + len], lane j + len becomes
/// v[j] - v[j + len] (the partner's value comes from a permute; an IEEE sum
/// does not depend on the order of its operands, so these are the bits of
/// the scalar loop).
__attribute__((target("avx512f"))) inline __m512
butterflyInVector(__m512 v, __m512i partner, __mmask16 upper) {
  __m512 w = _mm512_permutexvar_ps(partner, v);
  // Lower lanes: v + w (= v[j] + v[j + len]); upper lanes: w - v.
  return _mm512_mask_sub_ps(_mm512_add_ps(v, w), upper, w, v);
}

/// sylvesterButterflies for p a multiple of 16: stages 1, 2, 4 and 8 inside
/// each vector, then whole vectors; the same operations per element.
__attribute__((target("avx512f"))) void
sylvesterButterfliesAVX512(float *x, int64_t m, int64_t p) {
  __m512i partner[4];
  __mmask16 upper[4];
  for (int s = 0; s < 4; ++s) {
    alignas(64) int idx[16];
    int mask = 0;
    for (int j = 0; j < 16; ++j) {
      idx[j] = j ^ (1 << s);
      if (j & (1 << s))
        mask |= 1 << j;
    }
    partner[s] = _mm512_load_si512(idx);
    upper[s] = __mmask16(mask);
  }
  for (int64_t a = 0; a < m; ++a) {
    float *v = x + a * p;
    for (int64_t i = 0; i < p; i += 16) {
      __m512 r = _mm512_loadu_ps(v + i);
      for (int s = 0; s < 4; ++s)
        r = butterflyInVector(r, partner[s], upper[s]);
      _mm512_storeu_ps(v + i, r);
    }
    for (int64_t len = 16; len < p; len <<= 1)
      for (int64_t i = 0; i < p; i += 2 * len)
        for (int64_t j = i; j < i + len; j += 16) {
          __m512 u = _mm512_loadu_ps(v + j), w = _mm512_loadu_ps(v + j + len);
          _mm512_storeu_ps(v + j, _mm512_add_ps(u, w));
          _mm512_storeu_ps(v + j + len, _mm512_sub_ps(u, w));
        }
  }
}
#endif

/// Unnormalized Sylvester butterflies over the 2^k factor: each of the m
/// blocks x[a*p .. a*p+p) becomes itself times H_p.
static void sylvesterButterflies(float *x, int64_t m, int64_t p) {
#if defined(__x86_64__)
  if (p % 16 == 0 && haveAVX512())
    return sylvesterButterfliesAVX512(x, m, p);
#endif
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

const std::vector<int> &hadamardBaseOrders() {
  static const std::vector<int> orders = {1,  12, 20,  28,  36,  40, 44,
                                          52, 60, 108, 140, 156, 172};
  return orders;
}

std::vector<int8_t> hadamardMatrix(int m) {
  switch (m) {
  case 1:
    return {1};
  case 12:
    return paleyI(11);
  case 20:
    return paleyI(19);
  case 28:
    return paleyII(13);
  case 36:
    return paleyII(17);
  case 40:
    return doubled(paleyI(19), 20);
  case 44:
    return paleyI(43);
  case 52:
    return paleyII(25); // over GF(25)
  case 60:
    return paleyI(59);
  case 108:
    return paleyI(107);
  case 140:
    return paleyI(139);
  case 156:
    return williamson(39);
  case 172:
    return williamson(43);
  default:
    return {};
  }
}

bool splitHadamardSize(int64_t n, int &m, int64_t &pow2) {
  const std::vector<int> &orders = hadamardBaseOrders();
  for (auto it = orders.rbegin(); it != orders.rend(); ++it) {
    if (n % *it)
      continue;
    int64_t rest = n / *it;
    if (rest > 0 && (rest & (rest - 1)) == 0) {
      m = *it;
      pow2 = rest;
      return true;
    }
  }
  return false;
}

namespace {

#if defined(__x86_64__)
bool haveAVX2() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
}
#endif

/// out[a * p + b] = sum over c in order of sign[a * m + c] * src[c * p + b]
/// (sign +-1: the products are exact, so each step rounds as the add or
/// subtract of +-src would), from 0. Blocks of 4 outputs x 16 columns keep
/// their sums in registers while the m input rows stream past once.
template <int Dummy>
inline void signedRowSumsImpl(const float *src, const float *sign, int64_t m,
                              int64_t p, float *out) {
  for (int64_t a0 = 0; a0 < m; a0 += 4) {
    int64_t na = std::min<int64_t>(4, m - a0);
    const float *s0 = sign + a0 * m;
    for (int64_t b0 = 0; b0 < p; b0 += 16) {
      int64_t nb = std::min<int64_t>(16, p - b0);
      if (na == 4 && nb == 16) {
        float acc[4][16] = {};
        for (int64_t c = 0; c < m; ++c) {
          const float *row = src + c * p + b0;
          float w0 = s0[c], w1 = s0[m + c], w2 = s0[2 * m + c],
                w3 = s0[3 * m + c];
          for (int b = 0; b < 16; ++b) {
            acc[0][b] += w0 * row[b];
            acc[1][b] += w1 * row[b];
            acc[2][b] += w2 * row[b];
            acc[3][b] += w3 * row[b];
          }
        }
        for (int k = 0; k < 4; ++k)
          for (int b = 0; b < 16; ++b)
            out[(a0 + k) * p + b0 + b] = acc[k][b];
        continue;
      }
      for (int64_t k = 0; k < na; ++k)
        for (int64_t b = b0; b < b0 + nb; ++b) {
          float acc = 0.0f;
          for (int64_t c = 0; c < m; ++c)
            acc += s0[k * m + c] * src[c * p + b];
          out[(a0 + k) * p + b] = acc;
        }
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void signedRowSumsAVX2(const float *src,
                                                       const float *sign,
                                                       int64_t m, int64_t p,
                                                       float *out) {
  signedRowSumsImpl<1>(src, sign, m, p, out);
}
#endif

#if defined(__x86_64__)

/// signedRowSumsImpl with fused multiply-adds: a product by +-1 is exact,
/// so fma(sign, x, acc) rounds as acc +- x does (the same bits). Blocks of 4
/// outputs x 64 columns (16 registers), then 4 x 16, then the scalar tail.
__attribute__((target("avx512f,avx2,fma"))) void
signedRowSumsAVX512(const float *src, const float *sign, int64_t m, int64_t p,
                    float *out) {
  int64_t a0 = 0;
  for (; a0 + 4 <= m; a0 += 4) {
    const float *s0 = sign + a0 * m;
    int64_t b0 = 0;
    for (; b0 + 64 <= p; b0 += 64) {
      __m512 acc[4][4];
      for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 4; ++j)
          acc[k][j] = _mm512_setzero_ps();
      for (int64_t c = 0; c < m; ++c) {
        const float *row = src + c * p + b0;
        __m512 r[4];
        for (int j = 0; j < 4; ++j)
          r[j] = _mm512_loadu_ps(row + 16 * j);
        for (int k = 0; k < 4; ++k) {
          __m512 w = _mm512_set1_ps(s0[k * m + c]);
          for (int j = 0; j < 4; ++j)
            acc[k][j] = _mm512_fmadd_ps(w, r[j], acc[k][j]);
        }
      }
      for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 4; ++j)
          _mm512_storeu_ps(out + (a0 + k) * p + b0 + 16 * j, acc[k][j]);
    }
    for (; b0 + 16 <= p; b0 += 16) {
      __m512 acc[4];
      for (int k = 0; k < 4; ++k)
        acc[k] = _mm512_setzero_ps();
      for (int64_t c = 0; c < m; ++c) {
        __m512 r = _mm512_loadu_ps(src + c * p + b0);
        for (int k = 0; k < 4; ++k)
          acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(s0[k * m + c]), r, acc[k]);
      }
      for (int k = 0; k < 4; ++k)
        _mm512_storeu_ps(out + (a0 + k) * p + b0, acc[k]);
    }
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t b = b0; b < p; ++b) {
        float acc = 0.0f;
        for (int64_t c = 0; c < m; ++c)
          acc = std::fma(s0[k * m + c], src[c * p + b], acc);
        out[(a0 + k) * p + b] = acc;
      }
  }
  for (; a0 < m; ++a0)
    for (int64_t b = 0; b < p; ++b) {
      float acc = 0.0f;
      for (int64_t c = 0; c < m; ++c)
        acc = std::fma(sign[a0 * m + c], src[c * p + b], acc);
      out[a0 * p + b] = acc;
    }
}
#endif

void signedRowSums(const float *src, const float *sign, int64_t m, int64_t p,
                   float *out) {
#if defined(__x86_64__)
  if (haveAVX512())
    return signedRowSumsAVX512(src, sign, m, p, out);
  if (haveAVX2())
    return signedRowSumsAVX2(src, sign, m, p, out);
#endif
  signedRowSumsImpl<0>(src, sign, m, p, out);
}

/// out[a * p + b] = float(sum over c in order of double(src[c * p + b]) *
/// w[a * m + c]) * scale, the sums in double from 0 (multiply, then add: no
/// FMA target, so the compiler cannot contract them). Blocks of 4 outputs x
/// 8 columns in registers.
template <int Dummy>
inline void weightedRowSumsImpl(const float *src, const double *w, int64_t m,
                                int64_t p, float scale, float *out) {
  for (int64_t a0 = 0; a0 < m; a0 += 4) {
    int64_t na = std::min<int64_t>(4, m - a0);
    const double *w0 = w + a0 * m;
    for (int64_t b0 = 0; b0 < p; b0 += 8) {
      int64_t nb = std::min<int64_t>(8, p - b0);
      if (na == 4 && nb == 8) {
        double acc[4][8] = {};
        for (int64_t c = 0; c < m; ++c) {
          const float *row = src + c * p + b0;
          double q0 = w0[c], q1 = w0[m + c], q2 = w0[2 * m + c],
                 q3 = w0[3 * m + c];
          for (int b = 0; b < 8; ++b) {
            double v = row[b];
            acc[0][b] += v * q0;
            acc[1][b] += v * q1;
            acc[2][b] += v * q2;
            acc[3][b] += v * q3;
          }
        }
        for (int k = 0; k < 4; ++k)
          for (int b = 0; b < 8; ++b)
            out[(a0 + k) * p + b0 + b] = static_cast<float>(acc[k][b]) * scale;
        continue;
      }
      for (int64_t k = 0; k < na; ++k)
        for (int64_t b = b0; b < b0 + nb; ++b) {
          double acc = 0;
          for (int64_t c = 0; c < m; ++c)
            acc += double(src[c * p + b]) * w0[k * m + c];
          out[(a0 + k) * p + b] = static_cast<float>(acc) * scale;
        }
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void
weightedRowSumsAVX2(const float *src, const double *w, int64_t m, int64_t p,
                    float scale, float *out) {
  weightedRowSumsImpl<1>(src, w, m, p, scale, out);
}
#endif

void weightedRowSums(const float *src, const double *w, int64_t m, int64_t p,
                     float scale, float *out) {
#if defined(__x86_64__)
  if (haveAVX2())
    return weightedRowSumsAVX2(src, w, m, p, scale, out);
#endif
  weightedRowSumsImpl<0>(src, w, m, p, scale, out);
}

} // namespace

/// x <- x * (H_n / sqrt(n)), or x * (H_n / sqrt(n))^T when `transpose`.
/// H_n = H_m (kron) H_p with H_p symmetric, so only the dense factor H_m is
/// applied transposed.
static bool hadamardTransform(float *x, int64_t n, bool transpose) {
  int m;
  int64_t p;
  if (!splitHadamardSize(n, m, p))
    return false;
  // Index i = a * p + b (a < m, b < p); H_n = H_m (kron) H_p.
  // 1. Sylvester butterflies over b for every a.
  sylvesterButterflies(x, m, p);
  // 2. The dense m x m factor across a: row a of the result (length p) is
  // sum_c H[c][a] * row c (H[a][c] when transposed), each element summed in
  // the order of c from 0.
  if (m > 1) {
    // The signs of output a, contiguous over c.
    static thread_local std::map<std::pair<int, bool>, std::vector<float>>
        cache;
    static thread_local std::vector<float> scratch;
    std::vector<float> &sign = cache[{m, transpose}];
    if (sign.empty()) {
      std::vector<int8_t> H = hadamardMatrix(m);
      sign.resize(size_t(m) * m);
      for (int a = 0; a < m; ++a)
        for (int c = 0; c < m; ++c)
          sign[a * m + c] =
              (transpose ? H[a * m + c] : H[c * m + a]) > 0 ? 1.0f : -1.0f;
    }
    scratch.assign(x, x + n);
    signedRowSums(scratch.data(), sign.data(), m, p, x);
  }
  float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int64_t i = 0; i < n; ++i)
    x[i] *= scale;
  return true;
}

bool hadamardTransformInPlace(float *x, int64_t n) {
  return hadamardTransform(x, n, /*transpose=*/false);
}

bool hadamardTransformColumns(float *x, int64_t n, int64_t width) {
  int m;
  int64_t p;
  if (!splitHadamardSize(n, m, p))
    return false;
  // Row i = a * p + b. 1. Butterflies over b, on whole rows.
  for (int64_t a = 0; a < m; ++a)
    for (int64_t len = 1; len < p; len <<= 1)
      for (int64_t i = 0; i < p; i += 2 * len)
        for (int64_t j = i; j < i + len; ++j) {
          float *u = x + (a * p + j) * width, *v = u + len * width;
          for (int64_t c = 0; c < width; ++c) {
            float s = u[c], d = v[c];
            u[c] = s + d;
            v[c] = s - d;
          }
        }
  // 2. The dense m x m factor across a, for every b.
  if (m > 1) {
    std::vector<int8_t> H = hadamardMatrix(m);
    std::vector<float> rows(static_cast<size_t>(m) * width);
    for (int64_t b = 0; b < p; ++b) {
      for (int c = 0; c < m; ++c)
        std::copy(x + (c * p + b) * width, x + (c * p + b + 1) * width,
                  rows.begin() + c * width);
      for (int a = 0; a < m; ++a) {
        float *out = x + (a * p + b) * width;
        std::fill(out, out + width, 0.0f);
        for (int c = 0; c < m; ++c) {
          const float *row = rows.data() + c * width;
          if (H[c * m + a] > 0)
            for (int64_t k = 0; k < width; ++k)
              out[k] += row[k];
          else
            for (int64_t k = 0; k < width; ++k)
              out[k] -= row[k];
        }
      }
    }
  }
  float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int64_t i = 0; i < n * width; ++i)
    x[i] *= scale;
  return true;
}

std::vector<double> randomOrthogonalMatrix(int64_t m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist;
  std::vector<double> q(m * m);
  for (double &v : q)
    v = dist(rng);
  for (int64_t i = 0; i < m; ++i)
    for (int pass = 0; pass < 2; ++pass) { // Gram-Schmidt, twice
      for (int64_t j = 0; j < i; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < m; ++k)
          dot += q[i * m + k] * q[j * m + k];
        for (int64_t k = 0; k < m; ++k)
          q[i * m + k] -= dot * q[j * m + k];
      }
      double norm = 0;
      for (int64_t k = 0; k < m; ++k)
        norm += q[i * m + k] * q[i * m + k];
      norm = std::sqrt(norm);
      for (int64_t k = 0; k < m; ++k)
        q[i * m + k] /= norm;
    }
  return q;
}

/// orthogonalTransformInPlace, or its transpose: the Sylvester factor is
/// symmetric and commutes with the m x m factor, which alone is transposed.
static bool orthogonalTransform(float *x, int64_t n, uint64_t seed,
                                bool transpose) {
  if (hadamardTransform(x, n, transpose))
    return true;
  int64_t p = n & -n; // the largest power of two dividing n
  int64_t m = n / p;
  // The weights of output a, contiguous over c: Q's column a (row a when
  // transposed).
  static thread_local std::map<std::tuple<int64_t, uint64_t, bool>,
                               std::vector<double>>
      cache;
  static thread_local std::vector<float> scratch;
  std::vector<double> &w = cache[{m, seed, transpose}];
  if (w.empty()) {
    std::vector<double> q = randomOrthogonalMatrix(m, seed);
    w.resize(size_t(m) * m);
    for (int64_t a = 0; a < m; ++a)
      for (int64_t c = 0; c < m; ++c)
        w[a * m + c] = transpose ? q[a * m + c] : q[c * m + a];
  }
  // Butterflies over the 2^k factor, then the m x m factor: index a*p + b.
  sylvesterButterflies(x, m, p);
  float scale = 1.0f / std::sqrt(static_cast<float>(p));
  scratch.assign(x, x + n);
  weightedRowSums(scratch.data(), w.data(), m, p, scale, x);
  return false;
}

bool orthogonalTransformInPlace(float *x, int64_t n, uint64_t seed) {
  return orthogonalTransform(x, n, seed, /*transpose=*/false);
}

bool orthogonalTransformTransposeInPlace(float *x, int64_t n, uint64_t seed) {
  return orthogonalTransform(x, n, seed, /*transpose=*/true);
}

bool preferDenseTransform(int64_t n) {
  int m;
  int64_t p;
  if (!splitHadamardSize(n, m, p)) {
    p = n & -n;
    m = n / p;
  }
  return m > 1 && p < 16 && n <= 4096;
}

const std::vector<float> &denseTransform(int64_t n, uint64_t seed) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, uint64_t>, std::vector<float>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  std::vector<float> &t = cache[{n, seed}];
  if (t.empty()) {
    t.assign(n * n, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      t[i * n + i] = 1.0f;
      orthogonalTransformInPlace(t.data() + i * n, n, seed);
    }
  }
  return t;
}

} // namespace numerics
} // namespace sq
