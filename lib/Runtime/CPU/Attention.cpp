//===- Attention.cpp - attention over the CPU runtime's KV cache ----------===//
//
// Attention over the KV cache (KVStore.cpp), split from Ops.cpp: scalar,
// AVX2 and AVX-512 paths chosen at run time, the same bits as the plain
// loops they replaced (unittests/Runtime/AttentionTest.cpp).
//
//===----------------------------------------------------------------------===//

#include "Ops.h"
#include "QGemm.h"

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

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

namespace {

/// Keys (and values) per tile: four AVX2 vectors of scores.
constexpr int64_t kTile = 32;
/// Queries per job in a long prefill.
constexpr int64_t kQueryBlock = 32;

/// One job: the query rows [i0, i1) of sequence b for every query head of
/// the KV heads [g0, g1). Row r of the job is query i0 + r % nq of head
/// g0 * perGroup + r / nq (nq = i1 - i0): the rows of KV head g are
/// [(g - g0) * perGroup * nq, (g - g0 + 1) * perGroup * nq). Several KV
/// heads per job read whole cache lines of each row (their codes, scales
/// and zeros are adjacent) while the tile is hot.
struct AttentionJob {
  const float *q;
  KVStore::Layout keys, values;
  int64_t b, g0, g1, i0, i1, seq, cached;
  const AttentionDesc *desc;
  float *out;
  int path; // dequantization path (dequantPath)

