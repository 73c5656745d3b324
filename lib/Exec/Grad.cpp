//===- Grad.cpp - fp32 backward kernels of the reference executor ---------===//

#include "Grad.h"

#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Layers.h"
#include "sq/Numerics/Quantize.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

namespace sq {
namespace exec {

/// A fresh tensor of `shape`, uninitialized (callers write all of it).
static Tensor like(const std::vector<int64_t> &shape) {
  Tensor t;
  t.shape = shape;
  t.data = std::make_shared<FloatBuffer>(t.numel());
  return t;
}

/// A fresh tensor of `shape` filled with zeros.
static Tensor zeros(const std::vector<int64_t> &shape) {
  Tensor t = like(shape);
  std::fill(t.data->begin(), t.data->end(), 0.0f);
  return t;
}

void embeddingBackward(const Tensor &ids, const Tensor &dOut, int64_t vocab,
                       Tensor &dTable) {
  int64_t dim = dOut.lastDim();
  dTable = zeros({vocab, dim});
  const float *g = dOut.data->data();
  float *t = dTable.data->data();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    int64_t id = (*ids.ints)[i];
    if (id < 0 || id >= vocab)
      continue;
    float *row = t + id * dim;
    const float *src = g + i * dim;
    for (int64_t j = 0; j < dim; ++j)
      row[j] += src[j];
  }
}

void rmsNormBackward(const Tensor &x, const Tensor *scale, double eps,
                     const Tensor &dOut, Tensor &dx, Tensor *dScale) {
  // dx_j = r g_j dy_j - (r^3 / f) x_j sum_i g_i x_i dy_i.
  int64_t f = x.lastDim(), rows = x.numel() / f;
  dx = like(x.shape);
  const float *in = x.data->data(), *g = dOut.data->data();
  const float *s = scale ? scale->data->data() : nullptr;
  float *o = dx.data->data();
  std::vector<double> sums(s && dScale ? f : 0, 0.0);
  auto rowRange = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *row = in + r * f, *grow = g + r * f;
      double sum = 0, dot = 0;
      for (int64_t i = 0; i < f; ++i) {
        sum += double(row[i]) * row[i];
        dot += double(grow[i]) * row[i] * (s ? s[i] : 1.0f);
      }
      double inv = 1.0 / std::sqrt(sum / double(f) + eps);
      double k = inv * inv * inv * dot / double(f);
      for (int64_t i = 0; i < f; ++i)
        o[r * f + i] =
            static_cast<float>(inv * grow[i] * (s ? s[i] : 1.0f) - k * row[i]);
      if (s && dScale)
        for (int64_t i = 0; i < f; ++i)
          sums[i] += inv * double(grow[i]) * row[i];
    }
  };
  // dScale sums over the rows in order; without it the rows are independent.
  if (s && dScale)
    rowRange(0, rows);
  else
    forRows(rows, f, rowRange);
  if (s && dScale) {
    *dScale = like(scale->shape);
    for (int64_t i = 0; i < f; ++i)
      dScale->data->data()[i] = static_cast<float>(sums[i]);
  }
}

void fakeQuantRangeBackward(const Tensor &x, unsigned bits, bool symmetric,
                            int granularity, int64_t groupSize, double clip,
                            Tensor &dx) {
  // The grid of fakeQuant(); dx is dy on entry.
  numerics::QuantGrid grid =
      fakeQuantGrid(bits, symmetric, granularity, groupSize, clip);
  int64_t n = x.numel(), cols = fakeQuantCols(x, granularity);
  // A new buffer: dx's may be shared with another value's gradient.
  Tensor out = like(dx.shape);
  std::copy(dx.data->data(), dx.data->data() + n, out.data->data());
  numerics::fakeQuantRangeBackward(x.data->data(), n / cols, cols, grid,
                                   nullptr, nullptr, dx.data->data(),
                                   out.data->data());
  dx = std::move(out);
}

