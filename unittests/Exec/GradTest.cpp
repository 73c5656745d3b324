//===- GradTest.cpp - backward kernels against finite differences ---------===//
//
// Every vector-Jacobian product of lib/Exec/Grad.h is checked against
// central differences of f(x) = <forward(x), C> for a random cotangent C,
// with the forward kernels of lib/Exec/Kernels.h.
//
//===----------------------------------------------------------------------===//

#include "Grad.h"
#include "Kernels.h"
#include "sq/Numerics/Hadamard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

using namespace sq::exec;

namespace {

Tensor randn(const std::vector<int64_t> &shape, unsigned seed,
             float sigma = 1.0f) {
  Tensor t;
  t.shape = shape;
  t.data = std::make_shared<FloatBuffer>(t.numel());
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  for (float &v : *t.data)
    v = dist(rng);
  return t;
}

Tensor intTensor(const std::vector<int64_t> &shape,
                 const std::vector<int64_t> &values) {
  Tensor t;
  t.shape = shape;
  t.ints = std::make_shared<std::vector<int64_t>>(values);
  EXPECT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  return t;
}

/// <a, c> in double.
double inner(const Tensor &a, const Tensor &c) {
  EXPECT_EQ(a.shape, c.shape);
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    s += double((*a.data)[i]) * (*c.data)[i];
  return s;
}

struct Check {
  double maxErr = 0; // max |analytic - numeric| / max(|numeric|, floor)
  double norm = 0;   // ||analytic||_2
  int64_t checked = 0;
};

/// Compares `grad` with central differences of `f` at `x`, perturbing the
/// coordinates of x in place (and restoring them): all of them, or
/// `samples` seeded ones when that is fewer. Errors are relative to the
/// numeric derivative, with a floor of 5% of its RMS for near-zero ones.
Check compare(Tensor &x, const Tensor &grad, const std::function<double()> &f,
              float h = 1e-2f, int64_t samples = 0) {
  Check c;
  EXPECT_EQ(grad.shape, x.shape);
  if (grad.shape != x.shape || !grad.data)
    return c;
  std::vector<int64_t> coords;
  if (samples <= 0 || samples >= x.numel()) {
    for (int64_t i = 0; i < x.numel(); ++i)
      coords.push_back(i);
  } else {
    std::mt19937 rng(samples);
    std::uniform_int_distribution<int64_t> pick(0, x.numel() - 1);
    for (int64_t s = 0; s < samples; ++s)
      coords.push_back(pick(rng));
  }
  std::vector<double> numeric;
  for (int64_t i : coords) {
    float &v = (*x.data)[i];
    float saved = v, up = saved + h, down = saved - h;
    v = up;
    double fUp = f();
    v = down;
    double fDown = f();
    v = saved;
    numeric.push_back((fUp - fDown) / (double(up) - double(down)));
  }
  double rms = 0;
  for (double n : numeric)
    rms += n * n;
  rms = std::sqrt(rms / double(numeric.size()));
  double floor = std::max(0.05 * rms, 1e-9);
  for (size_t k = 0; k < coords.size(); ++k) {
    double a = (*grad.data)[coords[k]], n = numeric[k];
    c.maxErr =
        std::max(c.maxErr, std::fabs(a - n) / std::max(std::fabs(n), floor));
  }
  for (float a : *grad.data)
    c.norm += double(a) * a;
  c.norm = std::sqrt(c.norm);
  c.checked = static_cast<int64_t>(coords.size());
  return c;
}

/// The gradient is right to 1% and not (close to) zero.
#define EXPECT_GRAD(check, what)                                               \
  do {                                                                         \
    Check c_ = (check);                                                        \
    EXPECT_GE(c_.checked, 30) << what;                                         \
    EXPECT_GT(c_.norm, 1e-2) << what << ": the gradient is ~0";                \
    EXPECT_LT(c_.maxErr, 1e-2) << what;                                        \
  } while (0)

Tensor attend(const Tensor &q, const Tensor &k, const Tensor &v, int64_t heads,
              int64_t kvHeads, double scale, bool causal, int64_t window = 0) {
  Tensor out, presentK, presentV;
  FloatBuffer none;
  attention(q, k, v, none, none, 0, heads, kvHeads, scale, causal, window, out,
            presentK, presentV);
  return out;
}

// The checker itself catches wrong gradients: silu's without the sigmoid's
// derivative, and the right one off by 2%.
TEST(GradCheck, RejectsWrongGradients) {
  Tensor x = randn({40}, 1, 2.0f), C = randn({40}, 2);
  auto f = [&] {
    Tensor y;
    silu(x, y);
    return inner(y, C);
  };
  Tensor wrong = randn({40}, 0);
  for (int64_t i = 0; i < 40; ++i) {
    float v = (*x.data)[i];
    (*wrong.data)[i] = (*C.data)[i] / (1.0f + std::exp(-v));
  }
  EXPECT_GT(compare(x, wrong, f).maxErr, 1e-2);
  Tensor right;
  siluBackward(x, C, right);
  EXPECT_LT(compare(x, right, f).maxErr, 1e-2);
  for (float &g : *right.data)
    g *= 1.02f;
  EXPECT_GT(compare(x, right, f).maxErr, 1e-2);
}

TEST(Grad, Embedding) {
  const int64_t vocab = 9, dim = 4;
  Tensor table = randn({vocab, dim}, 3);
  // Repeated ids are summed; 2, 3, 5, 7 and 8 are not used.
  Tensor ids = intTensor({2, 3}, {1, 4, 1, 6, 0, 4});
  Tensor C = randn({2, 3, dim}, 4);
  auto f = [&] {
    Tensor out;
    std::string error;
    EXPECT_TRUE(embedding(table, ids, out, error)) << error;
    return inner(out, C);
  };
  Tensor dTable;
  embeddingBackward(ids, C, vocab, dTable);
  EXPECT_GRAD(compare(table, dTable, f), "dTable");
  for (int64_t row : {2, 3, 5, 7, 8})
    for (int64_t j = 0; j < dim; ++j)
      EXPECT_EQ((*dTable.data)[row * dim + j], 0.0f);
}

TEST(Grad, RmsNorm) {
  Tensor scale = randn({8}, 5);
  for (bool withScale : {false, true}) {
    Tensor x = randn({4, 8}, 6), C = randn({4, 8}, 7);
    const Tensor *s = withScale ? &scale : nullptr;
    auto f = [&] {
      Tensor y;
      rmsNorm(x, s, 1e-5, y);
      return inner(y, C);
    };
    Tensor dx;
    rmsNormBackward(x, s, 1e-5, C, dx);
    EXPECT_GRAD(compare(x, dx, f), (withScale ? "scaled" : "unscaled"));
  }
}

TEST(Grad, Linear) {
  Tensor x = randn({2, 3, 5}, 8), w = randn({6, 5}, 9), bias = randn({6}, 10);
  Tensor C = randn({2, 3, 6}, 11);
  auto f = [&] {
    Tensor y;
    linear(x, w, &bias, y);
    return inner(y, C);
  };
  Tensor dx, dW;
  linearBackward(x, w, C, &dx, &dW);
  EXPECT_GRAD(compare(x, dx, f), "dx");
  EXPECT_GRAD(compare(w, dW, f), "dW");
  // Either output alone.
  Tensor dxOnly, dWOnly;
  linearBackward(x, w, C, &dxOnly, nullptr);
  linearBackward(x, w, C, nullptr, &dWOnly);
  EXPECT_EQ(*dxOnly.data, *dx.data);
  EXPECT_EQ(*dWOnly.data, *dW.data);
}

TEST(Grad, LinearBias) {
  // db = dy summed over the rows (32 outputs: enough entries to check).
  Tensor x = randn({2, 3, 5}, 8), w = randn({32, 5}, 9), bias = randn({32}, 10);
  Tensor C = randn({2, 3, 32}, 11);
  auto f = [&] {
    Tensor y;
    linear(x, w, &bias, y);
    return inner(y, C);
  };
  Tensor dx, db;
  linearBackward(x, w, C, &dx, nullptr, &db);
  EXPECT_GRAD(compare(bias, db, f), "db");
  Tensor dbOnly;
  linearBackward(x, w, C, nullptr, nullptr, &dbOnly);
  EXPECT_EQ(*dbOnly.data, *db.data);
}

TEST(Grad, Rope) {
  Tensor positions = intTensor({2, 3}, {0, 1, 2, 7, 11, 30});
  for (bool interleaved : {false, true}) {
    Tensor x = randn({2, 3, 16}, 12), C = randn({2, 3, 16}, 13);
    auto f = [&] {
      Tensor y;
      rope(x, positions, 2, 10000.0, interleaved, y);
      return inner(y, C);
    };
    Tensor dx;
    ropeBackward(C, positions, 2, 10000.0, interleaved, dx);
    EXPECT_GRAD(compare(x, dx, f), (interleaved ? "interleaved" : "half"));
  }
}

void checkAttention(int64_t heads, int64_t kvHeads, bool causal,
                    int64_t window = 0) {
  const int64_t batch = 2, seq = 5, d = 8;
  double scale = 1.0 / std::sqrt(double(d));
  Tensor q = randn({batch, seq, heads * d}, 14);
  Tensor k = randn({batch, seq, kvHeads * d}, 15);
  Tensor v = randn({batch, seq, kvHeads * d}, 16);
  Tensor C = randn({batch, seq, heads * d}, 17);
  auto f = [&] {
    return inner(attend(q, k, v, heads, kvHeads, scale, causal, window), C);
  };
  Tensor dq, dk, dv;
  attentionBackward(q, k, v, heads, kvHeads, scale, causal, window, C, dq, dk,
                    dv);
  EXPECT_GRAD(compare(q, dq, f), "dq");
  EXPECT_GRAD(compare(k, dk, f), "dk");
  EXPECT_GRAD(compare(v, dv, f), "dv");
}

TEST(Grad, AttentionCausalGroupedQuery) { checkAttention(4, 2, true); }

TEST(Grad, AttentionMultiHeadNonCausal) { checkAttention(2, 2, false); }

TEST(Grad, AttentionSlidingWindow) { checkAttention(4, 2, true, 2); }

/// max |a - b| / max |b| over two tensors of the same size.
double relativeError(const Tensor &a, const Tensor &b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.data->size(); ++i) {
    err = std::max(err, double(std::fabs((*a.data)[i] - (*b.data)[i])));
    scale = std::max(scale, double(std::fabs((*b.data)[i])));
  }
  return err / scale;
}

