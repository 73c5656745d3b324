//===- RotationObjectiveEval.cpp - the loss and gradient of R1/R2/R3 ------===//
//
// RotationObjective::evaluate(): folds or sets the rotations (and learned
// scales and clips) of a step, runs the fake-quantized clone forward and
// backward over the windows, and turns the executor's gradients into
// dL/dR1, dL/dR2, dL/dR3 and the scales' and clips' gradients. The two
// formulations (activations, weights) are described in
// RotationObjective.cpp.
//
//===----------------------------------------------------------------------===//

#include "QuantizeCalibration.h"
#include "RotationObjectiveImpl.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Gemm.h"
#include "sq/Numerics/Hadamard.h"

#include "llvm/ADT/ScopeExit.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace mlir;

namespace sq {

using objective::Entry;
using objective::Role;

namespace {

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
          int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
          float beta = 0.0f) {
  numerics::gemmF32(ta ? numerics::Transpose::Yes : numerics::Transpose::No,
                    tb ? numerics::Transpose::Yes : numerics::Transpose::No, m,
                    n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

} // namespace

/// The weight grid of `spec` (round-to-nearest, as quantizeWeight).
static numerics::QuantGrid weightGrid(const QuantSpec &spec) {
  numerics::QuantGrid grid;
  grid.bits = spec.wBits;
  grid.symmetric = spec.wSym;
  grid.group = spec.wGroup;
  return grid;
}

/// The Hessian of a rotated weight's input: the float model's H seen through
/// the rotation. A reader of the residual stream (W' = W R1) gets the input
/// R1^T x, so H' = R1^T H R1; o_proj (W' = R1^T W B, B = blockdiag(R2)) gets
/// B^T x, so H' = B^T H B; any other writer (down_proj) keeps H.
static std::vector<double> rotatedHessian(const std::vector<double> &h,
                                          int64_t cols, const double *r,
                                          int64_t d, bool blockDiagonal) {
  std::vector<double> t(h.size()), out(h.size());
  if (!blockDiagonal) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, cols, cols,
                1.0, h.data(), cols, r, cols, 0.0, t.data(), cols);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, cols, cols, 1.0,
                r, cols, t.data(), cols, 0.0, out.data(), cols);
    return out;
  }
  for (int64_t j = 0; j < cols; j += d) // T[:, blk j] = H[:, blk j] R2
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, d, d, 1.0,
                h.data() + j, cols, r, d, 0.0, t.data() + j, cols);
  for (int64_t i = 0; i < cols; i += d) // H'[blk i, :] = R2^T T[blk i, :]
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, cols, d, 1.0, r, d,
                t.data() + i * cols, cols, 0.0, out.data() + i * cols, cols);
  return out;
}

/// dL/du of the scales on `e` (`f` its scaled weight F = rows(s) W'
/// cols(s) of this step, `dW` = dL/dF) into `grads`, and `dW` becomes
/// dL/dW' (W' the weight before the scales). A factor exp(+-u_k) on row i gives
/// dL/du_k += +-sum_j dW_ij F_ij (the columns alike); columns behind the
/// online transform T (down_proj under R4, F = (W' T^T D) T) are compared in
/// the basis before T: dW T^T against F T^T, and dL/dW' = ((dW T^T) D) T.
static void scaleBackward(const Entry &e, const std::vector<float> &f,
                          const std::vector<std::vector<double>> &logScales,
                          MutableArrayRef<float> dW,
                          std::vector<std::vector<double>> &grads, int sides) {
  int64_t rows = e.rows, cols = e.cols;
  // Both sums read dL/dF before either factor turns it into dL/dW'.
  bool rowsScaled = e.rowSite >= 0 && sides != -e.rowUse.sign;
  std::vector<double> rowFactor;
  if (rowsScaled) {
    std::vector<double> &g = grads[e.rowSite];
    rowFactor = scaleFactors(e.rowUse, logScales[e.rowSite]);
    for (int64_t i = 0; i < rows; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < cols; ++j)
        acc += double(dW[i * cols + j]) * f[i * cols + j];
      g[e.rowUse.index[i]] += e.rowUse.sign * acc;
    }
  }
  if (e.colSite >= 0 && sides != -e.colUse.sign) {
    std::vector<double> &g = grads[e.colSite];
    std::vector<double> factor = scaleFactors(e.colUse, logScales[e.colSite]);
    std::vector<double> acc(cols, 0.0);
    std::vector<float> pre;
    const float *fp = f.data();
    if (e.colUse.transformed) {
      transformRows(dW.data(), rows, cols, e.colUse.seed, /*transpose=*/true);
      pre = f;
      transformRows(pre.data(), rows, cols, e.colUse.seed, /*transpose=*/true);
      fp = pre.data();
    }
    for (int64_t i = 0; i < rows; ++i) {
      float *d = dW.data() + i * cols;
      const float *fr = fp + i * cols;
      for (int64_t j = 0; j < cols; ++j) {
        acc[j] += double(d[j]) * fr[j];
        d[j] = float(d[j] * factor[j]);
      }
    }
    if (e.colUse.transformed)
      transformRows(dW.data(), rows, cols, e.colUse.seed, /*transpose=*/false);
    for (int64_t j = 0; j < cols; ++j)
      g[e.colUse.index[j]] += e.colUse.sign * acc[j];
  }
  if (rowsScaled)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        dW[i * cols + j] = float(dW[i * cols + j] * rowFactor[i]);
}