  int64_t perHead() const { return (i1 - i0) * (desc->heads / desc->kvHeads); }
  int64_t rows() const { return (g1 - g0) * perHead(); }
  int64_t query(int64_t r) const { return i0 + r % (i1 - i0); }
  int64_t head(int64_t r) const {
    return g0 * (desc->heads / desc->kvHeads) + r / (i1 - i0);
  }
  const float *queryRow(int64_t r) const {
    return q + (b * seq + query(r)) * desc->heads * desc->headDim +
           head(r) * desc->headDim;
  }
  float *outRow(int64_t r) const {
    return out + (b * seq + query(r)) * desc->heads * desc->headDim +
           head(r) * desc->headDim;
  }
  void visible(int64_t r, int64_t &lo, int64_t &hi) const {
    numerics::visibleKeys(cached + query(r), cached + seq, desc->causal,
                          desc->window, lo, hi);
  }
  size_t row(const KVStore::Layout &s, int64_t t) const {
    return size_t(b) * s.capacity + t;
  }
  /// Prefetches rows [t0, t1) of `s` for the job's KV heads.
  void prefetch(const KVStore::Layout &s, int64_t t0, int64_t t1) const {
    int64_t d = desc->headDim;
    for (int64_t t = t0; t < t1; ++t)
      prefetchRow(s, row(s, t), g0 * d, (g1 - g0) * d);
  }
};

/// Per-thread scratch, grown on demand and kept (pool threads persist).
float *scratch(size_t n) {
  static thread_local std::vector<float> buffer;
  if (buffer.size() < n)
    buffer.resize(n);
  return buffer.data();
}

/// Between the two passes of a job: each row's visible scores scaled and
/// turned into probabilities, its output zeroed for the value pass.
void softmaxRows(const AttentionJob &job, float *scores, int64_t span,
                 int64_t kLo, float scale) {
  int64_t d = job.desc->headDim;
  for (int64_t r = 0; r < job.rows(); ++r) {
    int64_t lo, hi;
    job.visible(r, lo, hi);
    float *row = scores + r * span + (lo - kLo);
    for (int64_t j = 0; j < hi - lo; ++j)
      row[j] *= scale;
    numerics::softmaxPrefix(row, hi - lo, hi - lo);
    float *o = job.outRow(r);
    for (int64_t e = 0; e < d; ++e)
      o[e] = 0.0f;
  }
}

/// The scalar path: dequantized tiles of keys and values, per score and per
/// output the sums of the plain loop (multiply, then add).
void attentionJobScalar(const AttentionJob &job) {
  const AttentionDesc &desc = *job.desc;
  int64_t d = desc.headDim, rows = job.rows();
  int64_t kLo, kHi, unused;
  job.visible(0, kLo, unused);
  job.visible(job.i1 - job.i0 - 1, unused, kHi);
  int64_t span = kHi - kLo;
  float *tile = scratch(kTile * d + rows * span);
  float *scores = tile + kTile * d;
  float scale = static_cast<float>(desc.scale);
  for (int64_t j0 = kLo; j0 < kHi; j0 += kTile) {
    int64_t nj = std::min(kTile, kHi - j0);
    job.prefetch(job.keys, j0 + kTile, std::min(j0 + 2 * kTile, kHi));
    for (int64_t g = job.g0; g < job.g1; ++g) {
      for (int64_t jj = 0; jj < nj; ++jj)
        dequantRow(job.keys, job.row(job.keys, j0 + jj), g * d, d,
                   tile + jj * d, 0);
      int64_t r0 = (g - job.g0) * job.perHead();
      for (int64_t r = r0; r < r0 + job.perHead(); ++r) {
        int64_t lo, hi;
        job.visible(r, lo, hi);
        const float *qr = job.queryRow(r);
        for (int64_t j = std::max(lo, j0); j < std::min(hi, j0 + nj); ++j) {
          const float *k = tile + (j - j0) * d;
          float s = 0.0f;
          for (int64_t e = 0; e < d; ++e)
            s += qr[e] * k[e];
          scores[r * span + (j - kLo)] = s;
        }
      }
    }
  }
  softmaxRows(job, scores, span, kLo, scale);
  for (int64_t j0 = kLo; j0 < kHi; j0 += kTile) {
    int64_t nj = std::min(kTile, kHi - j0);
    job.prefetch(job.values, j0 + kTile, std::min(j0 + 2 * kTile, kHi));
    for (int64_t g = job.g0; g < job.g1; ++g) {
      for (int64_t jj = 0; jj < nj; ++jj)
        dequantRow(job.values, job.row(job.values, j0 + jj), g * d, d,
                   tile + jj * d, 0);
      int64_t r0 = (g - job.g0) * job.perHead();
      for (int64_t r = r0; r < r0 + job.perHead(); ++r) {
        int64_t lo, hi;
        job.visible(r, lo, hi);
        const float *p = scores + r * span - kLo;
        float *o = job.outRow(r);
        for (int64_t j = std::max(lo, j0); j < std::min(hi, j0 + nj); ++j) {
          const float *v = tile + (j - j0) * d;
          for (int64_t e = 0; e < d; ++e)
            o[e] += p[j] * v[e];
        }
      }
    }
  }
}

#if defined(__x86_64__)
/// Rows [0, 8) of `tile` (row stride d), features [e, e + 8), transposed
/// into kt[e .. e + 8][8].
__attribute__((target("avx2,fma"))) inline void
transpose8x8(const float *tile, int64_t d, int64_t e, float *kt) {
  __m256 r0 = _mm256_loadu_ps(tile + 0 * d + e),
         r1 = _mm256_loadu_ps(tile + 1 * d + e),
         r2 = _mm256_loadu_ps(tile + 2 * d + e),
         r3 = _mm256_loadu_ps(tile + 3 * d + e),
         r4 = _mm256_loadu_ps(tile + 4 * d + e),
         r5 = _mm256_loadu_ps(tile + 5 * d + e),
         r6 = _mm256_loadu_ps(tile + 6 * d + e),
         r7 = _mm256_loadu_ps(tile + 7 * d + e);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
         t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
         t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
         u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
         u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
         u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
         u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)),
         u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
         u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)),
         u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  float *o = kt + e * 8;
  _mm256_storeu_ps(o + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(o + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(o + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(o + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(o + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/// o[e] = fma(p[j], v[j][e], o[e]) for j in [jb, je) in order, for every
/// e: 64 features (8 independent chains) at a time, then 8, then scalar.
/// Features [e0, d) only when e0 is given.
__attribute__((target("avx2,fma"))) inline void
accumulateValues(const float *p, const float *tile, int64_t d, int64_t j0,
                 int64_t jb, int64_t je, float *o, int64_t e0 = 0) {
  int64_t e = e0;
  for (; e + 64 <= d; e += 64) {
    __m256 a[8];
    for (int k = 0; k < 8; ++k)
      a[k] = _mm256_loadu_ps(o + e + 8 * k);
    for (int64_t j = jb; j < je; ++j) {
      __m256 pj = _mm256_set1_ps(p[j]);
      const float *v = tile + (j - j0) * d + e;
      for (int k = 0; k < 8; ++k)
        a[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8 * k), a[k]);
    }
    for (int k = 0; k < 8; ++k)
      _mm256_storeu_ps(o + e + 8 * k, a[k]);
  }
  for (; e + 8 <= d; e += 8) {
    __m256 a0 = _mm256_loadu_ps(o + e);
    for (int64_t j = jb; j < je; ++j)
      a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]),
                           _mm256_loadu_ps(tile + (j - j0) * d + e), a0);
    _mm256_storeu_ps(o + e, a0);
  }
  for (; e < d; ++e)
    for (int64_t j = jb; j < je; ++j)
      o[e] = std::fma(p[j], tile[(j - j0) * d + e], o[e]);
}

/// Keys per block of the tiled path: four tiles, four (AVX-512) or eight
/// (AVX2) independent chains of fused multiply-adds per query row.
constexpr int64_t kTilesPerBlock = 4;

/// Features [f0, f0 + d) of the tile whose first row is `row0` (a tiled
/// store), dequantized into kt[e][16] as dequantScalar computes them (the
/// same integer subtraction, exact conversion, subtraction and
/// multiplication), 16 tokens per feature.
__attribute__((target("avx2,fma"))) void keyTileAVX2(const KVStore::Layout &s,
                                                     size_t row0, int64_t f0,
                                                     int64_t d, float *kt) {
  const uint8_t *tile = s.codes + row0 / kKVTile * size_t(s.features) * 8;
  int64_t offset = s.quant.symmetric ? (int64_t(1) << (s.quant.bits - 1)) : 0;
  const __m256i off = _mm256_set1_epi32(int(offset));
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (int64_t c = f0; c < f0 + d;) {
    int64_t g = c / s.group, end = std::min((g + 1) * s.group, f0 + d);
    const float *zero = s.zeros + s.param(row0, g),
                *scale = s.scales + s.param(row0, g);
    __m256 z0 = _mm256_loadu_ps(zero), z1 = _mm256_loadu_ps(zero + 8);
    __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8);
    for (; c < end; ++c) {
      __m128i by =
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(tile + c * 8));
      // Tokens 0-7: the low nibbles; tokens 8-15: the high ones.
      __m256 x0 = _mm256_cvtepi32_ps(
          _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_and_si128(by, low4)), off));
      __m256 x1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(
          _mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(by, 4), low4)),
          off));
      float *o = kt + (c - f0) * kKVTile;
      _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_sub_ps(x0, z0), s0));
      _mm256_storeu_ps(o + 8, _mm256_mul_ps(_mm256_sub_ps(x1, z1), s1));
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void
keyTileAVX512(const KVStore::Layout &s, size_t row0, int64_t f0, int64_t d,
              float *kt) {
  const uint8_t *tile = s.codes + row0 / kKVTile * size_t(s.features) * 8;
  int64_t offset = s.quant.symmetric ? (int64_t(1) << (s.quant.bits - 1)) : 0;
  // float(u - offset) for u = 0..15 (exact), looked up by vpermps, which
  // reads the low 4 bits of each index.
  const __m512i iota =
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 codeValue = _mm512_cvtepi32_ps(
      _mm512_sub_epi32(iota, _mm512_set1_epi32(int(offset))));
  const __m512i shifts =
      _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t c = f0; c < f0 + d;) {
    int64_t g = c / s.group, end = std::min((g + 1) * s.group, f0 + d);
    __m512 vz = _mm512_loadu_ps(s.zeros + s.param(row0, g)),
           vs = _mm512_loadu_ps(s.scales + s.param(row0, g));
    for (; c < end; ++c) {
      // The 8 bytes twice (movddup, a load); lane l: byte l % 8, shifted
      // right by 4 for l >= 8; its low nibble is the code.
      __m128i by = _mm_castpd_si128(
          _mm_loaddup_pd(reinterpret_cast<const double *>(tile + c * 8)));
      __m512i u = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(by), shifts);
      __m512 x = _mm512_permutexvar_ps(u, codeValue);
      _mm512_storeu_ps(kt + (c - f0) * kKVTile,
                       _mm512_mul_ps(_mm512_sub_ps(x, vz), vs));
    }
  }
}