// The bf16 attention (query blocks against the keys they see, tasks by
// sequence and KV head) computes what the fp32 one does, to bf16 rounding:
// 300 queries make two full blocks and a partial one; the forward also
// after cached keys (the blocks' key ranges start past the cache).
TEST(Grad, AttentionBF16MatchesFp32) {
  const int64_t batch = 2, seq = 300, d = 16, heads = 4, kvHeads = 2;
  // Each query is its own key (heads of a group alike) at twice the usual
  // scale: its own key has most of its probability, so a block's key range
  // that ends one short changes the block's last row by O(1).
  double scale = 0.5;
  Tensor k = randn({batch, seq, kvHeads * d}, 82);
  Tensor q = randn({batch, seq, heads * d}, 81);
  for (int64_t t = 0; t < batch * seq; ++t)
    for (int64_t h = 0; h < heads; ++h)
      std::memcpy(q.data->data() + (t * heads + h) * d,
                  k.data->data() + (t * kvHeads + h / (heads / kvHeads)) * d,
                  d * sizeof(float));
  Tensor v = randn({batch, seq, kvHeads * d}, 83);
  Tensor C = randn({batch, seq, heads * d}, 84);
  struct Case {
    bool causal;
    int64_t window;
  };
  for (Case c : {Case{true, 0}, Case{false, 0}, Case{true, 100}}) {
    std::string what = std::string(c.causal ? "causal" : "full") + " window " +
                       std::to_string(c.window);
    Tensor out[2], pk, pv;
    FloatBuffer none;
    for (bool bf16 : {false, true})
      attention(q, k, v, none, none, 0, heads, kvHeads, scale, c.causal,
                c.window, out[bf16], pk, pv, bf16);
    EXPECT_LT(relativeError(out[1], out[0]), 2e-2) << what;
    Tensor dq[2], dk[2], dv[2];
    for (bool bf16 : {false, true})
      attentionBackward(q, k, v, heads, kvHeads, scale, c.causal, c.window, C,
                        dq[bf16], dk[bf16], dv[bf16], bf16);
    EXPECT_LT(relativeError(dq[1], dq[0]), 2e-2) << what << " dq";
    EXPECT_LT(relativeError(dk[1], dk[0]), 2e-2) << what << " dk";
    EXPECT_LT(relativeError(dv[1], dv[0]), 2e-2) << what << " dv";
  }
  // 40 new queries after 260 cached keys.
  const int64_t cached = 260, fresh = seq - cached;
  FloatBuffer cacheK(batch * cached * kvHeads * d),
      cacheV(batch * cached * kvHeads * d);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < cached * kvHeads * d; ++i) {
      cacheK[b * cached * kvHeads * d + i] =
          (*k.data)[b * seq * kvHeads * d + i];
      cacheV[b * cached * kvHeads * d + i] =
          (*v.data)[b * seq * kvHeads * d + i];
    }
  auto tail = [&](const Tensor &t) {
    int64_t f = t.shape[2];
    Tensor out = randn({batch, fresh, f}, 0);
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(out.data->data() + b * fresh * f,
                  t.data->data() + (b * seq + cached) * f,
                  fresh * f * sizeof(float));
    return out;
  };
  Tensor qn = tail(q), kn = tail(k), vn = tail(v), out[2], pk, pv;
  for (bool bf16 : {false, true})
    attention(qn, kn, vn, cacheK, cacheV, cached, heads, kvHeads, scale, true,
              0, out[bf16], pk, pv, bf16);
  EXPECT_LT(relativeError(out[1], out[0]), 2e-2) << "after a cache";
}

