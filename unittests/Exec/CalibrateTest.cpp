//===- CalibrateTest.cpp - gradients and training of R1/R2 ----------------===//
//
// The calibration objective's dL/dR1 and dL/dR2 against finite
// differences of its loss (a test of the whole backward path: every VJP of
// the executor and the chain rule through the rotated weights), and the
// training loop on the fixtures and the shared model.
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/Calibrate.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Import/ONNX.h"
#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

using namespace sq;

namespace {

/// A spec as the command-line layer would hand it over.
QuantSpec spec(const std::string &text) {
  QuantSpec s;
  std::string error;
  EXPECT_TRUE(parseQuantSpec(text, s, error)) << error;
  return s;
}

std::string sharedData() {
  if (const char *env = std::getenv("SQ_SHARED_DATA"))
    return env;
  return SQ_SOURCE_DIR "/../shared/data";
}

/// Imports `path` and runs `pipeline` (sq-opt syntax).
mlir::OwningOpRef<mlir::ModuleOp> load(mlir::MLIRContext &ctx,
                                       const std::string &path,
                                       const std::string &pipeline) {
  std::string err;
  auto module = importOnnxModel(path, &ctx, err);
  EXPECT_TRUE(module) << err;
  if (!module)
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

std::vector<double> randomMatrix(int64_t n, std::mt19937_64 &rng,
                                 double scale = 1.0) {
  std::normal_distribution<double> g(0.0, scale);
  std::vector<double> m(n * n);
  for (double &v : m)
    v = g(rng);
  return m;
}

/// Random orthogonal rotations for `obj`: R1 from `r1Seed`, the R2 of layer
/// l from `r2Seed + l`.
Rotations randomRotations(const RotationObjective &obj, uint64_t r1Seed,
                          uint64_t r2Seed, int64_t r3Seed = -1) {
  Rotations r;
  r.hidden = obj.hidden();
  r.headDim = obj.headDim();
  r.r1 = numerics::randomOrthogonalMatrix(r.hidden, r1Seed);
  for (int64_t l = 0; l < obj.numLayers(); ++l)
    r.r2.push_back(numerics::randomOrthogonalMatrix(r.headDim, r2Seed + l));
  if (r3Seed >= 0) // a learned R3 per layer too
    for (int64_t l = 0; l < obj.numLayers(); ++l)
      r.r3.push_back(numerics::randomOrthogonalMatrix(r.headDim, r3Seed + l));
  return r;
}

/// R1 = I and every R2 = I for `obj`.
Rotations identityRotations(const RotationObjective &obj) {
  Rotations r;
  r.hidden = obj.hidden();
  r.headDim = obj.headDim();
  r.r1.assign(r.hidden * r.hidden, 0.0);
  for (int64_t i = 0; i < r.hidden; ++i)
    r.r1[i * r.hidden + i] = 1.0;
  std::vector<double> id(r.headDim * r.headDim, 0.0);
  for (int64_t i = 0; i < r.headDim; ++i)
    id[i * r.headDim + i] = 1.0;
  r.r2.assign(obj.numLayers(), id);
  return r;
}

/// Writes `ids` as a pre-tokenized calibration file (little-endian int32)
/// to a new temporary file, whose path goes to `path`.
void writeTokenFile(const std::vector<int32_t> &ids,
                    llvm::SmallString<128> &path) {
  ASSERT_FALSE(llvm::sys::fs::createTemporaryFile("sq-calib", "bin", path));
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  ASSERT_FALSE(ec);
  os.write(reinterpret_cast<const char *>(ids.data()), ids.size() * 4);
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

struct GradCase {
  const char *fixture;
  const char *pipeline;
  /// Learn R3 too (dL/dR3 through the sq.rotate on Q and K).
  bool learnR3 = false;
  /// The loss: 0 cross-entropy; -1 KL from random reference distributions
  /// over the whole vocabulary; k > 0 over k random tokens per position
  /// (loss=kl-top's form).
  int softWidth = 0;
};

/// Random reference distributions for `rows` positions (SoftTargets):
/// `width` < 0 the whole vocabulary, else `width` distinct random tokens.
SoftTargets randomSoftTargets(int64_t rows, int64_t vocab, int64_t width,
                              uint64_t seed) {
  SoftTargets t;
  t.width = width < 0 ? vocab : width;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 2.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (width >= 0) {
      std::vector<int32_t> perm(vocab);
      for (int64_t j = 0; j < vocab; ++j)
        perm[j] = j;
      std::shuffle(perm.begin(), perm.end(), rng);
      t.ids.insert(t.ids.end(), perm.begin(), perm.begin() + width);
    }
    std::vector<double> z(t.width);
    double mx = -1e300, sum = 0;
    for (double &v : z)
      mx = std::max(mx, v = g(rng));
    for (double v : z)
      sum += std::exp(v - mx);
    for (double v : z)
      t.logProbs.push_back(float(v - mx - std::log(sum)));
  }
  return t;
}

class CalibrationGradient : public ::testing::TestWithParam<GradCase> {};

// dL/dR1 and each dL/dR2 against central differences of the loss along
// random directions, at random orthogonal rotations, without quantization
// (the loss is then smooth). The pipeline puts R3/R4 (sq.hadamard) on the
// path in one case.
TEST_P(CalibrationGradient, MatchesFiniteDifferences) {
  mlir::MLIRContext ctx;
  auto module = load(ctx,
                     SQ_SOURCE_DIR "/test/Import/Inputs/" +
                         std::string(GetParam().fixture),
                     GetParam().pipeline);
  ASSERT_TRUE(module);
  std::string error;
  // The weight-fold formulation (under w16a16 the activations one has no
  // quantization site and a zero gradient; it is checked against this one
  // in ActivationsMatchWeights).
  auto obj =
      RotationObjective::create(*module, spec("w16a16"), error,
                                GetParam().learnR3, RotationApply::Weights);
  ASSERT_TRUE(obj) << error;
  int64_t n = obj->hidden(), d = obj->headDim();
  ASSERT_GT(obj->numLayers(), 0);
  Rotations r = randomRotations(*obj, 1, 10, GetParam().learnR3 ? 20 : -1);
  int64_t batch = 2, seq = 7;
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < batch * seq; ++i)
    tokens.push_back((i * 7 + 3) % obj->vocabSize());
  SoftTargets targets;
  const SoftTargets *soft = nullptr;
  if (GetParam().softWidth) {
    targets = randomSoftTargets(batch * seq, obj->vocabSize(),
                                GetParam().softWidth, 3);
    soft = &targets;
  }
  double loss;
  Rotations grad;
  ASSERT_TRUE(
      obj->evaluate(r, tokens, batch, seq, loss, &grad, error, nullptr, soft))
      << error;
  ASSERT_TRUE(std::isfinite(loss));

  std::mt19937_64 rng(7);
  auto check = [&](std::vector<double> &m, const std::vector<double> &g,
                   int64_t size, const std::string &what) {
    double gnorm = std::sqrt(dot(g, g));
    ASSERT_GT(gnorm, 1e-4) << what << ": a zero gradient proves nothing";
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<double> e = randomMatrix(size, rng);
      double en = std::sqrt(dot(e, e));
      for (double &v : e)
        v /= en;
      const double h = 1e-2;
      std::vector<double> saved = m;
      double lp, lm;
      for (int64_t i = 0; i < size * size; ++i)
        m[i] = saved[i] + h * e[i];
      ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, lp, nullptr, error,
                                nullptr, soft));
      for (int64_t i = 0; i < size * size; ++i)
        m[i] = saved[i] - h * e[i];
      ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, lm, nullptr, error,
                                nullptr, soft));
      m = saved;
      double fd = (lp - lm) / (2 * h), analytic = dot(g, e);
      EXPECT_NEAR(fd, analytic, 2e-3 * gnorm + 1e-4)
          << what << " direction " << trial;
    }
  };
  check(r.r1, grad.r1, n, "R1");
  for (int64_t l = 0; l < obj->numLayers(); ++l)
    check(r.r2[l], grad.r2[l], d, "R2 of layer " + std::to_string(l));
  ASSERT_EQ(grad.r3.size(), r.r3.size());
  for (size_t l = 0; l < r.r3.size(); ++l)
    check(r.r3[l], grad.r3[l], d, "R3 of layer " + std::to_string(l));
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CalibrationGradient,
    ::testing::Values(
        GradCase{"gqa-opset17.onnx", "sq-fuse-norms"},
        GradCase{"gqa-opset17.onnx", "sq-fuse-norms,sq-online-hadamard"},
        GradCase{"interleaved-opset17.onnx", "sq-fuse-norms"},
        GradCase{"tied-opset17.onnx", "sq-fuse-norms,sq-online-hadamard"},
        GradCase{"gqa-opset17.onnx", "sq-fuse-norms,sq-online-hadamard", true},
        GradCase{"interleaved-opset17.onnx", "sq-fuse-norms,sq-online-hadamard",
                 true},
        // Qwen2's q/k/v biases (v's rotated by R2); an explicit head_dim
        // with biases on every projection (o/down's rotated by R1).
        GradCase{"qwen2-bias.onnx", "sq-fuse-norms"},
        GradCase{"headdim-bias.onnx", "sq-fuse-norms,sq-online-hadamard"},
        // The distillation losses (loss=kl, loss=kl-top).
        GradCase{"gqa-opset17.onnx", "sq-fuse-norms", false, -1},
        GradCase{"tied-opset17.onnx", "sq-fuse-norms,sq-online-hadamard", true,
                 5}),
    [](const auto &info) {
      std::string name =
          std::string(info.param.fixture) +
          (llvm::StringRef(info.param.pipeline).contains("had") ? "_hadamard"
                                                                : "") +
          (info.param.learnR3 ? "_learnR3" : "") +
          (info.param.softWidth < 0   ? "_kl"
           : info.param.softWidth > 0 ? "_kltop"
                                      : "");
      for (char &c : name)
        if (!isalnum(static_cast<unsigned char>(c)))
          c = '_';
      return name;
    });

