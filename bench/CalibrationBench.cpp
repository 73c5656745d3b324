//===- CalibrationBench.cpp - seconds per Cayley calibration step ---------===//
//
// One step of the learned-rotation training (fold R1/R2 into the weights,
// forward + backward through the fake-quantized model, chain rule to
// dL/dR1 and dL/dR2, Cayley steps) against its baseline in the same
// process: the forward alone (the loss without gradients). Model: the
// shared byte-level WikiText-2 LLaMA when present (SQ_SHARED_DATA or
// ../shared/data), else the small GQA test fixture.
//
//   scripts/build.sh -DSQ_BUILD_BENCHMARKS=ON &&
//   build/bench/sq-bench-calibration
//
// BM_ModelStep times the step (evaluate with gradients) of any imported
// model (issue #24's shapes), with the process's CPU seconds per step
// (all threads) and its peak RSS as counters:
//   SQ_BENCH_MODEL=m.mlirbc [SQ_BENCH_BATCH=1] [SQ_BENCH_SEQ=512]
//   [SQ_BENCH_APPLY=auto|weights|activations]
//   [SQ_BENCH_PRECISION=auto|fp32|bf16] build/bench/sq-bench-calibration
//   --benchmark_filter=ModelStep
//
//===----------------------------------------------------------------------===//

#include "sq/Import/ONNX.h"
#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "sq/Dialect/SQ/IR/SQ.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/FileSystem.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <sys/resource.h>

using namespace sq;

namespace {

struct Setup {
  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<RotationObjective> objective;
  Rotations r;
  std::string name;