TEST(Grad, Silu) {
  Tensor x = randn({4, 10}, 18, 2.0f), C = randn({4, 10}, 19);
  auto f = [&] {
    Tensor y;
    silu(x, y);
    return inner(y, C);
  };
  Tensor dx;
  siluBackward(x, C, dx);
  EXPECT_GRAD(compare(x, dx, f), "dx");
}

TEST(Grad, Mul) {
  Tensor a = randn({3, 12}, 20), b = randn({3, 12}, 21), C = randn({3, 12}, 22);
  auto f = [&] {
    Tensor y;
    binary(a, b, /*add=*/false, y);
    return inner(y, C);
  };
  Tensor da, db;
  mulBackward(a, b, C, da, db);
  EXPECT_GRAD(compare(a, da, f), "da");
  EXPECT_GRAD(compare(b, db, f), "db");
}

TEST(Grad, Rotate) {
  // A general (non-orthogonal) R on 6-blocks of a last dim of 12.
  Tensor r = randn({6, 6}, 23);
  for (bool transposed : {false, true}) {
    Tensor x = randn({3, 12}, 24), C = randn({3, 12}, 25);
    auto f = [&] {
      Tensor y;
      rotate(x, r, transposed, y);
      return inner(y, C);
    };
    Tensor dx;
    rotateBackward(C, r, transposed, dx);
    EXPECT_GRAD(compare(x, dx, f), (transposed ? "x R^T" : "x R"));
  }
}