// Without quantization the rotations cancel: the objective's loss at
// random R1/R2 is the loss at the identity, also with biases (the writers'
// rotated by R1, v_proj's by R2) and an explicit head_dim.
TEST(Calibration, FloatLossIsInvariantWithBiases) {
  for (const char *fixture : {"qwen2-bias.onnx", "headdim-bias.onnx"}) {
    mlir::MLIRContext ctx;
    auto module =
        load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/" + std::string(fixture),
             "sq-fuse-norms,sq-online-hadamard");
    ASSERT_TRUE(module);
    std::string error;
    auto obj = RotationObjective::create(*module, spec("w16a16"), error, false,
                                         RotationApply::Weights);
    ASSERT_TRUE(obj) << error;
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < 2 * 9; ++i)
      tokens.push_back((i * 5 + 1) % obj->vocabSize());
    double base, rotated;
    ASSERT_TRUE(obj->evaluate(identityRotations(*obj), tokens, 2, 9, base,
                              nullptr, error))
        << error;
    ASSERT_TRUE(obj->evaluate(randomRotations(*obj, 3, 30), tokens, 2, 9,
                              rotated, nullptr, error))
        << error;
    EXPECT_NEAR(rotated, base, 1e-5 * std::fabs(base)) << fixture;
  }
}

// With fake quantization on the path the gradient is the straight-through
// one: still finite, non-zero, and the same for the same input.
TEST(Calibration, FakeQuantGradientIsDeterministic) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  auto obj = RotationObjective::create(*module, spec("w4a4kv4"), error);
  ASSERT_TRUE(obj) << error;
  Rotations r = randomRotations(*obj, 3, 4);
  std::vector<int64_t> tokens;
  for (int i = 0; i < 16; ++i)
    tokens.push_back((i * 11 + 5) % obj->vocabSize());
  double l1, l2;
  Rotations g1, g2;
  ASSERT_TRUE(obj->evaluate(r, tokens, 2, 8, l1, &g1, error)) << error;
  ASSERT_TRUE(obj->evaluate(r, tokens, 2, 8, l2, &g2, error)) << error;
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1.r1, g2.r1);
  EXPECT_GT(std::sqrt(dot(g1.r1, g1.r1)), 1e-4);
}

