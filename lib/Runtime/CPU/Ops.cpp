//===- Ops.cpp - fp32 kernels of the CPU runtime --------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Layers.h"
#include "sq/Numerics/Quantize.h"

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
static const int64_t kPrefetch16 = [] {
  const char *e = std::getenv("SQ_L16_PREFETCH");
  return e ? std::atoll(e) : int64_t(1024);
}();

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
    for (int64_t j = n0; j < n1; ++j)
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
    if (out != x)
      std::memcpy(out, x, rows * n * sizeof(float));
    for (int64_t r = 0; r < rows; ++r)
      numerics::orthogonalTransformInPlace(out + r * n, n, seed);
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

//===----------------------------------------------------------------------===//
// KV cache
//===----------------------------------------------------------------------===//

KVStore::~KVStore() {
  std::free(codes);
  std::free(floats);
  std::free(scales);
  std::free(zeros);
}

bool KVStore::allocate(int64_t b, int64_t cap, int64_t f, const QuantDesc &q) {
  batch = b;
  capacity = cap;
  features = f;
  quant = q;
  size_t rows = size_t(b) * size_t(cap);
  if (!q.bits) {
    floats = static_cast<float *>(std::malloc(rows * f * sizeof(float)));
    return floats != nullptr;
  }
  group = q.group ? q.group : f;
  groups = f / group;
  rowBytes = q.bits <= 4 ? (f + 1) / 2 : f;
  codes = static_cast<uint8_t *>(std::malloc(rows * rowBytes));
  scales = static_cast<float *>(std::malloc(rows * groups * sizeof(float)));
  zeros = static_cast<float *>(std::malloc(rows * groups * sizeof(float)));
  return codes && scales && zeros;
}

uint64_t KVStore::bytes() const {
  uint64_t rows = uint64_t(batch) * capacity;
  if (!quant.bits)
    return rows * features * 4;
  return rows * (rowBytes + 8 * groups);
}

void KVStore::append(int64_t b, int64_t at, const float *in, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    size_t row = size_t(b) * capacity + at + t;
    const float *x = in + t * features;
    if (!quant.bits) {
      std::memcpy(floats + row * features, x, features * sizeof(float));
      continue;
    }
    numerics::QuantGrid grid;
    grid.bits = quant.bits;
    grid.symmetric = quant.symmetric;
    grid.clip = quant.clip;
    uint8_t *dst = codes + row * rowBytes;
    if (quant.bits <= 4)
      std::memset(dst, 0, rowBytes);
    for (int64_t g = 0; g < groups; ++g) {
      float scale, zero;
      numerics::groupScale(x + g * group, group, grid, 1.0, scale, zero);
      scales[row * groups + g] = scale;
      zeros[row * groups + g] = zero;
      for (int64_t i = 0; i < group; ++i) {
        int64_t c = g * group + i;
        int64_t v = numerics::quantizeValue(x[c], scale, zero, grid);
        // Signed (symmetric) codes are stored offset by 2^(bits-1).
        uint8_t u = static_cast<uint8_t>(
            quant.symmetric ? v + (int64_t(1) << (quant.bits - 1)) : v);
        if (quant.bits <= 4)
          dst[c / 2] |= uint8_t(u << (4 * (c % 2)));
        else
          dst[c] = u;
      }
    }
  }
}

