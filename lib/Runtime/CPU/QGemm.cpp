//===- QGemm.cpp - integer GEMM/GEMV on packed int4/int8 weights ----------===//
//
// Layout (sq/Runtime/KernelLayout.h: written into the sidecar by the
// compiler, or built by packWeight; shared by every path):
//
//  * N is split in panels of 64 output columns (the last one padded with
//    zero weights), K in chunks of 8 values (K padded to kPadded, a multiple
//    of 64, with zero weights). A panel is stored contiguously, chunk after
//    chunk, so the GEMV streams each panel once.
//  * int4: a chunk is 4 x 64 bytes; in the i-th 64 bytes, dword l is column
//    16 i + l and its byte t holds w[k0 + t] + 8 in the low nibble and
//    w[k0 + 4 + t] + 8 in the high nibble (biased to [0, 15], so one AND
//    (and a shift) gives vpdpbusd/vpmaddubsw operands for k0..k0+3 and
//    k0+4..k0+7 directly; the bias is removed with 8 * sum q).
//  * int8: a chunk is 2 x 4 x 64 bytes, the same with one k4 step per 256
//    bytes and the signed values as they are.
//
// The kernels vectorize along N: a weight vector holds 16 columns x 4 k, an
// activation dword (4 codes of one row) is broadcast, so no horizontal sums
// are needed and a block end costs one conversion per accumulator. Integer
// sums of one block are exact in int32; blocks are combined in float as
// float(I) * sw * sa, in the same order on every path (bit-identical
// results between paths and thread counts).
//
//===----------------------------------------------------------------------===//

#include "QGemm.h"

#include "sq/Numerics/CpuFeatures.h"
#include "sq/Numerics/Pack.h"
#include "sq/Numerics/Quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#define SQ_X86 1
#include <immintrin.h>
#define SQ_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define SQ_TARGET_AVX2 __attribute__((target("avx2")))
#define SQ_TARGET_AMX                                                          \
  __attribute__((target("avx512f,avx512bw,avx512vnni,amx-tile,amx-int8")))
#else
#define SQ_X86 0
#endif