TEST(Grad, Hadamard) {
  // 8: Sylvester; 12: Paley I (not symmetric); 10: the seeded fallback.
  for (int64_t block : {8, 12, 10}) {
    const uint64_t seed = 7;
    Tensor x = randn({3, 120}, 26), C = randn({3, 120}, 27);
    auto f = [&] {
      Tensor y;
      std::string error;
      EXPECT_TRUE(hadamard(x, block, seed, y, error)) << error;
      return inner(y, C);
    };
    Tensor dx;
    std::string error;
    ASSERT_TRUE(hadamardBackward(C, block, seed, dx, error)) << error;
    EXPECT_GRAD(compare(x, dx, f, 1e-2f, 60), "block " << block);
  }
  Tensor dx, C = randn({2, 12}, 28);
  std::string error;
  EXPECT_FALSE(hadamardBackward(C, 0, 1, dx, error));
  EXPECT_FALSE(hadamardBackward(C, 5, 1, dx, error));
  EXPECT_NE(error.find("invalid Hadamard size"), std::string::npos);
}

TEST(Grad, CrossEntropy) {
  const int64_t vocab = 5;
  Tensor logits = randn({2, 3, vocab}, 29, 2.0f);
  std::vector<int64_t> targets = {3, 0, -1, 4, 4, 1};
  Tensor dLogits;
  int64_t count = 0;
  double loss = crossEntropy(logits, targets, dLogits, count);
  EXPECT_EQ(count, 5);
  // The mean negative log-likelihood, by hand.
  double expected = 0;
  for (int64_t r = 0; r < 6; ++r) {
    if (targets[r] < 0)
      continue;
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j)
      sum += std::exp(double((*logits.data)[r * vocab + j]));
    expected += std::log(sum) - (*logits.data)[r * vocab + targets[r]];
  }
  EXPECT_NEAR(loss, expected / 5, 1e-6);
  // Per row: each scored row's negative log-likelihood, 0 on the unscored.
  std::vector<double> rows;
  EXPECT_EQ(crossEntropy(logits, targets, dLogits, count, &rows), loss);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[2], 0.0);
  double rowSum = 0;
  for (double v : rows)
    rowSum += v;
  EXPECT_NEAR(rowSum / 5, loss, 1e-12);
  auto f = [&] {
    Tensor scratch;
    int64_t n;
    return crossEntropy(logits, targets, scratch, n);
  };
  EXPECT_GRAD(compare(logits, dLogits, f, 1e-2f), "dLogits");
  // Rows sum to zero; the unscored row is zero.
  for (int64_t r = 0; r < 6; ++r) {
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j)
      sum += (*dLogits.data)[r * vocab + j];
    EXPECT_NEAR(sum, 0.0, 1e-6);
  }
  for (int64_t j = 0; j < vocab; ++j)
    EXPECT_EQ((*dLogits.data)[2 * vocab + j], 0.0f);
  // Nothing scored: loss 0, zero gradient.
  std::vector<int64_t> none(6, -1);
  EXPECT_EQ(crossEntropy(logits, none, dLogits, count), 0.0);
  EXPECT_EQ(count, 0);
  for (float g : *dLogits.data)
    EXPECT_EQ(g, 0.0f);
}