/// The scores of query row q against the nt tiles of kt ([nt][d][16]): for
/// each key a chain of d fused multiply-adds in feature order, from 0.
__attribute__((target("avx2,fma"))) void tileScoresAVX2(const float *q,
                                                        const float *kt,
                                                        int64_t d, int64_t nt,
                                                        float *out) {
  int64_t t = 0;
  for (; t + 2 <= nt; t += 2) {
    const float *k0 = kt + t * d * kKVTile, *k1 = k0 + d * kKVTile;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(),
           a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t e = 0; e < d; ++e) {
      __m256 qe = _mm256_set1_ps(q[e]);
      a0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + e * kKVTile), a0);
      a1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + e * kKVTile + 8), a1);
      a2 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k1 + e * kKVTile), a2);
      a3 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k1 + e * kKVTile + 8), a3);
    }
    _mm256_storeu_ps(out + t * kKVTile, a0);
    _mm256_storeu_ps(out + t * kKVTile + 8, a1);
    _mm256_storeu_ps(out + t * kKVTile + 16, a2);
    _mm256_storeu_ps(out + t * kKVTile + 24, a3);
  }
  for (; t < nt; ++t) {
    const float *k0 = kt + t * d * kKVTile;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t e = 0; e < d; ++e) {
      __m256 qe = _mm256_set1_ps(q[e]);
      a0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + e * kKVTile), a0);
      a1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + e * kKVTile + 8), a1);
    }
    _mm256_storeu_ps(out + t * kKVTile, a0);
    _mm256_storeu_ps(out + t * kKVTile + 8, a1);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void
