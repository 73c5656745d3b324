//===- QGemmBench.cpp - quantized GEMM/GEMV kernels vs OpenBLAS sgemm -----===//
//
// int4 weights x int4/int8 activation codes (per channel / per token) on
// LLaMA-7B projection shapes, for every kernel path this CPU runs, and
// OpenBLAS fp32 (cblas_sgemm, cblas_sgemv for M = 1) on the same shapes.
// Counters (rates, per second): GOP (2 M N K per call) and, for M = 1, GB of
// weights read (N K / 2 bytes per call; fp32 weights for OpenBLAS: 4 N K).
// The weights of one shape fit in L3 (32 MB here) after the first call, so
// QGemmCold cycles through copies totalling 176 MB (DRAM-bound decode), and
// MemRead is the plain streaming-read bandwidth to compare with.
// Linear16 is the 16-bit-weight GEMV of the lm_head at decode (M = 1, fp16
// and bf16 weights, 1 GB: LLaMA-3's 128256 x 4096 head, from DRAM), with the
// same GB counter.
//
//   SQ_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX \
//     build/bench/sq-bench-qgemm
//   bench/qgemm_ratios.sh    # the SQ / OpenBLAS table, 1 and 2 threads
//
// Kernel time only: activations are quantized once outside the loop (the
// BM_Quantize rows time quantizeActivations alone).
//
//===----------------------------------------------------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include "sq/Numerics/Pack.h"

#include <benchmark/benchmark.h>
#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace sq::rt;

namespace {

struct Shape {
  int64_t k, n;
};
const Shape kShapes[] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};
const int64_t kRows[] = {1, 16, 128, 512};

std::vector<float> randomFloats(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(count);
  for (auto &x : v)
    x = nd(rng);
  return v;
}

/// A random int4 weight of shape `s`, packed into memory of its own.
PackedWeight packRandom(Shape s) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> val(-8, 7);
  std::vector<int8_t> values(s.n * s.k);
  for (auto &v : values)
    v = static_cast<int8_t>(val(rng));
  std::vector<uint8_t> packed(s.n * sq::numerics::packedBytes(s.k, 4));
  sq::numerics::packInt4Rows(values.data(), s.n, s.k, packed.data());
  std::vector<float> scales(s.n, 0.01f);
  PackedWeight w;
  std::string error;
  if (!packWeight(packed.data(), scales.data(), s.n, s.k, 4, 0, 0, w, error))
    std::fprintf(stderr, "packWeight: %s\n", error.c_str());
  return w;
}

const PackedWeight &weightFor(Shape s) {
  static std::vector<std::pair<std::pair<int64_t, int64_t>, PackedWeight *>>
      cache;
  for (auto &e : cache)
    if (e.first == std::make_pair(s.k, s.n))
      return *e.second;
  auto *w = new PackedWeight(packRandom(s));
  cache.push_back({{s.k, s.n}, w});
  return *w;
}

void setCounters(benchmark::State &state, int64_t m, Shape s,
                 double weightBytes) {
  state.counters["GOP"] =
      benchmark::Counter(2e-9 * double(m) * s.n * s.k,
                         benchmark::Counter::kIsIterationInvariantRate);
  if (m == 1)
    state.counters["GB"] = benchmark::Counter(
        1e-9 * weightBytes, benchmark::Counter::kIsIterationInvariantRate);
}

void benchQGemm(benchmark::State &state, KernelPath path, unsigned actBits,
                int64_t m, Shape s) {
  const PackedWeight &w = weightFor(s);
  std::vector<float> x = randomFloats(m * s.k, 2);
  QuantizedActs acts;
  quantizeActivations(x.data(), m, s.k, actBits, false, 0, 1.0, acts);
  std::vector<float> out(m * s.n);
  ThreadPool &pool = ThreadPool::global();
  for (auto _ : state) {
    qgemm(acts, w, out.data(), path, &pool);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["threads"] = pool.size();
  setCounters(state, m, s, 0.5 * double(s.n) * s.k);
}

/// GEMV over `copies` distinct weights in turn (more than the L3 holds).
void benchQGemmCold(benchmark::State &state, KernelPath path, Shape s) {
  const int copies = s.k * s.n > 4096 * 4096 ? 8 : 22; // 176 MB of int4
  std::vector<PackedWeight> weights(copies);
  for (PackedWeight &w : weights)
    w = packRandom(s); // memory of its own (a PackedWeight copy shares it)
  std::vector<float> x = randomFloats(s.k, 2);
  QuantizedActs acts;
  quantizeActivations(x.data(), 1, s.k, 4, false, 0, 1.0, acts);
  std::vector<float> out(s.n);
  ThreadPool &pool = ThreadPool::global();
  size_t i = 0;
  for (auto _ : state) {
    qgemm(acts, weights[i++ % copies], out.data(), path, &pool);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["threads"] = pool.size();
  setCounters(state, 1, s, 0.5 * double(s.n) * s.k);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static int64_t sumBytes(const int64_t *p,
                                                        size_t n) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 4)
    acc = _mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(p + i)));
  alignas(32) int64_t v[4];
  _mm256_store_si256((__m256i *)v, acc);
  return v[0] + v[1] + v[2] + v[3];
}
#else
static int64_t sumBytes(const int64_t *p, size_t n) {
  int64_t s = 0;
  for (size_t i = 0; i < n; ++i)
    s += p[i];
  return s;
}
#endif

