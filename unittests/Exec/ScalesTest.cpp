//===- ScalesTest.cpp - learned diagonal scalings (scales=learned) --------===//
//
// The scales of every exactly foldable site (lib/Transforms/ScaleSites.h):
// folded with random R1/R2 by --sq-spinquant-rotate (mode=file) they leave
// the float model's logits unchanged, R4 already in place or inserted
// after; their gradient dL/du (u = log s) from the calibration objective
// against finite differences of its loss, one side of each site at a time
// (both sides cancel exactly in the float model), and zero with both; the
// executor's new dL/d(RMSNorm weight) is part of that path.
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Import/ONNX.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/RotationFile.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace sq;

namespace {

QuantSpec spec(const std::string &text) {
  QuantSpec s;
  std::string error;
  EXPECT_TRUE(parseQuantSpec(text, s, error)) << error;
  return s;
}

/// Imports a fixture of test/Import/Inputs and runs `pipeline` (sq-opt
/// syntax; empty: none).
mlir::OwningOpRef<mlir::ModuleOp> load(mlir::MLIRContext &ctx,
                                       const std::string &fixture,
                                       const std::string &pipeline) {
  std::string err;
  auto module = importOnnxModel(SQ_SOURCE_DIR "/test/Import/Inputs/" + fixture,
                                &ctx, err);
  EXPECT_TRUE(module) << err;
  if (!module || pipeline.empty())
    return module;
  static bool registered =
      (sq::registerSQPasses(), sq::registerSQPassAliases(), true);
  (void)registered;
  mlir::PassManager pm(&ctx);
  std::string perr;
  llvm::raw_string_ostream os(perr);
  EXPECT_TRUE(mlir::succeeded(mlir::parsePassPipeline(pipeline, pm, os)))
      << perr;
  EXPECT_TRUE(mlir::succeeded(pm.run(*module))) << pipeline;
  return module;
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

std::vector<float> logitsOf(mlir::ModuleOp m,
                            const std::vector<int64_t> &tokens, int64_t batch) {
  std::string err;
  auto ex = Executor::create(m, err);
  EXPECT_TRUE(ex) << err;
  std::vector<float> logits;
  if (ex)
    EXPECT_TRUE(ex->forward(tokens, batch, tokens.size() / batch, logits, err))
        << err;
  return logits;
}

/// Random orthogonal R1/R2 and random log-scales u ~ N(0, sigma^2) for the
/// sites of `obj` (created with learnScales).
Rotations randomPoint(const RotationObjective &obj, uint64_t seed,
                      double sigma) {
  Rotations r;
  r.hidden = obj.hidden();
  r.headDim = obj.headDim();
  r.r1 = numerics::randomOrthogonalMatrix(r.hidden, seed);
  for (int64_t l = 0; l < obj.numLayers(); ++l)
    r.r2.push_back(numerics::randomOrthogonalMatrix(r.headDim, seed + 1 + l));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, sigma);
  for (int64_t size : obj.scaleSizes()) {
    std::vector<double> u(size);
    for (double &v : u)
      v = g(rng);
    r.scales.push_back(std::move(u));
  }
  return r;
}

/// The rotation file's tensors of `r`: R1, each layer's R2, and the scales
/// s = exp(u) of the sites `names` (RotationObjective::scaleNames order).
std::vector<std::pair<std::string, RotationMatrix>>
rotationTensors(const Rotations &r, const std::vector<std::string> &names) {
  std::vector<std::pair<std::string, RotationMatrix>> tensors;
  tensors.push_back({"R1", r.r1});
  for (size_t l = 0; l < r.r2.size(); ++l)
    tensors.push_back({"layers." + std::to_string(l) + ".R2", r.r2[l]});
  for (size_t k = 0; k < names.size(); ++k) {
    RotationMatrix s;
    for (double u : r.scales[k])
      s.push_back(std::exp(u));
    tensors.push_back({names[k], s});
  }
  return tensors;
}

struct Case {
  const char *fixture;
  const char *pipeline;
};

std::string caseName(const ::testing::TestParamInfo<Case> &info) {
  std::string name =
      std::string(info.param.fixture) +
      (llvm::StringRef(info.param.pipeline).contains("had") ? "_r4" : "");
  for (char &c : name)
    if (!isalnum(static_cast<unsigned char>(c)))
      c = '_';
  return name;
}

const char kFuse[] = "sq-fuse-norms";
const char kFuseR4[] = "sq-fuse-norms,sq-online-hadamard";

const Case cases[] = {
    {"gqa-opset17.onnx", "sq-fuse-norms"},
    {"gqa-opset17.onnx", "sq-fuse-norms,sq-online-hadamard"},
    {"interleaved-opset17.onnx", "sq-fuse-norms,sq-online-hadamard"},
    {"tied-opset17.onnx", "sq-fuse-norms"},
    {"qwen2-bias.onnx", "sq-fuse-norms,sq-online-hadamard"},
    {"headdim-bias.onnx", "sq-fuse-norms"},
    {"mha-opset17.onnx", "sq-fuse-norms,sq-online-hadamard"},
};

class ScaleGradient : public ::testing::TestWithParam<Case> {};

// One side of every site at a time (the norms' weights, k/v/up rows: s; the
// readers' columns, q rows, o/down columns: 1/s), at random rotations and
// scales, without quantization: dL/du along random directions against
// central differences. With both sides the loss does not depend on u (the
// invariance): equal to the loss at u = 0, and dL/du = 0 up to rounding.
TEST_P(ScaleGradient, MatchesFiniteDifferences) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, GetParam().fixture, GetParam().pipeline);
  ASSERT_TRUE(module);
  std::string error;
  auto obj = RotationObjective::create(
      *module, spec("w16a16"), error,
      /*learnR3=*/false, RotationApply::Weights, CalibPrecision::F32,
      /*learnScales=*/true);
  ASSERT_TRUE(obj) << error;
  std::vector<std::string> names = obj->scaleNames();
  // Per layer: attn_input, qk, value, mlp_input, up.
  ASSERT_EQ(int64_t(names.size()), 5 * obj->numLayers());
  Rotations r = randomPoint(*obj, 3, 0.3);
  int64_t batch = 2, seq = 7;
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < batch * seq; ++i)
    tokens.push_back((i * 7 + 3) % obj->vocabSize());

  std::mt19937_64 rng(11);
  std::vector<double> oneSidedNorm(names.size(), 0.0);
  for (int sign : {+1, -1}) {
    obj->setScaleSidesForTesting(sign);
    double loss;
    Rotations grad;
    ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, loss, &grad, error))
        << error;
    ASSERT_EQ(grad.scales.size(), names.size());
    for (size_t k = 0; k < names.size(); ++k) {
      std::vector<double> &u = r.scales[k];
      const std::vector<double> &g = grad.scales[k];
      double gnorm = std::sqrt(dot(g, g));
      oneSidedNorm[k] = std::max(oneSidedNorm[k], gnorm);
      std::string what = names[k] + (sign > 0 ? " (s side)" : " (1/s side)");
      ASSERT_GT(gnorm, 1e-5) << what << ": a zero gradient proves nothing";
      for (int trial = 0; trial < 2; ++trial) {
        std::normal_distribution<double> n01(0.0, 1.0);
        std::vector<double> e(u.size());
        for (double &v : e)
          v = n01(rng);
        double en = std::sqrt(dot(e, e));
        for (double &v : e)
          v /= en;
        const double h = 1e-2;
        std::vector<double> saved = u;
        double lp, lm;
        for (size_t i = 0; i < u.size(); ++i)
          u[i] = saved[i] + h * e[i];
        ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, lp, nullptr, error));
        for (size_t i = 0; i < u.size(); ++i)
          u[i] = saved[i] - h * e[i];
        ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, lm, nullptr, error));
        u = saved;
        double fd = (lp - lm) / (2 * h), analytic = dot(g, e);
        EXPECT_NEAR(fd, analytic, 2e-3 * gnorm + 1e-4)
            << what << " direction " << trial;
      }
    }
  }
  // Both sides: the float model does not change.
  obj->setScaleSidesForTesting(0);
  double loss, base;
  Rotations grad;
  ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, loss, &grad, error))
      << error;
  Rotations unscaled = r;
  for (auto &u : unscaled.scales)
    std::fill(u.begin(), u.end(), 0.0);
  ASSERT_TRUE(
      obj->evaluate(unscaled, tokens, batch, seq, base, nullptr, error));
  EXPECT_NEAR(loss, base, 1e-5 * std::fabs(base));
  for (size_t k = 0; k < names.size(); ++k) {
    double gnorm = std::sqrt(dot(grad.scales[k], grad.scales[k]));
    EXPECT_LE(gnorm, 1e-3 * oneSidedNorm[k]) << names[k];
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ScaleGradient, ::testing::ValuesIn(cases),
                         caseName);