void linearBackward(const Tensor &x, const Tensor &w, const Tensor &dOut,
                    Tensor *dx, Tensor *dW, Tensor *db) {
  int64_t k = x.lastDim(), m = x.numel() / k, n = w.shape[0];
  if (dx) {
    // [m, n] x [n, k].
    *dx = like(x.shape);
    if (w.packed) {
      numerics::gemm(m, dOut.data->data(), n, *w.packed,
                     numerics::Transpose::No, dx->data->data(), k);
    } else if (w.half && w.roundToBF16) {
      // Summed over panels of W's rows, each packed in bf16 on the fly.
      int64_t p = std::min(n, packedPanelRows(k));
      for (int64_t j = 0; j < n; j += p) {
        int64_t rows = std::min(p, n - j);
        numerics::gemm(m, dOut.data->data() + j, n, packRows(w, j, rows),
                       numerics::Transpose::No, dx->data->data(), k, 1.0f,
                       j ? 1.0f : 0.0f);
      }
    } else if (!w.half) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f,
                  dOut.data->data(), n, w.data->data(), k, 0.0f,
                  dx->data->data(), k);
    } else { // sum over panels of W's rows, widened on the fly
      int64_t p = std::min(n, panelRows(k));
      FloatBuffer panel(p * k);
      for (int64_t j = 0; j < n; j += p) {
        int64_t rows = std::min(p, n - j);
        widenRows(w, j, rows, panel.data());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, rows, 1.0f,
                    dOut.data->data() + j, n, panel.data(), k, j ? 1.0f : 0.0f,
                    dx->data->data(), k);
      }
    }
  }
  if (dW) {
    // [m, n]^T x [m, k].
    *dW = like(w.shape);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f,
                dOut.data->data(), n, x.data->data(), k, 0.0f, dW->data->data(),
                k);
  }
  if (db) {
    std::vector<double> sum(n, 0.0);
    const float *g = dOut.data->data();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        sum[j] += g[i * n + j];
    *db = like({n});
    for (int64_t j = 0; j < n; ++j)
      (*db->data)[j] = static_cast<float>(sum[j]);
  }
}

void ropeBackward(const Tensor &dOut, const Tensor &positions, int64_t heads,
                  double theta, bool interleaved, Tensor &dx,
                  const numerics::RopeScaling &scaling) {
  int64_t f = dOut.lastDim(), tokens = dOut.numel() / f, d = f / heads,
          half = d / 2;
  // Unpaired components (none unless d is odd) are passed through.
  dx = like(dOut.shape);
  *dx.data = *dOut.data;
  // The angles exactly as rope() computes them.
  std::vector<float> inv = numerics::ropeInverseFrequencies(d, theta, scaling);
  forRows(tokens, f, [&](int64_t t0, int64_t t1) {
    std::vector<float> c(half), s(half);
    for (int64_t t = t0; t < t1; ++t) {
      numerics::ropeAngles(inv.data(), half, (*positions.ints)[t], c.data(),
                           s.data());
      const float *in = dOut.data->data() + t * f;
      float *o = dx.data->data() + t * f;
      // (a, b) -> (a c - b s, a s + b c) is transposed into
      // (ga, gb) -> (ga c + gb s, gb c - ga s).
      for (int64_t h = 0; h < heads; ++h) {
        const float *gi = in + h * d;
        float *oi = o + h * d;
        for (int64_t i = 0; i < half; ++i) {
          int64_t ia = interleaved ? 2 * i : i;
          int64_t ib = interleaved ? 2 * i + 1 : i + half;
          float ga = gi[ia], gb = gi[ib];
          oi[ia] = ga * c[i] + gb * s[i];
          oi[ib] = gb * c[i] - ga * s[i];
        }
      }
    }
  });
}

