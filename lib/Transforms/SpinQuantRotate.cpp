//===- SpinQuantRotate.cpp - fold SpinQuant's R1/R2 into the weights ------===//

#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <cmath>
#include <cstring>
#include <random>

namespace sq {
#define GEN_PASS_DEF_SQSPINQUANTROTATE
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

using Matrix = std::vector<double>; // row-major n x n

/// A seeded random orthogonal matrix: Gram-Schmidt (twice) on a Gaussian
/// matrix, rows orthonormal.
Matrix randomOrthogonal(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist;
  Matrix q(n * n);
  for (double &v : q)
    v = dist(rng);
  for (int64_t i = 0; i < n; ++i)
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t j = 0; j < i; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < n; ++k)
          dot += q[i * n + k] * q[j * n + k];
        for (int64_t k = 0; k < n; ++k)
          q[i * n + k] -= dot * q[j * n + k];
      }
      double norm = 0;
      for (int64_t k = 0; k < n; ++k)
        norm += q[i * n + k] * q[i * n + k];
      norm = std::sqrt(norm);
      for (int64_t k = 0; k < n; ++k)
        q[i * n + k] /= norm;
    }
  return q;
}

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

/// W [rows, cols]: each `block`-wide column block c of W becomes W_c * R
/// (R is block x block).
void multiplyColumnBlocks(std::vector<float> &w, int64_t rows, int64_t cols,
                          const Matrix &r, int64_t block) {
  std::vector<double> tmp(block);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c0 = 0; c0 < cols; c0 += block) {
      float *x = w.data() + i * cols + c0;
      for (int64_t j = 0; j < block; ++j) {
        double s = 0;
        for (int64_t k = 0; k < block; ++k)
          s += x[k] * r[k * block + j];
        tmp[j] = s;
      }
      for (int64_t j = 0; j < block; ++j)
        x[j] = static_cast<float>(tmp[j]);
    }
}

/// W [rows, cols]: each `block`-high row block B of W becomes R^T * B.
void multiplyRowBlocksByRT(std::vector<float> &w, int64_t rows, int64_t cols,
                           const Matrix &r, int64_t block) {
  std::vector<double> tmp(block);
  for (int64_t r0 = 0; r0 < rows; r0 += block)
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t i = 0; i < block; ++i) {
        double s = 0; // (R^T B)[i][c] = sum_k R[k][i] B[k][c]
        for (int64_t k = 0; k < block; ++k)
          s += r[k * block + i] * w[(r0 + k) * cols + c];
        tmp[i] = s;
      }
      for (int64_t i = 0; i < block; ++i)
        w[(r0 + i) * cols + c] = static_cast<float>(tmp[i]);
    }
}

struct SpinQuantRotatePass
    : public sq::impl::SQSpinQuantRotateBase<SpinQuantRotatePass> {
  using Base::Base;

  Matrix rotation(int64_t n, uint64_t s, Operation *where, bool &ok) {
    if (mode == "random")
      return randomOrthogonal(n, s);
    Matrix r = randomHadamard(n, s);
    if (r.empty()) {
      where->emitError() << "no Hadamard matrix of size " << n
                         << " is implemented; use mode=random";
      ok = false;
    }
    return r;
  }

  /// Applies `fn` to the fp32 values of `weight` ([rows, cols]) and writes
  /// them back; a weight shared with other ops is copied first.
  bool rewrite(Value weightValue, Operation *user,
               function_ref<void(std::vector<float> &, int64_t, int64_t)> fn) {
    auto weight = weightValue.getDefiningOp<WeightOp>();
    std::vector<float> w;
    if (!weight || !readWeightValues(weight, w)) {
      user->emitOpError() << "weight must be a float sq.weight with data";
      return false;
    }
    weight = unshareWeight(weight, user);
    auto shape = cast<RankedTensorType>(weightValue.getType()).getShape();
    fn(w, shape[0], shape[1]);
    writeWeightValues(weight, w);
    return true;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (mode == "learned" || mode == "file") {
      module.emitError() << "spinquant-rotate mode=" << mode
                         << " is not implemented yet (it comes with the "
                            "calibration issue); use mode=hadamard or "
                            "mode=random";
      return signalPassFailure();
    }
    if (mode != "random" && mode != "hadamard") {
      module.emitError() << "unknown spinquant-rotate mode '" << mode
                         << "': expected random, hadamard, learned or file";
      return signalPassFailure();
    }
    bool ok = true;
    module.walk([&](RMSNormOp op) {
      if (op.getScale() && ok) {
        op.emitOpError() << "has a scale, which does not commute with R1: "
                            "run --sq-fuse-norms first";
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
    Matrix r1 = rotation(hidden, seed, embedding, ok);
    if (!ok)
      return signalPassFailure();

    // R1: embedding and readers W <- W R1, writers W <- R1^T W.
    auto colR1 = [&](std::vector<float> &w, int64_t rows, int64_t cols) {
      multiplyColumnBlocks(w, rows, cols, r1, hidden);
    };
    if (!rewrite(embedding.getTable(), embedding, colR1))
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
        ok = rewrite(linear.getWeight(), linear, colR1);
      } else if (writes) {
        ok = rewrite(linear.getWeight(), linear,
                     [&](std::vector<float> &w, int64_t rows, int64_t cols) {
                       multiplyRowBlocksByRT(w, rows, cols, r1, hidden);
                     });
      }
    });
    if (!ok)
      return signalPassFailure();

    // R2 per layer: v_proj rows of each KV head <- R2^T, o_proj columns of
    // each head <- R2.
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
      Matrix r2 = rotation(headDim, seed + 1 + layer++, attn, ok);
      if (!ok)
        return;
      ok = rewrite(v.getWeight(), v,
                   [&](std::vector<float> &w, int64_t rows, int64_t cols) {
                     multiplyRowBlocksByRT(w, rows, cols, r2, headDim);
                   }) &&
           rewrite(o.getWeight(), o,
                   [&](std::vector<float> &w, int64_t rows, int64_t cols) {
                     multiplyColumnBlocks(w, rows, cols, r2, headDim);
                   });
    });
    if (!ok)
      return signalPassFailure();
  }
};

} // namespace