class ScaleInvariance : public ::testing::TestWithParam<Case> {};

// Random R1/R2 and random scales (s = exp(N(0, 0.5^2))) in a rotation file,
// folded by --sq-spinquant-rotate=mode=file (then R3/R4 as by default):
// the same float logits. With R4 already in place (the "_r4" cases: as in
// learned mode, where R4 goes in before training) down_proj's columns are
// scaled before it.
TEST_P(ScaleInvariance, Logits) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, GetParam().fixture, "");
  ASSERT_TRUE(module);
  std::vector<int64_t> tokens;
  for (int i = 0; i < 2 * 9; ++i)
    tokens.push_back((i * 5 + 1) % 32);
  std::vector<float> before = logitsOf(*module, tokens, 2);

  // The sites (of the model as the pass sees it) from a scratch objective.
  std::string error;
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  Rotations r;
  {
    mlir::MLIRContext scratchCtx;
    auto scratch = load(scratchCtx, GetParam().fixture, GetParam().pipeline);
    ASSERT_TRUE(scratch);
    auto obj = RotationObjective::create(*scratch, spec("w16a16"), error, false,
                                         RotationApply::Weights,
                                         CalibPrecision::F32, true);
    ASSERT_TRUE(obj) << error;
    names = obj->scaleNames();
    sizes = obj->scaleSizes();
    r = randomPoint(*obj, 5, 0.5);
  }
  std::vector<std::pair<std::string, RotationMatrix>> tensors =
      rotationTensors(r, names);
  llvm::SmallString<128> path;
  ASSERT_FALSE(
      llvm::sys::fs::createTemporaryFile("sq-scales", "safetensors", path));
  ASSERT_TRUE(writeRotationFile(path, tensors, error)) << error;

  mlir::PassManager pm(&ctx);
  SQFuseNormsOptions fuse;
  fuse.weightType = WeightStorage::F32;
  pm.addPass(createSQFuseNorms(fuse));
  if (llvm::StringRef(GetParam().pipeline).contains("had")) {
    SQOnlineHadamardOptions online;
    online.weightType = WeightStorage::F32;
    pm.addPass(createSQOnlineHadamard(online));
  }
  SQSpinQuantRotateOptions rotate;
  rotate.mode = RotationMode::File;
  rotate.path = path.str().str();
  rotate.weightType = WeightStorage::F32;
  pm.addPass(createSQSpinQuantRotate(rotate));
  ASSERT_TRUE(mlir::succeeded(pm.run(*module)));
  llvm::sys::fs::remove(path);
  int scaledNorms = 0;
  module->walk([&](RMSNormOp n) { scaledNorms += n.getScale() != nullptr; });
  EXPECT_EQ(scaledNorms, 2 * r.r2.size()); // the final norm stays weightless
  std::vector<float> after = logitsOf(*module, tokens, 2);
  ASSERT_EQ(before.size(), after.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    diff = std::max(diff, double(std::fabs(before[i] - after[i])));
    scale = std::max(scale, double(std::fabs(before[i])));
  }
  EXPECT_LE(diff / scale, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ScaleInvariance,
                         ::testing::Values(Case{"gqa-opset17.onnx", kFuse},
                                           Case{"gqa-opset17.onnx", kFuseR4},
                                           Case{"interleaved-opset17.onnx",
                                                kFuseR4},
                                           Case{"tied-opset17.onnx", kFuse},
                                           Case{"qwen2-bias.onnx", kFuseR4},
                                           Case{"headdim-bias.onnx", kFuse},
                                           Case{"genai-gqa-fp16.onnx", kFuseR4},
                                           Case{"kvcache-opset17.onnx", kFuse}),
                         caseName);