tileScoresAVX512(const float *q, const float *kt, int64_t d, int64_t nt,
                 float *out) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) {
    const float *k0 = kt + t * d * kKVTile;
    int64_t st = d * kKVTile;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(),
           a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (int64_t e = 0; e < d; ++e) {
      __m512 qe = _mm512_set1_ps(q[e]);
      const float *k = k0 + e * kKVTile;
      a0 = _mm512_fmadd_ps(qe, _mm512_loadu_ps(k), a0);
      a1 = _mm512_fmadd_ps(qe, _mm512_loadu_ps(k + st), a1);
      a2 = _mm512_fmadd_ps(qe, _mm512_loadu_ps(k + 2 * st), a2);
      a3 = _mm512_fmadd_ps(qe, _mm512_loadu_ps(k + 3 * st), a3);
    }
    _mm512_storeu_ps(out + t * kKVTile, a0);
    _mm512_storeu_ps(out + t * kKVTile + 16, a1);
    _mm512_storeu_ps(out + t * kKVTile + 32, a2);
    _mm512_storeu_ps(out + t * kKVTile + 48, a3);
  }
  for (; t < nt; ++t) {
    const float *k0 = kt + t * d * kKVTile;
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t e = 0; e < d; ++e)
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[e]),
                           _mm512_loadu_ps(k0 + e * kKVTile), a0);
    _mm512_storeu_ps(out + t * kKVTile, a0);
  }
}

/// Features [e, e + 16 K) of accumulateValues's chains, K vectors of 16.
template <int K>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) inline void
accumulateBlockAVX512(const float *p, const float *tile, int64_t d, int64_t j0,
                      int64_t jb, int64_t je, float *o, int64_t e) {
  __m512 a[K];
  for (int k = 0; k < K; ++k)
    a[k] = _mm512_loadu_ps(o + e + 16 * k);
  for (int64_t j = jb; j < je; ++j) {
    __m512 pj = _mm512_set1_ps(p[j]);
    const float *v = tile + (j - j0) * d + e;
    for (int k = 0; k < K; ++k)
      a[k] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 16 * k), a[k]);
  }
  for (int k = 0; k < K; ++k)
    _mm512_storeu_ps(o + e + 16 * k, a[k]);
}

/// accumulateValues with 16-lane vectors: the same chains (one lane per
/// feature, in key order), so the same bits; 128 features at a time, then
/// 64, then accumulateValues for the rest.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void
accumulateValuesAVX512(const float *p, const float *tile, int64_t d, int64_t j0,
                       int64_t jb, int64_t je, float *o) {
  int64_t e = 0;
  for (; e + 128 <= d; e += 128)
    accumulateBlockAVX512<8>(p, tile, d, j0, jb, je, o, e);
  for (; e + 64 <= d; e += 64)
    accumulateBlockAVX512<4>(p, tile, d, j0, jb, je, o, e);
  if (e < d)
    accumulateValues(p, tile, d, j0, jb, je, o, e);
}