/// Streaming read of 256 MB, split over the pool's threads.
void benchMemRead(benchmark::State &state) {
  const size_t count = size_t(256) << 20 >> 3;
  std::vector<int64_t> buf(count + 8, 1);
  const int64_t *base = reinterpret_cast<const int64_t *>(
      (reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
  ThreadPool &pool = ThreadPool::global();
  const int64_t parts = 64;
  for (auto _ : state) {
    std::atomic<int64_t> total{0};
    pool.parallelFor(parts, [&](int64_t b, int64_t e) {
      total += sumBytes(base + b * (count / parts), (e - b) * (count / parts));
    });
    benchmark::DoNotOptimize(total.load());
  }
  state.counters["GB"] = benchmark::Counter(
      1e-9 * double(count * 8), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = pool.size();
}

void benchQuantize(benchmark::State &state, unsigned actBits, int64_t m,
                   Shape s) {
  std::vector<float> x = randomFloats(m * s.k, 2);
  QuantizedActs acts;
  ThreadPool &pool = ThreadPool::global();
  for (auto _ : state) {
    quantizeActivations(x.data(), m, s.k, actBits, false, 0, 1.0, acts, &pool);
    benchmark::DoNotOptimize(acts.codes.data());
  }
  state.SetBytesProcessed(state.iterations() * m * s.k * 4);
}

void benchBlas(benchmark::State &state, int64_t m, Shape s) {
  std::vector<float> a = randomFloats(m * s.k, 2);
  std::vector<float> b = randomFloats(s.n * s.k, 3);
  std::vector<float> c(m * s.n);
  for (auto _ : state) {
    if (m == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, s.n, s.k, 1.0f, b.data(), s.k,
                  a.data(), 1, 0.0f, c.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s.n, s.k, 1.0f,
                  a.data(), s.k, b.data(), s.k, 0.0f, c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  setCounters(state, m, s, 4.0 * double(s.n) * s.k);
}

/// linear16 at M = 1 over a 16-bit head of n x k (GB counter: 2 n k bytes
/// of weights per call).
void benchLinear16(benchmark::State &state, FloatStorage format, int64_t k,
                   int64_t n) {
  std::vector<float> x = randomFloats(k, 2), out(n);
  std::vector<uint16_t> w(size_t(n) * k);
  std::mt19937 rng(4);
  for (uint16_t &v : w) // small finite values in either format
    v = uint16_t(format == FloatStorage::BF16 ? 0x3C00 | (rng() & 0x3FF)
                                              : 0x2C00 | (rng() & 0x3FF));
  ThreadPool &pool = ThreadPool::global();
  for (auto _ : state) {
    linear16(x.data(), w.data(), format, nullptr, 1, k, n, out.data(), &pool);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB"] =
      benchmark::Counter(1e-9 * 2.0 * double(n) * k,
                         benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = pool.size();
}

std::string shapeName(int64_t m, Shape s) {
  return "M" + std::to_string(m) + "/K" + std::to_string(s.k) + "/N" +
         std::to_string(s.n);
}

} // namespace

int main(int argc, char **argv) {
  for (KernelPath path : {KernelPath::AMX, KernelPath::AVX512VNNI,
                          KernelPath::AVX2, KernelPath::Scalar}) {
    if (!kernelPathSupported(path))
      continue;
    for (unsigned actBits : {4u, 8u})
      for (Shape s : kShapes)
        for (int64_t m : kRows) {
          // The scalar path takes seconds per prefill call.
          if (path == KernelPath::Scalar && m > 16)
            continue;
          std::string name = std::string("QGemm/") + kernelPathName(path) +
                             "/a" + std::to_string(actBits) + "/" +
                             shapeName(m, s);
          benchmark::RegisterBenchmark(name.c_str(), benchQGemm, path, actBits,
                                       m, s)
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
  }
  for (KernelPath path : {KernelPath::AVX512VNNI, KernelPath::AVX2})
    if (kernelPathSupported(path))
      for (Shape s : kShapes)
        benchmark::RegisterBenchmark((std::string("QGemmCold/") +
                                      kernelPathName(path) + "/a4/" +
                                      shapeName(1, s))
                                         .c_str(),
                                     benchQGemmCold, path, s)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
  benchmark::RegisterBenchmark("MemRead/256MB", benchMemRead)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  for (FloatStorage f : {FloatStorage::F16, FloatStorage::BF16})
    benchmark::RegisterBenchmark((std::string("Linear16/") +
                                  (f == FloatStorage::F16 ? "f16" : "bf16") +
                                  "/M1/K4096/N128256")
                                     .c_str(),
                                 benchLinear16, f, 4096, 128256)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  for (Shape s : kShapes)
    for (int64_t m : kRows) {
      benchmark::RegisterBenchmark(("BLAS/sgemm/" + shapeName(m, s)).c_str(),
                                   benchBlas, m, s)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  for (int64_t m : {int64_t(1), int64_t(512)})
    benchmark::RegisterBenchmark(
        ("Quantize/a4/" + shapeName(m, kShapes[0])).c_str(), benchQuantize, 4,
        m, kShapes[0])
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