namespace sq {
namespace rt {

namespace {

constexpr int64_t kPanel = 64; // output columns per panel
constexpr int64_t kChunk = 8;  // K values per chunk
static_assert(kPanel == kKernelPanel && kChunk == kKernelChunk,
              "the kernels read sq/Runtime/KernelLayout.h's layout");

int32_t load32(const uint8_t *p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// Everything a tile kernel needs, computed once per qgemm call.
struct Plan {
  const uint8_t *codes = nullptr; // acts, rows of lda bytes
  int64_t lda = 0;
  int64_t m = 0, n = 0, kPadded = 0;
  int64_t blocks = 0, blockSize = 0;
  const float *sa = nullptr;   // [M, blocks] activation scale per block
  const int32_t *za = nullptr; // [M, blocks] activation zero point
  const int32_t *cq = nullptr; // [M, blocks] bias * sum of codes
  const uint8_t *w = nullptr;  // panel 0
  int64_t panelBytes = 0;
  const int32_t *bsum = nullptr; // [panels, blocks, 64]
  const float *bscale = nullptr; // [panels, blocks, 64]
  float *out = nullptr;
  bool w4 = true;

  int64_t chunkBegin(int64_t b) const { return b * blockSize / kChunk; }
  int64_t chunkEnd(int64_t b) const {
    return b + 1 == blocks ? kPadded / kChunk : (b + 1) * blockSize / kChunk;
  }
  int64_t kBegin(int64_t b) const { return b * blockSize; }
  int64_t kEnd(int64_t b) const {
    return b + 1 == blocks ? kPadded : (b + 1) * blockSize;
  }
  int64_t validCols(int64_t panel) const {
    return std::min<int64_t>(kPanel, n - panel * kPanel);
  }
};

//===----------------------------------------------------------------------===//
// Scalar path (also the fallback for blocks that are not whole chunks).
//===----------------------------------------------------------------------===//

void unpackChunk(const Plan &p, const uint8_t *panelData, int64_t c,
                 int8_t w[kChunk][kPanel]) {
  if (p.w4) {
    const uint8_t *src = panelData + c * 256;
    for (int64_t col = 0; col < kPanel; ++col)
      for (int t = 0; t < 4; ++t) {
        uint8_t byte = src[col * 4 + t];
        w[t][col] = static_cast<int8_t>((byte & 0xF) - 8);
        w[t + 4][col] = static_cast<int8_t>((byte >> 4) - 8);
      }
  } else {
    const uint8_t *src = panelData + c * 512;
    for (int h = 0; h < 2; ++h)
      for (int64_t col = 0; col < kPanel; ++col)
        for (int t = 0; t < 4; ++t)
          w[h * 4 + t][col] = static_cast<int8_t>(src[h * 256 + col * 4 + t]);
  }
}

void panelScalar(const Plan &p, int64_t panel, int64_t m0, int64_t m1) {
  const int64_t rows = m1 - m0;
  std::vector<int32_t> iacc(rows * kPanel);
  std::vector<float> facc(rows * kPanel, 0.0f);
  const uint8_t *wp = p.w + panel * p.panelBytes;
  const int32_t *bsum = p.bsum + panel * p.blocks * kPanel;
  const float *bsc = p.bscale + panel * p.blocks * kPanel;
  int8_t w[kChunk][kPanel];
  int64_t loaded = -1;
  for (int64_t b = 0; b < p.blocks; ++b) {
    std::fill(iacc.begin(), iacc.end(), 0);
    for (int64_t k = p.kBegin(b), ke = p.kEnd(b); k < ke; ++k) {
      if (k / kChunk != loaded) {
        loaded = k / kChunk;
        unpackChunk(p, wp, loaded, w);
      }
      const int8_t *wk = w[k % kChunk];
      for (int64_t r = 0; r < rows; ++r) {
        int32_t q = p.codes[(m0 + r) * p.lda + k];
        int32_t *acc = &iacc[r * kPanel];
        for (int64_t col = 0; col < kPanel; ++col)
          acc[col] += q * wk[col];
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      int64_t mb = (m0 + r) * p.blocks + b;
      for (int64_t col = 0; col < kPanel; ++col) {
        int32_t i = iacc[r * kPanel + col] - p.za[mb] * bsum[b * kPanel + col];
        float f = static_cast<float>(i) * bsc[b * kPanel + col];
        f = f * p.sa[mb];
        facc[r * kPanel + col] = b == 0 ? f : facc[r * kPanel + col] + f;
      }
    }
  }
  int64_t nv = p.validCols(panel);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(p.out + (m0 + r) * p.n + panel * kPanel, &facc[r * kPanel],
                nv * sizeof(float));
}

#if SQ_X86
//===----------------------------------------------------------------------===//
// AVX-512 VNNI path: tiles of MR rows x 64 columns (4 x MR zmm accumulators).
//===----------------------------------------------------------------------===//

/// Converts the int32 sums of block b (ibuf) to float and stores them (one
/// block) or adds them to fbuf.
template <int MR>
SQ_TARGET_VNNI void blockEndVNNI(const Plan &p, int64_t m0, int64_t panel,
                                 int64_t b, const int32_t (*ibuf)[kPanel],
                                 float (*fbuf)[kPanel]) {
  const int32_t *bsum = p.bsum + (panel * p.blocks + b) * kPanel;
  const float *bsc = p.bscale + (panel * p.blocks + b) * kPanel;
  int64_t nv = p.validCols(panel);
  for (int r = 0; r < MR; ++r) {
    int64_t mb = (m0 + r) * p.blocks + b;
    __m512i cq = _mm512_set1_epi32(p.cq[mb]);
    __m512i za = _mm512_set1_epi32(p.za[mb]);
    __m512 sa = _mm512_set1_ps(p.sa[mb]);
    for (int j = 0; j < 4; ++j) {
      __m512i s = _mm512_loadu_si512(bsum + 16 * j);
      __m512i i = _mm512_sub_epi32(
          _mm512_sub_epi32(_mm512_load_si512(&ibuf[r][16 * j]), cq),
          _mm512_mullo_epi32(za, s));
      __m512 f =
          _mm512_mul_ps(_mm512_cvtepi32_ps(i), _mm512_loadu_ps(bsc + 16 * j));
      f = _mm512_mul_ps(f, sa);
      if (p.blocks == 1) {
        int64_t left = nv - 16 * j;
        if (left <= 0)
          continue;
        __mmask16 mask =
            left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
        _mm512_mask_storeu_ps(p.out + (m0 + r) * p.n + panel * kPanel + 16 * j,
                              mask, f);
      } else {
        if (b > 0)
          f = _mm512_add_ps(_mm512_loadu_ps(&fbuf[r][16 * j]), f);
        _mm512_storeu_ps(&fbuf[r][16 * j], f);
      }
    }
  }
}

/// How far ahead of the weights the GEMV prefetches, in bytes: 2 KiB took
/// the 2-thread GEMV from 15.8 to 21 GB/s on a Xeon with 16.5 GB/s of
/// plain streaming read (1 KiB: 19-21, 4 KiB: 20-21).
constexpr int64_t kPrefetch = 2048;

template <int MR>
SQ_TARGET_VNNI void tileVNNI(const Plan &p, int64_t m0, int64_t panel) {
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const uint8_t *a[MR];
  for (int r = 0; r < MR; ++r)
    a[r] = p.codes + (m0 + r) * p.lda;
  const uint8_t *wp = p.w + panel * p.panelBytes;
  alignas(64) float fbuf[MR][kPanel];
  for (int64_t b = 0; b < p.blocks; ++b) {
    __m512i acc[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < 4; ++j)
        acc[r][j] = _mm512_setzero_si512();
    int64_t c = p.chunkBegin(b), ce = p.chunkEnd(b);
    if (p.w4) {
      for (; c < ce; ++c) {
        const uint8_t *wc = wp + c * 256;
        if (MR == 1) // the GEMV streams the weights: read ahead
          for (int j = 0; j < 4; ++j)
            _mm_prefetch(reinterpret_cast<const char *>(wc) + kPrefetch +
                             64 * j,
                         _MM_HINT_T0);
        __m512i v[4];
        for (int j = 0; j < 4; ++j)
          v[j] = _mm512_and_si512(_mm512_loadu_si512(wc + 64 * j), nib);
        for (int r = 0; r < MR; ++r) {
          __m512i q = _mm512_set1_epi32(load32(a[r] + c * 8));
          for (int j = 0; j < 4; ++j)
            acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], q, v[j]);
        }
        for (int j = 0; j < 4; ++j)
          v[j] = _mm512_and_si512(
              _mm512_srli_epi16(_mm512_loadu_si512(wc + 64 * j), 4), nib);
        for (int r = 0; r < MR; ++r) {
          __m512i q = _mm512_set1_epi32(load32(a[r] + c * 8 + 4));
          for (int j = 0; j < 4; ++j)
            acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], q, v[j]);
        }
      }
    } else {
      for (; c < ce; ++c) {
        for (int h = 0; h < 2; ++h) {
          const uint8_t *wc = wp + c * 512 + h * 256;
          __m512i v[4];
          for (int j = 0; j < 4; ++j)
            v[j] = _mm512_loadu_si512(wc + 64 * j);
          for (int r = 0; r < MR; ++r) {
            __m512i q = _mm512_set1_epi32(load32(a[r] + c * 8 + h * 4));
            for (int j = 0; j < 4; ++j)
              acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], q, v[j]);
          }
        }
      }
    }
    // Through memory, so that acc never escapes and stays in registers.
    alignas(64) int32_t ibuf[MR][kPanel];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        _mm512_store_si512(&ibuf[r][16 * j], acc[r][j]);
    blockEndVNNI<MR>(p, m0, panel, b, ibuf, fbuf);
  }
  if (p.blocks > 1) {
    int64_t nv = p.validCols(panel);
    for (int r = 0; r < MR; ++r)
      std::memcpy(p.out + (m0 + r) * p.n + panel * kPanel, fbuf[r],
                  nv * sizeof(float));
  }
}