/// One output row's chains over the visible values [jb, je), the values'
/// 4-bit codes read straight from the row-major store (no tile): for each
/// key a 16-entry table of (u - offset - zero) * scale per group (the bits
/// of dequantScalar), looked up by vpermps, and fma(p[j], v, o) per
/// feature in key order. The C * 32 features' sums stay in registers with
/// the even and odd features apart (byte k of a 32-feature chunk holds
/// features 2k and 2k + 1: one zero-extension gives both, the odd ones
/// after a shift), interleaved back when stored; each lane's chain is the
/// same.
/// Rows ahead that valuesFusedAVX512 prefetches (about a DRAM latency of
/// its work per row).
constexpr size_t kValuePrefetch = 16;

template <int C>
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void
valuesFusedAVX512(const KVStore::Layout &s, size_t rowBase, int64_t f0,
                  const float *p, int64_t jb, int64_t je, float *o) {
  int64_t offset = s.quant.symmetric ? (int64_t(1) << (s.quant.bits - 1)) : 0;
  const __m512i iota =
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 base = _mm512_cvtepi32_ps(
      _mm512_sub_epi32(iota, _mm512_set1_epi32(int(offset))));
  // Even/odd lanes of a 32-float chunk (two vectors) and back.
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12,
                                         10, 8, 6, 4, 2, 0);
  const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
  const __m512i low =
      _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
  __m512 even[C], odd[C];
  for (int k = 0; k < C; ++k) {
    __m512 a = _mm512_loadu_ps(o + 32 * k),
           b = _mm512_loadu_ps(o + 32 * k + 16);
    even[k] = _mm512_permutex2var_ps(a, evens, b);
    odd[k] = _mm512_permutex2var_ps(a, odds, b);
  }
  // The head within one group (the default, a group per head): one table
  // per key, no group lookups in the loop.
  int64_t g0 = f0 / s.group;
  bool oneGroup = (f0 + 32 * C - 1) / s.group == g0;
  for (int64_t j = jb; j < je; ++j) {
    size_t row = rowBase + j;
    const uint8_t *src = s.codes + row * s.rowBytes + f0 / 2;
    // Rows are a cache row apart: ask for the codes, scale and zero point
    // kValuePrefetch rows ahead (the cache is out of the caches after a
    // step's weights have streamed through).
    __builtin_prefetch(src + kValuePrefetch * s.rowBytes);
    __builtin_prefetch(src + kValuePrefetch * s.rowBytes + 32 * C - 1);
    __builtin_prefetch(s.scales + s.param(row + kValuePrefetch, g0));
    __builtin_prefetch(s.zeros + s.param(row + kValuePrefetch, g0));
    __m512 pj = _mm512_set1_ps(p[j]);
    __m512 table = _mm512_setzero_ps();
    int64_t tableGroup = -1;
    if (oneGroup) {
      size_t at = s.param(row, g0);
      table = _mm512_mul_ps(_mm512_sub_ps(base, _mm512_set1_ps(s.zeros[at])),
                            _mm512_set1_ps(s.scales[at]));
      tableGroup = g0;
    }
    for (int k = 0; k < C; ++k) {
      int64_t g = oneGroup ? g0 : (f0 + 32 * k) / s.group;
      if (g != tableGroup) {
        size_t at = s.param(row, g);
        table = _mm512_mul_ps(_mm512_sub_ps(base, _mm512_set1_ps(s.zeros[at])),
                              _mm512_set1_ps(s.scales[at]));
        tableGroup = g;
      }
      __m512i bytes = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + 16 * k)));
      even[k] =
          _mm512_fmadd_ps(pj, _mm512_permutexvar_ps(bytes, table), even[k]);
      odd[k] = _mm512_fmadd_ps(
          pj, _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table),
          odd[k]);
    }
  }
  for (int k = 0; k < C; ++k) {
    _mm512_storeu_ps(o + 32 * k, _mm512_permutex2var_ps(even[k], low, odd[k]));
    _mm512_storeu_ps(o + 32 * k + 16,
                     _mm512_permutex2var_ps(even[k], high, odd[k]));
  }
}