// Learned clipping: the objective's clip ratios start at the spec's
// (aclip/kclip/vclip, 1 for the weights' channels), where the loss is the
// one without learned clipping; they reach the forward, and every one of
// them gets a gradient.
TEST(Calibration, LearnedClipsStartAtTheSpecAndGetGradients) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  QuantSpec q = spec("w4a4kv4,aclip=0.9,kclip=0.85,vclip=0.95");
  auto plain = RotationObjective::create(*module, q, error);
  auto obj = RotationObjective::create(*module, q, error);
  ASSERT_TRUE(plain && obj) << error;
  ASSERT_TRUE(obj->enableLearnedClipping(true, true, error)) << error;
  Rotations r = randomRotations(*obj, 5, 6);
  Rotations c = r;
  c.actClips = obj->initialActClips();
  c.weightClips = obj->initialWeightClips();
  // 2 layers: the q/k/v, o_proj, gate/up and down_proj inputs, keys, values.
  ASSERT_EQ(c.actClips.size(), 12u);
  EXPECT_EQ(std::count(c.actClips.begin(), c.actClips.end(), 0.9), 8);
  EXPECT_EQ(std::count(c.actClips.begin(), c.actClips.end(), 0.85), 2);
  EXPECT_EQ(std::count(c.actClips.begin(), c.actClips.end(), 0.95), 2);
  // Every output channel of q, k, v, o, gate, up, down in both layers.
  EXPECT_EQ(c.weightClips.size(), 2u * (16 + 8 + 8 + 16 + 24 + 24 + 16));
  std::vector<int64_t> tokens;
  for (int i = 0; i < 32; ++i)
    tokens.push_back((i * 11 + 5) % obj->vocabSize());
  double l0, l1;
  Rotations g;
  ASSERT_TRUE(plain->evaluate(r, tokens, 2, 16, l0, nullptr, error)) << error;
  ASSERT_TRUE(obj->evaluate(c, tokens, 2, 16, l1, &g, error)) << error;
  EXPECT_NEAR(l1, l0, 1e-6 * std::fabs(l0));
  ASSERT_EQ(g.actClips.size(), c.actClips.size());
  ASSERT_EQ(g.weightClips.size(), c.weightClips.size());
  EXPECT_GT(std::sqrt(dot(g.weightClips, g.weightClips)), 1e-6);
  int64_t moved = 0;
  for (double v : g.actClips) {
    EXPECT_TRUE(std::isfinite(v));
    moved += v != 0;
  }
  EXPECT_EQ(moved, int64_t(g.actClips.size()));
  // The ratios reach the forward: a smaller one changes the loss.
  Rotations d = c;
  d.actClips[0] = 0.5;
  d.weightClips[0] = 0.5;
  double l2;
  ASSERT_TRUE(obj->evaluate(d, tokens, 2, 16, l2, nullptr, error)) << error;
  EXPECT_NE(l2, l1);
  // Wrong counts are errors.
  d.actClips.pop_back();
  EXPECT_FALSE(obj->evaluate(d, tokens, 2, 16, l2, nullptr, error));
  // Weight clipping needs RTN weights in the loop.
  auto acts = RotationObjective::create(*module, spec("w16a4kv4"), error);
  ASSERT_TRUE(acts) << error;
  EXPECT_FALSE(acts->enableLearnedClipping(false, true, error));
}

/// skew(G R^T) = G R^T - R G^T (n x n): the part of a gradient G at an
/// orthogonal R that Cayley SGD uses (the rest, S R with S symmetric, is
/// normal to the orthogonal group).
std::vector<double> riemannian(const std::vector<double> &g,
                               const std::vector<double> &r, int64_t n) {
  std::vector<double> p(n * n, 0.0), out(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < n; ++j)
        p[i * n + j] += g[i * n + k] * r[j * n + k];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      out[i * n + j] = p[i * n + j] - p[j * n + i];
  return out;
}

double maxAbsDiff(const std::vector<double> &a, const std::vector<double> &b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

double maxAbs(const std::vector<double> &a) {
  double m = 0;
  for (double v : a)
    m = std::max(m, std::fabs(v));
  return m;
}

struct ApplyCase {
  const char *fixture;
  const char *pipeline;
  const char *quant;
  bool learnR3 = false;
  /// False when only the KV cache is quantized: R1 cancels in K and V, and
  /// both formulations give a zero gradient (activations: no R1 site).
  bool r1Matters = true;
};

class ActivationsMatchWeights : public ::testing::TestWithParam<ApplyCase> {};

// The activations formulation (R1/R2 as sq.rotate at the quantization
// sites, no weight copies or weight gradients) against the weight-fold one
// at random orthogonal rotations: the same loss and the same Riemannian
// gradient skew(G R^T) of R1 and every R2 (and dL/dR3 itself), up to float
// rounding, under activation and KV-cache quantization.
TEST_P(ActivationsMatchWeights, SameLossAndRiemannianGradient) {
  const ApplyCase &c = GetParam();
  mlir::MLIRContext ctx;
  auto module =
      load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/" + std::string(c.fixture),
           c.pipeline);
  ASSERT_TRUE(module);
  std::string error;
  auto act = RotationObjective::create(*module, spec(c.quant), error, c.learnR3,
                                       RotationApply::Activations);
  ASSERT_TRUE(act) << error;
  auto auto_ = RotationObjective::create(*module, spec(c.quant), error,
                                         c.learnR3, RotationApply::Auto);
  ASSERT_TRUE(auto_) << error;
  EXPECT_TRUE(act->rotatesActivations());
  EXPECT_TRUE(auto_->rotatesActivations()) << "16-bit weights: activations";
  auto fold = RotationObjective::create(*module, spec(c.quant), error,
                                        c.learnR3, RotationApply::Weights);
  ASSERT_TRUE(fold) << error;
  EXPECT_FALSE(fold->rotatesActivations());
  int64_t n = act->hidden(), d = act->headDim();
  for (uint64_t seed : {1, 5}) {
    Rotations r = randomRotations(*act, seed, 10 * seed, c.learnR3 ? 20 : -1);
    int64_t batch = 2, seq = 9;
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < batch * seq; ++i)
      tokens.push_back((i * 7 + 3 + seed) % act->vocabSize());
    double la, lw;
    Rotations ga, gw;
    ASSERT_TRUE(act->evaluate(r, tokens, batch, seq, la, &ga, error)) << error;
    ASSERT_TRUE(fold->evaluate(r, tokens, batch, seq, lw, &gw, error)) << error;
    EXPECT_NEAR(la, lw, 1e-5 * std::fabs(lw)) << "seed " << seed;
    // Forward only: the same loss, per sequence too.
    double lf;
    std::vector<double> perSeqA, perSeqW;
    ASSERT_TRUE(
        act->evaluate(r, tokens, batch, seq, lf, nullptr, error, &perSeqA));
    EXPECT_NEAR(lf, la, 1e-6 * std::fabs(la));
    ASSERT_TRUE(
        fold->evaluate(r, tokens, batch, seq, lf, nullptr, error, &perSeqW));
    for (int64_t b = 0; b < batch; ++b)
      EXPECT_NEAR(perSeqA[b], perSeqW[b], 1e-5 * std::fabs(perSeqW[b]));
    auto same = [&](const std::vector<double> &a, const std::vector<double> &w,
                    const std::string &what, bool matters = true) {
      double scale = maxAbs(w);
      if (!matters) {
        EXPECT_LE(scale, 1e-6) << what;
        EXPECT_EQ(maxAbs(a), 0.0) << what;
        return;
      }
      EXPECT_GT(scale, 1e-6) << what << ": a zero gradient proves nothing";
      EXPECT_LE(maxAbsDiff(a, w), 1e-4 * scale + 1e-7)
          << what << " (seed " << seed << ", max " << scale << ")";
    };
    same(riemannian(ga.r1, r.r1, n), riemannian(gw.r1, r.r1, n), "R1",
         c.r1Matters);
    for (int64_t l = 0; l < act->numLayers(); ++l)
      same(riemannian(ga.r2[l], r.r2[l], d), riemannian(gw.r2[l], r.r2[l], d),
           "R2 of layer " + std::to_string(l));
    ASSERT_EQ(ga.r3.size(), gw.r3.size());
    for (size_t l = 0; l < ga.r3.size(); ++l)
      same(ga.r3[l], gw.r3[l], "R3 of layer " + std::to_string(l));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, ActivationsMatchWeights,
    ::testing::Values(
        ApplyCase{"gqa-opset17.onnx", "sq-fuse-norms,sq-online-hadamard",
                  "w16a4kv4"},
        ApplyCase{"gqa-opset17.onnx", "sq-fuse-norms", "w16a8kv8"},
        // Only the KV cache (the R2 site without o_proj's quantizer) or only
        // the activations.
        ApplyCase{"interleaved-opset17.onnx", "sq-fuse-norms", "w16a16kv4",
                  false, false},
        ApplyCase{"tied-opset17.onnx", "sq-fuse-norms,sq-online-hadamard",
                  "w16a4kv16"},
        ApplyCase{"gqa-opset17.onnx", "sq-fuse-norms,sq-online-hadamard",
                  "w16a4kv4", true},
        ApplyCase{"qwen2-bias.onnx", "sq-fuse-norms", "w16a4kv4"},
        ApplyCase{"headdim-bias.onnx", "sq-fuse-norms,sq-online-hadamard",
                  "w16a4kv4"}),
    [](const auto &info) {
      std::string name =
          std::string(info.param.fixture) + "_" + info.param.quant +
          (llvm::StringRef(info.param.pipeline).contains("had") ? "_hadamard"
                                                                : "") +
          (info.param.learnR3 ? "_learnR3" : "");
      for (char &c : name)
        if (!isalnum(static_cast<unsigned char>(c)))
          c = '_';
      return name;
    });

