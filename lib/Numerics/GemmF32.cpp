//===- GemmF32.cpp - dense fp32 GEMM with an AVX-512F micro-kernel --------===//
//
// gemmF32 is cblas_sgemm's row-major product in fp32 for the big square
// products of the Cayley step (R1: 4096 x 4096 for a 7B model, eight
// products a step): our AVX-512F kernel wherever the CPU has it, and
// cblas_sgemm elsewhere. Its results do not depend on the thread count. (It
// was written against OpenBLAS's AVX2 "Haswell" kernels, at half the fp32
// rate on an AMD Zen 5; those came from OPENBLAS_CORETYPE=Haswell in that
// machine's environment. OpenBLAS 0.3.21 left to itself picks its AVX-512
// "Cooperlake" kernels there, as fast as this one or faster: docs/results.md,
// "OpenBLAS on the AMD EPYC, corrected".)
//
// Blocking (GotoBLAS/BLIS): K in blocks of kKc, each C element summed block
// by block in order, each block's terms in k order, so that the number of
// threads and the split of the work do not change results. Work items are
// (N block, row range) pairs; an item packs its B block (kKc x N block, in
// kNr-column panels) and then, kMc rows at a time, its A block (in kMr-row
// panels), and runs the kMr x kNr micro-kernel over them (the A block stays
// in L2). On the AMD EPYC (Zen 5) of docs/results.md, 4096^3 on 2 threads:
// K blocks of 256 ran at ~300 GFLOP/s, 512 (rows 240 or 384) at ~360-385,
// 768 and 1024 no faster; OpenBLAS's AVX2 kernels ~200, its AVX-512 ones
// (OPENBLAS_CORETYPE=SkylakeX) ~400.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Gemm.h"

#include "sq/Numerics/ThreadPool.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define SQ_F32_X86 1
#define SQ_TARGET_F32 __attribute__((target("avx512f")))
#else
#define SQ_F32_X86 0
#endif

namespace sq {
namespace numerics {

namespace {

#if SQ_F32_X86

constexpr int64_t kMr = 12;      // micro-kernel rows (12 x 2 accumulators)
constexpr int64_t kNr = 32;      // micro-kernel columns (two zmm)
constexpr int64_t kKc = 512;     // K block: a B micro-panel is 64 KB
constexpr int64_t kNcMax = 4096; // columns per work item (B block: 8 MiB)
constexpr int64_t kMc = 240;     // rows per packed A block (480 KB)

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Scratch that grows and is kept per thread (no allocation per call).
float *scratch(std::vector<float> &v, size_t n) {
  if (v.size() < n + 16)
    v.resize(n + 16);
  uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float *>((p + 63) & ~uintptr_t(63));
}

struct Operand {
  const float *p;
  int64_t ld;
  bool trans;
};

/// Packs lanes [l0, l0 + lanes) x k [k0, k0 + kc) of a matrix into panels
/// of W lanes: panel q at dst + q kc W, element (lane, k) at [k W + lane];
/// lanes past the end are zero. Element (lane, k) of the source is at
/// p[k ld + lane] when `laneContiguous` (each k copies a run of lanes), else
/// at p[lane ld + k]. A's panels have rows as lanes (contiguous when A is
/// transposed), B's columns (contiguous when B is not).
template <int64_t W>
void packPanels(const float *p, int64_t ld, bool laneContiguous, int64_t l0,
                int64_t lanes, int64_t k0, int64_t kc, float *dst) {
  for (int64_t q = 0; q < ceilDiv(lanes, W); ++q) {
    float *panel = dst + q * kc * W;
    int64_t first = l0 + q * W, valid = std::min(W, lanes - q * W);
    if (laneContiguous) {
      for (int64_t k = 0; k < kc; ++k) {
        float *out = panel + k * W;
        std::memcpy(out, p + (k0 + k) * ld + first,
                    size_t(valid) * sizeof(float));
        std::fill(out + valid, out + W, 0.0f);
      }
      continue;
    }
    for (int64_t lane = 0; lane < W; ++lane) {
      const float *src = lane < valid ? p + (first + lane) * ld + k0 : nullptr;
      for (int64_t k = 0; k < kc; ++k)
        panel[k * W + lane] = src ? src[k] : 0.0f;
    }
  }
}

/// A rows [i0, i0 + rows) x k [k0, k0 + kc) into kMr-row panels.
void packA(const Operand &a, int64_t i0, int64_t rows, int64_t k0, int64_t kc,
           float *dst) {
  packPanels<kMr>(a.p, a.ld, a.trans, i0, rows, k0, kc, dst);
}

/// B k [k0, k0 + kc) x columns [j0, j0 + cols) into kNr-column panels.
void packB(const Operand &b, int64_t j0, int64_t cols, int64_t k0, int64_t kc,
           float *dst) {
  packPanels<kNr>(b.p, b.ld, !b.trans, j0, cols, k0, kc, dst);
}

SQ_TARGET_F32 inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF)
                 : __mmask16((1u << std::max<int64_t>(n, 0)) - 1);
}

/// C[rows, cols] (+)= the kMr x kNr product of an A panel and a B panel
/// over kc: first block: C = alpha acc + beta C (beta 0: C not read);
/// later blocks: C += alpha acc.
SQ_TARGET_F32 void micro(int64_t kc, const float *a, const float *b, float *c,
                         int64_t ldc, int64_t rows, int64_t cols, float alpha,
                         float beta, bool first) {
  // C's lines (12 rows 16 KB apart at n = 4096) come from memory: ask for
  // them now so that they arrive while the block is summed.
  for (int64_t r = 0; r < rows; ++r) {
    _mm_prefetch(reinterpret_cast<const char *>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(c + r * ldc + 16), _MM_HINT_T0);
  }
  __m512 acc0[kMr], acc1[kMr];
#pragma GCC unroll 12
  for (int r = 0; r < kMr; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(b + k * kNr);
    __m512 b1 = _mm512_load_ps(b + k * kNr + 16);
    const float *ak = a + k * kMr;
#pragma GCC unroll 12
    for (int r = 0; r < kMr; ++r) {
      __m512 x = _mm512_set1_ps(ak[r]);
      acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
    }
  }
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  bool one = alpha == 1.0f;
#pragma GCC unroll 12
  for (int r = 0; r < kMr; ++r) {
    if (r >= rows)
      break;
    float *cr = c + r * ldc;
    __m512 x0 = one ? acc0[r] : _mm512_mul_ps(va, acc0[r]);
    __m512 x1 = one ? acc1[r] : _mm512_mul_ps(va, acc1[r]);
    if (!first) {
      x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), x0);
      x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), x1);
    } else if (beta != 0.0f) {
      x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), x0);
      x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), x1);
    }
    _mm512_mask_storeu_ps(cr, m0, x0);
    _mm512_mask_storeu_ps(cr + 16, m1, x1);
  }
}

