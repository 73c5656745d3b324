//===- AttentionTest.cpp - the CPU runtime's KV cache and attention -------===//
//
// The tiled, vectorized KVStore::append/read and attention against copies of
// the kernels they replaced (kept here as the reference): identical bits on
// random inputs, for float, int4 and int8 caches, symmetric and asymmetric,
// per row and grouped (groups that split heads and odd-sized ones), GQA, a
// sliding window, non-causal attention, decode and multi-block prefill, on
// the AVX2 path (when the CPU has it) and on the scalar path.
//
//===----------------------------------------------------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Layers.h"
#include "sq/Numerics/Quantize.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

using namespace sq;
using namespace sq::rt;

namespace {

//===----------------------------------------------------------------------===//
// The reference: the kernels as they were before the tiled rewrite.
//===----------------------------------------------------------------------===//

/// The old KVStore::append, into separate arrays of the same layout.
void refAppend(const KVStore::Layout &s, const float *x, uint8_t *dst,
               float *scales, float *zeros) {
  const QuantDesc &quant = s.quant;
  numerics::QuantGrid grid;
  grid.bits = quant.bits;
  grid.symmetric = quant.symmetric;
  grid.clip = quant.clip;
  if (quant.bits <= 4)
    std::memset(dst, 0, (s.features + 1) / 2);
  for (int64_t g = 0; g < s.groups; ++g) {
    float scale, zero;
    numerics::groupScale(x + g * s.group, s.group, grid, 1.0, scale, zero);
    scales[g] = scale;
    zeros[g] = zero;
    for (int64_t i = 0; i < s.group; ++i) {
      int64_t c = g * s.group + i;
      int64_t v = numerics::quantizeValue(x[c], scale, zero, grid);
      uint8_t u = static_cast<uint8_t>(
          quant.symmetric ? v + (int64_t(1) << (quant.bits - 1)) : v);
      if (quant.bits <= 4)
        dst[c / 2] |= uint8_t(u << (4 * (c % 2)));
      else
        dst[c] = u;
    }
  }
}

/// The old KVStore::read.
void refRead(const KVStore::Layout &s, int64_t b, int64_t begin, int64_t end,
             int64_t f0, int64_t nf, float *out) {
  const QuantDesc &quant = s.quant;
  for (int64_t t = begin; t < end; ++t) {
    size_t row = size_t(b) * s.capacity + t;
    float *o = out + (t - begin) * nf;
    if (!quant.bits) {
      std::memcpy(o, s.floats + row * s.features + f0, nf * sizeof(float));
      continue;
    }
    int64_t offset = quant.symmetric ? (int64_t(1) << (quant.bits - 1)) : 0;
    for (int64_t i = 0; i < nf; ++i) {
      int64_t c = f0 + i, g = c / s.group;
      int64_t u = s.code(row, c); // either layout
      float zero = s.zeros[s.param(row, g)];
      o[i] = (float(u - offset) - zero) * s.scales[s.param(row, g)];
    }
  }
}

/// The old attentionJob: every key and value of the KV head dequantized,
/// the keys transposed, then plain loops (the compiler contracts the
/// multiply-adds to FMAs in the AVX2 clone, as it did in Ops.cpp).
template <int Dummy>
static inline void refAttentionJob(const float *q, const KVStore &keys,
                                   const KVStore &values, int64_t b, int64_t g,
                                   int64_t seq, int64_t cached,
                                   const AttentionDesc &desc, float *out,
                                   float *k, float *v, float *scores) {
  int64_t d = desc.headDim, qf = desc.heads * d, total = cached + seq;
  int64_t perGroup = desc.heads / desc.kvHeads;
  refRead(keys.layout(), b, 0, total, g * d, d, v);
  for (int64_t j = 0; j < total; ++j)
    for (int64_t e = 0; e < d; ++e)
      k[e * total + j] = v[j * d + e];
  refRead(values.layout(), b, 0, total, g * d, d, v);
  float scale = static_cast<float>(desc.scale);
  for (int64_t h = g * perGroup; h < (g + 1) * perGroup; ++h)
    for (int64_t i = 0; i < seq; ++i) {
      const float *qi = q + (b * seq + i) * qf + h * d;
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
refAttentionJobAVX2(const float *q, const KVStore &keys, const KVStore &values,
                    int64_t b, int64_t g, int64_t seq, int64_t cached,
                    const AttentionDesc &desc, float *out, float *k, float *v,
                    float *scores) {
  refAttentionJob<1>(q, keys, values, b, g, seq, cached, desc, out, k, v,
                     scores);
}
#endif

bool cpuHasAVX2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

void refAttention(const float *q, const KVStore &keys, const KVStore &values,
                  int64_t batch, int64_t seq, int64_t cached,
                  const AttentionDesc &desc, float *out, bool avx2) {
  int64_t d = desc.headDim, total = cached + seq;
  std::vector<float> k(total * d), v(total * d), scores(total);
  for (int64_t job = 0; job < batch * desc.kvHeads; ++job) {
    int64_t b = job / desc.kvHeads, g = job % desc.kvHeads;
#if defined(__x86_64__)
    if (avx2) {
      refAttentionJobAVX2(q, keys, values, b, g, seq, cached, desc, out,
                          k.data(), v.data(), scores.data());
      continue;
    }
#endif
    refAttentionJob<0>(q, keys, values, b, g, seq, cached, desc, out, k.data(),
                       v.data(), scores.data());
  }
}

//===----------------------------------------------------------------------===//

struct Case {
  const char *name;
  int64_t heads, kvHeads, headDim;
  QuantDesc quant;
  bool causal = true;
  int64_t window = 0;
};

QuantDesc quantDesc(unsigned bits, bool symmetric, int64_t group) {
  QuantDesc q;
  q.bits = bits;
  q.symmetric = symmetric;
  q.group = group;
  return q;
}

std::vector<Case> cases() {
  return {
      {"float", 4, 4, 32, QuantDesc()},
      {"int4-sym-row", 4, 4, 128, quantDesc(4, true, 0)},
      {"int4-asym-head", 8, 2, 64, quantDesc(4, false, 64)},
      {"int4-asym-mha-group32", 4, 4, 64, quantDesc(4, false, 32)},
      {"int4-asym-mha-head256", 2, 2, 256, quantDesc(4, false, 256)},
      {"int4-asym-group32-gqa", 8, 2, 64, quantDesc(4, false, 32)},
      {"int8-sym-group16", 4, 2, 40, quantDesc(8, true, 16)},
      {"int8-asym-row", 2, 2, 24, quantDesc(8, false, 0)},
      {"int4-odd-groups", 6, 3, 20, quantDesc(4, true, 5)},
      {"int3-asym-group10", 4, 2, 20, quantDesc(3, false, 10)},
      {"int4-window", 8, 4, 64, quantDesc(4, false, 64), true, 7},
      {"int4-noncausal", 4, 2, 36, quantDesc(4, true, 12), false},
  };
}

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void fillNormal(std::vector<float> &v, std::mt19937 &rng, float sd) {
  std::normal_distribution<float> n(0.0f, sd);
  for (float &x : v)
    x = n(rng);
}

TEST(KVStore, AppendAndReadMatchTheOldKernelsBitForBit) {
  std::mt19937 rng(7);
  for (const Case &c : cases())
    for (bool tiled : {false, true})
      for (int simd : {2, 1, 0}) {
        SCOPED_TRACE(std::string(c.name) + " simd " + std::to_string(simd) +
                     (tiled ? " tiled" : ""));
        int64_t features = c.kvHeads * c.headDim, batch = 2, capacity = 9;
        KVStore store;
        ASSERT_TRUE(store.allocate(batch, capacity, features, c.quant, tiled));
        KVStore::Layout s = store.layout();
        // Tiles only for <= 4-bit codes; the capacity is then whole tiles.
        ASSERT_EQ(s.tiled, tiled && c.quant.bits && c.quant.bits <= 4);
        ASSERT_EQ(s.capacity, s.tiled ? 16 : capacity);
        std::vector<float> rows(capacity * features);
        fillNormal(rows, rng, 2.0f);
        // An all-zero row, outliers, and values on rounding ties.
        std::fill(rows.begin() + features, rows.begin() + 2 * features, 0.0f);
        rows[2 * features + 3] = 1e4f;
        rows[3 * features + 1] = -3e3f;
        for (int64_t i = 0; i < features; ++i)
          rows[4 * features + i] = 0.5f * float(i % 9) - 2.0f;
        // Rows written over (a sequence restarted): every nibble replaced.
        std::vector<float> earlier(capacity * features);
        fillNormal(earlier, rng, 3.0f);
        for (int64_t b = 0; b < batch; ++b)
          store.append(b, 0, earlier.data(), capacity, simd);
        for (int64_t b = 0; b < batch; ++b) {
          // Two appends (a prefill and a step) per sequence.
          store.append(b, 0, rows.data(), capacity - 1, simd);
          store.append(b, capacity - 1, rows.data() + (capacity - 1) * features,
                       1, simd);
        }
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t t = 0; t < capacity; ++t) {
            size_t row = size_t(b) * s.capacity + t;
            const float *x = rows.data() + t * features;
            if (!c.quant.bits) {
              EXPECT_EQ(0, std::memcmp(s.floats + row * features, x,
                                       features * sizeof(float)));
              continue;
            }
            std::vector<uint8_t> codes(c.quant.bits <= 4 ? (features + 1) / 2
                                                         : features);
            std::vector<float> scales(s.groups), zeros(s.groups);
            refAppend(s, x, codes.data(), scales.data(), zeros.data());
            for (int64_t f = 0; f < features; ++f) {
              unsigned want = c.quant.bits <= 4
                                  ? (codes[f / 2] >> (4 * (f % 2))) & 0xF
                                  : codes[f];
              ASSERT_EQ(want, s.code(row, f)) << "row " << row << " f " << f;
            }
            for (int64_t g = 0; g < s.groups; ++g) {
              EXPECT_EQ(0, std::memcmp(&scales[g], s.scales + s.param(row, g),
                                       sizeof(float)));
              EXPECT_EQ(0, std::memcmp(&zeros[g], s.zeros + s.param(row, g),
                                       sizeof(float)));
            }
          }
        // read of any feature range, from odd offsets too.
        for (int64_t f0 : {int64_t(0), int64_t(1), c.headDim})
          for (int64_t nf :
               {features - f0, std::min<int64_t>(17, features - f0)}) {
            std::vector<float> got((capacity - 2) * nf), want(got.size());
            store.read(1, 2, capacity, f0, nf, got.data(), simd);
            refRead(s, 1, 2, capacity, f0, nf, want.data());
            EXPECT_TRUE(sameBits(got, want)) << "f0 " << f0 << " nf " << nf;
          }
      }
}

TEST(Attention, MatchesTheOldKernelBitForBit) {
  std::mt19937 rng(11);
  ThreadPool pool(2);
  struct Shape {
    int64_t seq, cached;
  };
  // Decode, a short prefill, prefill of several query blocks after a cache,
  // lengths that end mid-tile, and decode and prefill over several blocks of
  // tiles (the tiled keys: 64 per block).
  const Shape shapes[] = {{1, 0},   {1, 37},  {5, 3},   {45, 0},
                          {70, 13}, {1, 150}, {33, 120}};
  for (const Case &c : cases())
    for (const Shape &sh : shapes)
      for (bool tiled : {false, true})
        for (int simd : {2, 1, 0}) {
          if (simd && !cpuHasAVX2())
            continue;
          SCOPED_TRACE(std::string(c.name) + " seq " + std::to_string(sh.seq) +
                       " cached " + std::to_string(sh.cached) + " simd " +
                       std::to_string(simd) + (tiled ? " tiled keys" : ""));
          AttentionDesc desc;
          desc.heads = c.heads;
          desc.kvHeads = c.kvHeads;
          desc.headDim = c.headDim;
          desc.scale = 1.0 / std::sqrt(double(c.headDim));
          desc.causal = c.causal;
          desc.window = c.window;
          desc.keyQuant = desc.valueQuant = c.quant;
          int64_t batch = 2, total = sh.cached + sh.seq;
          int64_t kvf = c.kvHeads * c.headDim, qf = c.heads * c.headDim;
          KVStore keys, values;
          ASSERT_TRUE(keys.allocate(batch, total + 3, kvf, c.quant, tiled));
          ASSERT_TRUE(values.allocate(batch, total + 3, kvf, c.quant));
          std::vector<float> k(total * kvf), v(total * kvf);
          for (int64_t b = 0; b < batch; ++b) {
            fillNormal(k, rng, 1.5f);
            fillNormal(v, rng, 1.0f);
            keys.append(b, 0, k.data(), total);
            values.append(b, 0, v.data(), total);
          }
          std::vector<float> q(batch * sh.seq * qf);
          fillNormal(q, rng, 1.5f);
          std::vector<float> want(q.size(), -1.0f), got(q.size(), -2.0f),
              gotSerial(q.size(), -3.0f);
          refAttention(q.data(), keys, values, batch, sh.seq, sh.cached, desc,
                       want.data(), simd > 0);
          attention(q.data(), keys, values, batch, sh.seq, sh.cached, desc,
                    got.data(), &pool, simd);
          attention(q.data(), keys, values, batch, sh.seq, sh.cached, desc,
                    gotSerial.data(), nullptr, simd);
          EXPECT_TRUE(sameBits(got, want));
          EXPECT_TRUE(sameBits(gotSerial, want));
          // Not a vacuous comparison: the outputs are finite and not all 0.
          bool nonzero = false;
          for (float x : got) {
            ASSERT_TRUE(std::isfinite(x));
            nonzero |= x != 0.0f;
          }
          EXPECT_TRUE(nonzero);
        }
}

// The online Hadamard (R4) over several rows on the pool: each row exactly
// numerics' transform, in place or not.
TEST(OrthogonalTransformRows, PoolRowsMatchTheSerialTransform) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (int64_t n : {11008, 13696, 4096}) {
    ASSERT_FALSE(numerics::preferDenseTransform(n)) << n;
    int64_t rows = 5;
    std::vector<float> x(rows * n);
    fillNormal(x, rng, 1.0f);
    std::vector<float> want = x;
    for (int64_t r = 0; r < rows; ++r)
      numerics::orthogonalTransformInPlace(want.data() + r * n, n, 9);
    std::vector<float> got(x.size()), inPlace = x;
    orthogonalTransformRows(x.data(), rows, n, 9, got.data(), &pool);
    orthogonalTransformRows(inPlace.data(), rows, n, 9, inPlace.data(), &pool);
    EXPECT_TRUE(sameBits(got, want)) << n;
    EXPECT_TRUE(sameBits(inPlace, want)) << n;
  }
}

} // namespace