// Activation checkpointing (the forward keeps the residual stream between
// transformer blocks, the backward recomputes one block at a time) gives
// the same loss and gradients bit for bit as the whole tape, in both
// formulations, on every fixture of ActivationsMatchWeights: one segment
// for the embedding, one per layer and one for the final norm, whatever a
// layer holds (biases, GQA, fake quantizers, sq.rotate and sq.hadamard).
TEST_P(ActivationsMatchWeights, CheckpointingGivesTheSameGradients) {
  const ApplyCase &c = GetParam();
  mlir::MLIRContext ctx;
  auto module =
      load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/" + std::string(c.fixture),
           c.pipeline);
  ASSERT_TRUE(module);
  for (auto [apply, precision] :
       {std::pair(RotationApply::Activations, CalibPrecision::F32),
        std::pair(RotationApply::Weights, CalibPrecision::F32),
        std::pair(RotationApply::Activations, CalibPrecision::BF16)}) {
    std::string error;
    auto obj = RotationObjective::create(*module, spec(c.quant), error,
                                         c.learnR3, apply, precision);
    ASSERT_TRUE(obj) << error;
    EXPECT_EQ(obj->checkpointSegments(), obj->numLayers() + 2);
    Rotations r = randomRotations(*obj, 3, 30, c.learnR3 ? 40 : -1);
    int64_t batch = 2, seq = 9;
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < batch * seq; ++i)
      tokens.push_back((i * 5 + 1) % obj->vocabSize());
    double whole, checkpointed;
    Rotations gw, gc;
    obj->setCheckpointing(Checkpointing::Off);
    ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, whole, &gw, error))
        << error;
    obj->setCheckpointing(Checkpointing::On);
    ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, checkpointed, &gc, error))
        << error;
    std::string what = std::string(spell(apply)) + ", " + spell(precision);
    EXPECT_EQ(checkpointed, whole) << what;
    EXPECT_GT(maxAbs(gw.r1) + maxAbs(gw.r2[0]), 0.0) << what;
    EXPECT_EQ(gc.r1, gw.r1) << what;
    EXPECT_EQ(gc.r2, gw.r2) << what;
    EXPECT_EQ(gc.r3, gw.r3) << what;
  }
}

// Gradient accumulation (setMicroBatch): 3 windows one or two at a time
// give the loss and gradients of the whole batch to float rounding, in both
// formulations.
TEST_P(ActivationsMatchWeights, MicroBatchesSumToTheBatch) {
  const ApplyCase &c = GetParam();
  mlir::MLIRContext ctx;
  auto module =
      load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/" + std::string(c.fixture),
           c.pipeline);
  ASSERT_TRUE(module);
  for (RotationApply apply :
       {RotationApply::Activations, RotationApply::Weights}) {
    std::string error;
    auto obj = RotationObjective::create(*module, spec(c.quant), error,
                                         c.learnR3, apply);
    ASSERT_TRUE(obj) << error;
    Rotations r = randomRotations(*obj, 4, 40, c.learnR3 ? 50 : -1);
    int64_t batch = 3, seq = 7;
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < batch * seq; ++i)
      tokens.push_back((i * 11 + 2) % obj->vocabSize());
    double whole;
    Rotations gw;
    ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, whole, &gw, error))
        << error;
    for (int64_t micro : {1, 2}) {
      obj->setMicroBatch(micro);
      double l;
      Rotations g;
      ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, l, &g, error)) << error;
      std::string what =
          std::string(spell(apply)) + ", micro-batch " + std::to_string(micro);
      EXPECT_NEAR(l, whole, 1e-6 * std::fabs(whole)) << what;
      auto same = [&](const std::vector<double> &a,
                      const std::vector<double> &b, const std::string &m) {
        ASSERT_EQ(a.size(), b.size()) << what << " " << m;
        EXPECT_LE(maxAbsDiff(a, b), 1e-5 * maxAbs(b) + 1e-9)
            << what << " " << m;
      };
      same(g.r1, gw.r1, "R1");
      ASSERT_EQ(g.r2.size(), gw.r2.size());
      for (size_t k = 0; k < g.r2.size(); ++k)
        same(g.r2[k], gw.r2[k], "R2");
      ASSERT_EQ(g.r3.size(), gw.r3.size());
      for (size_t k = 0; k < g.r3.size(); ++k)
        same(g.r3[k], gw.r3[k], "R3");
    }
    obj->setMicroBatch(0);
  }
}