// The distillation loss KL(p || q) over the whole vocabulary and over a
// subset of tokens per row (KL-Top): by hand, against central differences,
// and zero (with a zero gradient) when p is the model's own distribution.
TEST(Grad, DistillationLoss) {
  const int64_t vocab = 6, rows = 6;
  Tensor logits = randn({2, 3, vocab}, 31, 2.0f);
  std::vector<int64_t> targets = {3, 0, -1, 4, 4, 1}; // row 2 not scored
  for (int64_t width : {vocab, int64_t(3)}) {
    // Reference log-probabilities: a random distribution over `width`
    // distinct tokens per row (all of them for width == vocab).
    std::mt19937 rng(5 + width);
    std::normal_distribution<double> g(0.0, 1.5);
    std::vector<int32_t> ids;
    std::vector<float> lp(rows * width);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int32_t> perm(vocab);
      for (int64_t j = 0; j < vocab; ++j)
        perm[j] = j;
      std::shuffle(perm.begin(), perm.end(), rng);
      if (width < vocab)
        ids.insert(ids.end(), perm.begin(), perm.begin() + width);
      std::vector<double> z(width);
      double mx = -1e300, sum = 0;
      for (double &v : z)
        mx = std::max(mx, v = g(rng));
      for (double v : z)
        sum += std::exp(v - mx);
      for (int64_t j = 0; j < width; ++j)
        lp[r * width + j] = float(z[j] - mx - std::log(sum));
    }
    SoftRows soft;
    soft.width = width;
    soft.ids = ids.empty() ? nullptr : ids.data();
    soft.logProbs = lp.data();
    Tensor dLogits;
    int64_t count = 0;
    std::vector<double> rowLosses;
    double loss =
        crossEntropy(logits, targets, dLogits, count, &rowLosses, true, &soft);
    EXPECT_EQ(count, 5);
    // By hand: sum_j p_j (log p_j - log q_j), q renormalized over the ids.
    double expected = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) {
        EXPECT_EQ(rowLosses[r], 0.0);
        continue;
      }
      auto z = [&](int64_t j) {
        return double(
            (*logits.data)[r * vocab + (ids.empty() ? j : ids[r * width + j])]);
      };
      double sum = 0;
      for (int64_t j = 0; j < width; ++j)
        sum += std::exp(z(j));
      double kl = 0;
      for (int64_t j = 0; j < width; ++j) {
        double l = lp[r * width + j];
        kl += std::exp(l) * (l - (z(j) - std::log(sum)));
      }
      EXPECT_GT(kl, 0.0);
      EXPECT_NEAR(rowLosses[r], kl, 1e-9 + 1e-9 * kl);
      expected += kl;
    }
    EXPECT_NEAR(loss, expected / 5, 1e-9);
    auto f = [&] {
      Tensor scratch;
      int64_t n;
      return crossEntropy(logits, targets, scratch, n, nullptr, false, &soft);
    };
    EXPECT_GRAD(compare(logits, dLogits, f, 1e-2f), "width " << width);
    // Tokens outside a row's subset get no gradient; the unscored row none.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < vocab; ++j) {
        bool in = ids.empty() || std::find(ids.begin() + r * width,
                                           ids.begin() + (r + 1) * width,
                                           j) != ids.begin() + (r + 1) * width;
        if (!in || targets[r] < 0)
          EXPECT_EQ((*dLogits.data)[r * vocab + j], 0.0f) << r << " " << j;
      }

    // p = the model's own (renormalized) distribution: KL 0, gradient 0.
    for (int64_t r = 0; r < rows; ++r) {
      auto z = [&](int64_t j) {
        return double(
            (*logits.data)[r * vocab + (ids.empty() ? j : ids[r * width + j])]);
      };
      double sum = 0;
      for (int64_t j = 0; j < width; ++j)
        sum += std::exp(z(j));
      for (int64_t j = 0; j < width; ++j)
        lp[r * width + j] = float(z(j) - std::log(sum));
    }
    EXPECT_NEAR(
        crossEntropy(logits, targets, dLogits, count, nullptr, true, &soft),
        0.0, 1e-6);
    for (float v : *dLogits.data)
      EXPECT_NEAR(v, 0.0f, 1e-6f);
  }
}