/// The GEMV (one row) over S panels at once: S independent weight streams
/// per thread keep more reads in flight than one (on a Xeon, 2-thread
/// streaming read: 1 stream per thread 17 GB/s, 4 streams 29 GB/s). Each
/// panel's integer sums and block ends are tileVNNI<1>'s: the same bits.
/// How far ahead of each stream gemvPanelsVNNI prefetches (measured, 2
/// threads, 540 MB of int4 weights cycled: 256: 22 GB/s, 512: 22.5-23.4,
/// 1-2 KiB: 21-23; L2 hints no better; single-stream panels with a 2 KiB
/// prefetch: 21, without: 15.8).
constexpr int64_t kGemvAhead = 512;

template <int S>
SQ_TARGET_VNNI void gemvPanelsVNNI(const Plan &p, int64_t panel0) {
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const uint8_t *a = p.codes;
  const uint8_t *wp[S];
  for (int s = 0; s < S; ++s)
    wp[s] = p.w + (panel0 + s) * p.panelBytes;
  alignas(64) float fbuf[S][1][kPanel];
  for (int64_t b = 0; b < p.blocks; ++b) {
    __m512i acc[S][4];
    for (int s = 0; s < S; ++s)
      for (int j = 0; j < 4; ++j)
        acc[s][j] = _mm512_setzero_si512();
    int64_t c = p.chunkBegin(b), ce = p.chunkEnd(b);
    if (p.w4) {
      for (; c < ce; ++c) {
        __m512i q0 = _mm512_set1_epi32(load32(a + c * 8));
        __m512i q1 = _mm512_set1_epi32(load32(a + c * 8 + 4));
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) {
          const uint8_t *wc = wp[s] + c * 256;
          for (int j = 0; j < 4; ++j)
            _mm_prefetch(reinterpret_cast<const char *>(wc) + kGemvAhead +
                             64 * j,
                         _MM_HINT_T0);
          for (int j = 0; j < 4; ++j) {
            __m512i raw = _mm512_loadu_si512(wc + 64 * j);
            acc[s][j] =
                _mm512_dpbusd_epi32(acc[s][j], q0, _mm512_and_si512(raw, nib));
            acc[s][j] = _mm512_dpbusd_epi32(
                acc[s][j], q1,
                _mm512_and_si512(_mm512_srli_epi16(raw, 4), nib));
          }
        }
      }
    } else {
      for (; c < ce; ++c)
        for (int h = 0; h < 2; ++h) {
          __m512i q = _mm512_set1_epi32(load32(a + c * 8 + h * 4));
#pragma GCC unroll 4
          for (int s = 0; s < S; ++s) {
            const uint8_t *wc = wp[s] + c * 512 + h * 256;
            for (int j = 0; j < 4; ++j)
              acc[s][j] = _mm512_dpbusd_epi32(acc[s][j], q,
                                              _mm512_loadu_si512(wc + 64 * j));
          }
        }
    }
    alignas(64) int32_t ibuf[S][1][kPanel];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        _mm512_store_si512(&ibuf[s][0][16 * j], acc[s][j]);
    for (int s = 0; s < S; ++s)
      blockEndVNNI<1>(p, 0, panel0 + s, b, ibuf[s], fbuf[s]);
  }
  if (p.blocks > 1)
    for (int s = 0; s < S; ++s)
      std::memcpy(p.out + (panel0 + s) * kPanel, fbuf[s][0],
                  p.validCols(panel0 + s) * sizeof(float));
}