// apply=activations needs 16-bit weights; auto folds under quantized
// weights; without any quantization site the activations formulation's
// gradient is zero (the loss does not depend on R1/R2).
TEST(Calibration, ApplyChoosesTheFormulation) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  EXPECT_FALSE(RotationObjective::create(*module, spec("w4a4kv4"), error, false,
                                         RotationApply::Activations));
  EXPECT_NE(error.find("apply=activations needs 16-bit weights"),
            std::string::npos)
      << error;
  auto w4 = RotationObjective::create(*module, spec("w4a4kv4"), error);
  ASSERT_TRUE(w4) << error;
  EXPECT_FALSE(w4->rotatesActivations());
  auto plain = RotationObjective::create(*module, spec("w16a16"), error);
  ASSERT_TRUE(plain) << error;
  EXPECT_TRUE(plain->rotatesActivations());
  Rotations r = randomRotations(*plain, 2, 3), g;
  std::vector<int64_t> tokens;
  for (int i = 0; i < 16; ++i)
    tokens.push_back((i * 11 + 5) % plain->vocabSize());
  double l, l0;
  ASSERT_TRUE(plain->evaluate(r, tokens, 2, 8, l, &g, error)) << error;
  ASSERT_TRUE(plain->evaluate(identityRotations(*plain), tokens, 2, 8, l0,
                              nullptr, error));
  EXPECT_EQ(l, l0);
  EXPECT_EQ(maxAbs(g.r1), 0.0);
  for (auto &g2 : g.r2)
    EXPECT_EQ(maxAbs(g2), 0.0);
}

double cosine(const std::vector<double> &a, const std::vector<double> &b) {
  return dot(a, b) / std::sqrt(dot(a, a) * dot(b, b));
}

// precision=bf16: the frozen weights stored in bf16 and the products on
// the bf16 units (fp32 sums). Without quantization (the folded
// formulation, a smooth loss) the loss and the Riemannian gradient stay
// within bf16 rounding of fp32; under 4-bit fake quantization bf16 rounding
// moves a few percent of the activations to the neighbouring code, so the
// loss stays close and the straight-through gradient points the same way,
// but only roughly (as in the official recipe, which trains in bf16).
TEST(Calibration, BF16PrecisionStaysCloseToFP32) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  struct Case {
    RotationApply apply;
    const char *quant;
  };
  for (Case c : {Case{RotationApply::Weights, "w16a16"},
                 Case{RotationApply::Activations, "w16a4kv4"},
                 Case{RotationApply::Weights, "w16a4kv4"}}) {
    std::string error;
    auto f32 = RotationObjective::create(*module, spec(c.quant), error, false,
                                         c.apply, CalibPrecision::F32);
    ASSERT_TRUE(f32) << error;
    auto bf16 = RotationObjective::create(*module, spec(c.quant), error, false,
                                          c.apply, CalibPrecision::BF16);
    ASSERT_TRUE(bf16) << error;
    EXPECT_FALSE(f32->computesInBF16());
    EXPECT_TRUE(bf16->computesInBF16());
    // fp32 fixture weights: auto keeps fp32.
    auto autoP = RotationObjective::create(*module, spec(c.quant), error, false,
                                           c.apply, CalibPrecision::Auto);
    ASSERT_TRUE(autoP) << error;
    EXPECT_FALSE(autoP->computesInBF16());
    Rotations r = randomRotations(*f32, 4, 40), g32, g16;
    std::vector<int64_t> tokens;
    for (int i = 0; i < 18; ++i)
      tokens.push_back((i * 7 + 2) % f32->vocabSize());
    double l32, l16;
    ASSERT_TRUE(f32->evaluate(r, tokens, 2, 9, l32, &g32, error)) << error;
    ASSERT_TRUE(bf16->evaluate(r, tokens, 2, 9, l16, &g16, error)) << error;
    EXPECT_NEAR(l16, l32, 1e-2 * std::fabs(l32)) << c.quant;
    int64_t n = f32->hidden();
    auto a = riemannian(g16.r1, r.r1, n), b = riemannian(g32.r1, r.r1, n);
    if (std::string(c.quant) == "w16a16") {
      // Invariant in fp32 (skew(G R^T) ~ 0); bf16 weights break the
      // invariance by their rounding only.
      EXPECT_LE(maxAbsDiff(a, b), 1e-2 * maxAbs(g32.r1));
    } else {
      // Measured on this fixture: cosine 0.73 (activations) and 0.85
      // (weights); a few percent of the 4-bit codes move.
      EXPECT_GT(maxAbs(b), 1e-6);
      EXPECT_GT(cosine(a, b), 0.6) << c.quant;
    }
  }
}

TEST(Calibration, RejectsBadInput) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms");
  ASSERT_TRUE(module);
  std::string error;
  EXPECT_FALSE(RotationObjective::create(
      *module, spec("w4a4kv4,gptq,calib=x.txt"), error));
  EXPECT_NE(error.find("calib= is not used"), std::string::npos) << error;
  EXPECT_FALSE(
      RotationObjective::create(*module, spec("w4a4kv4,mode=real"), error));
  EXPECT_NE(error.find("mode=real"), std::string::npos) << error;
  QuantSpec bad;
  EXPECT_FALSE(parseQuantSpec("w3x", bad, error)); // rejected before create

  // A norm with a scale does not commute with R1.
  mlir::MLIRContext ctx2;
  std::string err;
  auto raw = importOnnxModel(
      SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx", &ctx2, err);
  ASSERT_TRUE(raw) << err;
  EXPECT_FALSE(RotationObjective::create(*raw, spec("w16a4kv4"), error));
  EXPECT_NE(error.find("sq-fuse-norms"), std::string::npos) << error;

  auto obj = RotationObjective::create(*module, spec("w16a16"), error);
  ASSERT_TRUE(obj) << error;
  Rotations r; // empty: does not match the model
  double loss;
  std::vector<int64_t> tokens(8, 1);
  EXPECT_FALSE(obj->evaluate(r, tokens, 1, 8, loss, nullptr, error));
  EXPECT_NE(error.find("do not match"), std::string::npos) << error;
}

