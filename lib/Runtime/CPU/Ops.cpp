//===- Ops.cpp - fp32 kernels of the CPU runtime --------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Hadamard.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sq {
namespace rt {

// A dot product in 16 independent partial sums (vectorizes); the AVX2+FMA
// clone is picked on CPUs that have it.
template <int Dummy>
static inline float dotImpl(const float *a, const float *b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j)
      acc[j] += a[i + j] * b[i + j];
  float s = 0;
  for (int j = 0; j < 16; ++j)
    s += acc[j];
  for (; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void
linearRowsAVX2(const float *x, const float *w, const float *bias, int64_t m,
               int64_t k, int64_t n0, int64_t n1, int64_t n, float *out) {
  for (int64_t j = n0; j < n1; ++j)
    for (int64_t i = 0; i < m; ++i)
      out[i * n + j] =
          dotImpl<1>(x + i * k, w + j * k, k) + (bias ? bias[j] : 0);
}
#endif

static void linearRowsGeneric(const float *x, const float *w, const float *bias,
                              int64_t m, int64_t k, int64_t n0, int64_t n1,
                              int64_t n, float *out) {
  for (int64_t j = n0; j < n1; ++j)
    for (int64_t i = 0; i < m; ++i)
      out[i * n + j] =
          dotImpl<0>(x + i * k, w + j * k, k) + (bias ? bias[j] : 0);
}

void linearF32(const float *x, const float *w, const float *bias, int64_t m,
               int64_t k, int64_t n, float *out, ThreadPool *pool) {
#if defined(__x86_64__)
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  static const bool avx2 = false;
#endif
  auto body = [&](int64_t n0, int64_t n1) {
#if defined(__x86_64__)
    if (avx2)
      return linearRowsAVX2(x, w, bias, m, k, n0, n1, n, out);
#endif
    linearRowsGeneric(x, w, bias, m, k, n0, n1, n, out);
  };
  // Columns in chunks of whole weight rows: each thread streams its rows.
  if (pool && n >= 64 && m * n * k >= (1 << 16)) {
    int64_t chunks = std::min<int64_t>(n, 16 * pool->size());
    pool->parallelFor(chunks, [&](int64_t c0, int64_t c1) {
      body(c0 * n / chunks, c1 * n / chunks);
    });
  } else {
    body(0, n);
  }
}

// 16-bit weights: a dot product that widens 16 weights per step.
static float dot16Scalar(const float *x, const uint16_t *w, int64_t n,
                         bool bf16) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j)
      acc[j] += x[i + j] * (bf16 ? numerics::bf16ToFloat(w[i + j])
                                 : numerics::halfToFloat(w[i + j]));
  float s = 0;
  for (int j = 0; j < 16; ++j)
    s += acc[j];
  for (; i < n; ++i)
    s += x[i] *
         (bf16 ? numerics::bf16ToFloat(w[i]) : numerics::halfToFloat(w[i]));
  return s;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) static float
dot16AVX2(const float *x, const uint16_t *w, int64_t n, bool bf16) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(w + i));
    __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(w + i + 8));
    __m256 w0, w1;
    if (bf16) {
      w0 =
          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h0), 16));
      w1 =
          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h1), 16));
    } else {
      w0 = _mm256_cvtph_ps(h0);
      w1 = _mm256_cvtph_ps(h1);
    }
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), w0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), w1, a1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(a0, a1));
  float s = 0;
  for (float v : lanes)
    s += v;
  for (; i < n; ++i)
    s += x[i] *
         (bf16 ? numerics::bf16ToFloat(w[i]) : numerics::halfToFloat(w[i]));
  return s;
}
#endif

#if defined(__x86_64__)
/// How far ahead of the 16-bit weights linear16 prefetches, in bytes: 2 KiB
/// took a 32000 x 4096 fp16 GEMV (2 threads) from 13.8 to 23.3 GB/s (512:
/// 17.2, 1 KiB: 19.4, 4 KiB: 22.3).
constexpr int64_t kPrefetch16 = 2048;