  Setup() {
    std::string shared = std::getenv("SQ_SHARED_DATA")
                             ? std::getenv("SQ_SHARED_DATA")
                             : SQ_SOURCE_DIR "/../shared/data";
    std::string path = shared + "/wiki2-byte-llama/model.onnx";
    name = "wiki2-byte-llama";
    if (!llvm::sys::fs::exists(path)) {
      path = SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx";
      name = "gqa-opset17 fixture";
    }
    std::string error;
    module = importOnnxModel(path, &ctx, error);
    if (!module) {
      fprintf(stderr, "%s\n", error.c_str());
      std::exit(1);
    }
    registerSQPasses();
    registerSQPassAliases();
    mlir::PassManager pm(&ctx);
    if (failed(
            mlir::parsePassPipeline("sq-fuse-norms,sq-online-hadamard", pm)) ||
        failed(pm.run(*module)))
      std::exit(1);
    QuantSpec spec;
    if (!parseQuantSpec("w16a4kv4", spec, error)) {
      fprintf(stderr, "%s\n", error.c_str());
      std::exit(1);
    }
    objective = RotationObjective::create(*module, spec, error);
    if (!objective) {
      fprintf(stderr, "%s\n", error.c_str());
      std::exit(1);
    }
    r.hidden = objective->hidden();
    r.headDim = objective->headDim();
    r.r1 = numerics::randomOrthogonalMatrix(r.hidden, 0);
    for (int64_t l = 0; l < objective->numLayers(); ++l)
      r.r2.push_back(numerics::randomOrthogonalMatrix(r.headDim, 1 + l));
  }
};

Setup &setup() {
  static Setup s;
  return s;
}

std::vector<int64_t> tokens(int64_t batch, int64_t seq, int64_t vocab) {
  std::vector<int64_t> t(batch * seq);
  for (size_t i = 0; i < t.size(); ++i)
    t[i] = (i * 131 + 7) % vocab;
  return t;
}

void BM_Forward(benchmark::State &state) {
  Setup &s = setup();
  int64_t batch = 4, seq = state.range(0);
  auto t = tokens(batch, seq, s.objective->vocabSize());
  std::string error;
  for (auto _ : state) {
    double loss;
    if (!s.objective->evaluate(s.r, t, batch, seq, loss, nullptr, error))
      state.SkipWithError(error.c_str());
    benchmark::DoNotOptimize(loss);
  }
  state.SetLabel(s.name + ", batch 4");
}

void BM_CalibrationStep(benchmark::State &state) {
  Setup &s = setup();
  int64_t batch = 4, seq = state.range(0);
  auto t = tokens(batch, seq, s.objective->vocabSize());
  std::string error;
  Rotations r = s.r;
  std::vector<double> m1;
  std::vector<std::vector<double>> m2(r.r2.size());
  numerics::CayleyOptions options;
  for (auto _ : state) {
    double loss;
    Rotations g;
    if (!s.objective->evaluate(r, t, batch, seq, loss, &g, error))
      state.SkipWithError(error.c_str());
    numerics::cayleyStep(r.r1, g.r1, r.hidden, m1, options);
    for (size_t l = 0; l < r.r2.size(); ++l)
      numerics::cayleyStep(r.r2[l], g.r2[l], r.headDim, m2[l], options);
    numerics::reorthonormalize(r.r1, r.hidden);
    benchmark::DoNotOptimize(loss);
  }
  state.SetLabel(s.name + ", batch 4");
}

int64_t envInt(const char *name, int64_t fallback) {
  const char *v = std::getenv(name);
  return v ? std::atoll(v) : fallback;
}

template <typename E> E envEnum(const char *name, E fallback) {
  const char *v = std::getenv(name);
  E value = fallback;
  std::string error;
  if (v && !parseEnum(v, value, error)) {
    fprintf(stderr, "%s: %s\n", name, error.c_str());
    std::exit(1);
  }
  return value;
}

double cpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec +
         1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

void BM_ModelStep(benchmark::State &state) {
  const char *path = std::getenv("SQ_BENCH_MODEL");
  if (!path) {
    state.SkipWithError("SQ_BENCH_MODEL is not set");
    return;
  }
  static mlir::MLIRContext ctx;
  static mlir::OwningOpRef<mlir::ModuleOp> module;
  static std::unique_ptr<RotationObjective> objective;
  std::string error;
  if (!objective) {
    mlir::DialectRegistry registry;
    registry.insert<SQDialect, mlir::func::FuncDialect>();
    ctx.appendDialectRegistry(registry);
    module = mlir::parseSourceFile<mlir::ModuleOp>(path, &ctx);
    registerSQPasses();
    registerSQPassAliases();
    mlir::PassManager pm(&ctx);
    if (!module ||
        failed(
            mlir::parsePassPipeline("sq-fuse-norms,sq-online-hadamard", pm)) ||
        failed(pm.run(*module))) {
      state.SkipWithError("cannot load and prepare the model");
      return;
    }
    QuantSpec spec;
    parseQuantSpec("w16a4kv4", spec, error);
    objective = RotationObjective::create(
        *module, spec, error, false,
        envEnum("SQ_BENCH_APPLY", RotationApply::Auto),
        envEnum("SQ_BENCH_PRECISION", CalibPrecision::Auto));
    if (!objective) {
      state.SkipWithError(error.c_str());
      return;
    }
  }
  int64_t batch = envInt("SQ_BENCH_BATCH", 1),
          seq = envInt("SQ_BENCH_SEQ", 512);
  auto t = tokens(batch, seq, objective->vocabSize());
  Rotations r;
  r.hidden = objective->hidden();
  r.headDim = objective->headDim();
  r.r1 = numerics::randomOrthogonalMatrix(r.hidden, 0);
  for (int64_t l = 0; l < objective->numLayers(); ++l)
    r.r2.push_back(numerics::randomOrthogonalMatrix(r.headDim, 1 + l));
  double cpu = 0;
  for (auto _ : state) {
    double loss, c0 = cpuSeconds();
    Rotations g;
    if (!objective->evaluate(r, t, batch, seq, loss, &g, error))
      state.SkipWithError(error.c_str());
    cpu += cpuSeconds() - c0;
    benchmark::DoNotOptimize(loss);
  }
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  state.counters["cpu_s"] =
      benchmark::Counter(cpu, benchmark::Counter::kAvgIterations);
  state.counters["peak_rss_MB"] = double(u.ru_maxrss) / 1024.0;
  state.SetLabel(
      std::string(objective->rotatesActivations() ? "activations" : "weights") +
      (objective->computesInBF16() ? ", bf16" : ", fp32"));
}

// The optimizer's share of a step at a 7B-sized R1 (4096 x 4096: the
// Cayley step's products in double (arg 2 = 0) or float (1, what the
// calibration uses from n = 1024 on); a QR every 20 steps above n = 512).
void BM_CayleyStep(benchmark::State &state) {
  int64_t n = state.range(0);
  bool inFloat = state.range(1) != 0;
  std::vector<double> x = numerics::randomOrthogonalMatrix(n, 0), m;
  std::vector<double> g = numerics::randomOrthogonalMatrix(n, 1);
  for (double &v : g)
    v *= 1e-3;
  numerics::CayleyOptions options;
  if (inFloat)
    options.products = numerics::CayleyProducts::Float;
  state.SetLabel(inFloat ? "float products" : "double products");
  double cpu = 0;
  for (auto _ : state) {
    double c0 = cpuSeconds();
    numerics::cayleyStep(x, g, n, m, options);
    cpu += cpuSeconds() - c0;
  }
  state.counters["cpu_s"] =
      benchmark::Counter(cpu, benchmark::Counter::kAvgIterations);
}

} // namespace

BENCHMARK(BM_ModelStep)
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(envInt("SQ_BENCH_STEPS", 2));
BENCHMARK(BM_CayleyStep)
    ->Args({2048, 0})
    ->Args({2048, 1})
    ->Args({4096, 0})
    ->Args({4096, 1})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_Forward)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CalibrationStep)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