/// The softmax's backward on `rows` rows of n probabilities p and their
/// gradients dp (both row-major, row stride n): dS = P * (dP - rowsum(dP *
/// P)), in place in dp, the row sums in double.
static void softmaxBackwardRows(const float *p, float *dp, int64_t rows,
                                int64_t n) {
  for (int64_t i = 0; i < rows; ++i) {
    const float *pi = p + i * n;
    float *dpi = dp + i * n;
    double dot = 0;
    for (int64_t j = 0; j < n; ++j)
      dot += double(dpi[j]) * pi[j];
    float fdot = static_cast<float>(dot);
    for (int64_t j = 0; j < n; ++j)
      dpi[j] = pi[j] * (dpi[j] - fdot);
  }
}

void attentionBackward(const Tensor &q, const Tensor &k, const Tensor &v,
                       int64_t heads, int64_t kvHeads, double scale,
                       bool causal, int64_t window, const Tensor &dOut,
                       Tensor &dq, Tensor &dk, Tensor &dv, bool bf16) {
  int64_t batch = q.shape[0], seq = q.shape[1], qf = q.shape[2];
  int64_t total = k.shape[1], kvf = k.shape[2], d = qf / heads;
  int64_t group = heads / kvHeads;
  int64_t offset = total - seq; // query i is at key position i + offset
  dq = zeros(q.shape);
  dk = zeros(k.shape);
  dv = zeros(v.shape);
  float fscale = static_cast<float>(scale);
  if (bf16) {
    // As attention() with bf16: tasks by sequence and KV head (the heads of
    // a group add into the same dk, dv columns), query blocks against the
    // keys they see.
    using numerics::Transpose;
    numerics::ThreadPool::global().parallelFor(
        batch * kvHeads, [&](int64_t t0, int64_t t1) {
          int64_t block = std::min(seq, kAttentionBlock);
          FloatBuffer p(block * total), dp(block * total);
          for (int64_t t = t0; t < t1; ++t) {
            int64_t b = t / kvHeads, g = t % kvHeads;
            const float *kb = k.data->data() + b * total * kvf + g * d;
            const float *vb = v.data->data() + b * total * kvf + g * d;
            float *dkb = dk.data->data() + b * total * kvf + g * d;
            float *dvb = dv.data->data() + b * total * kvf + g * d;
            for (int64_t h = g * group; h < (g + 1) * group; ++h)
              for (int64_t i0 = 0; i0 < seq; i0 += kAttentionBlock) {
                int64_t i1 = std::min(seq, i0 + kAttentionBlock),
                        rows = i1 - i0;
                int64_t hi = attentionBlockKeys(offset, i1, total, causal);
                const float *qb = q.data->data() + (b * seq + i0) * qf + h * d;
                const float *gb =
                    dOut.data->data() + (b * seq + i0) * qf + h * d;
                attentionProbsBF16(qb, qf, kb, kvf, rows, d, hi, offset + i0,
                                   fscale, causal, window, p.data());
                // dV[0, hi) += P^T dO.
                numerics::gemmBF16(Transpose::Yes, Transpose::No, hi, d, rows,
                                   1.0f, p.data(), hi, gb, qf, 1.0f, dvb, kvf);
                // dP = dO V^T.
                numerics::gemmBF16(Transpose::No, Transpose::Yes, rows, hi, d,
                                   1.0f, gb, qf, vb, kvf, 0.0f, dp.data(), hi);
                // dS in place in dP.
                softmaxBackwardRows(p.data(), dp.data(), rows, hi);
                // dQ = scale dS K[0, hi).
                numerics::gemmBF16(
                    Transpose::No, Transpose::No, rows, d, hi, fscale,
                    dp.data(), hi, kb, kvf, 0.0f,
                    dq.data->data() + (b * seq + i0) * qf + h * d, qf);
                // dK[0, hi) += scale dS^T Q.
                numerics::gemmBF16(Transpose::Yes, Transpose::No, hi, d, rows,
                                   fscale, dp.data(), hi, qb, qf, 1.0f, dkb,
                                   kvf);
              }
          }
        });
    return;
  }
  FloatBuffer probs(seq * total), dProbs(seq * total);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / group;
      const float *qb = q.data->data() + b * seq * qf + h * d;
      const float *kb = k.data->data() + b * total * kvf + g * d;
      const float *vb = v.data->data() + b * total * kvf + g * d;
      const float *gb = dOut.data->data() + b * seq * qf + h * d;
      // P, exactly as attention() computes it.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq, total, d,
                  fscale, qb, qf, kb, kvf, 0.0f, probs.data(), total);
      forRows(seq, total, [&](int64_t i0, int64_t i1) {
        numerics::attentionSoftmaxRows(probs.data() + i0 * total, i1 - i0,
                                       total, offset + i0, causal, window);
      });
      // dV += P^T dO: [total, seq] x [seq, d].
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, total, d, seq, 1.0f,
                  probs.data(), total, gb, qf, 1.0f,
                  dv.data->data() + b * total * kvf + g * d, kvf);
      // dP = dO V^T: [seq, d] x [d, total].
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, seq, total, d, 1.0f,
                  gb, qf, vb, kvf, 0.0f, dProbs.data(), total);
      // dS in place in dP (0 where masked, as P is).
      forRows(seq, total, [&](int64_t i0, int64_t i1) {
        softmaxBackwardRows(probs.data() + i0 * total,
                            dProbs.data() + i0 * total, i1 - i0, total);
      });
      // dQ = scale dS K: [seq, total] x [total, d] (one head's columns).
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, seq, d, total,
                  fscale, dProbs.data(), total, kb, kvf, 0.0f,
                  dq.data->data() + b * seq * qf + h * d, qf);
      // dK += scale dS^T Q: [total, seq] x [seq, d].
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, total, d, seq,
                  fscale, dProbs.data(), total, qb, qf, 1.0f,
                  dk.data->data() + b * total * kvf + g * d, kvf);
    }
}

