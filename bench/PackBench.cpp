//===- PackBench.cpp - int4 packing throughput ----------------------------===//
//
// Packs/unpacks one LLaMA-2-7B down_proj weight (4096 x 11008 int4 values)
// and compares with memcpy of the same packed bytes in the same process:
// the ratio, not the absolute time, is the result.
//
//   build/bench/sq-bench-pack --benchmark_repetitions=5
//
//===----------------------------------------------------------------------===//

#include "sq/Numerics/Pack.h"

#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

using namespace sq::numerics;

static constexpr size_t kRows = 4096, kCols = 11008;

static std::vector<int8_t> makeValues() {
  std::vector<int8_t> values(kRows * kCols);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] =
        static_cast<int8_t>(static_cast<int>((i * 2654435761u) % 16) - 8);
  return values;
}

static void BM_MemcpyPackedBytes(benchmark::State &state) {
  std::vector<uint8_t> src(kRows * packedBytes(kCols, 4), 0x5A),
      dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * src.size());
}
BENCHMARK(BM_MemcpyPackedBytes)->Unit(benchmark::kMillisecond);

static void BM_PackInt4Rows(benchmark::State &state) {
  std::vector<int8_t> values = makeValues();
  std::vector<uint8_t> packed(kRows * packedBytes(kCols, 4));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        packInt4Rows(values.data(), kRows, kCols, packed.data()));
  }
  state.SetBytesProcessed(state.iterations() * packed.size());
}
BENCHMARK(BM_PackInt4Rows)->Unit(benchmark::kMillisecond);

static void BM_UnpackInt4Rows(benchmark::State &state) {
  std::vector<int8_t> values = makeValues();
  std::vector<uint8_t> packed(kRows * packedBytes(kCols, 4));
  packInt4Rows(values.data(), kRows, kCols, packed.data());
  for (auto _ : state) {
    unpackInt4Rows(packed.data(), kRows, kCols, values.data());
    benchmark::DoNotOptimize(values.data());
  }
  state.SetBytesProcessed(state.iterations() * packed.size());
}
BENCHMARK(BM_UnpackInt4Rows)->Unit(benchmark::kMillisecond);
