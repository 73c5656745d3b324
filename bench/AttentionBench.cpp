//===- AttentionBench.cpp - attention over the int4 KV cache --------------===//
//
// The CPU runtime's attention (lib/Runtime/CPU/Attention.cpp) at decode (one
// query per sequence after a context) and prefill, on LLaMA shapes, with the
// keys stored row-major (the layout before the tiled one) and tiled (what
// the CPU backend allocates): the ratio of the two rows of one shape is the
// tiled layout's speedup. Counters: GB/s of KV cache read (codes, scales and
// zero points of the visible keys and values) and keys/s.
//
//   SQ_NUM_THREADS=2 build/bench/sq-bench-attention
//
//===----------------------------------------------------------------------===//

#include "Ops.h"
#include "QGemm.h"

#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

using namespace sq::rt;

namespace {

struct Shape {
  int64_t heads, kvHeads, headDim;
};
// LLaMA-2-7B (MHA) and LLaMA-3.1-8B (GQA, 4 query heads per KV head).
const Shape kShapes[] = {{32, 32, 128}, {32, 8, 128}};

/// args: shape index, context, queries, tiled keys.
void BM_Attention(benchmark::State &state) {
  const Shape &sh = kShapes[state.range(0)];
  int64_t context = state.range(1), seq = state.range(2);
  bool tiled = state.range(3) != 0;
  int64_t cached = context - seq;
  QuantDesc quant;
  quant.bits = 4;
  quant.symmetric = false;
  quant.group = sh.headDim;
  AttentionDesc desc;
  desc.heads = sh.heads;
  desc.kvHeads = sh.kvHeads;
  desc.headDim = sh.headDim;
  desc.scale = 1.0 / std::sqrt(double(sh.headDim));
  desc.causal = true;
  desc.keyQuant = desc.valueQuant = quant;
  int64_t kvf = sh.kvHeads * sh.headDim, qf = sh.heads * sh.headDim;
  KVStore keys, values;
  if (!keys.allocate(1, context, kvf, quant, tiled) ||
      !values.allocate(1, context, kvf, quant)) {
    state.SkipWithError("out of memory");
    return;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> rows(context * kvf), q(seq * qf), out(seq * qf);
  for (float &x : rows)
    x = n(rng);
  keys.append(0, 0, rows.data(), context);
  for (float &x : rows)
    x = n(rng);
  values.append(0, 0, rows.data(), context);
  for (float &x : q)
    x = n(rng);
  ThreadPool &pool = ThreadPool::global();
  for (auto _ : state) {
    attention(q.data(), keys, values, 1, seq, cached, desc, out.data(), &pool);
    benchmark::DoNotOptimize(out.data());
  }
  // Keys (and values) each query block reads: a decode step reads the whole
  // context once.
  double bytesPerKey = 2.0 * (kvf / 2.0 + 8.0 * sh.kvHeads);
  state.counters["GB/s"] =
      benchmark::Counter(bytesPerKey * context * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
  state.counters["keys/s"] = benchmark::Counter(
      double(context), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(sh.kvHeads == sh.heads ? "7B" : "8B") +
                 (seq == 1 ? " decode" : " prefill") +
                 (tiled ? " tiled keys" : " row-major keys"));
}

void decodeArgs(benchmark::internal::Benchmark *b) {
  for (int64_t shape : {0, 1})
    for (int64_t context : {512, 2048})
      for (int64_t tiled : {0, 1})
        b->Args({shape, context, 1, tiled});
  for (int64_t tiled : {0, 1})
    b->Args({0, 512, 512, tiled});
}

} // namespace

BENCHMARK(BM_Attention)->Apply(decodeArgs)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