/// Whether valuesFusedAVX512 takes the job's rows: one query row per KV head
/// (decode without GQA: a tile of values would serve a single row), 4-bit
/// row-major values, heads of 64, 128 or 256 features and groups of whole
/// 32-feature chunks.
bool fusedValues(const AttentionJob &job) {
  const KVStore::Layout &s = job.values;
  int64_t d = job.desc->headDim;
  return job.path == 2 && job.perHead() == 1 && s.quant.bits == 4 && !s.tiled &&
         (d == 64 || d == 128 || d == 256) && s.group % 32 == 0;
}

/// The value pass of the SIMD paths: per tile of kTile values, dequantized
/// once for the job's KV heads, each row's output a chain of fused
/// multiply-adds over its visible values in key order. `scores` rows are
/// `span` apart, column 0 being key `origin`.
__attribute__((target("avx2,fma"))) void
valuePass(const AttentionJob &job, const float *scores, int64_t span,
          int64_t origin, int64_t kLo, int64_t kHi, float *tile) {
  int64_t d = job.desc->headDim;
  bool wide = job.path == 2;
  if (fusedValues(job)) {
    for (int64_t r = 0; r < job.rows(); ++r) {
      int64_t lo, hi;
      job.visible(r, lo, hi);
      int64_t f0 = (job.g0 + r / job.perHead()) * d;
      const float *p = scores + r * span - origin;
      size_t rowBase = job.row(job.values, 0);
      if (d == 64)
        valuesFusedAVX512<2>(job.values, rowBase, f0, p, lo, hi, job.outRow(r));
      else if (d == 128)
        valuesFusedAVX512<4>(job.values, rowBase, f0, p, lo, hi, job.outRow(r));
      else
        valuesFusedAVX512<8>(job.values, rowBase, f0, p, lo, hi, job.outRow(r));
    }
    return;
  }
  for (int64_t j0 = kLo; j0 < kHi; j0 += kTile) {
    int64_t nj = std::min(kTile, kHi - j0);
    job.prefetch(job.values, j0 + kTile, std::min(j0 + 2 * kTile, kHi));
    for (int64_t g = job.g0; g < job.g1; ++g) {
      for (int64_t jj = 0; jj < nj; ++jj)
        dequantRow(job.values, job.row(job.values, j0 + jj), g * d, d,
                   tile + jj * d, job.path);
      int64_t r0 = (g - job.g0) * job.perHead();
      for (int64_t r = r0; r < r0 + job.perHead(); ++r) {
        int64_t lo, hi;
        job.visible(r, lo, hi);
        int64_t jb = std::max(lo, j0), je = std::min(hi, j0 + nj);
        if (jb >= je)
          continue;
        const float *p = scores + r * span - origin;
        if (wide)
          accumulateValuesAVX512(p, tile, d, j0, jb, je, job.outRow(r));
        else
          accumulateValues(p, tile, d, j0, jb, je, job.outRow(r));
      }
    }
  }
}

