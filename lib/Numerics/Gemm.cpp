//===- Gemm.cpp - dense GEMM in bf16 with fp32 accumulation ---------------===//
//
// Blocking (GotoBLAS-like, one scheme for every path):
//
//  * M is cut in blocks of kMc rows, K in blocks of kKc values, grouped in
//    super-blocks of kKs. For each (M block, K super-block) the A blocks
//    are rounded to bf16 and packed once, shared by the threads, in AMX tile
//    order: 16-row groups, each a run of 1 KB tiles (16 rows x 32 k), one
//    per 32 k ("k step"); rows and k past the end are zero.
//  * Work items are (N block of up to kNc columns, part of the M block);
//    the pool hands them out dynamically. For each K block of the
//    super-block an item packs its B block (K block x N block) into a
//    thread-local buffer in the VNNI tile layout that TDPBF16PS and
//    VDPBF16PS both read: 16-column groups, each a run of 1 KB tiles, one
//    per k step, a tile row holding 16 (column, k pair) dwords. Then it
//    walks its rows 32 at a time and its columns 32 at a time: a 32 x 32
//    micro-kernel sums the K block into C in place (AMX: C loaded into and
//    stored from the accumulator tiles) when alpha is 1 and beta 0 or 1,
//    otherwise into a local block that the epilogue scales and adds.
//  * Every element's K order is fixed by the blocking alone, so the number
//    of threads and the item split do not change results.
//
// B's packers read four sources: bf16 or fp32, with B(k, j) at b[k ld + j]
// ("k-major": a weight W used as W, a plain B) or at b[j ld + k] ("n-major":
// W^T of a linear's forward, a transposed B). Packing costs K x N per M
// block, against 2 M K N flops for the product.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Gemm.h"