constexpr int kGemvPanels = 4;

constexpr int kMaxRowsVNNI = 6;

void panelVNNI(const Plan &p, int64_t panel, int64_t m0, int64_t m1) {
  while (m0 < m1) {
    int64_t rows = std::min<int64_t>(kMaxRowsVNNI, m1 - m0);
    switch (rows) {
    case 1:
      tileVNNI<1>(p, m0, panel);
      break;
    case 2:
      tileVNNI<2>(p, m0, panel);
      break;
    case 3:
      tileVNNI<3>(p, m0, panel);
      break;
    case 4:
      tileVNNI<4>(p, m0, panel);
      break;
    case 5:
      tileVNNI<5>(p, m0, panel);
      break;
    default:
      tileVNNI<6>(p, m0, panel);
      break;
    }
    m0 += rows;
  }
}

//===----------------------------------------------------------------------===//
// AMX path (Sapphire Rapids and newer): tiles of 32 rows x 64 columns as 2 x 2
// tiles of 16 x 16 int32 per half panel, TDPBUSD over 64 K values at a time;
// rows past the last whole 32 and GEMVs take the VNNI tiles. The integer
// sums of a block are exact, and the block ends are blockEndVNNI's, so the
// results are the VNNI path's bits.
//===----------------------------------------------------------------------===//

constexpr int64_t kRowsAMX = 32;

/// The tile configuration (ldtilecfg's 64-byte layout, palette 1): tiles
/// 0-3 accumulators, 4-5 activations, 6-7 weights; 16 rows x 64 bytes each.
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