/// dot16AVX2's sums with one 16-lane accumulator (lanes 0-7 its a0, lanes
/// 8-15 its a1: the same products and additions, the same bits), reading
/// ahead of the weight stream with prefetches.
__attribute__((target("avx512f,avx512bw,f16c,fma"))) static float
dot16AVX512(const float *x, const uint16_t *w, int64_t n, bool bf16) {
  __m512 a = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm_prefetch(reinterpret_cast<const char *>(w + i) + kPrefetch16,
                 _MM_HINT_T0);
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + i));
    __m512 wv = bf16 ? _mm512_castsi512_ps(
                           _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                     : _mm512_cvtph_ps(h);
    a = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), wv, a);
  }
  __m256 lo = _mm512_castps512_ps256(a);
  __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(lo, hi));
  float s = 0;
  for (float v : lanes)
    s += v;
  for (; i < n; ++i)
    s += x[i] *
         (bf16 ? numerics::bf16ToFloat(w[i]) : numerics::halfToFloat(w[i]));
  return s;
}

/// dot16AVX512 for four weight rows at once (w, w + n, w + 2n, w + 3n):
/// each row keeps its own accumulator, products and reduction, so every sum
/// has dot16AVX512's bits; the four independent FMA chains hide the FMA
/// latency that bounds one chain (one 64-byte row block per 4 cycles, about
/// 20 GB/s per core) and the four streams are prefetched together.
__attribute__((target("avx512f,avx512bw,f16c,fma"))) static void
dot16x4AVX512(const float *x, const uint16_t *w, int64_t n, bool bf16,
              float *out, int64_t stride) {
  __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                 _mm512_setzero_ps()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < 4; ++r) {
      const uint16_t *wr = w + r * n + i;
      _mm_prefetch(reinterpret_cast<const char *>(wr) + kPrefetch16,
                   _MM_HINT_T0);
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(wr));
      __m512 wv = bf16 ? _mm512_castsi512_ps(
                             _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                       : _mm512_cvtph_ps(h);
      a[r] = _mm512_fmadd_ps(xv, wv, a[r]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    __m256 lo = _mm512_castps512_ps256(a[r]);
    __m256 hi =
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[r]), 1));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(lo, hi));
    float s = 0;
    for (float v : lanes)
      s += v;
    const uint16_t *wr = w + r * n;
    for (int64_t t = i; t < n; ++t)
      s += x[t] *
           (bf16 ? numerics::bf16ToFloat(wr[t]) : numerics::halfToFloat(wr[t]));
    out[r * stride] = s;
  }
}
#endif

void linear16(const float *x, const uint16_t *w, FloatStorage format,
              const float *bias, int64_t m, int64_t k, int64_t n, float *out,
              ThreadPool *pool) {
  bool bf16 = format == FloatStorage::BF16;
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") &&
                           __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw");
#else
  static const bool avx2 = false;
#endif
  auto body = [&](int64_t n0, int64_t n1) {
    int64_t j = n0;
#if defined(__x86_64__)
    if (avx512)
      for (; j + 4 <= n1; j += 4)
        for (int64_t i = 0; i < m; ++i) {
          float *o = out + i * n + j;
          dot16x4AVX512(x + i * k, w + j * k, k, bf16, o, 1);
          for (int r = 0; r < 4; ++r) // as below, + 0 without a bias
            o[r] += bias ? bias[j + r] : 0;
        }
#endif
    for (; j < n1; ++j)
      for (int64_t i = 0; i < m; ++i) {
        const float *xi = x + i * k;
        const uint16_t *wj = w + j * k;
#if defined(__x86_64__)
        float d = avx512 ? dot16AVX512(xi, wj, k, bf16)
                  : avx2 ? dot16AVX2(xi, wj, k, bf16)
                         : dot16Scalar(xi, wj, k, bf16);
#else
        float d = dot16Scalar(xi, wj, k, bf16);
#endif
        out[i * n + j] = d + (bias ? bias[j] : 0);
      }
  };
  if (pool && n >= 64 && m * n * k >= (1 << 16)) {
    int64_t chunks = std::min<int64_t>(n, 16 * pool->size());
    pool->parallelFor(chunks, [&](int64_t c0, int64_t c1) {
      body(c0 * n / chunks, c1 * n / chunks);
    });
  } else {
    body(0, n);
  }
}