// Training under GPTQ quantizes the rotated weights with the float model's
// Hessians seen through the rotations (R1^T H R1, blockdiag(R2)^T H
// blockdiag(R2)): the loss at rotations R must equal the loss of the model
// with R folded into its weights (whose Hessians are collected directly) at
// the identity.
TEST(Calibration, GPTQTrainingRotatesTheHessians) {
  mlir::MLIRContext ctx;
  const std::string fixture =
      SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx";
  auto plain = load(ctx, fixture, "sq-fuse-norms");
  auto folded = load(ctx, fixture,
                     "spinquant-rotate{mode=random seed=5 "
                     "online-hadamard=false}");
  ASSERT_TRUE(plain && folded);
  std::string error;
  auto a = RotationObjective::create(*plain, spec("w4a4kv4,gptq"), error);
  ASSERT_TRUE(a) << error;
  auto b = RotationObjective::create(*folded, spec("w4a4kv4,gptq"), error);
  ASSERT_TRUE(b) << error;
  auto rtn = RotationObjective::create(*plain, spec("w4a4kv4"), error);
  ASSERT_TRUE(rtn) << error;
  const int64_t seq = 16;
  std::vector<std::vector<int64_t>> windows;
  for (int64_t w = 0; w < 8; ++w) {
    windows.emplace_back();
    for (int64_t i = 0; i < seq; ++i)
      windows.back().push_back((w * 31 + i * 7 + 3) % a->vocabSize());
  }
  Rotations r = randomRotations(*a, 5, 5 + 1), id = identityRotations(*a);
  const std::vector<int64_t> &tokens = windows[0];
  double la, lb, lr;
  EXPECT_FALSE(a->evaluate(r, tokens, 1, seq, la, nullptr, error));
  EXPECT_NE(error.find("prepareGPTQ"), std::string::npos) << error;
  ASSERT_TRUE(a->prepareGPTQ(windows, error)) << error;
  ASSERT_TRUE(b->prepareGPTQ(windows, error)) << error;
  ASSERT_TRUE(rtn->prepareGPTQ(windows, error)) << error; // a no-op
  ASSERT_TRUE(a->evaluate(r, tokens, 1, seq, la, nullptr, error)) << error;
  ASSERT_TRUE(b->evaluate(id, tokens, 1, seq, lb, nullptr, error)) << error;
  ASSERT_TRUE(rtn->evaluate(r, tokens, 1, seq, lr, nullptr, error)) << error;
  EXPECT_NEAR(la, lb, 1e-3 * std::fabs(lb));
  // GPTQ is not round-to-nearest: the losses differ.
  EXPECT_GT(std::fabs(la - lr), 1e-3 * std::fabs(lr));
  Rotations g;
  ASSERT_TRUE(a->evaluate(r, tokens, 1, seq, la, &g, error)) << error;
  EXPECT_GT(std::sqrt(dot(g.r1, g.r1)), 1e-4);
}

// Training lowers the loss on fixed windows of the shared byte-level model
// within 20 steps, keeps the rotations orthogonal, and is deterministic.
TEST(Calibration, LowersLossOnSharedModel) {
  std::string path = sharedData() + "/wiki2-byte-llama/model.onnx";
  if (!llvm::sys::fs::exists(path))
    GTEST_SKIP() << "shared model not present: " << path;
  auto run = [&](Rotations &r, double &before, double &after) {
    mlir::MLIRContext ctx;
    auto module = load(ctx, path, "sq-fuse-norms,sq-online-hadamard");
    ASSERT_TRUE(module);
    std::string error;
    // W16A2KV16, full batch (the same 2 windows every step): the loss the
    // optimizer sees is the loss measured, and 2-bit activations give the
    // rotations a large error to remove. Under W16A3KV16 the 40-step change
    // on this model was -0.003 to -0.01 depending on OpenBLAS's kernels
    // (OPENBLAS_CORETYPE: Cooperlake -0.003, failing a 0.01 bound; the
    // learned trajectory is chaotic in the rounding); under W16A2KV16 it is
    // -0.24 to -0.36 with the Haswell, SkylakeX, Zen and Cooperlake kernels.
    auto obj = RotationObjective::create(*module, spec("w16a2kv16"), error);
    ASSERT_TRUE(obj) << error;
    r = randomRotations(*obj, 0, 1);
    CalibrationOptions options;
    options.quant = spec("w16a2kv16");
    options.steps = 40;
    options.seqlen = 128;
    options.samples = 2;
    options.batch = 2;
    options.progress = false;
    std::vector<std::vector<int64_t>> windows;
    ASSERT_TRUE(
        loadCalibrationWindows(options, 128, obj->vocabSize(), windows, error))
        << error;
    auto evalLoss = [&](double &out) {
      out = 0;
      for (const auto &w : windows) {
        double l;
        ASSERT_TRUE(obj->evaluate(r, w, 1, 128, l, nullptr, error));
        out += l / windows.size();
      }
    };
    evalLoss(before);
    ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, r)));
    evalLoss(after);
  };
  Rotations a, b;
  double before, after, before2, after2;
  run(a, before, after);
  EXPECT_LT(after, before - 0.05) << "loss " << before << " -> " << after;
  std::printf("loss %.4f -> %.4f\n", before, after);
  EXPECT_LE(numerics::orthogonalityError(a.r1, a.hidden), 1e-5);
  for (auto &r2 : a.r2)
    EXPECT_LE(numerics::orthogonalityError(r2, a.headDim), 1e-5);
  run(b, before2, after2);
  EXPECT_EQ(a.r1, b.r1) << "calibration is not deterministic";
  EXPECT_EQ(after, after2);
}