void siluBackward(const Tensor &x, const Tensor &dOut, Tensor &dx) {
  // d/dx x s(x) = s (1 + x (1 - s)).
  dx = like(x.shape);
  const float *in = x.data->data(), *g = dOut.data->data();
  float *o = dx.data->data();
  forValues(x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float v = in[i], s = 1.0f / (1.0f + std::exp(-v));
      o[i] = g[i] * s * (1.0f + v * (1.0f - s));
    }
  });
}

void mulBackward(const Tensor &a, const Tensor &b, const Tensor &dOut,
                 Tensor &da, Tensor &db) {
  da = like(a.shape);
  db = like(b.shape);
  const float *x = a.data->data(), *y = b.data->data(), *g = dOut.data->data();
  float *ox = da.data->data(), *oy = db.data->data();
  forValues(a.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ox[i] = g[i] * y[i];
      oy[i] = g[i] * x[i];
    }
  });
}

void rotateBackward(const Tensor &dOut, const Tensor &r, bool transposed,
                    Tensor &dx, bool bf16) {
  int64_t n = r.shape[0], rows = dOut.numel() / n;
  dx = like(dOut.shape);
  if (bf16) {
    numerics::gemmBF16(numerics::Transpose::No,
                       transposed ? numerics::Transpose::No
                                  : numerics::Transpose::Yes,
                       rows, n, n, 1.0f, dOut.data->data(), n, r.data->data(),
                       n, 0.0f, dx.data->data(), n);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans,
              transposed ? CblasNoTrans : CblasTrans, rows, n, n, 1.0f,
              dOut.data->data(), n, r.data->data(), n, 0.0f, dx.data->data(),
              n);
}