/// The SIMD path over a tiled key store: blocks of kTilesPerBlock tiles
/// dequantized straight into the [d][16] layout the score chains read (no
/// transpose), then valuePass.
__attribute__((target("avx2,fma"))) void
attentionJobTiled(const AttentionJob &job) {
  const AttentionDesc &desc = *job.desc;
  int64_t d = desc.headDim, rows = job.rows();
  int64_t kLo, kHi, unused;
  job.visible(0, kLo, unused);
  job.visible(job.i1 - job.i0 - 1, unused, kHi);
  // Scores from the first key of kLo's tile, whole tiles per row.
  int64_t origin = kLo / kKVTile * kKVTile;
  int64_t span = (kHi - origin + kKVTile - 1) / kKVTile * kKVTile;
  int64_t block = kTilesPerBlock * kKVTile;
  float *kt = scratch(block * d + rows * span);
  float *scores = kt + block * d;
  bool wide = job.path == 2;
  const KVStore::Layout &keys = job.keys;
  int64_t f0 = job.g0 * d, nf = (job.g1 - job.g0) * d;
  for (int64_t jb = origin; jb < kHi; jb += block) {
    int64_t nt = std::min(kTilesPerBlock, (kHi - jb + kKVTile - 1) / kKVTile);
    // The next block's tiles: the job's features are contiguous in a tile.
    for (int64_t t = jb + block; t < std::min(jb + 2 * block, kHi);
         t += kKVTile) {
      const char *c = reinterpret_cast<const char *>(
          keys.codes + job.row(keys, t) / kKVTile * keys.features * 8 + f0 * 8);
      for (int64_t i = 0; i < nf * 8; i += 64)
        __builtin_prefetch(c + i);
      size_t row0 = job.row(keys, t);
      for (int64_t g = f0 / keys.group; g <= (f0 + nf - 1) / keys.group; ++g) {
        __builtin_prefetch(keys.scales + keys.param(row0, g));
        __builtin_prefetch(keys.zeros + keys.param(row0, g));
      }
    }
    for (int64_t g = job.g0; g < job.g1; ++g) {
      for (int64_t t = 0; t < nt; ++t) {
        size_t row0 = job.row(keys, jb + t * kKVTile);
        if (wide)
          keyTileAVX512(keys, row0, g * d, d, kt + t * kKVTile * d);
        else
          keyTileAVX2(keys, row0, g * d, d, kt + t * kKVTile * d);
      }
      int64_t r0 = (g - job.g0) * job.perHead();
      for (int64_t r = r0; r < r0 + job.perHead(); ++r) {
        int64_t lo, hi;
        job.visible(r, lo, hi);
        // The row's tiles in this block: those that hold a visible key.
        int64_t ta = lo > jb ? (lo - jb) / kKVTile : 0;
        int64_t tb =
            hi <= jb ? 0 : std::min(nt, (hi - jb + kKVTile - 1) / kKVTile);
        if (ta >= tb)
          continue;
        float *out = scores + r * span + (jb - origin) + ta * kKVTile;
        if (wide)
          tileScoresAVX512(job.queryRow(r), kt + ta * kKVTile * d, d, tb - ta,
                           out);
        else
          tileScoresAVX2(job.queryRow(r), kt + ta * kKVTile * d, d, tb - ta,
                         out);
      }
    }
  }
  softmaxRows(job, scores, span, origin, static_cast<float>(desc.scale));
  valuePass(job, scores, span, origin, kLo, kHi, kt);
}

/// The AVX2 path over tiles of 32 keys: each group of 8 keys is dequantized,
/// transposed to [d][8] and its scores are chains of d fused multiply-adds
/// (one vector lane per key, four groups' chains interleaved); an output is
/// a chain of fused multiply-adds over the visible values in key order (one
/// lane per feature, 64 features' chains interleaved).
__attribute__((target("avx2,fma"))) void
attentionJobAVX2(const AttentionJob &job) {
  const AttentionDesc &desc = *job.desc;
  int64_t d = desc.headDim, rows = job.rows(), d8 = d & ~int64_t(7);
  int64_t kLo, kHi, unused;
  job.visible(0, kLo, unused);
  job.visible(job.i1 - job.i0 - 1, unused, kHi);
  // Score rows padded to whole groups of 8 so that a group's lanes store at
  // once.
  int64_t span = (kHi - kLo + 7) / 8 * 8;
  float *tile = scratch(2 * kTile * d + rows * span);
  float *kt = tile + kTile * d, *scores = kt + kTile * d;
  float scale = static_cast<float>(desc.scale);
  for (int64_t j0 = kLo; j0 < kHi; j0 += kTile) {
    int64_t nj = std::min(kTile, kHi - j0), groups = (nj + 7) / 8;
    job.prefetch(job.keys, j0 + kTile, std::min(j0 + 2 * kTile, kHi));
    for (int64_t g = job.g0; g < job.g1; ++g) {
      for (int64_t jj = 0; jj < groups * 8; ++jj) {
        if (jj < nj)
          dequantRow(job.keys, job.row(job.keys, j0 + jj), g * d, d,
                     tile + jj * d, job.path);
        else
          std::memset(tile + jj * d, 0, d * sizeof(float));
      }
      // Group s of 8 keys: kt + s * 8 * d, [d][8].
      for (int64_t s = 0; s < groups; ++s) {
        const float *rows8 = tile + s * 8 * d;
        float *kts = kt + s * 8 * d;
        for (int64_t e = 0; e < d8; e += 8)
          transpose8x8(rows8, d, e, kts);
        for (int64_t e = d8; e < d; ++e)
          for (int64_t jj = 0; jj < 8; ++jj)
            kts[e * 8 + jj] = rows8[jj * d + e];
      }
      int64_t r0 = (g - job.g0) * job.perHead();
      for (int64_t r = r0; r < r0 + job.perHead(); ++r) {
        int64_t lo, hi;
        job.visible(r, lo, hi);
        if (j0 + nj <= lo || j0 >= hi)
          continue;
        const float *qr = job.queryRow(r);
        float *sr = scores + r * span + (j0 - kLo);
        int64_t s = 0;
        for (; s + 4 <= groups; s += 4) {
          const float *k0 = kt + s * 8 * d;
          __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(),
                 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
          for (int64_t e = 0; e < d; ++e) {
            __m256 qe = _mm256_set1_ps(qr[e]);
            a0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + e * 8), a0);
            a1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + 8 * d + e * 8), a1);
            a2 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + 16 * d + e * 8), a2);
            a3 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + 24 * d + e * 8), a3);
          }
          _mm256_storeu_ps(sr + s * 8, a0);
          _mm256_storeu_ps(sr + s * 8 + 8, a1);
          _mm256_storeu_ps(sr + s * 8 + 16, a2);
          _mm256_storeu_ps(sr + s * 8 + 24, a3);
        }
        for (; s < groups; ++s) {
          const float *k0 = kt + s * 8 * d;
          __m256 a0 = _mm256_setzero_ps();
          for (int64_t e = 0; e < d; ++e)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(qr[e]),
                                 _mm256_loadu_ps(k0 + e * 8), a0);
          _mm256_storeu_ps(sr + s * 8, a0);
        }
      }
    }
  }
  softmaxRows(job, scores, span, kLo, scale);
  valuePass(job, scores, span, kLo, kLo, kHi, tile);
}
#endif

} // namespace