/// The weights of one panel in the int8 chunk layout (2 x 4 x 64 bytes per
/// chunk of 8 K values: 64-byte row h * 4 + j holds columns 16 j..16 j + 15,
/// K values 4 h..4 h + 3 of the chunk), which is a TDPBUSD weight tile of 16
/// rows at a stride of 256 bytes. int8 weights are stored so; int4 ones are
/// unpacked into `buffer` (nibbles 0..15, the bias of 8 as in the VNNI path).
SQ_TARGET_AMX const uint8_t *panelWeightsAMX(const Plan &p, int64_t panel,
                                             std::vector<uint8_t> &buffer) {
  const uint8_t *wp = p.w + panel * p.panelBytes;
  if (!p.w4)
    return wp;
  const int64_t chunks = p.kPadded / kChunk;
  buffer.resize(chunks * 512 + 64);
  uint8_t *dst = buffer.data() +
                 (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64;
  const __m512i nib = _mm512_set1_epi8(0x0F);
  for (int64_t c = 0; c < chunks; ++c)
    for (int j = 0; j < 4; ++j) {
      __m512i v = _mm512_loadu_si512(wp + c * 256 + 64 * j);
      _mm512_store_si512(dst + c * 512 + 64 * j, _mm512_and_si512(v, nib));
      _mm512_store_si512(dst + c * 512 + 256 + 64 * j,
                         _mm512_and_si512(_mm512_srli_epi16(v, 4), nib));
    }
  return dst;
}

SQ_TARGET_AMX void panelAMX(const Plan &p, int64_t panel, int64_t m0,
                            int64_t m1) {
  static thread_local std::vector<uint8_t> buffer;
  int64_t whole = (m1 - m0) / kRowsAMX * kRowsAMX;
  if (whole > 0) {
    static const TileConfig config;
    _tile_loadconfig(&config);
    const uint8_t *w = panelWeightsAMX(p, panel, buffer);
    alignas(64) int32_t ibuf[kRowsAMX][kPanel];
    alignas(64) float fbuf[kRowsAMX][kPanel];
    for (int64_t r0 = m0; r0 < m0 + whole; r0 += kRowsAMX) {
      const uint8_t *a0 = p.codes + r0 * p.lda;
      const uint8_t *a1 = a0 + 16 * p.lda;
      for (int64_t b = 0; b < p.blocks; ++b) {
        // K tiles of 64 values (8 chunks) of block b.
        int64_t t0 = p.chunkBegin(b) / 8, t1 = p.chunkEnd(b) / 8;
        for (int half = 0; half < 2; ++half) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          for (int64_t t = t0; t < t1; ++t) {
            const uint8_t *wt = w + t * 8 * 512 + half * 128;
            _tile_loadd(4, a0 + t * 64, p.lda);
            _tile_loadd(5, a1 + t * 64, p.lda);
            _tile_loadd(6, wt, 256);
            _tile_loadd(7, wt + 64, 256);
            _tile_dpbusd(0, 4, 6);
            _tile_dpbusd(1, 4, 7);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
          }
          _tile_stored(0, &ibuf[0][half * 32], kPanel * 4);
          _tile_stored(1, &ibuf[0][half * 32 + 16], kPanel * 4);
          _tile_stored(2, &ibuf[16][half * 32], kPanel * 4);
          _tile_stored(3, &ibuf[16][half * 32 + 16], kPanel * 4);
        }
        blockEndVNNI<16>(p, r0, panel, b, ibuf, fbuf);
        blockEndVNNI<16>(p, r0 + 16, panel, b, ibuf + 16, fbuf + 16);
      }
      if (p.blocks > 1) {
        int64_t nv = p.validCols(panel);
        for (int r = 0; r < kRowsAMX; ++r)
          std::memcpy(p.out + (r0 + r) * p.n + panel * kPanel, fbuf[r],
                      nv * sizeof(float));
      }
    }
    _tile_release();
  }
  if (m0 + whole < m1)
    panelVNNI(p, panel, m0 + whole, m1);
}

/// AMX-INT8 tiles that this process may use (sq/Numerics/CpuFeatures.h
/// asks Linux for the tile data once per process).
bool amxUsable() {
  return numerics::cpuHasAmxInt8() && numerics::amxTileUsable();
}

//===----------------------------------------------------------------------===//
// AVX2 path: tiles of MR rows x 16 columns (2 x MR ymm accumulators), four
// per panel. int4 weights are in [0, 15], so vpmaddubsw cannot saturate even
// with 8-bit codes (2 x 255 x 15); for int8 weights the codes are split in
// nibbles (2 x 15 x 128 fits int16) and recombined in int32.
//===----------------------------------------------------------------------===//