void KVStore::read(int64_t b, int64_t begin, int64_t end, int64_t f0,
                   int64_t nf, float *out) const {
  for (int64_t t = begin; t < end; ++t) {
    size_t row = size_t(b) * capacity + t;
    float *o = out + (t - begin) * nf;
    if (!quant.bits) {
      std::memcpy(o, floats + row * features + f0, nf * sizeof(float));
      continue;
    }
    const uint8_t *src = codes + row * rowBytes;
    int64_t offset = quant.symmetric ? (int64_t(1) << (quant.bits - 1)) : 0;
    for (int64_t i = 0; i < nf; ++i) {
      int64_t c = f0 + i, g = c / group;
      int64_t u =
          quant.bits <= 4 ? (src[c / 2] >> (4 * (c % 2))) & 0xF : src[c];
      float zero = zeros[row * groups + g];
      o[i] = (float(u - offset) - zero) * scales[row * groups + g];
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// One (sequence, KV head) job of attention: every query head of the group
/// over the dequantized keys and values.
template <int Dummy>
static inline void attentionJob(const float *q, const KVStore &keys,
                                const KVStore &values, int64_t b, int64_t g,
                                int64_t seq, int64_t cached,
                                const AttentionDesc &desc, float *out, float *k,
                                float *v, float *scores) {
  int64_t d = desc.headDim, qf = desc.heads * d, total = cached + seq;
  int64_t perGroup = desc.heads / desc.kvHeads;
  // Keys transposed ([d, total]): the scores of a query are d axpys over
  // contiguous rows, which vectorize across keys.
  keys.read(b, 0, total, g * d, d, v);
  for (int64_t j = 0; j < total; ++j)
    for (int64_t e = 0; e < d; ++e)
      k[e * total + j] = v[j * d + e];
  values.read(b, 0, total, g * d, d, v);
  float scale = static_cast<float>(desc.scale);
  for (int64_t h = g * perGroup; h < (g + 1) * perGroup; ++h)
    for (int64_t i = 0; i < seq; ++i) {
      const float *qi = q + (b * seq + i) * qf + h * d;
      // Keys [lo, hi): causal, and the last `window` of them (Layers.h).
      int64_t lo, hi;
      numerics::visibleKeys(cached + i, total, desc.causal, desc.window, lo,
                            hi);
      int64_t visible = hi - lo;
      for (int64_t j = 0; j < visible; ++j)
        scores[j] = 0.0f;
      for (int64_t e = 0; e < d; ++e) {
        float qe = qi[e];
        const float *ke = k + e * total + lo;
        for (int64_t j = 0; j < visible; ++j)
          scores[j] += qe * ke[j];
      }
      for (int64_t j = 0; j < visible; ++j)
        scores[j] *= scale;
      numerics::softmaxPrefix(scores, visible, visible);
      float *o = out + (b * seq + i) * qf + h * d;
      for (int64_t e = 0; e < d; ++e)
        o[e] = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        float p = scores[j];
        const float *vj = v + (lo + j) * d;
        for (int64_t e = 0; e < d; ++e)
          o[e] += p * vj[e];
      }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void
attentionJobAVX2(const float *q, const KVStore &keys, const KVStore &values,
                 int64_t b, int64_t g, int64_t seq, int64_t cached,
                 const AttentionDesc &desc, float *out, float *k, float *v,
                 float *scores) {
  attentionJob<1>(q, keys, values, b, g, seq, cached, desc, out, k, v, scores);
}
#endif

void attention(const float *q, const KVStore &keys, const KVStore &values,
               int64_t batch, int64_t seq, int64_t cached,
               const AttentionDesc &desc, float *out, ThreadPool *pool) {
  int64_t d = desc.headDim, kvHeads = desc.kvHeads, total = cached + seq;
#if defined(__x86_64__)
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> k(total * d), v(total * d), scores(total);
    for (int64_t job = begin; job < end; ++job) {
      int64_t b = job / kvHeads, g = job % kvHeads;
#if defined(__x86_64__)
      if (avx2) {
        attentionJobAVX2(q, keys, values, b, g, seq, cached, desc, out,
                         k.data(), v.data(), scores.data());
        continue;
      }
#endif
      attentionJob<0>(q, keys, values, b, g, seq, cached, desc, out, k.data(),
                      v.data(), scores.data());
    }
  };
  int64_t jobs = batch * kvHeads;
  if (pool && jobs > 1 && total * seq * d >= 4096)
    pool->parallelFor(jobs, work);
  else
    work(0, jobs);
}

} // namespace rt
} // namespace sq