// The head and the loss a chunk of rows at a time (headLoss) against the
// whole logits (linear, crossEntropy, linearBackward). With one chunk of
// all rows: the same loss, per-row losses and gradients bit for bit (dW
// too). With chunks of 1 and 3 rows (uneven) to float rounding: sgemm may
// round a product of fewer rows differently (other kernels for small M).
TEST(Grad, HeadLossInChunksMatchesWholeLogits) {
  const int64_t vocab = 11, hidden = 8;
  Tensor x = randn({2, 5, hidden}, 31), w = randn({vocab, hidden}, 32),
         bias = randn({vocab}, 33);
  std::vector<int64_t> targets = {3, 0, -1, 10, 4, 1, 7, 7, 2, -1};
  Tensor logits, dLogits, dx, dw, db;
  linear(x, w, &bias, logits);
  int64_t count = 0;
  std::vector<double> rows;
  double loss = crossEntropy(logits, targets, dLogits, count, &rows);
  linearBackward(x, w, dLogits, &dx, &dw, &db);
  for (int64_t chunk : {10, 1, 3}) {
    bool exact = chunk == 10;
    auto same = [&](double a, double b, double tol, const std::string &what) {
      if (exact)
        EXPECT_EQ(a, b) << what << ", chunk " << chunk;
      else
        EXPECT_NEAR(a, b, tol) << what << ", chunk " << chunk;
    };
    NextTokenRows ce(targets, vocab);
    EXPECT_EQ(ce.count(), count);
    Tensor cx, cw, cb;
    std::vector<double> crows;
    double closs = headLoss(x, w, &bias, ce, chunk, &crows, &cx, &cw, &cb);
    same(closs, loss, 1e-6 * loss, "loss");
    ASSERT_EQ(crows.size(), rows.size());
    for (size_t r = 0; r < rows.size(); ++r)
      same(crows[r], rows[r], 1e-5, "row " + std::to_string(r));
    EXPECT_EQ(crows[2], 0.0);
    ASSERT_EQ(cx.shape, x.shape);
    for (int64_t i = 0; i < x.numel(); ++i)
      same((*cx.data)[i], (*dx.data)[i], 1e-6, "dx " + std::to_string(i));
    for (int64_t i = 0; i < vocab; ++i)
      same((*cb.data)[i], (*db.data)[i], 1e-6, "db " + std::to_string(i));
    for (int64_t i = 0; i < w.numel(); ++i)
      same((*cw.data)[i], (*dw.data)[i], 1e-6, "dW " + std::to_string(i));
    // The loss alone.
    NextTokenRows again(targets, vocab);
    EXPECT_EQ(
        headLoss(x, w, &bias, again, chunk, nullptr, nullptr, nullptr, nullptr),
        closs);
  }
}

