//===- GemmBench.cpp - bf16 GEMM paths vs OpenBLAS sgemm ------------------===//
//
// sq::numerics::gemm (sq/Numerics/Gemm.h: fp32 activations rounded to bf16
// in the kernel, a PackedMatrix of bf16 weights, fp32 accumulation) against
// OpenBLAS cblas_sgemm (fp32 weights) in the same process, on the linear
// shapes of a calibration step: M = 2048 tokens, K -> N of LLaMA-2-7B
// (4096 -> 4096, 4096 -> 11008, 11008 -> 4096) and LLaMA-3.2-1B (2048 ->
// 8192, 8192 -> 2048, 2048 -> 128256: the tied head).
//
// Arguments: shape, orientation (0: forward C[M, N] = X[M, K] W^T, 1: the
// input gradient C[M, K] = dY[M, N] W, same W [N, K]), threads (1 or 2),
// implementation (0: OpenBLAS sgemm, 1: amx, 2: avx512bf16; a path this CPU
// lacks is skipped). Counter: GFLOP/s (2 M N K per call, real time).
// Peak/fma and Peak/dpbf16: one core's rate of a register-only loop of
// VFMADD231PS / VDPBF16PS (zmm), the ceilings of fp32 sgemm and of the
// AVX-512 BF16 path.
//
//   OPENBLAS_CORETYPE=SkylakeX build/bench/sq-bench-gemm
//   OPENBLAS_CORETYPE=SkylakeX build/bench/sq-bench-gemm \
//     --benchmark_filter='Gemm/0/'      # one shape
//
// OpenBLAS picks its kernels when loaded (OPENBLAS_VERBOSE=2 shows them); an
// OPENBLAS_CORETYPE in the environment wins (Haswell: AVX2, half the
// AVX-512 rate). The threads of each side are
// set per run (openblas_set_num_threads, a ThreadPool of that size); a run
// of SQ's paths starts 0.3 s after the last sgemm, when OpenBLAS' workers
// have stopped spinning.
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/ThreadPool.h"

#include <benchmark/benchmark.h>
#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int);

using namespace sq::numerics;