void rotateMatrixBackward(const Tensor &x, const Tensor &dOut, int64_t n,
                          bool transposed, Tensor &dR, bool bf16) {
  int64_t rows = dOut.numel() / n;
  dR = like({n, n});
  const float *a = transposed ? dOut.data->data() : x.data->data();
  const float *b = transposed ? x.data->data() : dOut.data->data();
  if (bf16) {
    numerics::gemmBF16(numerics::Transpose::Yes, numerics::Transpose::No, n, n,
                       rows, 1.0f, a, n, b, n, 0.0f, dR.data->data(), n);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, rows, 1.0f, a, n,
              b, n, 0.0f, dR.data->data(), n);
}

bool hadamardBackward(const Tensor &dOut, int64_t block, uint64_t seed,
                      Tensor &dx, std::string &error) {
  if (block <= 0 || dOut.numel() % block) {
    error = "invalid Hadamard size " + std::to_string(block) + " for " +
            std::to_string(dOut.numel()) + " elements";
    return false;
  }
  dx = like(dOut.shape);
  return orthogonalTransformRows(dOut.data->data(), dOut.numel() / block, block,
                                 seed, /*transpose=*/true, dx.data->data());
}

double rowLoss(const float *logits, int64_t vocab, int64_t token,
               const SoftRows *soft, float *dLogits, double scale,
               std::vector<double> &scratch) {
  if (!soft) {
    scratch.resize(vocab);
    double *e = scratch.data();
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < vocab; ++j)
      mx = std::max(mx, double(logits[j]));
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      e[j] = std::exp(double(logits[j]) - mx);
      sum += e[j];
    }
    double nll = mx + std::log(sum) - double(logits[token]);
    if (dLogits)
      for (int64_t j = 0; j < vocab; ++j)
        dLogits[j] =
            static_cast<float>((e[j] / sum - (j == token ? 1.0 : 0.0)) * scale);
    return nll;
  }
  // KL(p || q) over the row's reference tokens.
  int64_t width = soft->width;
  const int32_t *ids = soft->ids;
  const float *lp = soft->logProbs;
  auto z = [&](int64_t j) { return double(logits[ids ? ids[j] : j]); };
  scratch.resize(width);
  double *e = scratch.data();
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < width; ++j)
    mx = std::max(mx, z(j));
  double sum = 0;
  for (int64_t j = 0; j < width; ++j) {
    e[j] = std::exp(z(j) - mx);
    sum += e[j];
  }
  double logSum = mx + std::log(sum), kl = 0, psum = 0;
  for (int64_t j = 0; j < width; ++j) {
    double p = std::exp(double(lp[j]));
    psum += p;
    if (p > 0)
      kl += p * (double(lp[j]) - (z(j) - logSum));
  }
  if (dLogits) {
    if (ids)
      std::fill(dLogits, dLogits + vocab, 0.0f);
    for (int64_t j = 0; j < width; ++j)
      dLogits[ids ? ids[j] : j] = static_cast<float>(
          (e[j] / sum * psum - std::exp(double(lp[j]))) * scale);
  }
  return kl;
}

NextTokenRows::NextTokenRows(const std::vector<int64_t> &targets, int64_t vocab,
                             const SoftRows *soft)
    : targets(targets) {
  if (soft)
    this->soft = *soft;
  for (int64_t t : targets)
    scored += t >= 0 && t < vocab;
}

void NextTokenRows::rows(int64_t first, int64_t rows, const float *logits,
                         int64_t vocab, double *loss, float *grad,
                         double scale) {
  assert(first + rows <= static_cast<int64_t>(targets.size()) &&
         "one target per row of logits");
  forRows(rows, vocab, [&](int64_t i0, int64_t i1) {
    std::vector<double> scratch; // per chunk: rows run on several threads
    for (int64_t i = i0; i < i1; ++i) {
      int64_t r = first + i, t = targets[r];
      float *g = grad ? grad + i * vocab : nullptr;
      loss[i] = 0.0;
      if (t < 0 || t >= vocab) {
        if (g)
          std::fill(g, g + vocab, 0.0f);
        continue;
      }
      SoftRows row;
      if (soft.logProbs) { // row r's reference distribution
        row.width = soft.width;
        row.ids = soft.ids ? soft.ids + r * soft.width : nullptr;
        row.logProbs = soft.logProbs + r * soft.width;
      }
      loss[i] = rowLoss(logits + i * vocab, vocab, t,
                        soft.logProbs ? &row : nullptr, g, scale, scratch);
    }
  });
}