// The two formulations on the shared model at R1 = R2 = I: the forward is
// the same arithmetic there (x I I^T = x and W I = W exactly), so the loss
// is bit for bit the same and the gradients differ only in the order of
// their sums. (At other rotations the two round differently before 4-bit
// quantizers, a few activations land in the neighbouring code, and 4-bit
// quantization amplifies that into percent-level differences of the
// straight-through gradient on this model: chaotic, not a bug; the fixtures
// above, with few enough values that no code flips, agree at random
// rotations.)
TEST(Calibration, SharedModelSameLossAndGradientEitherWay) {
  std::string path = sharedData() + "/wiki2-byte-llama/model.onnx";
  if (!llvm::sys::fs::exists(path))
    GTEST_SKIP() << "shared model not present: " << path;
  mlir::MLIRContext ctx;
  auto module = load(ctx, path, "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::vector<int64_t> tokens;
  llvm::StringRef text = defaultCalibrationText();
  for (int i = 0; i < 256; ++i)
    tokens.push_back(static_cast<unsigned char>(text[1000 + i]));
  for (const char *quant : {"w16a4kv4", "w16a8kv8", "w16a16kv4"}) {
    std::string error;
    auto act = RotationObjective::create(*module, spec(quant), error, false,
                                         RotationApply::Activations);
    ASSERT_TRUE(act) << error;
    auto fold = RotationObjective::create(*module, spec(quant), error, false,
                                          RotationApply::Weights);
    ASSERT_TRUE(fold) << error;
    Rotations r = identityRotations(*act), ga, gw;
    double la, lw;
    ASSERT_TRUE(act->evaluate(r, tokens, 2, 128, la, &ga, error)) << error;
    ASSERT_TRUE(fold->evaluate(r, tokens, 2, 128, lw, &gw, error)) << error;
    EXPECT_EQ(la, lw) << quant;
    int64_t n = act->hidden(), d = act->headDim();
    // Relative to the raw gradient (skew(G R^T) cancels most of it), with
    // a floor for fp32 noise where R does not matter (R1 under KV-only).
    auto close = [&](const std::vector<double> &a, const std::vector<double> &w,
                     const std::vector<double> &raw, const std::string &what) {
      EXPECT_LE(maxAbsDiff(a, w), 1e-4 * maxAbs(raw) + 1e-7)
          << quant << " " << what << " (max " << maxAbs(w) << ")";
    };
    close(riemannian(ga.r1, r.r1, n), riemannian(gw.r1, r.r1, n), gw.r1, "R1");
    for (size_t l = 0; l < ga.r2.size(); ++l)
      close(riemannian(ga.r2[l], r.r2[l], d), riemannian(gw.r2[l], r.r2[l], d),
            gw.r2[l], "R2 of layer " + std::to_string(l));
  }
}

// validate=N holds out the last N windows of the text (the training
// windows come from before them); the returned rotations are the best of the
// held-out evaluations, the initialization included.
TEST(Calibration, ValidationKeepsTheBestRotations) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  auto obj = RotationObjective::create(*module, spec("w4a4kv4"), error);
  ASSERT_TRUE(obj) << error;
  const int64_t seq = 8, vocab = obj->vocabSize();
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 200; ++i)
    ids.push_back((i * 13 + 5) % vocab);
  llvm::SmallString<128> bin;
  ASSERT_NO_FATAL_FAILURE(writeTokenFile(ids, bin));
  llvm::FileRemover removeBin(bin); // also when an ASSERT returns early
  CalibrationOptions options;
  options.data = bin.str().str();
  options.seqlen = seq;
  options.samples = 8;
  options.batch = 2;
  options.steps = 6;
  options.lr = 50; // large steps: some checkpoints are worse than others
  options.schedule = LRSchedule::Constant;
  options.validate = 3;
  options.validateEvery = 2;
  options.progress = false;
  std::vector<std::vector<int64_t>> windows, heldOut;
  ASSERT_TRUE(
      loadCalibrationWindows(options, seq, vocab, windows, heldOut, error))
      << error;
  ASSERT_EQ(heldOut.size(), 3u);
  for (int64_t w = 0; w < 3; ++w)
    for (int64_t i = 0; i < seq; ++i)
      EXPECT_EQ(heldOut[w][i], ids[200 - (w + 1) * seq + i]);
  EXPECT_EQ(windows.size(), 8u);
  options.validate = 30; // more than the text holds
  EXPECT_FALSE(
      loadCalibrationWindows(options, seq, vocab, windows, heldOut, error));
  EXPECT_NE(error.find("validate=30 needs"), std::string::npos) << error;
  options.validate = 3;

  auto heldOutLoss = [&](const Rotations &r) {
    double sum = 0, l;
    for (auto &w : heldOut) {
      EXPECT_TRUE(obj->evaluate(r, w, 1, seq, l, nullptr, error)) << error;
      sum += l / heldOut.size();
    }
    return sum;
  };
  Rotations init = randomRotations(*obj, 3, 4);
  // The same training (validation does not change it), checkpoints every
  // 2 steps or only the initialization and the end.
  Rotations best = init, ends = init;
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, best)));
  options.validateEvery = 1000;
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, ends)));
  double l0 = heldOutLoss(init), lBest = heldOutLoss(best);
  EXPECT_LE(lBest, l0 + 1e-4);
  EXPECT_LE(lBest, heldOutLoss(ends) + 1e-4);
  EXPECT_LE(numerics::orthogonalityError(best.r1, obj->hidden()), 1e-5);
}

// r3=search: each layer's R3 becomes the best signed permutation of the
// Hadamard matrix found on the forward loss of the fixed windows, so that
// loss never rises; the result is orthogonal, of that form, deterministic,
// and Cayley SGD does not move it.
TEST(Calibration, R3SearchLowersTheKeyCacheLoss) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  const QuantSpec quant = spec("w16a16kv4");
  auto obj = RotationObjective::create(*module, quant, error, true);
  ASSERT_TRUE(obj) << error;
  const int64_t seq = 8, vocab = obj->vocabSize(), d = obj->headDim();
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 400; ++i)
    ids.push_back((i * 13 + i / 7) % vocab);
  llvm::SmallString<128> bin;
  ASSERT_NO_FATAL_FAILURE(writeTokenFile(ids, bin));
  llvm::FileRemover removeBin(bin); // also when an ASSERT returns early
  CalibrationOptions options;
  options.data = bin.str().str();
  options.seqlen = seq;
  options.samples = 8;
  options.batch = 2;
  options.steps = 0;
  options.quant = quant;
  options.r3 = R3Mode::Search;
  options.r3Candidates = 12;
  options.r3Windows = 4;
  options.r3Sigma = 0; // keep any lower loss (below: the significance test)
  options.progress = false;
  std::vector<std::vector<int64_t>> windows;
  ASSERT_TRUE(loadCalibrationWindows(options, seq, vocab, windows, error))
      << error;
  std::vector<int64_t> tokens;
  for (int64_t w = 0; w < options.r3Windows; ++w)
    tokens.insert(tokens.end(), windows[w].begin(), windows[w].end());
  auto loss = [&](const Rotations &r) {
    double l = 0;
    EXPECT_TRUE(
        obj->evaluate(r, tokens, options.r3Windows, seq, l, nullptr, error))
        << error;
    return l;
  };
  Rotations init = identityRotations(*obj);
  const std::vector<float> &h = numerics::denseTransform(d, 0);
  init.r3.assign(obj->numLayers(), std::vector<double>(h.begin(), h.end()));
  Rotations found = init, again = init;
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, found)));
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, again)));
  EXPECT_EQ(found.r3, again.r3);
  double before = loss(init), after = loss(found);
  EXPECT_LT(after, before) << "12 candidates per layer found nothing better";
  ASSERT_EQ(found.r3.size(), size_t(obj->numLayers()));
  for (const auto &r : found.r3) {
    EXPECT_LE(numerics::orthogonalityError(r, d), 1e-6);
    for (double v : r)
      EXPECT_NEAR(std::fabs(v), 1.0 / std::sqrt(double(d)), 1e-6);
  }
  // Cayley steps with r3=search leave R3 alone (no candidates: the search
  // keeps it too). With candidates, the search after the steps sees the
  // moved R2 and may rightly pick another sign pattern than `found`: how
  // near the candidates' losses are depends on the machine's rounding.
  options.steps = 2;
  options.r3Candidates = 0;
  Rotations trained = found;
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, trained)));
  EXPECT_EQ(trained.r3, found.r3);
  // (R2 moves: it reaches the value cache. R1 cancels in K and V, so with
  // only the KV cache quantized its gradient is zero.)
  EXPECT_NE(trained.r2, found.r2);
  EXPECT_EQ(trained.r1, found.r1);

  // The significance test: a layer's best candidate is kept only if its
  // mean paired gain over the windows exceeds r3Sigma standard errors. The
  // gains found above are finite, so a huge r3Sigma keeps every Hadamard.
  options.steps = 0;
  options.r3Candidates = 12;
  options.r3Sigma = 1e12;
  Rotations strict = init;
  ASSERT_TRUE(mlir::succeeded(calibrateRotations(*module, options, strict)));
  EXPECT_EQ(strict.r3, init.r3);
  // The per-window losses behind it: their mean is the batch's loss, and
  // each is the loss of its window alone.
  double mean = 0;
  std::vector<double> each;
  ASSERT_TRUE(obj->evaluate(found, tokens, options.r3Windows, seq, mean,
                            nullptr, error, &each))
      << error;
  ASSERT_EQ(each.size(), size_t(options.r3Windows));
  double sum = 0;
  for (int64_t w = 0; w < options.r3Windows; ++w) {
    sum += each[w];
    double alone = 0;
    ASSERT_TRUE(obj->evaluate(found, windows[w], 1, seq, alone, nullptr, error))
        << error;
    EXPECT_NEAR(each[w], alone, 1e-5) << "window " << w;
  }
  EXPECT_NEAR(sum / options.r3Windows, mean, 1e-9);
}

