//===- SpinQuantRotate.cpp - fold SpinQuant's R1/R2 into the weights ------===//

#include "ScaleSites.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Support/Distributed.h"
#include "sq/Transforms/Calibrate.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/RotationFile.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/Pass/PassManager.h"

#include <cmath>
#include <map>
#include <random>

namespace sq {
#define GEN_PASS_DEF_SQSPINQUANTROTATE
#define GEN_PASS_DEF_SQSPINQUANTCALIBRATE
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

using Matrix = std::vector<double>; // row-major n x n

/// diag(+-1) * H_n / sqrt(n) with seeded signs, or empty without a
/// Hadamard matrix of that size.
Matrix randomHadamard(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Matrix r(n * n);
  std::vector<float> row(n);
  for (int64_t i = 0; i < n; ++i) {
    std::fill(row.begin(), row.end(), 0.0f);
    row[i] = 1.0f;
    if (!numerics::hadamardTransformInPlace(row.data(), n))
      return {};
    double sign = (rng() & 1) ? -1.0 : 1.0;
    for (int64_t j = 0; j < n; ++j)
      r[i * n + j] = sign * row[j];
  }
  return r;
}

/// Largest |(R R^T - I)_ij|.
double orthogonalityError(const Matrix &r, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < n; ++k)
        dot += r[i * n + k] * r[j * n + k];
      worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
    }
  return worst;
}

/// W [rows, cols]: each `block`-wide column block of W becomes W_c * R
/// (R is block x block): W seen as [rows * cols / block, block] times R, one
/// sgemm.
void multiplyColumnBlocks(numerics::FloatBuffer &w, int64_t rows, int64_t cols,
                          const Matrix &r, int64_t block) {
  std::vector<float> rf(r.begin(), r.end());
  numerics::FloatBuffer out(w.size());
  numerics::gemmF32(numerics::Transpose::No, numerics::Transpose::No,
                    rows * cols / block, block, block, 1.0f, w.data(), block,
                    rf.data(), block, 0.0f, out.data(), block);
  w.swap(out);
}

/// W [rows, cols]: each `block`-high row block B of W becomes R^T * B, one
/// sgemm per block.
void multiplyRowBlocksByRT(numerics::FloatBuffer &w, int64_t rows, int64_t cols,
                           const Matrix &r, int64_t block) {
  std::vector<float> rf(r.begin(), r.end());
  numerics::FloatBuffer out(w.size());
  for (int64_t r0 = 0; r0 < rows; r0 += block)
    numerics::gemmF32(numerics::Transpose::Yes, numerics::Transpose::No, block,
                      cols, block, 1.0f, rf.data(), block, w.data() + r0 * cols,
                      cols, 0.0f, out.data() + r0 * cols, cols);
  w.swap(out);
}