bool RotationObjective::evaluate(const Rotations &r, ArrayRef<int64_t> tokens,
                                 int64_t batch, int64_t seq, double &loss,
                                 Rotations *grad, std::string &error,
                                 std::vector<double> *sequenceLosses,
                                 const SoftTargets *soft) {
  Impl &impl = *this->impl;
  if (grad && impl.microBatch > 0 && batch > impl.microBatch) {
    // Gradient accumulation: microBatch windows at a time, each share's
    // mean loss and gradient weighted by its part of the batch (every
    // window scores seq - 1 tokens): the batch's mean to float rounding.
    int64_t whole = impl.microBatch;
    impl.microBatch = 0;
    llvm::scope_exit restore([&] { impl.microBatch = whole; });
    loss = 0;
    Rotations part;
    SoftTargets softPart;
    for (int64_t b0 = 0; b0 < batch; b0 += whole) {
      int64_t nb = std::min(whole, batch - b0);
      if (soft) { // the reference rows of these windows
        int64_t from = b0 * seq * soft->width, count = nb * seq * soft->width;
        softPart.width = soft->width;
        if (!soft->ids.empty())
          softPart.ids.assign(soft->ids.begin() + from,
                              soft->ids.begin() + from + count);
        softPart.logProbs.assign(soft->logProbs.begin() + from,
                                 soft->logProbs.begin() + from + count);
      }
      double l;
      if (!evaluate(r, tokens.slice(b0 * seq, nb * seq), nb, seq, l, &part,
                    error, nullptr, soft ? &softPart : nullptr))
        return false;
      double w = double(nb) / double(batch);
      loss += w * l;
      auto add = [&](std::vector<double> &to, const std::vector<double> &g) {
        if (b0 == 0)
          to.assign(g.size(), 0.0);
        for (size_t i = 0; i < g.size(); ++i)
          to[i] += w * g[i];
      };
      grad->hidden = part.hidden;
      grad->headDim = part.headDim;
      add(grad->r1, part.r1);
      grad->r2.resize(part.r2.size());
      for (size_t l = 0; l < part.r2.size(); ++l)
        add(grad->r2[l], part.r2[l]);
      grad->r3.resize(part.r3.size());
      for (size_t l = 0; l < part.r3.size(); ++l)
        add(grad->r3[l], part.r3[l]);
      add(grad->actClips, part.actClips);
      add(grad->weightClips, part.weightClips);
      grad->scales.resize(part.scales.size());
      for (size_t k = 0; k < part.scales.size(); ++k)
        add(grad->scales[k], part.scales[k]);
    }
    return true;
  }
  int64_t n = impl.hidden, d = impl.headDim;
  if (r.r1.size() != size_t(n * n) || int64_t(r.r2.size()) != impl.layers) {
    error = "rotations do not match the model (R1 " + std::to_string(n) + "x" +
            std::to_string(n) + ", " + std::to_string(impl.layers) + " R2)";
    return false;
  }
  std::vector<float> r1(r.r1.begin(), r.r1.end());
  std::vector<std::vector<float>> r2(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l) {
    if (r.r2[l].size() != size_t(d * d)) {
      error = "R2 of layer " + std::to_string(l) + " is not " +
              std::to_string(d) + "x" + std::to_string(d);
      return false;
    }
    r2[l].assign(r.r2[l].begin(), r.r2[l].end());
  }
  if (!impl.r3Names.empty() && (int64_t(r.r3.size()) != impl.layers ||
                                llvm::any_of(r.r3, [&](const auto &m) {
                                  return m.size() != size_t(d * d);
                                }))) {
    error = "R3 is learned: " + std::to_string(impl.layers) + " R3 of " +
            std::to_string(d) + "x" + std::to_string(d) + " are needed";
    return false;
  }
  if (impl.learnScales) {
    bool match = r.scales.size() == impl.scaleSites.size();
    for (size_t k = 0; match && k < r.scales.size(); ++k)
      match = int64_t(r.scales[k].size()) == impl.scaleSites[k].size;
    if (!match) {
      error = "scales are learned: " + std::to_string(impl.scaleSites.size()) +
              " log-scale vectors of the sites' sizes are needed";
      return false;
    }
  }

  if (impl.learnActClips) {
    if (r.actClips.size() != impl.clipSites.size()) {
      error = "learned clipping: " + std::to_string(impl.clipSites.size()) +
              " activation clip ratios are needed";
      return false;
    }
    if (!impl.ex->setFakeQuantClips(r.actClips, error))
      return false;
  }
  if (impl.learnWeightClips &&
      int64_t(r.weightClips.size()) != impl.weightClipCount) {
    error = "learned clipping: " + std::to_string(impl.weightClipCount) +
            " weight clip ratios are needed";
    return false;
  }
  // The clips' gradients of a step (after lossAndGradients): the
  // activations' from the executor, the weights' as the step computed them
  // (learned weight clips train in the weights formulation only).
  auto clipGradients = [&](Rotations &g, std::vector<double> weightClips) {
    g.actClips.clear();
    if (impl.learnActClips)
      g.actClips = impl.ex->clipGradients();
    g.weightClips = std::move(weightClips);
  };

  if (impl.activations) {
    // The rotations are the clone's rotate weights; nothing is folded.
    std::vector<std::string> names;
    auto set = [&](const std::string &name, const std::vector<double> &m) {
      names.push_back(name);
      std::vector<float> values(m.begin(), m.end());
      return impl.ex->setWeightValues(name, values, error);
    };
    if (!impl.r1Name.empty() && !set(impl.r1Name, r.r1))
      return false;
    for (int64_t l = 0; l < impl.layers; ++l)
      if (!impl.r2Names[l].empty() && !set(impl.r2Names[l], r.r2[l]))
        return false;
    for (size_t l = 0; l < impl.r3Names.size(); ++l)
      if (!set(impl.r3Names[l], r.r3[l]))
        return false;
    if (!grad)
      return impl.ex->loss(tokens, batch, seq, loss, error, sequenceLosses,
                           soft);
    std::vector<std::vector<float>> dw;
    if (!impl.ex->lossAndGradients(tokens, batch, seq, names, loss, dw, error,
                                   soft))
      return false;
    // A rotation without a site does not change the loss.
    size_t k = 0;
    auto next = [&](bool present, int64_t size) {
      if (!present)
        return std::vector<double>(size * size, 0.0);
      const std::vector<float> &g = dw[k++];
      return std::vector<double>(g.begin(), g.end());
    };
    grad->hidden = n;
    grad->headDim = d;
    grad->r1 = next(!impl.r1Name.empty(), n);
    grad->r2.clear();
    for (int64_t l = 0; l < impl.layers; ++l)
      grad->r2.push_back(next(!impl.r2Names[l].empty(), d));
    grad->r3.clear();
    for (size_t l = 0; l < impl.r3Names.size(); ++l)
      grad->r3.push_back(next(true, d));
    clipGradients(*grad, {});
    return true;
  }

  // The embedding rows the batch reads.
  std::vector<int64_t> used(tokens.begin(), tokens.end());
  llvm::sort(used);
  used.erase(std::unique(used.begin(), used.end()), used.end());
  auto gatherRows = [&](const float *m, int64_t cols) {
    std::vector<float> g(used.size() * cols);
    for (size_t i = 0; i < used.size(); ++i)
      std::memcpy(g.data() + i * cols, m + used[i] * cols,
                  cols * sizeof(float));
    return g;
  };

  // 1. Fold the rotations into copies of the frozen weights.
  std::vector<std::string> names;
  // Training under gptq: the rotated Hessians of this step, by source
  // Hessian and rotation (-1: R1, l >= 0: R2 of layer l, -2: none).
  std::map<std::pair<const void *, int64_t>, std::vector<double>> rotatedH;
  // Evaluations that change only R3 (the R3 search) reuse the last fold and
  // its weight quantization; only the embedding rows a new batch reads are
  // rotated again.
  bool refold = !(impl.folded && r.r1 == impl.foldedR1 &&
                  r.r2 == impl.foldedR2 && r.weightClips == impl.foldedWClips &&
                  (!impl.learnScales || r.scales == impl.foldedScales));
  // The embedding rows rotated with the current R1 (any batch since the
  // last fold): only the batch's others are rotated and set.
  if (refold)
    impl.rowsRotated.clear();
  std::vector<int64_t> fresh;
  for (int64_t id : used)
    if (!impl.rowsRotated.count(id))
      fresh.push_back(id);
  bool newRows = !fresh.empty();
  if (refold)
    impl.folded = false; // until this fold completes
  for (Entry &e : impl.entries) {
    names.push_back(e.name);
    if (!(e.rowsOnly ? newRows : refold))
      continue;
    if (e.rowsOnly) {
      if (used.empty() || used.back() >= e.rows || used.front() < 0) {
        error = "token ids outside the embedding table";
        return false;
      }
      std::vector<float> rows = baseRows(e, fresh), w(rows.size());
      gemm(false, false, fresh.size(), n, n, rows.data(), n, r1.data(), n,
           w.data(), n);
      if (!impl.ex->setWeightRows(e.name, fresh, w, error))
        return false;
      continue;
    }
    std::vector<float> w(e.rows * e.cols);
    if (e.role == Role::Output) {
      e.base.widenRows(0, e.rows, w.data());
    } else if (e.role != Role::Writer) { // W R1, a block of rows at a time
      forBaseRows(e, [&](int64_t r0, int64_t count, const float *rows) {
        gemm(false, false, count, n, n, rows, n, r1.data(), n,
             w.data() + r0 * n, n);
      });
    } else { // R1^T W
      std::vector<float> scratch;
      gemm(true, false, n, e.cols, n, r1.data(), n, baseValues(e, scratch),
           e.cols, w.data(), e.cols);
    }
    // The learned scales: orthogonal, then diagonal; but on R2's weights
    // (v_proj, o_proj) in the basis before R2, where the value site's
    // dimensions are the heads' own (an outlier dimension of v_proj and
    // o_proj is undone there; after R2 it is spread over the head). R1 and
    // the attn-input columns of v_proj commute with that.
    auto applyScales = [&](std::vector<float> &m) {
      if (e.rowSite >= 0 && impl.scaleSides != -e.rowUse.sign)
        applyScale(e.rowUse, scaleFactors(e.rowUse, r.scales[e.rowSite]),
                   m.data(), e.rows, e.cols);
      if (e.colSite >= 0 && impl.scaleSides != -e.colUse.sign)
        applyScale(e.colUse, scaleFactors(e.colUse, r.scales[e.colSite]),
                   m.data(), e.rows, e.cols);
    };
    if (e.r2Layer < 0)
      applyScales(w);
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      applyScales(w);
      e.partial = w;
      if (e.isValue) { // rows of each KV head: R2^T A_h
        int64_t c = e.cols;
        for (int64_t r0 = 0; r0 < e.rows; r0 += d)
          gemm(true, false, d, c, d, q.data(), d, e.partial.data() + r0 * c, c,
               w.data() + r0 * c, c);
      } else { // columns of each head: A_h R2 ([rows * heads, d] x R2)
        gemm(false, false, e.rows * e.cols / d, d, d, e.partial.data(), d,
             q.data(), d, w.data(), d);
      }
    }
    bool keepScaled =
        e.rowSite >= 0 || e.colSite >= 0 || (impl.learnScales && e.quantize);
    if (keepScaled)
      e.scaled = w;
    if (e.quantize && e.clipOffset >= 0) {
      // Learned clipping (after the scales): round-to-nearest with this
      // weight's row ratios. Its input is `scaled` when that is kept (the
      // same matrix: one copy, not two).
      std::vector<float> clips(r.weightClips.begin() + e.clipOffset,
                               r.weightClips.begin() + e.clipOffset + e.rows);
      if (keepScaled)
        std::vector<float>().swap(e.rotated);
      else
        e.rotated = w;
      numerics::fakeQuantRows(e.preClip().data(), e.rows, e.cols,
                              weightGrid(impl.spec), w.data(), clips.data());
    } else if (e.quantize) {
      const std::vector<double> *hessian = nullptr;
      if (impl.spec.gptq) {
        if (!e.hessian) {
          error = "no GPTQ Hessian for '" + e.name + "' (prepareGPTQ)";
          return false;
        }
        int64_t kind = e.role == Role::Reader ? -1
                       : e.r2Layer >= 0       ? e.r2Layer
                                              : -2;
        auto key = std::make_pair((const void *)e.hessian.get(), kind);
        auto it = rotatedH.find(key);
        if (it == rotatedH.end()) {
          std::vector<double> h =
              kind == -2 ? *e.hessian
              : kind == -1
                  ? rotatedHessian(*e.hessian, e.cols, r.r1.data(), n, false)
                  : rotatedHessian(*e.hessian, e.cols, r.r2[kind].data(), d,
                                   true);
          it = rotatedH.emplace(key, std::move(h)).first;
        }
        hessian = &it->second;
      }
      numerics::QuantizedWeight qw;
      if (!quantizeWeight(w.data(), e.rows, e.cols, impl.spec, hessian, qw,
                          error)) {
        error = "cannot quantize '" + e.name + "': " + error;
        return false;
      }
      qw.dequantize(w.data()); // straight-through: dL/dW' = dL/dQ(W')
      if (impl.learnScales)
        e.quantized = std::move(qw);
    }
    if (!impl.ex->setWeightValues(e.name, w, error))
      return false;
  }
  if (refold) {
    impl.folded = true;
    impl.foldedR1 = r.r1;
    impl.foldedR2 = r.r2;
    impl.foldedWClips = r.weightClips;
    impl.foldedScales = r.scales;
  }
  impl.rowsRotated.insert(fresh.begin(), fresh.end());
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    names.push_back(impl.r3Names[l]);
    std::vector<float> m(r.r3[l].begin(), r.r3[l].end());
    if (!impl.ex->setWeightValues(impl.r3Names[l], m, error))
      return false;
  }
  // The norm sites' RMSNorm weights s = exp(u).
  std::vector<size_t> normSites;
  for (size_t k = 0; k < impl.normScaleNames.size(); ++k) {
    if (impl.normScaleNames[k].empty())
      continue;
    normSites.push_back(k);
    names.push_back(impl.normScaleNames[k]);
    std::vector<float> s(r.scales[k].size());
    for (size_t i = 0; i < s.size(); ++i)
      s[i] = impl.scaleSides == -1 ? 1.0f : float(std::exp(r.scales[k][i]));
    if (!impl.ex->setWeightValues(impl.normScaleNames[k], s, error))
      return false;
  }
  if (!grad)
    return impl.ex->loss(tokens, batch, seq, loss, error, sequenceLosses, soft);

  // 2. dL/dW' of each rotated weight, and 3. the chain rule back to R1 and
  // R2 (float products, summed in double), one weight at a time as the
  // backward completes its gradient (the executor then frees it): the
  // gradients of all weights never exist at once.
  std::vector<float> g1(n * n, 0.0f);
  std::vector<std::vector<float>> g2(impl.layers,
                                     std::vector<float>(d * d, 0.0f));
  std::vector<std::vector<double>> gs;
  for (const ScaleSite &site : impl.scaleSites)
    gs.emplace_back(site.size, 0.0);
  std::vector<double> weightClipGrads(
      impl.learnWeightClips ? impl.weightClipCount : 0, 0.0);
  // The gradients of R3 and of the norm sites' weights (small).
  std::vector<std::vector<float>> rest(names.size() - impl.entries.size());
  auto entryBackward = [&](size_t i, MutableArrayRef<float> dWref,
                           std::string &) -> bool {
    if (i >= impl.entries.size()) {
      rest[i - impl.entries.size()].assign(dWref.begin(), dWref.end());
      return true;
    }
    Entry &e = impl.entries[i];
    float *dW = dWref.data();
    // Learned weight clipping: dL/dW' through the clip-aware estimator of
    // the weight's quantizer, and dL/dclip of its rows.
    if (e.clipOffset >= 0) {
      std::vector<float> clips(r.weightClips.begin() + e.clipOffset,
                               r.weightClips.begin() + e.clipOffset + e.rows);
      std::vector<float> dx(dWref.size());
      numerics::fakeQuantRowsBackward(
          e.preClip().data(), e.rows, e.cols, weightGrid(impl.spec),
          clips.data(), dW, dx.data(), weightClipGrads.data() + e.clipOffset);
      std::copy(dx.begin(), dx.end(), dW);
    }
    // Learned scales: the weight quantizer's range is differentiated too
    // (as the activations' in the executor), so that a scale that enlarges
    // a group's largest weight pays for the coarser grid.
    // (Learned weight clipping's estimator above already has that part.)
    if (impl.learnScales && e.quantize && e.clipOffset < 0) {
      std::vector<float> dy(dWref.begin(), dWref.end());
      const numerics::QuantizedWeight &q = e.quantized;
      numerics::QuantGrid grid = q.grid;
      grid.group = e.cols / q.groups;
      numerics::fakeQuantRangeBackward(
          e.scaled.data(), e.rows, e.cols, grid, q.scales.data(),
          q.zeros.empty() ? nullptr : q.zeros.data(), dy.data(), dW);
    }
    bool scaled = e.rowSite >= 0 || e.colSite >= 0;
    if (scaled && e.r2Layer < 0)
      scaleBackward(e, e.scaled, r.scales, dWref, gs, impl.scaleSides);
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      std::vector<float> &g = g2[e.r2Layer];
      std::vector<float> dA(dWref.size());
      if (e.isValue) {
        // W' = blockdiag(R2^T) A: dR2 += sum_h A_h dW'_h^T, dA_h = R2 dW'_h.
        int64_t c = e.cols;
        for (int64_t r0 = 0; r0 < e.rows; r0 += d) {
          gemm(false, true, d, d, c, e.partial.data() + r0 * c, c, dW + r0 * c,
               c, g.data(), d, 1.0f);
          gemm(false, false, d, c, d, q.data(), d, dW + r0 * c, c,
               dA.data() + r0 * c, c);
        }
      } else {
        // W' = A blockdiag(R2): dR2 += sum_h A_h^T dW'_h, dA = dW' R2^T.
        int64_t blocks = e.rows * e.cols / d;
        gemm(true, false, d, d, blocks, e.partial.data(), d, dW, d, g.data(), d,
             1.0f);
        gemm(false, true, blocks, d, d, dW, d, q.data(), d, dA.data(), d);
      }
      std::copy(dA.begin(), dA.end(), dW);
      if (scaled) // before R2 (see the forward)
        scaleBackward(e, e.partial, r.scales, dWref, gs, impl.scaleSides);
    }
    if (e.role == Role::Output) // no R1
      return true;
    if (e.rowsOnly) { // only the rows read contribute
      std::vector<float> rows = baseRows(e, used), drows = gatherRows(dW, n);
      gemm(true, false, n, n, used.size(), rows.data(), n, drows.data(), n,
           g1.data(), n, 1.0f);
    } else if (e.role != Role::Writer) { // W' = W R1: dR1 += W^T dW'
      forBaseRows(e, [&](int64_t r0, int64_t count, const float *rows) {
        gemm(true, false, n, n, count, rows, n, dW + r0 * n, n, g1.data(), n,
             1.0f);
      });
    } else { // W' = R1^T W: dR1 += W dW'^T, a block of W's rows at a time
      int64_t c = e.cols;
      forBaseRows(e, [&](int64_t r0, int64_t count, const float *rows) {
        gemm(false, true, count, n, c, rows, c, dW, c, g1.data() + r0 * n, n,
             1.0f);
      });
    }
    return true;
  };
  if (!impl.ex->lossAndGradients(tokens, batch, seq, names, loss, entryBackward,
                                 error, soft))
    return false;
  clipGradients(*grad, std::move(weightClipGrads));
  grad->hidden = n;
  grad->headDim = d;
  grad->r1.assign(g1.begin(), g1.end());
  grad->r2.resize(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l)
    grad->r2[l].assign(g2[l].begin(), g2[l].end());
  grad->r3.clear();
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    const std::vector<float> &g = rest[l];
    grad->r3.emplace_back(g.begin(), g.end());
  }
  // A norm site: dL/du_j += s_j dL/ds_j from its RMSNorm weight.
  for (size_t n = 0; n < normSites.size(); ++n) {
    const std::vector<float> &g = rest[impl.r3Names.size() + n];
    std::vector<double> &out = gs[normSites[n]];
    for (size_t j = 0; j < out.size() && impl.scaleSides != -1; ++j)
      out[j] += std::exp(r.scales[normSites[n]][j]) * double(g[j]);
  }
  grad->scales = std::move(gs);
  return true;
}

} // namespace sq