class ScaleTrainingModel : public ::testing::TestWithParam<Case> {};

// The training clone applies the scales where the final fold does: at
// random R1/R2 and scales, the objective's loss with the KV cache
// fake-quantized (4 bits: the value site's scales act before R2, where the
// value cache's quantizer sees them differently than after it) equals the
// loss of the model folded by --sq-spinquant-rotate=mode=file and
// fake-quantized by --sq-quantize.
TEST_P(ScaleTrainingModel, LossMatchesTheFoldedModel) {
  const char *quant = "w16a16kv4";
  std::vector<int64_t> tokens;
  for (int i = 0; i < 2 * 9; ++i)
    tokens.push_back((i * 5 + 1) % 32);
  std::string error;
  std::vector<std::string> names;
  Rotations r;
  double trained;
  {
    mlir::MLIRContext ctx;
    auto module = load(ctx, GetParam().fixture, GetParam().pipeline);
    ASSERT_TRUE(module);
    auto obj = RotationObjective::create(*module, spec(quant), error, false,
                                         RotationApply::Weights,
                                         CalibPrecision::F32, true);
    ASSERT_TRUE(obj) << error;
    names = obj->scaleNames();
    r = randomPoint(*obj, 9, 0.7);
    ASSERT_TRUE(obj->evaluate(r, tokens, 2, 9, trained, nullptr, error))
        << error;
    // The scales matter here: unscaled, the loss differs.
    Rotations unscaled = r;
    for (auto &u : unscaled.scales)
      std::fill(u.begin(), u.end(), 0.0);
    double base;
    ASSERT_TRUE(obj->evaluate(unscaled, tokens, 2, 9, base, nullptr, error));
    EXPECT_GT(std::fabs(base - trained), 1e-4 * std::fabs(base));
  }
  std::vector<std::pair<std::string, RotationMatrix>> tensors =
      rotationTensors(r, names);
  llvm::SmallString<128> path;
  ASSERT_FALSE(
      llvm::sys::fs::createTemporaryFile("sq-scales", "safetensors", path));
  llvm::FileRemover remover(path);
  ASSERT_TRUE(writeRotationFile(path, tensors, error)) << error;
  mlir::MLIRContext ctx;
  auto module = load(ctx, GetParam().fixture, GetParam().pipeline);
  ASSERT_TRUE(module);
  mlir::PassManager pm(&ctx);
  SQSpinQuantRotateOptions rotate;
  rotate.mode = RotationMode::File;
  rotate.path = path.str().str();
  rotate.weightType = WeightStorage::F32;
  rotate.onlineHadamard = false; // the clone has what `pipeline` put in
  pm.addPass(createSQSpinQuantRotate(rotate));
  pm.addPass(createQuantizePass(spec(quant)));
  ASSERT_TRUE(mlir::succeeded(pm.run(*module)));
  auto ex = Executor::create(*module, error);
  ASSERT_TRUE(ex) << error;
  double folded;
  ASSERT_TRUE(ex->loss(tokens, 2, 9, folded, error)) << error;
  EXPECT_NEAR(folded, trained, 1e-5 * std::fabs(trained));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ScaleTrainingModel,
                         ::testing::Values(Case{"gqa-opset17.onnx", kFuse},
                                           Case{"qwen2-bias.onnx", kFuseR4},
                                           Case{"mha-opset17.onnx", kFuse}),
                         caseName);

