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
//===----------------------------------------------------------------------===//

#include "sq/Import/ONNX.h"
#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/FileSystem.h"

#include <benchmark/benchmark.h>

#include <cstdlib>

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

} // namespace

BENCHMARK(BM_Forward)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CalibrationStep)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