TEST(Calibration, EmbeddedTextIsWikiText) {
  llvm::StringRef text = defaultCalibrationText();
  EXPECT_GT(text.size(), 90000u);
  EXPECT_TRUE(text.contains("Homarus gammarus"));
}

// loss=kl|kl-top: the targets are the float model's next-token
// distributions (row b * seq + s of the batch). Scored against itself with
// nothing quantized, at any rotations, the loss is 0 and so is its
// gradient; the calibration trains on them (other rotations than ce's),
// kl-top with k >= vocabulary is kl, and an oversized cache is refused.
TEST(Calibration, DistillationFromTheFloatModel) {
  mlir::MLIRContext ctx;
  auto module = load(ctx, SQ_SOURCE_DIR "/test/Import/Inputs/gqa-opset17.onnx",
                     "sq-fuse-norms,sq-online-hadamard");
  ASSERT_TRUE(module);
  std::string error;
  auto obj = RotationObjective::create(*module, spec("w16a16"), error, false,
                                       RotationApply::Weights);
  ASSERT_TRUE(obj) << error;
  const int64_t batch = 2, seq = 6, vocab = obj->vocabSize();
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < batch * seq; ++i)
    tokens.push_back((i * 5 + 1) % vocab);
  auto ex = Executor::create(*module, error);
  ASSERT_TRUE(ex) << error;
  std::vector<float> logits;
  ASSERT_TRUE(ex->forward(tokens, batch, seq, logits, error)) << error;
  SoftTargets self;
  self.width = vocab;
  for (int64_t r = 0; r < batch * seq; ++r) {
    const float *z = logits.data() + r * vocab;
    double mx = *std::max_element(z, z + vocab), sum = 0;
    for (int64_t j = 0; j < vocab; ++j)
      sum += std::exp(z[j] - mx);
    for (int64_t j = 0; j < vocab; ++j)
      self.logProbs.push_back(float(z[j] - mx - std::log(sum)));
  }
  Rotations r = randomRotations(*obj, 4, 9);
  double loss = 1;
  Rotations grad;
  ASSERT_TRUE(
      obj->evaluate(r, tokens, batch, seq, loss, &grad, error, nullptr, &self))
      << error;
  EXPECT_NEAR(loss, 0.0, 1e-5);
  for (double g : grad.r1)
    EXPECT_NEAR(g, 0.0, 1e-4);
  // The same targets shifted by one position are not the model's.
  SoftTargets shifted = self;
  std::rotate(shifted.logProbs.begin(), shifted.logProbs.begin() + vocab,
              shifted.logProbs.end());
  ASSERT_TRUE(obj->evaluate(r, tokens, batch, seq, loss, nullptr, error,
                            nullptr, &shifted));
  EXPECT_GT(loss, 1e-3);
  // Malformed targets: one line.
  SoftTargets bad = self;
  bad.logProbs.pop_back();
  EXPECT_FALSE(obj->evaluate(r, tokens, batch, seq, loss, nullptr, error,
                             nullptr, &bad));
  EXPECT_NE(error.find("reference distributions"), std::string::npos) << error;

  // The calibration loop.
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 300; ++i)
    ids.push_back((i * 13 + 5) % vocab);
  llvm::SmallString<128> bin;
  ASSERT_NO_FATAL_FAILURE(writeTokenFile(ids, bin));
  llvm::FileRemover removeBin(bin); // also when an ASSERT returns early
  CalibrationOptions options;
  options.data = bin.str().str();
  options.quant = spec("w4a4kv4");
  options.seqlen = 8;
  options.samples = 6;
  options.batch = 2;
  options.steps = 3;
  options.progress = false;
  auto run = [&](CalibLoss l, int64_t k) {
    options.loss = l;
    options.klTopK = k;
    Rotations out = randomRotations(*obj, 1, 2);
    EXPECT_TRUE(mlir::succeeded(calibrateRotations(*module, options, out)));
    return out;
  };
  Rotations init = randomRotations(*obj, 1, 2);
  Rotations ce = run(CalibLoss::CrossEntropy, 64), kl = run(CalibLoss::KL, 64),
            top = run(CalibLoss::KLTop, 3),
            topAll = run(CalibLoss::KLTop, vocab);
  EXPECT_NE(kl.r1, init.r1);
  EXPECT_NE(kl.r1, ce.r1);
  EXPECT_NE(top.r1, kl.r1);
  EXPECT_EQ(topAll.r1, kl.r1);
  EXPECT_EQ(topAll.r2, kl.r2);
  EXPECT_LE(numerics::orthogonalityError(top.r1, obj->hidden()), 1e-6);

  std::string diag;
  mlir::ScopedDiagnosticHandler handler(
      &ctx, [&](mlir::Diagnostic &d) { diag = d.str(); });
  options.loss = CalibLoss::KL;
  options.klCacheMB = 0;
  Rotations refused = init;
  EXPECT_TRUE(mlir::failed(calibrateRotations(*module, options, refused)));
  EXPECT_NE(diag.find("use loss=kl-top"), std::string::npos) << diag;
  options.loss = CalibLoss::KLTop;
  options.klTopK = 0;
  EXPECT_TRUE(mlir::failed(calibrateRotations(*module, options, refused)));
  EXPECT_NE(diag.find("kl-top-k must be positive"), std::string::npos) << diag;
}

} // namespace