thread_local std::vector<float> tlsA, tlsB;

void runAVX512(int64_t m, int64_t n, int64_t k, float alpha, const Operand &a,
               const Operand &b, float beta, float *c, int64_t ldc,
               ThreadPool &pool) {
  int64_t threads = pool.size();
  // N blocks: a multiple of kNr, one per thread when N allows it; rows are
  // split too when there are fewer N blocks than threads.
  // At most kNcMax columns, so that a thread's packed B block stays within
  // 8 MiB whatever N (a vocabulary-sized N would otherwise pack 100+ MB).
  int64_t nc =
      std::clamp<int64_t>(ceilDiv(ceilDiv(n, threads), kNr) * kNr, kNr, kNcMax);
  int64_t nBlocks = ceilDiv(n, nc);
  int64_t panels = ceilDiv(m, kMr);
  int64_t mParts = std::clamp<int64_t>(ceilDiv(threads, nBlocks), 1, panels);
  int64_t panelsPerPart = ceilDiv(panels, mParts);
  mParts = ceilDiv(panels, panelsPerPart);
  pool.parallelFor(nBlocks * mParts, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      int64_t nb = w / mParts, part = w % mParts;
      int64_t j0 = nb * nc, cols = std::min(nc, n - j0);
      int64_t rowBegin = part * panelsPerPart * kMr;
      int64_t rowEnd = std::min(m, rowBegin + panelsPerPart * kMr);
      int64_t bPanels = ceilDiv(cols, kNr);
      float *pb = scratch(tlsB, size_t(bPanels * kKc * kNr));
      float *pa = scratch(tlsA, size_t(kMc * kKc));
      for (int64_t k0 = 0; k0 < k; k0 += kKc) {
        int64_t kc = std::min(kKc, k - k0);
        bool first = k0 == 0;
        packB(b, j0, cols, k0, kc, pb);
        for (int64_t i0 = rowBegin; i0 < rowEnd; i0 += kMc) {
          int64_t rows = std::min(kMc, rowEnd - i0);
          packA(a, i0, rows, k0, kc, pa);
          for (int64_t t = 0; t < bPanels; ++t) {
            int64_t pc = std::min(kNr, cols - t * kNr);
            for (int64_t q = 0; q < ceilDiv(rows, kMr); ++q) {
              int64_t pr = std::min(kMr, rows - q * kMr);
              micro(kc, pa + q * kc * kMr, pb + t * kc * kNr,
                    c + (i0 + q * kMr) * ldc + j0 + t * kNr, ldc, pr, pc, alpha,
                    beta, first);
            }
          }
        }
      }
    }
  });
}

#endif // SQ_F32_X86

} // namespace

bool gemmF32Native() {
#if SQ_F32_X86
  static const bool ok = [] {
    const char *env = std::getenv("SQ_GEMM_F32");
    if (env && std::string(env) == "blas")
      return false;
    return bool(__builtin_cpu_supports("avx512f"));
  }();
  return ok;
#else
  return false;
#endif
}

void gemmF32(Transpose ta, Transpose tb, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda, const float *b,
             int64_t ldb, float beta, float *c, int64_t ldc, ThreadPool *pool) {
  if (m <= 0 || n <= 0)
    return;
  bool tA = ta == Transpose::Yes, tB = tb == Transpose::Yes;
#if SQ_F32_X86
  if (k > 0 && gemmF32Native()) {
    runAVX512(m, n, k, alpha, Operand{a, lda, tA}, Operand{b, ldb, tB}, beta, c,
              ldc, pool ? *pool : ThreadPool::global());
    return;
  }
#endif
  cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans,
              tB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a,
              int(lda), b, int(ldb), beta, c, int(ldc));
}

} // namespace numerics
} // namespace sq