// out = x T for `rows` rows (rows <= 4 at a time share each row of T):
// axpy form, vectorized over T's columns.
template <int Dummy>
static inline void rowsTimesMatrixImpl(const float *x, int64_t rows,
                                       const float *t, int64_t n, float *out) {
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    int64_t nr = std::min<int64_t>(4, rows - r0);
    float *o[4];
    const float *xr[4];
    for (int64_t r = 0; r < 4; ++r) {
      int64_t rr = r0 + std::min(r, nr - 1);
      o[r] = out + rr * n;
      xr[r] = x + rr * n;
    }
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t j = 0; j < n; ++j)
        o[r][j] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float *ti = t + i * n;
      if (nr == 4) {
        float a = xr[0][i], b = xr[1][i], c = xr[2][i], d = xr[3][i];
        for (int64_t j = 0; j < n; ++j) {
          float tj = ti[j];
          o[0][j] += a * tj;
          o[1][j] += b * tj;
          o[2][j] += c * tj;
          o[3][j] += d * tj;
        }
      } else {
        for (int64_t r = 0; r < nr; ++r) {
          float a = xr[r][i];
          for (int64_t j = 0; j < n; ++j)
            o[r][j] += a * ti[j];
        }
      }
    }
  }
}
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void
rowsTimesMatrixAVX2(const float *x, int64_t rows, const float *t, int64_t n,
                    float *out) {
  rowsTimesMatrixImpl<1>(x, rows, t, n, out);
}
#endif

void orthogonalTransformRows(const float *x, int64_t rows, int64_t n,
                             uint64_t seed, float *out, ThreadPool *pool) {
  if (!numerics::preferDenseTransform(n)) {
    // The fast transform row by row (each row's result does not depend on
    // the thread), several rows across the pool.
    auto body = [&](int64_t r0, int64_t r1) {
      if (out != x)
        std::memcpy(out + r0 * n, x + r0 * n, (r1 - r0) * n * sizeof(float));
      for (int64_t r = r0; r < r1; ++r)
        numerics::orthogonalTransformInPlace(out + r * n, n, seed);
    };
    if (pool && rows > 1 && rows * n >= 4096)
      pool->parallelFor(rows, body);
    else
      body(0, rows);
    return;
  }
  const std::vector<float> &t = numerics::denseTransform(n, seed);
#if defined(__x86_64__)
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  auto body = [&](int64_t r0, int64_t r1) {
    // In place is allowed: transform a copy of each block of rows.
    std::vector<float> in(std::min<int64_t>(r1 - r0, 64) * n);
    for (int64_t r = r0; r < r1; r += 64) {
      int64_t nr = std::min<int64_t>(64, r1 - r);
      std::memcpy(in.data(), x + r * n, nr * n * sizeof(float));
#if defined(__x86_64__)
      if (avx2) {
        rowsTimesMatrixAVX2(in.data(), nr, t.data(), n, out + r * n);
        continue;
      }
#endif
      rowsTimesMatrixImpl<0>(in.data(), nr, t.data(), n, out + r * n);
    }
  };
  if (pool && rows > 1)
    pool->parallelFor(rows, body);
  else
    body(0, rows);
}

void rotate(const float *x, const float *r, int64_t rows, int64_t n,
            bool transposed, float *out) {
  // fp32 like the executor's sgemm; x R as a sum of R's rows (the inner loop
  // over a row of R vectorizes), x R^T as dot products with R's rows.
  for (int64_t t = 0; t < rows; ++t) {
    const float *xi = x + t * n;
    float *o = out + t * n;
    if (transposed) {
      for (int64_t j = 0; j < n; ++j) {
        const float *rj = r + j * n;
        float s = 0.0f;
        for (int64_t i = 0; i < n; ++i)
          s += xi[i] * rj[i];
        o[j] = s;
      }
      continue;
    }
    for (int64_t j = 0; j < n; ++j)
      o[j] = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float a = xi[i], *ri = r + i * n;
      for (int64_t j = 0; j < n; ++j)
        o[j] += a * ri[j];
    }
  }
}

} // namespace rt
} // namespace sq