void attention(const float *q, const KVStore &keys, const KVStore &values,
               int64_t batch, int64_t seq, int64_t cached,
               const AttentionDesc &desc, float *out, ThreadPool *pool,
               int simd) {
  int64_t d = desc.headDim, kvHeads = desc.kvHeads, total = cached + seq;
  int path = dequantPath(simd);
  bool avx2 = path >= 1;
  // Jobs (sequence, span of KV heads, block of queries), the blocks
  // fastest: a run of consecutive jobs mixes short and long causal rows.
  // KV heads per job: as many as leave about 4 jobs per thread, with a job's
  // scores within about 1 MiB.
  int64_t blocks = (seq + kQueryBlock - 1) / kQueryBlock;
  int64_t threads = pool ? pool->size() : 1;
  int64_t perHead = std::min(seq, kQueryBlock) * (desc.heads / kvHeads);
  int64_t span = std::min(total, (kQueryBlock + total - seq));
  int64_t headsPerJob = std::max<int64_t>(
      1, std::min({kvHeads, batch * kvHeads * blocks / (4 * threads),
                   (int64_t(1) << 18) / std::max<int64_t>(1, perHead * span)}));
  int64_t spans = (kvHeads + headsPerJob - 1) / headsPerJob;
  int64_t jobs = batch * spans * blocks;
  KVStore::Layout kl = keys.layout(), vl = values.layout();
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      int64_t blk = j % blocks, bs = j / blocks, sp = bs % spans;
      AttentionJob job{q,
                       kl,
                       vl,
                       bs / spans,
                       sp * headsPerJob,
                       std::min(kvHeads, (sp + 1) * headsPerJob),
                       blk * kQueryBlock,
                       std::min(seq, (blk + 1) * kQueryBlock),
                       seq,
                       cached,
                       &desc,
                       out,
                       path};
#if defined(__x86_64__)
      if (avx2 && kl.tiled) {
        attentionJobTiled(job);
        continue;
      }
      if (avx2) {
        attentionJobAVX2(job);
        continue;
      }
#endif
      attentionJobScalar(job);
    }
  };
  if (pool && jobs > 1 && total * seq * d >= 4096)
    pool->parallelFor(jobs, work);
  else
    work(0, jobs);
  (void)avx2;
}

} // namespace rt
} // namespace sq