// scales-init=smooth is equivariant: outlier channels injected
// function-preservingly at the q/k, value and up sites (a rotation file
// with identity R1/R2 and such scales, folded by mode=file) move the
// initial log-scales by exactly their inverse (up to the per-site
// centring), and the training model at those scales is the same: the same
// loss with the key and value cache at 4 bits under random R1/R2.
TEST(Scales, SmoothInitUndoesInjectedOutliers) {
  const char *fixture = "gqa-opset17.onnx";
  const double big = 16.0;
  std::vector<std::vector<int64_t>> windows;
  for (int w = 0; w < 3; ++w) {
    std::vector<int64_t> t;
    for (int i = 0; i < 12; ++i)
      t.push_back((i * 7 + w * 5 + 2) % 32);
    windows.push_back(t);
  }
  std::vector<int64_t> tokens;
  for (int i = 0; i < 2 * 9; ++i)
    tokens.push_back((i * 5 + 1) % 32);
  std::string error;
  // The injection: per site, index 1 of qk / value / up (and, in layer 1,
  // index 0 too) multiplied by `big` on the s side.
  auto injected = [&](const std::string &name, int64_t k) {
    bool site = llvm::StringRef(name).ends_with(".qk.scale") ||
                llvm::StringRef(name).ends_with(".value.scale") ||
                llvm::StringRef(name).ends_with(".up.scale");
    bool layer1 = llvm::StringRef(name).starts_with("layers.1.");
    return site && (k == 1 || (layer1 && k == 0)) ? big : 1.0;
  };
  struct Run {
    std::vector<std::string> names;
    std::vector<std::vector<double>> init;
    double loss = 0;
  };
  auto run = [&](bool inject, Run &out) {
    mlir::MLIRContext ctx;
    auto module = load(ctx, fixture, kFuse);
    ASSERT_TRUE(module);
    if (inject) {
      std::vector<std::pair<std::string, RotationMatrix>> tensors;
      {
        auto probe = RotationObjective::create(*module, spec("w16a16"), error,
                                               false, RotationApply::Weights,
                                               CalibPrecision::F32, true);
        ASSERT_TRUE(probe) << error;
        RotationMatrix eye(probe->hidden() * probe->hidden(), 0.0);
        for (int64_t i = 0; i < probe->hidden(); ++i)
          eye[i * probe->hidden() + i] = 1.0;
        tensors.push_back({"R1", eye});
        int64_t d = probe->headDim();
        RotationMatrix eyeD(d * d, 0.0);
        for (int64_t i = 0; i < d; ++i)
          eyeD[i * d + i] = 1.0;
        for (int64_t l = 0; l < probe->numLayers(); ++l)
          tensors.push_back({"layers." + std::to_string(l) + ".R2", eyeD});
        std::vector<std::string> names = probe->scaleNames();
        std::vector<int64_t> sizes = probe->scaleSizes();
        for (size_t k = 0; k < names.size(); ++k) {
          RotationMatrix sv(sizes[k]);
          for (int64_t i = 0; i < sizes[k]; ++i)
            sv[i] = injected(names[k], i);
          tensors.push_back({names[k], sv});
        }
      }
      llvm::SmallString<128> path;
      ASSERT_FALSE(
          llvm::sys::fs::createTemporaryFile("sq-inject", "safetensors", path));
      llvm::FileRemover remover(path);
      ASSERT_TRUE(writeRotationFile(path, tensors, error)) << error;
      mlir::PassManager pm(&ctx);
      SQSpinQuantRotateOptions rotate;
      rotate.mode = RotationMode::File;
      rotate.path = path.str().str();
      rotate.weightType = WeightStorage::F32;
      rotate.onlineHadamard = false;
      pm.addPass(createSQSpinQuantRotate(rotate));
      SQFuseNormsOptions fuse; // the norms' weights (1) back into the readers
      fuse.weightType = WeightStorage::F32;
      pm.addPass(createSQFuseNorms(fuse));
      ASSERT_TRUE(mlir::succeeded(pm.run(*module)));
    }
    auto obj = RotationObjective::create(*module, spec("w16a16kv4"), error,
                                         false, RotationApply::Weights,
                                         CalibPrecision::F32, true);
    ASSERT_TRUE(obj) << error;
    out.names = obj->scaleNames();
    ASSERT_TRUE(obj->smoothScales(windows, out.init, error)) << error;
    Rotations r = randomPoint(*obj, 4, 0.0);
    r.scales = out.init;
    ASSERT_TRUE(obj->evaluate(r, tokens, 2, 9, out.loss, nullptr, error))
        << error;
  };
  Run plain, outliers;
  run(false, plain);
  run(true, outliers);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(plain.names, outliers.names);
  int moved = 0;
  for (size_t k = 0; k < plain.names.size(); ++k) {
    const std::vector<double> &a = plain.init[k], &b = outliers.init[k];
    ASSERT_EQ(a.size(), b.size());
    // b - a + log(injection) is one constant per site (the centring).
    double lo = 1e300, hi = -1e300;
    for (size_t i = 0; i < a.size(); ++i) {
      double v = b[i] - a[i] + std::log(injected(plain.names[k], i));
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      moved += std::fabs(b[i] - a[i]) > 1.0;
    }
    EXPECT_LT(hi - lo, 1e-3) << plain.names[k];
  }
  EXPECT_GE(moved, 6); // qk, value and up of both layers moved
  // Not a trivial init: it is not 0 on the plain model.
  double spread = 0;
  for (const auto &u : plain.init)
    for (double v : u)
      spread = std::max(spread, std::fabs(v));
  EXPECT_GT(spread, 0.05);
  EXPECT_NEAR(outliers.loss, plain.loss, 1e-4 * std::fabs(plain.loss));
}

// scales=learned needs the weights formulation and no GPTQ in the loop.
TEST(Scales, RejectsActivationsAndGPTQ) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, "gqa-opset17.onnx", "sq-fuse-norms");
  ASSERT_TRUE(module);
  std::string error;
  EXPECT_FALSE(RotationObjective::create(*module, spec("w16a4kv4"), error,
                                         false, RotationApply::Activations,
                                         CalibPrecision::F32, true));
  EXPECT_NE(error.find("scales=learned needs apply=weights"), std::string::npos)
      << error;
  // auto picks the weights formulation with scales.
  auto obj =
      RotationObjective::create(*module, spec("w16a4kv4"), error, false,
                                RotationApply::Auto, CalibPrecision::F32, true);
  ASSERT_TRUE(obj) << error;
  EXPECT_FALSE(obj->rotatesActivations());
}

} // namespace