// Distillation through the chunked head (NextTokenRows with soft targets in
// headLoss) gives crossEntropy()'s KL loss and gradients on the whole logits,
// for KL over the whole vocabulary and over 3 tokens per row (KL-Top).
TEST(Grad, HeadLossSoftTargetsMatchWholeLogits) {
  const int64_t vocab = 9, hidden = 6, rows = 8;
  Tensor x = randn({2, 4, hidden}, 41), w = randn({vocab, hidden}, 42);
  std::vector<int64_t> targets = {1, 4, -1, 0, 8, 2, 3, -1};
  for (int64_t width : {vocab, int64_t(3)}) {
    std::vector<int32_t> ids;
    std::vector<float> lp(rows * width);
    Tensor ref = randn({rows, width}, 43 + width);
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t j = 0; j < width; ++j)
        sum += std::exp(double((*ref.data)[r * width + j]));
      for (int64_t j = 0; j < width; ++j) {
        lp[r * width + j] =
            float(double((*ref.data)[r * width + j]) - std::log(sum));
        if (width < vocab)
          ids.push_back(int32_t((r + 2 * j) % vocab));
      }
    }
    SoftRows soft;
    soft.width = width;
    soft.ids = ids.empty() ? nullptr : ids.data();
    soft.logProbs = lp.data();
    Tensor logits, dLogits, dx, dw;
    linear(x, w, nullptr, logits);
    int64_t count = 0;
    std::vector<double> each;
    double loss =
        crossEntropy(logits, targets, dLogits, count, &each, true, &soft);
    linearBackward(x, w, dLogits, &dx, &dw, nullptr);
    NextTokenRows rowLoss(targets, vocab, &soft);
    EXPECT_EQ(rowLoss.count(), count);
    Tensor cx, cw;
    std::vector<double> ceach;
    double closs =
        headLoss(x, w, nullptr, rowLoss, 3, &ceach, &cx, &cw, nullptr);
    EXPECT_NEAR(closs, loss, 1e-6 * std::abs(loss) + 1e-9) << width;
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_NEAR(ceach[r], each[r], 1e-6) << width << " row " << r;
    for (int64_t i = 0; i < x.numel(); ++i)
      EXPECT_NEAR((*cx.data)[i], (*dx.data)[i], 1e-6) << width << " dx " << i;
    for (int64_t i = 0; i < w.numel(); ++i)
      EXPECT_NEAR((*cw.data)[i], (*dw.data)[i], 1e-6) << width << " dW " << i;
  }
}

} // namespace