template <int MR, int NS>
SQ_TARGET_AVX2 void tileAVX2(const Plan &p, int64_t m0, int64_t panel, int s0) {
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i sixteen = _mm256_set1_epi16(16);
  const uint8_t *a[MR];
  for (int r = 0; r < MR; ++r)
    a[r] = p.codes + (m0 + r) * p.lda;
  const uint8_t *wp = p.w + panel * p.panelBytes + s0 * 64;
  alignas(32) float fbuf[MR][NS * 16];
  for (int64_t b = 0; b < p.blocks; ++b) {
    __m256i acc[MR][NS][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int s = 0; s < NS; ++s)
        acc[r][s][0] = acc[r][s][1] = _mm256_setzero_si256();
    int64_t c = p.chunkBegin(b), ce = p.chunkEnd(b);
    if (p.w4) {
      for (; c < ce; ++c) {
#pragma GCC unroll 8
        for (int s = 0; s < NS; ++s) {
          const uint8_t *wc = wp + c * 256 + s * 64;
          __m256i p0 = _mm256_loadu_si256((const __m256i *)wc);
          __m256i p1 = _mm256_loadu_si256((const __m256i *)(wc + 32));
          __m256i lo0 = _mm256_and_si256(p0, nib);
          __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(p0, 4), nib);
          __m256i lo1 = _mm256_and_si256(p1, nib);
          __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(p1, 4), nib);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            __m256i ql = _mm256_set1_epi32(load32(a[r] + c * 8));
            __m256i qh = _mm256_set1_epi32(load32(a[r] + c * 8 + 4));
            // Each vpmaddubsw result is at most 2 x 255 x 15 = 7650, so the
            // sum of two fits int16.
            __m256i t0 = _mm256_add_epi16(_mm256_maddubs_epi16(ql, lo0),
                                          _mm256_maddubs_epi16(qh, hi0));
            __m256i t1 = _mm256_add_epi16(_mm256_maddubs_epi16(ql, lo1),
                                          _mm256_maddubs_epi16(qh, hi1));
            acc[r][s][0] =
                _mm256_add_epi32(acc[r][s][0], _mm256_madd_epi16(t0, ones));
            acc[r][s][1] =
                _mm256_add_epi32(acc[r][s][1], _mm256_madd_epi16(t1, ones));
          }
        }
      }
    } else {
      for (; c < ce; ++c) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h)
#pragma GCC unroll 8
          for (int s = 0; s < NS; ++s) {
            const uint8_t *wc = wp + c * 512 + h * 256 + s * 64;
            __m256i w0 = _mm256_loadu_si256((const __m256i *)wc);
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(wc + 32));
#pragma GCC unroll 8
            for (int r = 0; r < MR; ++r) {
              __m256i q = _mm256_set1_epi32(load32(a[r] + c * 8 + h * 4));
              __m256i ql = _mm256_and_si256(q, nib);
              __m256i qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);
              __m256i s0 = _mm256_add_epi32(
                  _mm256_madd_epi16(_mm256_maddubs_epi16(ql, w0), ones),
                  _mm256_madd_epi16(_mm256_maddubs_epi16(qh, w0), sixteen));
              __m256i s1 = _mm256_add_epi32(
                  _mm256_madd_epi16(_mm256_maddubs_epi16(ql, w1), ones),
                  _mm256_madd_epi16(_mm256_maddubs_epi16(qh, w1), sixteen));
              acc[r][s][0] = _mm256_add_epi32(acc[r][s][0], s0);
              acc[r][s][1] = _mm256_add_epi32(acc[r][s][1], s1);
            }
          }
      }
    }
    // Block end, through memory so that acc stays in registers.
    alignas(32) int32_t ibuf[MR][NS * 16];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int s = 0; s < NS; ++s)
#pragma GCC unroll 2
        for (int j = 0; j < 2; ++j)
          _mm256_store_si256((__m256i *)&ibuf[r][16 * s + 8 * j], acc[r][s][j]);
    const int32_t *bsum = p.bsum + (panel * p.blocks + b) * kPanel + 16 * s0;
    const float *bsc = p.bscale + (panel * p.blocks + b) * kPanel + 16 * s0;
    for (int r = 0; r < MR; ++r) {
      int64_t mb = (m0 + r) * p.blocks + b;
      __m256i cq = _mm256_set1_epi32(p.cq[mb]);
      __m256i za = _mm256_set1_epi32(p.za[mb]);
      __m256 sa = _mm256_set1_ps(p.sa[mb]);
      for (int j = 0; j < 2 * NS; ++j) {
        __m256i sw = _mm256_loadu_si256((const __m256i *)(bsum + 8 * j));
        __m256i i = _mm256_sub_epi32(
            _mm256_sub_epi32(
                _mm256_load_si256((const __m256i *)&ibuf[r][8 * j]), cq),
            _mm256_mullo_epi32(za, sw));
        __m256 f =
            _mm256_mul_ps(_mm256_cvtepi32_ps(i), _mm256_loadu_ps(bsc + 8 * j));
        f = _mm256_mul_ps(f, sa);
        if (b > 0)
          f = _mm256_add_ps(_mm256_load_ps(&fbuf[r][8 * j]), f);
        _mm256_store_ps(&fbuf[r][8 * j], f);
      }
    }
  }
  int64_t nv = std::min<int64_t>(NS * 16, p.validCols(panel) - 16 * s0);
  for (int r = 0; r < MR; ++r)
    std::memcpy(p.out + (m0 + r) * p.n + panel * kPanel + 16 * s0, fbuf[r],
                nv * sizeof(float));
}