struct SpinQuantRotatePass
    : public sq::impl::SQSpinQuantRotateBase<SpinQuantRotatePass> {
  using Base::Base;

  std::map<std::string, Matrix> fromFile;
  std::vector<std::pair<std::string, Matrix>> used;

  /// The rotation `name` (R1, layers.N.R2) of size n.
  Matrix rotation(const std::string &name, int64_t n, uint64_t s,
                  Operation *where, bool &ok) {
    Matrix r = makeRotation(name, n, s, where, ok);
    if (ok && !save.empty())
      used.push_back({name, r});
    return r;
  }

  Matrix makeRotation(const std::string &name, int64_t n, uint64_t s,
                      Operation *where, bool &ok) {
    if (mode == RotationMode::Learned) {
      auto it = fromFile.find(name);
      if (it != fromFile.end())
        return it->second;
      // The initialization.
      if (init == RotationInit::Random)
        return numerics::randomOrthogonalMatrix(n, s);
      Matrix r = randomHadamard(n, s);
      if (r.empty())
        return numerics::randomOrthogonalMatrix(n, s);
      return r;
    }
    if (mode == RotationMode::File) {
      // SQ's names, then the official SpinQuant ones.
      std::string official = name == "R1"
                                 ? "model.R1.weight"
                                 : "model." + name.substr(0, name.size() - 3) +
                                       ".self_attn.R2.weight";
      auto it = fromFile.find(name);
      if (it == fromFile.end())
        it = fromFile.find(official);
      if (it == fromFile.end()) {
        where->emitError() << "rotation file '" << path << "' has no '" << name
                           << "' (or '" << official << "')";
        ok = false;
        return {};
      }
      if (it->second.size() != size_t(n * n)) {
        where->emitError() << "rotation '" << it->first << "' in '" << path
                           << "' is not " << n << "x" << n;
        ok = false;
        return {};
      }
      double err = orthogonalityError(it->second, n);
      if (err > 1e-4) {
        where->emitError() << "rotation '" << it->first << "' in '" << path
                           << "' is not orthogonal (|R R^T - I| = " << err
                           << ")";
        ok = false;
        return {};
      }
      return it->second;
    }
    if (mode == RotationMode::Random)
      return numerics::randomOrthogonalMatrix(n, s);
    Matrix r = randomHadamard(n, s);
    if (r.empty()) {
      where->emitError() << "no Hadamard matrix of size " << n
                         << " is implemented; use mode=random (sq-compile: "
                            "--rotate=random)";
      ok = false;
    }
    return r;
  }

  /// Applies `fn` to the fp32 values of `weight` ([rows, cols]; a bias
  /// [n] is a column [n, 1]) a panel at a time, rows (a multiple of
  /// `align`) or columns, and writes them back in place (transformWeight:
  /// the old and new bytes of one weight and one fp32 panel at a time); a
  /// weight shared with other ops gets its own copy for `user`.
  bool
  rewrite(Value weightValue, Operation *user, bool byRows, int64_t align,
          function_ref<void(numerics::FloatBuffer &, int64_t, int64_t)> fn) {
    return transformWeight(weightValue, user, byRows, align, fn, weightType);
  }

  /// mode=learned: R3/R4 go in first (they stay fixed while training),
  /// then Cayley SGD learns R1/R2 from their initialization; the learned
  /// matrices are then folded like any others.
  LogicalResult learnRotations(ModuleOp module, int64_t hidden) {
    if (onlineHadamard && failed(insertOnlineHadamards(module, true, true,
                                                       /*seed=*/0, weightType)))
      return failure();
    releaseWeightScratch(); // before the training model takes memory
    Rotations r;
    r.hidden = hidden;
    bool ok = true;
    Operation *where = module;
    r.r1 = makeRotation("R1", hidden, seed, where, ok);
    int64_t layer = 0;
    module.walk([&](AttentionOp attn) {
      r.headDim = attn.getHeadDim();
      r.r2.push_back(makeRotation("layers." + std::to_string(layer) + ".R2",
                                  r.headDim, seed + 1 + layer, where, ok));
      ++layer;
    });
    if (!ok)
      return failure();
    if (r3 != R3Mode::Hadamard) {
      // From the online Hadamards just inserted (seed 0).
      const std::vector<float> &h =
          numerics::denseTransform(r.headDim, /*seed=*/0);
      r.r3.assign(layer, Matrix(h.begin(), h.end()));
    }
    CalibrationOptions options;
    options.data = data;
    options.tokenizer = tokenizer;
    options.samples = samples;
    options.seqlen = seqlen;
    options.batch = batch;
    options.steps = steps;
    options.lr = lr;
    options.schedule = schedule;
    options.momentum = momentum;
    options.seed = seed;
    options.quant = quant;
    options.validate = validate;
    options.validateEvery = validateEvery;
    options.evalWindows = evalWindows;
    options.r3 = r3;
    options.r3Candidates = r3Candidates;
    options.r3Windows = r3Windows;
    options.r3Sigma = r3Sigma;
    options.apply = apply;
    options.precision = precision;
    options.clip = clip;
    options.clipLr = clipLr;
    options.loss = loss;
    options.klTopK = klTopK;
    options.klCacheMB = klCacheMB;
    options.checkpoint = checkpoint;
    options.microBatch = microBatch;
    options.scales = scales;
    options.scalesLr = scalesLr;
    options.scalesInit = scalesInit;
    if (failed(calibrateRotations(module, options, r)))
      return failure();
    if (!r.scales.empty()) {
      std::vector<ScaleSite> sites;
      std::string error;
      if (!findScaleSites(module, sites, error) ||
          sites.size() != r.scales.size())
        return module.emitError()
               << (error.empty() ? "scales: the sites changed" : error);
      for (size_t k = 0; k < sites.size(); ++k) {
        Matrix s(r.scales[k].size());
        for (size_t i = 0; i < s.size(); ++i)
          s[i] = std::exp(r.scales[k][i]);
        fromFile[sites[k].name()] = std::move(s);
      }
    }
    fromFile["R1"] = std::move(r.r1);
    for (size_t l = 0; l < r.r2.size(); ++l)
      fromFile["layers." + std::to_string(l) + ".R2"] = std::move(r.r2[l]);
    for (size_t l = 0; l < r.r3.size(); ++l)
      fromFile["layers." + std::to_string(l) + ".R3"] = std::move(r.r3[l]);
    return success();
  }

  /// A learned R3 (mode=learned with r3=search|cayley, or a rotation file
  /// with layers.N.R3): the online Hadamards on Q/K become sq.rotate by it.
  /// A file's R3 must be there for every layer or for none; each is read
  /// like the other rotations (rotation(): size and orthogonality checks
  /// for mode=file, recorded for save=).
  LogicalResult applyLearnedR3(ModuleOp module, int64_t layers) {
    int64_t present = 0;
    while (present < layers &&
           fromFile.count("layers." + std::to_string(present) + ".R3"))
      ++present;
    if (!present)
      return success();
    std::string where = mode == RotationMode::File
                            ? "rotation file '" + path + "'"
                            : std::string("learned R3");
    if (present != layers)
      return module.emitError()
             << where << " has R3 for layers 0-" << present - 1
             << " only, not for all " << layers;
    int64_t d = 0;
    module.walk([&](AttentionOp a) { d = a.getHeadDim(); });
    std::vector<Matrix> r3;
    bool ok = true;
    for (int64_t l = 0; l < layers && ok; ++l)
      r3.push_back(rotation("layers." + std::to_string(l) + ".R3", d,
                            /*seed=*/0, module, ok));
    if (!ok)
      return failure();
    std::string error;
    if (!replaceR3WithRotations(module, r3, nullptr, error))
      return module.emitError() << where << ": " << error;
    return success();
  }

  /// The learned scales (mode=learned with scales=learned, or a rotation
  /// file's `.scale` tensors) of the value sites (`value`, folded before
  /// R2: they scale the heads' own dimensions of v_proj and o_proj, which
  /// R1 leaves alone) or of the other sites (folded after R1/R2:
  /// orthogonal, then diagonal); recorded for save=. A file's scales must
  /// cover every site or none.
  LogicalResult foldLearnedScales(ModuleOp module, bool value) {
    bool any = llvm::any_of(
        fromFile, [](const auto &kv) { return isScaleTensorName(kv.first); });
    if (!any)
      return success();
    std::vector<ScaleSite> sites;
    std::string error;
    if (!findScaleSites(module, sites, error))
      return module.emitError() << error;
    std::string where = mode == RotationMode::File
                            ? "rotation file '" + path + "'"
                            : std::string("learned scales");
    std::vector<std::vector<double>> logScales;
    std::vector<ScaleSite> folded;
    for (const ScaleSite &site : sites) {
      auto it = fromFile.find(site.name());
      if (it == fromFile.end())
        return module.emitError()
               << where << " has scales but not '" << site.name() << "'";
      if (int64_t(it->second.size()) != site.size)
        return module.emitError()
               << where << ": '" << site.name() << "' has " << it->second.size()
               << " values, not " << site.size;
      if ((site.kind == ScaleKind::Value) != value)
        continue;
      folded.push_back(site);
      std::vector<double> u;
      for (double s : it->second)
        u.push_back(std::log(s));
      logScales.push_back(std::move(u));
      if (!save.empty())
        used.push_back({site.name(), it->second});
    }
    return foldScales(module, folded, logScales, weightType);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (scales == ScaleMode::Learned && mode != RotationMode::Learned) {
      module.emitError() << "scales=learned needs mode=learned (mode=file "
                            "reads a file's learned scales)";
      return signalPassFailure();
    }
    if (fuseNorms && failed(foldNormScales(module, false, weightType)))
      return signalPassFailure();
    releaseWeightScratch();
    bool ok = true;
    module.walk([&](RMSNormOp op) {
      if (op.getScale() && ok) {
        op.emitOpError() << "has a scale, which does not commute with R1: "
                            "run --sq-fuse-norms first (or drop "
                            "fuse-norms=false)";
        ok = false;
      }
    });
    EmbeddingOp embedding;
    module.walk([&](EmbeddingOp op) { embedding = op; });
    if (!ok || !embedding) {
      if (ok)
        module.emitError() << "no sq.embedding: nothing to rotate";
      return signalPassFailure();
    }
    int64_t hidden = embedding.getTable().getType().getDimSize(1);
    if (mode == RotationMode::Learned && failed(learnRotations(module, hidden)))
      return signalPassFailure();
    if (mode == RotationMode::File) {
      std::string error;
      if (path.empty() || !readRotationFile(path, fromFile, error)) {
        module.emitError() << (path.empty()
                                   ? std::string("mode=file needs path=FILE")
                                   : error);
        return signalPassFailure();
      }
    }
    Matrix r1 = rotation("R1", hidden, seed, embedding, ok);
    if (!ok)
      return signalPassFailure();

    // R1: embedding and readers W <- W R1, writers W <- R1^T W and their
    // biases b <- R1^T b (a reader's bias is on its output side: R1 leaves
    // it alone). A signed
    // Hadamard R1 = diag(s) H / sqrt(n) is applied with the fast transform
    // per row (w R1 = transform(w * s)) instead of a dense product.
    std::vector<float> signs;
    if (mode == RotationMode::Hadamard) {
      std::mt19937_64 rng(seed); // the draws of randomHadamard
      for (int64_t i = 0; i < hidden; ++i)
        signs.push_back((rng() & 1) ? -1.0f : 1.0f);
    }
    auto colR1 = [&](numerics::FloatBuffer &w, int64_t rows, int64_t cols) {
      if (signs.empty())
        return multiplyColumnBlocks(w, rows, cols, r1, hidden);
      for (int64_t r = 0; r < rows; ++r) { // (w R1) = transform(w * s)
        float *row = w.data() + r * hidden;
        for (int64_t j = 0; j < hidden; ++j)
          row[j] *= signs[j];
        numerics::hadamardTransformInPlace(row, hidden);
      }
    };
    auto rowR1T = [&](numerics::FloatBuffer &w, int64_t rows, int64_t cols) {
      if (signs.empty())
        return multiplyRowBlocksByRT(w, rows, cols, r1, hidden);
      // R1^T W = (H / sqrt(n))^T (diag(s) W): scale rows, transform columns.
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          w[r * cols + c] *= signs[r];
      numerics::hadamardTransformColumns(w.data(), rows, cols);
    };
    // W R1 (rows independent): row panels; R1^T W: column panels.
    if (!rewrite(embedding.getTable(), embedding, true, 1, colR1))
      return signalPassFailure();
    module.walk([&](LinearOp linear) {
      if (!ok)
        return;
      bool reads = linear.getInput().getDefiningOp<RMSNormOp>() != nullptr;
      bool writes = llvm::any_of(linear.getOutput().getUsers(),
                                 [](Operation *u) { return isa<AddOp>(u); });
      if (reads && writes) {
        linear.emitOpError() << "both reads and writes the residual stream";
        ok = false;
      } else if (reads) {
        ok = rewrite(linear.getWeight(), linear, true, 1, colR1);
      } else if (writes) {
        ok = rewrite(linear.getWeight(), linear, false, 1, rowR1T) &&
             (!linear.getBias() ||
              rewrite(linear.getBias(), linear, false, 1, rowR1T));
      }
    });
    if (!ok)
      return signalPassFailure();

    // R2 per layer: v_proj rows of each KV head <- R2^T (and its bias, the
    // same blocks of a column), o_proj columns of each head <- R2 (its bias
    // is on the residual side: R1's), after the value sites' scales.
    if (failed(foldLearnedScales(module, /*value=*/true)))
      return signalPassFailure();
    int64_t layer = 0;
    module.walk([&](AttentionOp attn) {
      if (!ok)
        return;
      auto v = attn.getValue().getDefiningOp<LinearOp>();
      LinearOp o;
      for (Operation *u : attn.getOutput().getUsers())
        o = dyn_cast<LinearOp>(u);
      if (!v || !o || !attn.getOutput().hasOneUse()) {
        attn.emitOpError() << "R2 needs the value to be a linear projection "
                              "and the output to feed one linear (o_proj)";
        ok = false;
        return;
      }
      int64_t headDim = attn.getHeadDim();
      Matrix r2 = rotation("layers." + std::to_string(layer) + ".R2", headDim,
                           seed + 1 + layer, attn, ok);
      ++layer;
      if (!ok)
        return;
      auto rowsR2T = [&](numerics::FloatBuffer &w, int64_t rows, int64_t cols) {
        multiplyRowBlocksByRT(w, rows, cols, r2, headDim);
      };
      ok = rewrite(v.getWeight(), v, true, headDim, rowsR2T) &&
           (!v.getBias() || rewrite(v.getBias(), v, true, headDim, rowsR2T)) &&
           rewrite(o.getWeight(), o, true, 1,
                   [&](numerics::FloatBuffer &w, int64_t rows, int64_t cols) {
                     multiplyColumnBlocks(w, rows, cols, r2, headDim);
                   });
    });
    if (!ok || failed(foldLearnedScales(module, /*value=*/false)))
      return signalPassFailure();
    if (onlineHadamard && mode != RotationMode::Learned &&
        failed(
            insertOnlineHadamards(module, true, true, /*seed=*/0, weightType)))
      return signalPassFailure();
    if (failed(applyLearnedR3(module, layer)))
      return signalPassFailure();
    releaseWeightScratch();
    // Under mpirun every process holds the same rotations: rank 0 writes.
    std::string error;
    if (!save.empty() && distributed::rank() == 0 &&
        !writeRotationFile(save, used, error)) {
      module.emitError() << error;
      return signalPassFailure();
    }
  }
};

} // namespace