/// The kernels that split their rows over the thread pool (forRows) give the
/// bits of the same rows computed serially in one call: the split never
/// changes a result, so calibration does not depend on the thread count.
TEST(Grad, PooledKernelsMatchSerialRows) {
  const int64_t rows = 96, f = 1024; // 98 304 values: split over the pool
  Tensor x = randn({1, rows, f}, 71), g = randn({1, rows, f}, 72);
  auto same = [](const float *a, const float *b, int64_t n, const char *what) {
    EXPECT_EQ(0, std::memcmp(a, b, n * sizeof(float))) << what;
  };
  std::vector<float> ref(rows * f);
  Tensor out, dx, db;

  rmsNorm(x, nullptr, 1e-5, out);
  sq::numerics::rmsNormRows(x.data->data(), nullptr, rows, f, 1e-5, ref.data());
  same(out.data->data(), ref.data(), rows * f, "rmsNorm");

  fakeQuant(x, 4, true, /*per_token*/ 1, 0, 0.9, out);
  sq::numerics::fakeQuantRows(x.data->data(), rows, f,
                              fakeQuantGrid(4, true, 1, 0, 0.9), ref.data());
  same(out.data->data(), ref.data(), rows * f, "fakeQuant");

  silu(x, out);
  for (int64_t i = 0; i < rows * f; ++i) {
    float v = (*x.data)[i];
    ref[i] = v / (1.0f + std::exp(-v));
  }
  same(out.data->data(), ref.data(), rows * f, "silu");

  siluBackward(x, g, dx);
  for (int64_t i = 0; i < rows * f; ++i) {
    float v = (*x.data)[i], s = 1.0f / (1.0f + std::exp(-v));
    ref[i] = (*g.data)[i] * s * (1.0f + v * (1.0f - s));
  }
  same(dx.data->data(), ref.data(), rows * f, "siluBackward");

  mulBackward(x, g, g, dx, db);
  for (int64_t i = 0; i < rows * f; ++i)
    ref[i] = (*g.data)[i] * (*g.data)[i];
  same(dx.data->data(), ref.data(), rows * f, "mulBackward");

  std::vector<int64_t> pos(rows);
  for (int64_t t = 0; t < rows; ++t)
    pos[t] = 3 * t + 1;
  Tensor positions = intTensor({1, rows}, pos);
  rope(x, positions, 16, 10000.0, false, out);
  sq::numerics::ropeRows(x.data->data(), pos.data(), rows, f, 16, 10000.0,
                         false, ref.data());
  same(out.data->data(), ref.data(), rows * f, "rope");

  std::string error;
  ASSERT_TRUE(hadamard(x, 64, 5, out, error)) << error;
  std::copy(x.data->begin(), x.data->end(), ref.begin());
  for (int64_t r = 0; r < rows * f / 64; ++r)
    sq::numerics::orthogonalTransformInPlace(ref.data() + r * 64, 64, 5);
  same(out.data->data(), ref.data(), rows * f, "hadamard");

  // The loss rows, each against rowLoss alone.
  const int64_t vocab = 1024;
  std::vector<int64_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r)
    targets[r] = (r * 37) % vocab;
  NextTokenRows loss(targets, vocab);
  std::vector<double> each(rows);
  std::vector<float> grad(rows * vocab);
  loss.rows(0, rows, x.data->data(), vocab, each.data(), grad.data(), 0.5);
  std::vector<double> scratch;
  std::vector<float> gradRef(vocab);
  for (int64_t r = 0; r < rows; ++r) {
    double l = rowLoss(x.data->data() + r * vocab, vocab, targets[r], nullptr,
                       gradRef.data(), 0.5, scratch);
    EXPECT_EQ(l, each[r]) << "row " << r;
    same(grad.data() + r * vocab, gradRef.data(), vocab, "loss gradient");
  }
}