#include "sq/Numerics/CpuFeatures.h"
#include "sq/Numerics/Float16.h"
#include "sq/Numerics/ThreadPool.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#define SQ_X86 1
#include <immintrin.h>
#define SQ_TARGET_BF16                                                         \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define SQ_TARGET_AMX                                                          \
  __attribute__((target(                                                       \
      "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#else
#define SQ_X86 0
#endif

namespace sq {
namespace numerics {

namespace {

constexpr int64_t kStepK = 32;     // k values per tile row
constexpr int64_t kTile = 16 * 32; // bf16 values per 1 KB tile
constexpr int64_t kMr = 32;        // micro-kernel rows (2 tiles)
constexpr int64_t kNr = 32;        // micro-kernel columns (2 tiles)
// A 32-row pair of packed A (64 KB) and a B block (512 KB) stay in L2 (2 MB
// per core on Sapphire/Emerald Rapids). On 2048 x 4096 -> 4096, K blocks of
// 512 were slower (more C traffic); 2048 and N blocks of 512 were no faster
// (within this shared machine's noise).
constexpr int64_t kKc = 1024; // K block
constexpr int64_t kNc = 256;  // N block (at most)
constexpr int64_t kMc = 2048; // M block
constexpr int64_t kKs = 4096; // K super-block (packed A: <= 16 MB)

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// A (fp32): element (i, k) at p[i ld + k], or p[k ld + i] when trans.
struct AOperand {
  const float *p;
  int64_t ld;
  bool trans;
  float at(int64_t i, int64_t k) const {
    return trans ? p[k * ld + i] : p[i * ld + k];
  }
};

/// B: element (k, j) at p[k ld + j] (k-major) or p[j ld + k] (n-major),
/// bf16 bits or fp32.
struct BOperand {
  const void *p;
  int64_t ld;
  bool bf16;
  bool nMajor;
  uint16_t bitsAt(int64_t k, int64_t j) const {
    int64_t off = nMajor ? j * ld + k : k * ld + j;
    return bf16 ? static_cast<const uint16_t *>(p)[off]
                : floatToBf16(static_cast<const float *>(p)[off]);
  }
};

/// One block of A to pack: rows [i0, i0 + rows) of the M block, k [k0, k0 +
/// kc); the packed block has kSteps tiles per 16-row group.
struct ABlock {
  int64_t i0, rows, k0, kc, kSteps;
};
struct BBlock {
  int64_t j0, cols, k0, kc, kSteps;
};

/// The operations of one path.
struct Kernels {
  /// Packs 16-row groups [g0, g1) of the A block into dst (group g at dst +
  /// g * kSteps * kTile).
  void (*packA)(const AOperand &, const ABlock &, int64_t g0, int64_t g1,
                uint16_t *dst);
  /// Packs 16-column groups [t0, t1) of the B block into dst (group t at
  /// dst + t * kSteps * kTile).
  void (*packB)(const BOperand &, const BBlock &, int64_t t0, int64_t t1,
                uint16_t *dst);
  /// c [32, 32] (row stride ldc) = the 32 x 32 product of two row groups
  /// (a, a + kSteps tiles) and two column groups (b, b + kSteps tiles),
  /// plus c itself when addC.
  void (*micro)(const uint16_t *a, const uint16_t *b, int64_t kSteps, float *c,
                int64_t ldc, bool addC);
  /// acc [rows, 32] (row stride 32, rows <= 8) = the first rows of the
  /// product above (a few rows: decode, ragged ends).
  void (*microRows)(const uint16_t *a, const uint16_t *b, int64_t kSteps,
                    int64_t rows, float *acc);
  /// c[i, j] = alpha acc[i, j] + beta c[i, j] (beta == 0: c not read) for
  /// i < rows, j < cols.
  void (*epilogue)(const float *acc, int64_t rows, int64_t cols, float alpha,
                   float beta, float *c, int64_t ldc);
  /// Called once per work item before micro (AMX: the tile configuration).
  void (*begin)();
  void (*end)();
};

//===----------------------------------------------------------------------===//
// Scalar path.
//===----------------------------------------------------------------------===//

void packAScalar(const AOperand &a, const ABlock &blk, int64_t g0, int64_t g1,
                 uint16_t *dst) {
  for (int64_t g = g0; g < g1; ++g) {
    uint16_t *group = dst + g * blk.kSteps * kTile;
    for (int64_t r = 0; r < 16; ++r) {
      int64_t i = g * 16 + r;
      for (int64_t s = 0; s < blk.kSteps; ++s) {
        uint16_t *out = group + s * kTile + r * kStepK;
        for (int64_t t = 0; t < kStepK; ++t) {
          int64_t kk = s * kStepK + t;
          out[t] = (i < blk.rows && kk < blk.kc)
                       ? floatToBf16(a.at(blk.i0 + i, blk.k0 + kk))
                       : 0;
        }
      }
    }
  }
}

void packBScalar(const BOperand &b, const BBlock &blk, int64_t t0, int64_t t1,
                 uint16_t *dst) {
  for (int64_t t = t0; t < t1; ++t) {
    uint16_t *group = dst + t * blk.kSteps * kTile;
    for (int64_t s = 0; s < blk.kSteps; ++s)
      for (int64_t p = 0; p < 16; ++p)
        for (int64_t j = 0; j < 16; ++j)
          for (int64_t e = 0; e < 2; ++e) {
            int64_t kk = s * kStepK + 2 * p + e, jj = t * 16 + j;
            group[s * kTile + (p * 16 + j) * 2 + e] =
                (kk < blk.kc && jj < blk.cols)
                    ? b.bitsAt(blk.k0 + kk, blk.j0 + jj)
                    : 0;
          }
  }
}

void rowsScalar(const uint16_t *a, const uint16_t *b, int64_t kSteps,
                int64_t rows, float *c, int64_t ldc, bool addC) {
  for (int64_t i = 0; i < rows; ++i) {
    const uint16_t *ag = a + (i / 16) * kSteps * kTile + (i % 16) * kStepK;
    float row[kNr] = {};
    if (addC)
      std::memcpy(row, c + i * ldc, sizeof(row));
    for (int64_t s = 0; s < kSteps; ++s) {
      const uint16_t *as = ag + s * kTile;
      for (int64_t p = 0; p < 16; ++p) {
        float a0 = bf16ToFloat(as[2 * p]), a1 = bf16ToFloat(as[2 * p + 1]);
        for (int64_t j = 0; j < kNr; ++j) {
          const uint16_t *bp =
              b + (j / 16) * kSteps * kTile + s * kTile + (p * 16 + j % 16) * 2;
          // The pair's two products (exact in fp32), then the sum.
          row[j] += a0 * bf16ToFloat(bp[0]) + a1 * bf16ToFloat(bp[1]);
        }
      }
    }
    std::memcpy(c + i * ldc, row, sizeof(row));
  }
}

void microScalar(const uint16_t *a, const uint16_t *b, int64_t kSteps, float *c,
                 int64_t ldc, bool addC) {
  rowsScalar(a, b, kSteps, kMr, c, ldc, addC);
}

void microRowsScalar(const uint16_t *a, const uint16_t *b, int64_t kSteps,
                     int64_t rows, float *acc) {
  rowsScalar(a, b, kSteps, rows, acc, kNr, false);
}

void epilogueScalar(const float *acc, int64_t rows, int64_t cols, float alpha,
                    float beta, float *c, int64_t ldc) {
  for (int64_t i = 0; i < rows; ++i) {
    float *ci = c + i * ldc;
    const float *ai = acc + i * kNr;
    if (beta == 0.0f)
      for (int64_t j = 0; j < cols; ++j)
        ci[j] = alpha * ai[j];
    else
      for (int64_t j = 0; j < cols; ++j)
        ci[j] = alpha * ai[j] + beta * ci[j];
  }
}

void nothing() {}

constexpr Kernels kScalar = {packAScalar,     packBScalar,    microScalar,
                             microRowsScalar, epilogueScalar, nothing,
                             nothing};

//===----------------------------------------------------------------------===//
// AVX-512 BF16 path (packers and epilogue shared with AMX).
//===----------------------------------------------------------------------===//

#if SQ_X86

/// 16 fp32 -> 16 bf16 words (round to nearest even).
SQ_TARGET_BF16 inline __m256i toBf16(__m512 v) {
  return (__m256i)_mm512_cvtneps_pbh(v);
}

/// Loads up to 16 floats (mask m), zeros elsewhere.
SQ_TARGET_BF16 inline __m512 loadF(const float *p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}

SQ_TARGET_BF16 inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF)
                 : __mmask16((1u << std::max<int64_t>(n, 0)) - 1);
}

SQ_TARGET_BF16 inline __mmask32 mask32(int64_t n) {
  return n >= 32 ? __mmask32(0xFFFFFFFFu)
                 : __mmask32((1u << std::max<int64_t>(n, 0)) - 1);
}

/// Transposes a 16 x 16 matrix of dwords in place (r[i] = row i).
SQ_TARGET_BF16 void transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now r[i] holds, per 128-bit lane L, rows 4L'.. of columns: finish with
  // 128-bit lane shuffles across groups of 4 vectors.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

/// 32 values of a row (bf16 bits or fp32 rounded) starting at element
/// `off` of `p`, `n` of them valid: 16 dwords of (even, odd) pairs.
SQ_TARGET_BF16 inline __m512i loadRow32(const void *p, bool bf16, int64_t off,
                                        int64_t n) {
  if (n <= 0)
    return _mm512_setzero_si512();
  if (bf16)
    return _mm512_maskz_loadu_epi16(mask32(n),
                                    static_cast<const uint16_t *>(p) + off);
  const float *f = static_cast<const float *>(p) + off;
  __m512 lo = loadF(f, mask16(n)), hi = loadF(f + 16, mask16(n - 16));
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/// 16 values of a row (bf16 bits or fp32 rounded) starting at `off`, `n`
/// valid, zero-extended to dwords.
SQ_TARGET_BF16 inline __m512i loadRow16(const void *p, bool bf16, int64_t off,
                                        int64_t n) {
  if (n <= 0)
    return _mm512_setzero_si512();
  __m256i w;
  if (bf16)
    w = _mm256_maskz_loadu_epi16(mask16(n),
                                 static_cast<const uint16_t *>(p) + off);
  else
    w = toBf16(loadF(static_cast<const float *>(p) + off, mask16(n)));
  return _mm512_cvtepu16_epi32(w);
}

SQ_TARGET_BF16 void packAAVX(const AOperand &a, const ABlock &blk, int64_t g0,
                             int64_t g1, uint16_t *dst) {
  for (int64_t g = g0; g < g1; ++g) {
    uint16_t *group = dst + g * blk.kSteps * kTile;
    if (!a.trans) {
      for (int64_t r = 0; r < 16; ++r) {
        int64_t i = g * 16 + r;
        // Rows past the end are zeros (and their addresses never formed).
        const float *src =
            i < blk.rows ? a.p + (blk.i0 + i) * a.ld + blk.k0 : nullptr;
        for (int64_t s = 0; s < blk.kSteps; ++s) {
          __m512i v =
              src ? loadRow32(src, false, s * kStepK, blk.kc - s * kStepK)
                  : _mm512_setzero_si512();
          _mm512_store_si512(group + s * kTile + r * kStepK, v);
        }
      }
      continue;
    }
    // A stored [k, m]: 32 k rows of 16 consecutive i, transposed per step.
    int64_t valid = std::min<int64_t>(16, blk.rows - g * 16);
    for (int64_t s = 0; s < blk.kSteps; ++s) {
      __m512i r[16];
      for (int64_t p = 0; p < 16; ++p) {
        int64_t kk = s * kStepK + 2 * p;
        __m512i e =
            kk < blk.kc
                ? loadRow16(a.p, false, (blk.k0 + kk) * a.ld + blk.i0 + g * 16,
                            valid)
                : _mm512_setzero_si512();
        __m512i o =
            kk + 1 < blk.kc
                ? loadRow16(a.p, false,
                            (blk.k0 + kk + 1) * a.ld + blk.i0 + g * 16, valid)
                : _mm512_setzero_si512();
        r[p] = _mm512_or_si512(e, _mm512_slli_epi32(o, 16)); // [p][i]
      }
      transpose16x16(r); // [i][p]
      for (int64_t i = 0; i < 16; ++i)
        _mm512_store_si512(group + s * kTile + i * kStepK, r[i]);
    }
  }
}

SQ_TARGET_BF16 void packBAVX(const BOperand &b, const BBlock &blk, int64_t t0,
                             int64_t t1, uint16_t *dst) {
  if (b.nMajor) {
    // Column j's 32 k values are contiguous: 16 pair dwords per column,
    // transposed to [pair][column]. Column group by column group, so each
    // source row is read sequentially.
    for (int64_t t = t0; t < t1; ++t) {
      uint16_t *group = dst + t * blk.kSteps * kTile;
      int64_t valid = std::min<int64_t>(16, blk.cols - t * 16); // columns
      for (int64_t s = 0; s < blk.kSteps; ++s) {
        int64_t k0 = blk.k0 + s * kStepK, kValid = blk.kc - s * kStepK;
        __m512i r[16];
        for (int64_t j = 0; j < 16; ++j)
          r[j] = j < valid
                     ? loadRow32(b.p, b.bf16, (blk.j0 + t * 16 + j) * b.ld + k0,
                                 kValid)
                     : _mm512_setzero_si512();
        transpose16x16(r);
        for (int64_t p = 0; p < 16; ++p)
          _mm512_store_si512(group + s * kTile + p * 32, r[p]);
      }
    }
    return;
  }
  // Rows k and k + 1 interleaved word by word, two column groups (32
  // columns, one cache line of bf16) at a time: each source line is read
  // once and whole, each pair of tiles written sequentially.
  alignas(64) static const uint16_t kIdx[2][32] = {
      {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
       8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47},
      {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
       24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63}};
  __m512i idx0 = _mm512_load_si512(kIdx[0]), idx1 = _mm512_load_si512(kIdx[1]);
  for (int64_t t = t0; t < t1; t += 2) {
    int64_t valid = std::min<int64_t>(32, blk.cols - t * 16); // columns
    int64_t col = blk.j0 + t * 16;
    uint16_t *g0 = dst + t * blk.kSteps * kTile;
    uint16_t *g1 = g0 + blk.kSteps * kTile;
    bool second = t + 1 < t1;
    for (int64_t s = 0; s < blk.kSteps; ++s) {
      int64_t k0 = blk.k0 + s * kStepK, kValid = blk.kc - s * kStepK;
      for (int64_t p = 0; p < 16; ++p) {
        int64_t kk = 2 * p;
        __m512i e = kk < kValid
                        ? loadRow32(b.p, b.bf16, (k0 + kk) * b.ld + col, valid)
                        : _mm512_setzero_si512();
        __m512i o =
            kk + 1 < kValid
                ? loadRow32(b.p, b.bf16, (k0 + kk + 1) * b.ld + col, valid)
                : _mm512_setzero_si512();
        _mm512_store_si512(g0 + s * kTile + p * 32,
                           _mm512_permutex2var_epi16(e, idx0, o));
        if (second)
          _mm512_store_si512(g1 + s * kTile + p * 32,
                             _mm512_permutex2var_epi16(e, idx1, o));
      }
    }
  }
}

/// Rows [0, R) of a 16-row group (ag: its first tile, row 0 at offset 0)
/// times two column groups (b, b + kSteps tiles): c [R, 32] (row stride
/// ldc), plus c when addC. Per k pair: two B vectors, R broadcasts, 2 R
/// VDPBF16PS.
template <int R>
SQ_TARGET_BF16 void rowsAVX(const uint16_t *ag, const uint16_t *b,
                            int64_t kSteps, float *c, int64_t ldc, bool addC) {
  const uint16_t *b0 = b, *b1 = b + kSteps * kTile;
  __m512 c0[R], c1[R];
  for (int r = 0; r < R; ++r) {
    c0[r] = addC ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    c1[r] = addC ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < kSteps; ++s) {
    const uint16_t *as = ag + s * kTile;
    const uint16_t *bs0 = b0 + s * kTile, *bs1 = b1 + s * kTile;
    for (int p = 0; p < 16; ++p) {
      __m512bh v0 = (__m512bh)_mm512_load_si512(bs0 + p * 32);
      __m512bh v1 = (__m512bh)_mm512_load_si512(bs1 + p * 32);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        std::memcpy(&pair, as + r * kStepK + 2 * p, 4);
        __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        c0[r] = _mm512_dpbf16_ps(c0[r], x, v0);
        c1[r] = _mm512_dpbf16_ps(c1[r], x, v1);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(c + r * ldc, c0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
  }
}

SQ_TARGET_BF16 void microAVX(const uint16_t *a, const uint16_t *b,
                             int64_t kSteps, float *c, int64_t ldc, bool addC) {
  for (int64_t rg = 0; rg < kMr / 8; ++rg)
    rowsAVX<8>(a + (rg / 2) * kSteps * kTile + (rg % 2) * 8 * kStepK, b, kSteps,
               c + rg * 8 * ldc, ldc, addC);
}

SQ_TARGET_BF16 void microRowsAVX(const uint16_t *a, const uint16_t *b,
                                 int64_t kSteps, int64_t rows, float *acc) {
  if (rows <= 1)
    rowsAVX<1>(a, b, kSteps, acc, kNr, false);
  else if (rows <= 2)
    rowsAVX<2>(a, b, kSteps, acc, kNr, false);
  else if (rows <= 4)
    rowsAVX<4>(a, b, kSteps, acc, kNr, false);
  else
    rowsAVX<8>(a, b, kSteps, acc, kNr, false);
}

SQ_TARGET_BF16 void epilogueAVX(const float *acc, int64_t rows, int64_t cols,
                                float alpha, float beta, float *c,
                                int64_t ldc) {
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  for (int64_t i = 0; i < rows; ++i) {
    float *ci = c + i * ldc;
    const float *ai = acc + i * kNr;
    __m512 x0 = _mm512_mul_ps(va, _mm512_load_ps(ai));
    __m512 x1 = _mm512_mul_ps(va, _mm512_load_ps(ai + 16));
    if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), x1);
    }
    _mm512_mask_storeu_ps(ci, m0, x0);
    _mm512_mask_storeu_ps(ci + 16, m1, x1);
  }
}

constexpr Kernels kAVX = {packAAVX,    packBAVX, microAVX, microRowsAVX,
                          epilogueAVX, nothing,  nothing};

//===----------------------------------------------------------------------===//
// AMX-BF16 path.
//===----------------------------------------------------------------------===//

/// ldtilecfg's 64-byte layout (palette 1): all 8 tiles 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = 16;
    }
  }
};

SQ_TARGET_AMX void beginAMX() {
  static const TileConfig config;
  _tile_loadconfig(&config);
}

SQ_TARGET_AMX void endAMX() { _tile_release(); }

SQ_TARGET_AMX void microAMX(const uint16_t *a, const uint16_t *b,
                            int64_t kSteps, float *c, int64_t ldc, bool addC) {
  const uint16_t *a1 = a + kSteps * kTile, *b1 = b + kSteps * kTile;
  float *c1 = c + 16 * ldc;
  if (addC) {
    _tile_loadd(0, c, ldc * 4);
    _tile_loadd(1, c + 16, ldc * 4);
    _tile_loadd(2, c1, ldc * 4);
    _tile_loadd(3, c1 + 16, ldc * 4);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < kSteps; ++s) {
    _tile_loadd(4, a + s * kTile, 64);
    _tile_loadd(6, b + s * kTile, 64);
    _tile_loadd(7, b1 + s * kTile, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a1 + s * kTile, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldc * 4);
  _tile_stored(1, c + 16, ldc * 4);
  _tile_stored(2, c1, ldc * 4);
  _tile_stored(3, c1 + 16, ldc * 4);
}

// A few rows (<= 8) go to the AVX-512 kernel: a tile product would compute
// 32.
constexpr Kernels kAMX = {packAAVX,    packBAVX, microAMX, microRowsAVX,
                          epilogueAVX, beginAMX, endAMX};

#endif // SQ_X86

const Kernels &kernelsFor(GemmPath path) {
#if SQ_X86
  if (path == GemmPath::AMX)
    return kAMX;
  if (path == GemmPath::AVX512BF16)
    return kAVX;
#endif
  return kScalar;
}

//===----------------------------------------------------------------------===//
// Buffers and the driver.
//===----------------------------------------------------------------------===//

/// A 64-byte aligned scratch buffer that grows and is kept (one per thread:
/// no allocation per call once warm).
struct Scratch {
  uint16_t *p = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(p); }
  uint16_t *get(size_t values) {
    if (values > size) {
      std::free(p);
      size_t bytes = (values * 2 + 63) / 64 * 64;
      p = static_cast<uint16_t *>(std::aligned_alloc(64, bytes));
      if (!p) {
        size = 0;
        std::fprintf(stderr, "sq gemm: out of memory (%zu bytes)\n", bytes);
        std::abort();
      }
      size = bytes / 2;
    }
    return p;
  }
};

Scratch &aScratch() {
  static thread_local Scratch s;
  return s;
}
Scratch &bScratch() {
  static thread_local Scratch s;
  return s;
}

GemmPath resolvePath(GemmPath want) {
  if (want != GemmPath::Auto && gemmPathSupported(want))
    return want;
  return gemmDefaultPath();
}

void scaleC(int64_t m, int64_t n, float beta, float *c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

void run(int64_t m, int64_t n, int64_t k, float alpha, const AOperand &a,
         const BOperand &b, float beta, float *c, int64_t ldc,
         const GemmOptions &options) {
  if (m <= 0 || n <= 0)
    return;
  if (k <= 0) {
    scaleC(m, n, beta, c, ldc);
    return;
  }
  const Kernels &kern = kernelsFor(resolvePath(options.path));
  ThreadPool &pool = options.pool ? *options.pool : ThreadPool::global();
  int64_t threads = pool.size();

  // N blocks: at most kNc columns, a multiple of kNr, small enough that the
  // threads all get a block when N allows it.
  int64_t nc = std::min<int64_t>(
      kNc, std::max<int64_t>(kNr, ceilDiv(ceilDiv(n, threads), kNr) * kNr));
  int64_t nBlocks = ceilDiv(n, nc);

  for (int64_t i0 = 0; i0 < m; i0 += kMc) {
    int64_t mc = std::min(kMc, m - i0);
    int64_t mPairs = ceilDiv(mc, kMr); // 32-row groups
    // Split the rows too when there are fewer N blocks than threads.
    int64_t mParts = std::min<int64_t>(mPairs, ceilDiv(2 * threads, nBlocks));
    mParts = std::max<int64_t>(mParts, 1);
    int64_t pairsPerPart = ceilDiv(mPairs, mParts);
    mParts = ceilDiv(mPairs, pairsPerPart);

    // K in super-blocks of up to kKs values: A is packed for the whole
    // super-block first (one barrier), then every item runs all its K
    // blocks, so a thread that falls behind (another process on its core)
    // delays the others only once per super-block.
    int64_t kBlocksMax = ceilDiv(std::min(kKs, k), kKc);
    size_t aBlockValues = size_t(mPairs * 2 * (kKc / kStepK) * kTile);
    uint16_t *packedA = aScratch().get(aBlockValues * size_t(kBlocksMax));
    for (int64_t ks0 = 0; ks0 < k; ks0 += kKs) {
      int64_t kBlocks = ceilDiv(std::min(kKs, k - ks0), kKc);
      auto blockOf = [&](int64_t kb) {
        int64_t k0 = ks0 + kb * kKc, kc = std::min(kKc, k - k0);
        return ABlock{i0, mc, k0, kc, ceilDiv(kc, kStepK)};
      };
      pool.parallelFor(kBlocks * mPairs * 2, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1;) {
          int64_t kb = u / (mPairs * 2), g0 = u % (mPairs * 2);
          int64_t g1 = std::min(mPairs * 2, g0 + (u1 - u));
          kern.packA(a, blockOf(kb), g0, g1, packedA + kb * aBlockValues);
          u += g1 - g0;
        }
      });
      pool.parallelFor(nBlocks * mParts, [&](int64_t w0, int64_t w1) {
        kern.begin();
        alignas(64) float acc[kMr * kNr];
        for (int64_t w = w0; w < w1; ++w) {
          int64_t nb = w / mParts, part = w % mParts;
          int64_t j0 = nb * nc, cols = std::min(nc, n - j0);
          int64_t nPairs = ceilDiv(cols, kNr);
          int64_t p0 = part * pairsPerPart,
                  p1 = std::min(mPairs, p0 + pairsPerPart);
          for (int64_t kb = 0; kb < kBlocks; ++kb) {
            ABlock ablk = blockOf(kb);
            int64_t kSteps = ablk.kSteps;
            const uint16_t *packedAk = packedA + kb * aBlockValues;
            float blockBeta = ablk.k0 == 0 ? beta : 1.0f;
            bool direct =
                alpha == 1.0f && (blockBeta == 0.0f || blockBeta == 1.0f);
            BBlock bblk{j0, cols, ablk.k0, ablk.kc, kSteps};
            uint16_t *packedB =
                bScratch().get(size_t(nPairs * 2 * kSteps * kTile));
            kern.packB(b, bblk, 0, nPairs * 2, packedB);
            for (int64_t mp = p0; mp < p1; ++mp) {
              const uint16_t *ap = packedAk + mp * 2 * kSteps * kTile;
              int64_t rows = std::min(kMr, mc - mp * kMr);
              float *crow = c + (i0 + mp * kMr) * ldc + j0;
              for (int64_t np = 0; np < nPairs; ++np) {
                const uint16_t *bp = packedB + np * 2 * kSteps * kTile;
                int64_t ncols = std::min(kNr, cols - np * kNr);
                if (direct && rows == kMr && ncols == kNr) {
                  // A whole 32 x 32 block with alpha 1: summed into C in
                  // place.
                  kern.micro(ap, bp, kSteps, crow + np * kNr, ldc,
                             blockBeta != 0.0f);
                } else {
                  if (rows <= 8)
                    kern.microRows(ap, bp, kSteps, rows, acc);
                  else
                    kern.micro(ap, bp, kSteps, acc, kNr, false);
                  kern.epilogue(acc, rows, ncols, alpha, blockBeta,
                                crow + np * kNr, ldc);
                }
              }
            }
          }
        }
        kern.end();
      });
    }
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Paths.
//===----------------------------------------------------------------------===//

const char *gemmPathName(GemmPath path) {
  switch (path) {
  case GemmPath::Auto:
    return "auto";
  case GemmPath::AMX:
    return "amx";
  case GemmPath::AVX512BF16:
    return "avx512bf16";
  case GemmPath::Scalar:
    return "scalar";
  }
  return "unknown";
}

bool gemmPathSupported(GemmPath path) {
  switch (path) {
  case GemmPath::Auto:
  case GemmPath::Scalar:
    return true;
#if SQ_X86
  case GemmPath::AVX512BF16:
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
  case GemmPath::AMX:
    return gemmPathSupported(GemmPath::AVX512BF16) && cpuHasAmxBf16() &&
           amxTileUsable();
#else
  default:
    return false;
#endif
  }
  return false;
}

GemmPath gemmDefaultPath() {
  static const GemmPath path = [] {
    GemmPath best = gemmPathSupported(GemmPath::AMX) ? GemmPath::AMX
                    : gemmPathSupported(GemmPath::AVX512BF16)
                        ? GemmPath::AVX512BF16
                        : GemmPath::Scalar;
    const char *env = std::getenv("SQ_GEMM_PATH");
    if (!env || !*env)
      return best;
    std::string name(env);
    for (GemmPath p : {GemmPath::AMX, GemmPath::AVX512BF16, GemmPath::Scalar})
      if (name == gemmPathName(p)) {
        if (gemmPathSupported(p))
          return p;
        std::fprintf(stderr,
                     "sq: SQ_GEMM_PATH=%s is not supported here, using %s\n",
                     env, gemmPathName(best));
        return best;
      }
    if (name != "auto")
      std::fprintf(stderr,
                   "sq: unknown SQ_GEMM_PATH=%s (amx|avx512bf16|scalar), "
                   "using %s\n",
                   env, gemmPathName(best));
    return best;
  }();
  return path;
}

bool gemmBF16Preferred() {
  switch (gemmDefaultPath()) {
  case GemmPath::AMX:
    return true;
  case GemmPath::AVX512BF16:
    return cpuIsAmd();
  default:
    return false;
  }
}

//===----------------------------------------------------------------------===//
// Entry points.
//===----------------------------------------------------------------------===//

void gemm(int64_t m, const float *a, int64_t lda, const PackedMatrix &w,
          Transpose op, float *c, int64_t ldc, float alpha, float beta,
          const GemmOptions &options) {
  bool t = op == Transpose::Yes;
  int64_t k = t ? w.cols() : w.rows(), n = t ? w.rows() : w.cols();
  AOperand ao{a, lda, false};
  BOperand bo{w.row(0), w.stride(), true, t};
  run(m, n, k, alpha, ao, bo, beta, c, ldc, options);
}

void gemmBF16(Transpose ta, Transpose tb, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, const float *b,
              int64_t ldb, float beta, float *c, int64_t ldc,
              const GemmOptions &options) {
  AOperand ao{a, lda, ta == Transpose::Yes};
  BOperand bo{b, ldb, false, tb == Transpose::Yes};
  run(m, n, k, alpha, ao, bo, beta, c, ldc, options);
}

} // namespace numerics
} // namespace sq