constexpr int kMaxRowsAVX2 = 4;

void panelAVX2(const Plan &p, int64_t panel, int64_t m0, int64_t m1) {
  int64_t nv = p.validCols(panel);
  for (int64_t m = m0; m < m1;) {
    int64_t rows = std::min<int64_t>(kMaxRowsAVX2, m1 - m);
    // One or two rows (decode): the whole panel in one pass, so the weights
    // stream from memory once and in order. More rows: 16 columns at a time
    // (the panel is then in L2).
    switch (rows) {
    case 1:
      tileAVX2<1, 4>(p, m, panel, 0);
      break;
    case 2:
      tileAVX2<2, 2>(p, m, panel, 0);
      if (nv > 32)
        tileAVX2<2, 2>(p, m, panel, 2);
      break;
    case 3:
      for (int s = 0; s < 4 && 16 * s < nv; ++s)
        tileAVX2<3, 1>(p, m, panel, s);
      break;
    default:
      for (int s = 0; s < 4 && 16 * s < nv; ++s)
        tileAVX2<4, 1>(p, m, panel, s);
      break;
    }
    m += rows;
  }
}
#endif // SQ_X86

/// Rows of M per work item: the work is split over (panel, row tile) pairs
/// so that small-N GEMMs still use every thread; a tile is always a whole
/// multiple of the kernels' row tiles, so the split does not change results.
constexpr int64_t kRowsPerItem = 96;

} // namespace

//===----------------------------------------------------------------------===//
// Path selection.
//===----------------------------------------------------------------------===//

const char *kernelPathName(KernelPath path) {
  switch (path) {
  case KernelPath::Scalar:
    return "scalar";
  case KernelPath::AVX2:
    return "avx2";
  case KernelPath::AVX512VNNI:
    return "avx512vnni";
  case KernelPath::AMX:
    return "amx";
  }
  return "unknown";
}

bool kernelPathSupported(KernelPath path) {
  switch (path) {
  case KernelPath::Scalar:
    return true;
#if SQ_X86
  case KernelPath::AVX2:
    return __builtin_cpu_supports("avx2");
  case KernelPath::AVX512VNNI:
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  case KernelPath::AMX:
    return kernelPathSupported(KernelPath::AVX512VNNI) && amxUsable();
#else
  default:
    return false;
#endif
  }
  return false;
}

static KernelPath bestPath() {
  if (kernelPathSupported(KernelPath::AMX))
    return KernelPath::AMX;
  if (kernelPathSupported(KernelPath::AVX512VNNI))
    return KernelPath::AVX512VNNI;
  if (kernelPathSupported(KernelPath::AVX2))
    return KernelPath::AVX2;
  return KernelPath::Scalar;
}

KernelPath selectKernelPath(std::string *note) {
  KernelPath best = bestPath();
  const char *env = std::getenv("SQ_CPU_KERNEL");
  if (!env || !*env)
    return best;
  std::string name(env);
  KernelPath want;
  if (name == "amx")
    want = KernelPath::AMX;
  else if (name == "avx512vnni" || name == "avx512")
    want = KernelPath::AVX512VNNI;
  else if (name == "avx2")
    want = KernelPath::AVX2;
  else if (name == "scalar")
    want = KernelPath::Scalar;
  else {
    if (note)
      *note = "unknown SQ_CPU_KERNEL='" + name +
              "' (amx|avx512vnni|avx2|scalar), "
              "using " +
              kernelPathName(best);
    return best;
  }
  if (!kernelPathSupported(want)) {
    if (note)
      *note = std::string("SQ_CPU_KERNEL=") + name +
              " is not supported by this CPU, using " + kernelPathName(best);
    return best;
  }
  return want;
}

//===----------------------------------------------------------------------===//
// GEMM.
//===----------------------------------------------------------------------===//