namespace {

struct Shape {
  int64_t k, n;
};
constexpr int64_t kM = 2048;
const Shape kShapes[] = {{4096, 4096}, {4096, 11008}, {11008, 4096},
                         {2048, 8192}, {8192, 2048},  {2048, 128256}};

/// Cheap deterministic values in [-1, 1) (the large shapes hold 10^8 of
/// them; the values do not change the speed).
void fill(std::vector<float> &v, uint32_t seed) {
  uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (float &x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = float(int32_t(s >> 32)) * (1.0f / 2147483648.0f);
  }
}

/// The operands of one shape, kept while consecutive runs use it.
struct Operands {
  int shape = -1;
  std::vector<float> w, a, c; // w [N, K] fp32; a and c big enough for both
  PackedMatrix pw;
};

Operands &operandsFor(int shape) {
  static Operands ops;
  if (ops.shape != shape) {
    ops = Operands();
    Shape s = kShapes[shape];
    ops.w.resize(size_t(s.n * s.k));
    fill(ops.w, 1);
    ops.pw = PackedMatrix::fromFloat(ops.w.data(), s.n, s.k);
    ops.a.resize(size_t(kM * std::max(s.k, s.n)));
    fill(ops.a, 2);
    ops.c.resize(size_t(kM * std::max(s.k, s.n)));
    ops.shape = shape;
  }
  return ops;
}

ThreadPool &poolOf(int threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

void BM_Gemm(benchmark::State &state) {
  int shape = int(state.range(0));
  bool backward = state.range(1) != 0;
  int threads = int(state.range(2));
  int impl = int(state.range(3));
  GemmPath path = impl == 1 ? GemmPath::AMX : GemmPath::AVX512BF16;
  if (impl != 0 && !gemmPathSupported(path)) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  Shape s = kShapes[shape];
  Operands &ops = operandsFor(shape);
  // Forward: C[M, N] = A[M, K] W^T; backward: C[M, K] = A[M, N] W.
  int64_t kk = backward ? s.n : s.k, nn = backward ? s.k : s.n;
  GemmOptions options;
  options.path = path;
  options.pool = &poolOf(threads);
  openblas_set_num_threads(threads);
  if (impl != 0) // OpenBLAS' idle workers spin (sched_yield) for ~0.1 s
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (auto _ : state) {
    if (impl == 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans,
                  backward ? CblasNoTrans : CblasTrans, int(kM), int(nn),
                  int(kk), 1.0f, ops.a.data(), int(kk), ops.w.data(), int(s.k),
                  0.0f, ops.c.data(), int(nn));
    else
      gemm(kM, ops.a.data(), kk, ops.pw,
           backward ? Transpose::No : Transpose::Yes, ops.c.data(), nn, 1.0f,
           0.0f, options);
    benchmark::DoNotOptimize(ops.c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * kM * s.k * s.n * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(impl == 0 ? "sgemm" : gemmPathName(path)) +
                 (backward ? " dX=dY*W " : " Y=X*W^T ") + std::to_string(kM) +
                 "x" + std::to_string(s.k) + "->" + std::to_string(s.n) + " t" +
                 std::to_string(threads));
}

void shapes(benchmark::internal::Benchmark *b) {
  for (int shape = 0; shape < int(std::size(kShapes)); ++shape)
    for (int backward : {0, 1})
      for (int threads : {1, 2})
        for (int impl : {0, 1, 2})
          b->Args({shape, backward, threads, impl});
}

#if defined(__x86_64__)
/// The core's peak of one instruction: 16 independent accumulators (enough
/// for the latency), no memory operands. Counter: GFLOP/s of one thread.
__attribute__((target("avx512f"))) void BM_PeakFMA(benchmark::State &state) {
  __m512 acc[16];
  for (auto &a : acc)
    a = _mm512_setzero_ps();
  __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(1e-9f);
  constexpr int64_t kIters = 1 << 20;
  for (auto _ : state) {
    for (int64_t i = 0; i < kIters; ++i) {
      for (auto &a : acc)
        a = _mm512_fmadd_ps(x, y, a);
      __asm__ volatile("" : "+v"(x));
    }
  }
  float sum = 0;
  for (auto &a : acc)
    sum += _mm512_reduce_add_ps(a);
  benchmark::DoNotOptimize(sum);
  state.counters["GFLOP/s"] = benchmark::Counter(
      kIters * 16 * 32 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("vfmadd231ps zmm: 32 flop");
}

__attribute__((target("avx512f,avx512bf16"))) void
BM_PeakDPBF16(benchmark::State &state) {
  if (!gemmPathSupported(GemmPath::AVX512BF16)) {
    state.SkipWithError("no AVX-512 BF16");
    return;
  }
  __m512 acc[16];
  for (auto &a : acc)
    a = _mm512_setzero_ps();
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80);
  constexpr int64_t kIters = 1 << 20;
  for (auto _ : state) {
    for (int64_t i = 0; i < kIters; ++i) {
      for (auto &a : acc)
        a = _mm512_dpbf16_ps(a, x, x);
      __asm__ volatile("" : "+v"(x));
    }
  }
  float sum = 0;
  for (auto &a : acc)
    sum += _mm512_reduce_add_ps(a);
  benchmark::DoNotOptimize(sum);
  state.counters["GFLOP/s"] = benchmark::Counter(
      kIters * 16 * 64 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("vdpbf16ps zmm: 64 flop");
}
#endif

} // namespace

#if defined(__x86_64__)
BENCHMARK(BM_PeakFMA)->Name("Peak/fma")->UseRealTime();
BENCHMARK(BM_PeakDPBF16)->Name("Peak/dpbf16")->UseRealTime();
#endif

BENCHMARK(BM_Gemm)
    ->Name("Gemm")
    ->Apply(shapes)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

BENCHMARK_MAIN();