double crossEntropy(const Tensor &logits, const std::vector<int64_t> &targets,
                    Tensor &dLogits, int64_t &count,
                    std::vector<double> *rowLoss, bool withGradient,
                    const SoftRows *soft) {
  int64_t vocab = logits.lastDim(), rows = logits.numel() / vocab;
  assert(static_cast<int64_t>(targets.size()) == rows &&
         "one target per row of logits");
  NextTokenRows ce(targets, vocab, soft);
  count = ce.count();
  if (withGradient)
    dLogits = zeros(logits.shape);
  if (rowLoss)
    rowLoss->assign(rows, 0.0);
  if (!count)
    return 0.0;
  double invCount = 1.0 / double(count);
  std::vector<double> each(rows);
  ce.rows(0, rows, logits.data->data(), vocab, each.data(),
          withGradient ? dLogits.data->data() : nullptr, invCount);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    total += each[r];
  if (rowLoss)
    *rowLoss = std::move(each);
  return total * invCount;
}

int64_t headLossChunkRows(int64_t vocab) {
  return std::clamp<int64_t>((int64_t(16) << 20) / std::max<int64_t>(vocab, 1),
                             16, 512);
}

double headLoss(const Tensor &x, const Tensor &w, const Tensor *bias,
                RowLoss &loss, int64_t chunkRows, std::vector<double> *rowLoss,
                Tensor *dx, Tensor *dW, Tensor *db) {
  int64_t k = x.lastDim(), m = x.numel() / k, n = w.shape[0];
  chunkRows = std::max<int64_t>(1, std::min(chunkRows, m));
  int64_t count = loss.count();
  double invCount = count ? 1.0 / double(count) : 0.0;
  bool grads = count && (dx || dW || db);
  if (dx)
    *dx = zeros(x.shape);
  if (dW)
    *dW = zeros(w.shape);
  std::vector<double> biasSum(db ? n : 0, 0.0);
  std::vector<double> each(m, 0.0);
  Tensor chunk, logits, dChunk;
  for (int64_t r0 = 0; count && r0 < m; r0 += chunkRows) {
    int64_t rows = std::min(chunkRows, m - r0);
    chunk.shape = {rows, k};
    if (!chunk.data || int64_t(chunk.data->size()) != rows * k)
      chunk.data = std::make_shared<FloatBuffer>(rows * k);
    std::memcpy(chunk.data->data(), x.data->data() + r0 * k,
                rows * k * sizeof(float));
    linear(chunk, w, bias, logits);
    // The gradient overwrites the logits in place.
    float *g = grads ? logits.data->data() : nullptr;
    loss.rows(r0, rows, logits.data->data(), n, each.data() + r0, g, invCount);
    if (!grads)
      continue;
    if (dx) {
      linearBackward(chunk, w, logits, &dChunk, nullptr);
      std::memcpy(dx->data->data() + r0 * k, dChunk.data->data(),
                  rows * k * sizeof(float));
    }
    if (dW) // [rows, n]^T x [rows, k], summed over the chunks
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, rows, 1.0f, g,
                  n, chunk.data->data(), k, 1.0f, dW->data->data(), k);
    if (db)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < n; ++j)
          biasSum[j] += g[i * n + j];
  }
  if (db) {
    *db = like({n});
    for (int64_t j = 0; j < n; ++j)
      (*db->data)[j] = static_cast<float>(biasSum[j]);
  }
  double total = 0;
  for (int64_t r = 0; r < m; ++r)
    total += each[r];
  if (rowLoss)
    *rowLoss = std::move(each);
  return total * invCount;
}

} // namespace exec
} // namespace sq