void qgemm(const QuantizedActs &acts, const PackedWeight &weight, float *out,
           KernelPath path, ThreadPool *pool) {
  const int64_t m = acts.m, n = weight.n;
  if (m <= 0 || n <= 0)
    return;
  // The activation blocks must be whole multiples of the kernel blocks.
  int64_t ag = acts.group > 0 && acts.group < acts.k ? acts.group : acts.k;
  int64_t actGroups = acts.k / ag;
  bool ok = acts.k == weight.k && acts.kPadded >= weight.kPadded &&
            weight.blocks > 0 && ag % weight.blockSize == 0 &&
            (weight.blocks == 1 ? ag == acts.k : true) &&
            int64_t(acts.scales.size()) >= m * actGroups &&
            int64_t(acts.zeros.size()) >= m * actGroups &&
            int64_t(acts.codes.size()) >= m * acts.kPadded;
  if (!ok) {
    std::fprintf(stderr,
                 "sq runtime: qgemm: activations (K = %lld, group %lld) do "
                 "not match the weight (K = %lld, block %lld)\n",
                 (long long)acts.k, (long long)acts.group, (long long)weight.k,
                 (long long)weight.blockSize);
    std::fill(out, out + m * n, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (!kernelPathSupported(path))
    path = bestPath();
  const int64_t blocks = weight.blocks;
  // Fast kernels step through K by chunks of 8.
  if (blocks > 1 && weight.blockSize % kChunk)
    path = KernelPath::Scalar;

  Plan p;
  p.codes = acts.codes.data();
  p.lda = acts.kPadded;
  p.m = m;
  p.n = n;
  p.kPadded = weight.kPadded;
  p.blocks = blocks;
  p.blockSize = weight.blockSize;
  p.w = weight.data;
  p.panelBytes = weight.panelBytes();
  p.bsum = weight.blockSums;
  p.bscale = weight.blockScales;
  p.out = out;
  p.w4 = weight.bits == 4;

  // Per (row, block): activation scale, zero point and bias * sum of codes
  // (int4 weights are stored biased by 8 for the SIMD paths).
  // Reused between calls (no allocation per decoded token); per thread, as
  // contexts may run concurrently.
  static thread_local std::vector<float> sa;
  static thread_local std::vector<int32_t> za, cq;
  sa.resize(m * blocks);
  za.resize(m * blocks);
  cq.resize(m * blocks);
  const int32_t bias = p.w4 ? 8 : 0;
  for (int64_t r = 0; r < m; ++r) {
    const uint8_t *codes = p.codes + r * p.lda;
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t gi = p.kBegin(b) / ag;
      sa[r * blocks + b] = acts.scales[r * actGroups + gi];
      za[r * blocks + b] = acts.zeros[r * actGroups + gi];
      int32_t sum = 0;
      if (bias)
        for (int64_t kk = p.kBegin(b), ke = p.kEnd(b); kk < ke; ++kk)
          sum += codes[kk];
      cq[r * blocks + b] = bias * sum;
    }
  }
  p.sa = sa.data();
  p.za = za.data();
  p.cq = cq.data();

  void (*panelFn)(const Plan &, int64_t, int64_t, int64_t) = panelScalar;
  int64_t rowsPerItem = kRowsPerItem;
#if SQ_X86
  // AMX: K tiles of 64 values must not straddle kernel blocks; each work
  // item unpacks its panel once, so items take more rows.
  if (path == KernelPath::AMX && weight.blockSize % 64 == 0 && m >= kRowsAMX) {
    panelFn = panelAMX;
    rowsPerItem = 8 * kRowsPerItem;
  } else if (path == KernelPath::AMX || path == KernelPath::AVX512VNNI)
    panelFn = panelVNNI;
  else if (path == KernelPath::AVX2)
    panelFn = panelAVX2;
#endif
#if SQ_X86
  if (m == 1 && (path == KernelPath::AMX || path == KernelPath::AVX512VNNI)) {
    // GEMV: work items of kGemvPanels panels, each read as its own stream.
    const int64_t items = (weight.panels + kGemvPanels - 1) / kGemvPanels;
    auto gemv = [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        int64_t p0 = it * kGemvPanels;
        if (p0 + kGemvPanels <= weight.panels)
          gemvPanelsVNNI<kGemvPanels>(p, p0);
        else
          for (int64_t panel = p0; panel < weight.panels; ++panel)
            panelVNNI(p, panel, 0, 1);
      }
    };
    if (pool && items > 1)
      pool->parallelFor(items, gemv);
    else
      gemv(0, items);
    return;
  }
#endif
  const int64_t rowItems = (m + rowsPerItem - 1) / rowsPerItem;
  const int64_t items = weight.panels * rowItems;
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      int64_t panel = it / rowItems, ri = it % rowItems;
      int64_t m0 = ri * rowsPerItem,
              m1 = std::min<int64_t>(m, m0 + rowsPerItem);
      panelFn(p, panel, m0, m1);
    }
  };
  if (pool && items > 1)
    pool->parallelFor(items, work);
  else
    work(0, items);
}

} // namespace rt
} // namespace sq
