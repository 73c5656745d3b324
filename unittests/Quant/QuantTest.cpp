//===- QuantTest.cpp - quantizers, spec parser, GPTQ ----------------------===//

#include "sq/Numerics/Quantize.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/QuantSpec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

using namespace sq;
using namespace sq::numerics;

namespace {

QuantGrid grid(unsigned bits, bool sym, int64_t group = 0, double clip = 1) {
  QuantGrid g;
  g.bits = bits;
  g.symmetric = sym;
  g.group = group;
  g.clip = clip;
  return g;
}

// Per token, asymmetric 4-bit, worked by hand: x = [-1, 0, 0.5, 2]:
// xmin = -1, xmax = 2, s = 3/15 = 0.2, z = round(1/0.2) = 5.
TEST(Quantizer, AsymmetricPerTokenByHand) {
  float x[4] = {-1.0f, 0.0f, 0.5f, 2.0f}, y[4];
  fakeQuantRows(x, 1, 4, grid(4, false), y);
  float s = 3.0f / 15.0f;
  // round(-1/0.2) = -5 -> 0; 0 -> 5; 0.5/0.2 = 2.5 -> 2 (half to even) -> 7;
  // 2/0.2 = 10 -> 15.
  EXPECT_FLOAT_EQ(y[0], (0 - 5) * s);
  EXPECT_FLOAT_EQ(y[1], 0.0f);
  EXPECT_FLOAT_EQ(y[2], (7 - 5) * s);
  EXPECT_FLOAT_EQ(y[3], (15 - 5) * s);
}

// Symmetric 4-bit per channel with a clip ratio: x = [-3, 1.4, 7],
// max|x| = 7, clip 0.5 -> 3.5, s = 3.5 / 7 = 0.5; q = clamp(round(x/s),
// -8, 7) = [-6, 3 (2.8), 7 (14 clamped)].
TEST(Quantizer, SymmetricClipByHand) {
  float x[3] = {-3.0f, 1.4f, 7.0f}, y[3];
  fakeQuantRows(x, 1, 3, grid(4, true, 0, 0.5), y);
  EXPECT_FLOAT_EQ(y[0], -3.0f);
  EXPECT_FLOAT_EQ(y[1], 1.5f);
  EXPECT_FLOAT_EQ(y[2], 3.5f);
}

// Groups: each group of 2 gets its own scale.
TEST(Quantizer, GroupsHaveTheirOwnScales) {
  float x[4] = {1.0f, -1.0f, 100.0f, 50.0f}, y[4];
  fakeQuantRows(x, 1, 4, grid(8, true, 2), y);
  EXPECT_FLOAT_EQ(y[0], 1.0f);
  EXPECT_FLOAT_EQ(y[1], -1.0f);
  EXPECT_NEAR(y[2], 100.0f, 1e-4);
  EXPECT_NEAR(y[3], 50.0f, 100.0f / 127);
}

// Constant and all-zero rows: zeros stay exactly zero; a constant row is
// reproduced exactly (it is one end of its range).
TEST(Quantizer, ConstantAndZeroRows) {
  float zeros[8] = {0}, out[8];
  for (bool sym : {true, false}) {
    fakeQuantRows(zeros, 2, 4, grid(4, sym), out);
    for (float v : out)
      EXPECT_EQ(v, 0.0f);
  }
  float c[4] = {0.75f, 0.75f, 0.75f, 0.75f}, d[4];
  for (bool sym : {true, false}) {
    fakeQuantRows(c, 1, 4, grid(4, sym), d);
    for (float v : d)
      EXPECT_FLOAT_EQ(v, 0.75f) << "sym " << sym;
  }
  float n[2] = {-2.0f, -2.0f}, m[2];
  fakeQuantRows(n, 1, 2, grid(4, false), m);
  EXPECT_FLOAT_EQ(m[0], -2.0f);
}

TEST(Quantizer, RTNRejectsNonFinite) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    float w[6] = {1, 2, 3, 4, bad, 6};
    QuantizedWeight q;
    std::string error;
    EXPECT_FALSE(quantizeRTN(w, 2, 3, grid(4, true), false, q, error));
    EXPECT_EQ(error, "non-finite value at row 1, column 1");
  }
  float w[6] = {1, 2, 3, 4, 5, 6};
  QuantizedWeight q;
  std::string error;
  EXPECT_FALSE(quantizeRTN(w, 2, 3, grid(4, true, 2), false, q, error));
  EXPECT_EQ(error, "group size 2 does not divide 3 columns");
}

// RTN values lie on the grid and dequantize to what fakeQuantRows gives.
TEST(Quantizer, RTNMatchesFakeQuantAndStaysOnGrid) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<float> w(16 * 64), fq(w.size()), dq(w.size());
  for (float &v : w)
    v = dist(rng);
  for (QuantGrid g :
       {grid(4, true), grid(4, false, 16), grid(8, false), grid(3, true, 8)}) {
    QuantizedWeight q;
    std::string error;
    ASSERT_TRUE(quantizeRTN(w.data(), 16, 64, g, false, q, error)) << error;
    for (int16_t v : q.values) {
      ASSERT_GE(v, g.qmin());
      ASSERT_LE(v, g.qmax());
    }
    q.dequantize(dq.data());
    fakeQuantRows(w.data(), 16, 64, g, fq.data());
    EXPECT_EQ(dq, fq);
  }
}

double errNorm(const std::vector<float> &a, const float *b, double p) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i)
    e += std::pow(std::fabs(double(a[i]) - b[i]), p);
  return e;
}

// The MSE clip search never increases the |error|^2.4 of any group (p = 1
// is its first candidate) and lowers it on heavy-tailed weights.
TEST(Quantizer, ClipSearchNeverIncreasesError) {
  std::mt19937 rng(5);
  std::student_t_distribution<float> dist(2.0f);
  for (QuantGrid g : {grid(4, true), grid(4, false, 32), grid(3, true, 16)}) {
    std::vector<float> w(32 * 128), a(w.size()), b(w.size());
    for (float &v : w)
      v = dist(rng);
    QuantizedWeight plain, searched;
    std::string error;
    ASSERT_TRUE(quantizeRTN(w.data(), 32, 128, g, false, plain, error));
    ASSERT_TRUE(quantizeRTN(w.data(), 32, 128, g, true, searched, error));
    plain.dequantize(a.data());
    searched.dequantize(b.data());
    int64_t group = g.group ? g.group : 128;
    for (int64_t start = 0; start < int64_t(w.size()); start += group) {
      std::vector<float> ws(w.begin() + start, w.begin() + start + group);
      EXPECT_LE(errNorm(ws, b.data() + start, 2.4),
                errNorm(ws, a.data() + start, 2.4) * (1 + 1e-9));
    }
    EXPECT_LT(errNorm(w, b.data(), 2.4), 0.95 * errNorm(w, a.data(), 2.4));
  }
}

// GPTQ lowers the layer's output error ||X W^T - X Q^T|| versus RTN on a
// random layer with correlated inputs, per channel, in groups, with
// act-order; its values stay on the grid.
// fakeQuantRangeBackward is the exact gradient of the LSQ surrogate: each
// value's rounding residual frozen in grid units, Q_j(x) = x_j + scale(x)
// c_j with c_j = (Q_j - x_j) / scale at x0 (a clamped value: Q_j(x) =
// (q_j - zero) scale(x) + f (lo(x) - lo(x0)) plus the straight-through
// x_j - x0_j), scale(x) from the group's extremes as groupScale computes it.
// Checked against central differences of sum_j dy_j Q_j(x), symmetric and
// asymmetric, with groups, with a clip ratio that clamps.
TEST(Quantizer, RangeBackwardMatchesTheSurrogate) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (bool symmetric : {true, false})
    for (double clip : {1.0, 0.8})
      for (int64_t group : {int64_t(0), int64_t(4)}) {
        QuantGrid grid;
        grid.bits = 4;
        grid.symmetric = symmetric;
        grid.clip = clip;
        grid.group = group;
        const int64_t rows = 3, cols = 8;
        int64_t gs = group ? group : cols;
        std::vector<float> x0(rows * cols), dy(rows * cols);
        for (float &v : x0)
          v = g(rng);
        x0[5] = 3.0f; // an outlier
        for (float &v : dy)
          v = g(rng);
        std::vector<float> dx = dy;
        fakeQuantRangeBackward(x0.data(), rows, cols, grid, nullptr, nullptr,
                               dy.data(), dx.data());
        // The frozen parts at x0, per value.
        std::vector<double> c(rows * cols), qz(rows * cols);
        std::vector<bool> clamped(rows * cols);
        for (int64_t i = 0; i < rows * cols; i += gs) {
          float scale, zero;
          groupScale(x0.data() + i, gs, grid, 1.0, scale, zero);
          for (int64_t j = i; j < i + gs; ++j) {
            int64_t q = quantizeValue(x0[j], scale, zero, grid);
            clamped[j] = std::nearbyint(x0[j] / scale) + zero != float(q);
            qz[j] = double(q) - zero;
            c[j] = (qz[j] * scale - x0[j]) / scale;
          }
        }
        auto surrogate = [&](const std::vector<double> &x) {
          double f = 0;
          for (int64_t i = 0; i < rows * cols; i += gs) {
            double lo = 0, hi = 0, lo0 = 0;
            for (int64_t j = i; j < i + gs; ++j) {
              lo = std::min(lo, x[j]);
              hi = std::max(hi, x[j]);
              lo0 = std::min(lo0, double(x0[j]));
            }
            double scale = symmetric ? clip * std::max(-lo, hi) / grid.qmax()
                                     : clip * (hi - lo) / grid.qmax();
            for (int64_t j = i; j < i + gs; ++j) {
              double q = clamped[j] ? qz[j] * scale + x[j] - x0[j] +
                                          (symmetric ? 0 : clip * (lo - lo0))
                                    : x[j] + scale * c[j];
              f += dy[j] * q;
            }
          }
          return f;
        };
        std::vector<double> x(x0.begin(), x0.end());
        for (int64_t k = 0; k < rows * cols; ++k) {
          const double h = 1e-4;
          x[k] = x0[k] + h;
          double fp = surrogate(x);
          x[k] = x0[k] - h;
          double fm = surrogate(x);
          x[k] = x0[k];
          EXPECT_NEAR(dx[k], (fp - fm) / (2 * h), 1e-3)
              << (symmetric ? "symmetric" : "asymmetric") << " clip " << clip
              << " group " << group << " element " << k;
        }
      }
}

TEST(GPTQ, BeatsRTNOnLayerOutput) {
  const int64_t rows = 48, cols = 64, tokens = 512;
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  std::vector<float> w(rows * cols), x(tokens * cols), mix(cols * cols);
  for (float &v : w)
    v = dist(rng);
  for (float &v : mix)
    v = dist(rng) * 0.3f;
  for (int64_t t = 0; t < tokens; ++t) { // correlated features
    std::vector<float> z(cols);
    for (float &v : z)
      v = dist(rng);
    for (int64_t j = 0; j < cols; ++j) {
      float s = z[j];
      for (int64_t k = 0; k < cols; ++k)
        s += mix[j * cols + k] * z[k];
      x[t * cols + j] = s;
    }
  }
  HessianAccumulator h(cols);
  h.add(x.data(), tokens / 2);
  h.add(x.data() + tokens / 2 * cols, tokens - tokens / 2);
  EXPECT_EQ(h.samples(), tokens);
  {
    // Data parallel (collectHessians under mpirun): processes accumulate
    // uneven shares of the tokens apart; sum_p n_p H_p / sum_p n_p (assign)
    // is the Hessian of all of them.
    int64_t split = tokens / 3;
    HessianAccumulator a(cols), b(cols), merged(cols);
    a.add(x.data(), split);
    b.add(x.data() + split * cols, tokens - split);
    std::vector<double> sum(cols * cols);
    for (size_t i = 0; i < sum.size(); ++i)
      sum[i] = a.hessian()[i] * double(a.samples()) +
               b.hessian()[i] * double(b.samples());
    merged.assign(sum, a.samples() + b.samples());
    EXPECT_EQ(merged.samples(), tokens);
    double scale = 0, worst = 0;
    for (size_t i = 0; i < sum.size(); ++i) {
      scale = std::max(scale, std::fabs(h.hessian()[i]));
      worst = std::max(worst, std::fabs(merged.hessian()[i] - h.hessian()[i]));
    }
    EXPECT_LT(worst, 1e-12 * scale);
  }
  auto outputError = [&](const QuantizedWeight &q) {
    std::vector<float> d(rows * cols);
    q.dequantize(d.data());
    double e = 0;
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < cols; ++c)
          s += double(x[t * cols + c]) * (w[r * cols + c] - d[r * cols + c]);
        e += s * s;
      }
    return e;
  };
  for (QuantGrid g : {grid(4, true), grid(4, false, 16), grid(3, true)})
    for (bool actOrder : {false, true}) {
      QuantizedWeight rtn, gptq;
      std::string error;
      ASSERT_TRUE(quantizeRTN(w.data(), rows, cols, g, false, rtn, error));
      GPTQOptions options;
      options.block = 16; // several blocks: exercises the lazy batch update
      options.actOrder = actOrder;
      ASSERT_TRUE(quantizeGPTQ(w.data(), rows, cols, h.hessian(), g, options,
                               gptq, error))
          << error;
      for (int16_t v : gptq.values) {
        ASSERT_GE(v, g.qmin());
        ASSERT_LE(v, g.qmax());
      }
      double er = outputError(rtn), eg = outputError(gptq);
      EXPECT_LT(eg, 0.8 * er) << "bits " << g.bits << " group " << g.group
                              << " actorder " << actOrder;
    }
}

// Learned per-channel clip ratios set GPTQ's scales as they set RTN's.
TEST(GPTQ, UsesLearnedRowClips) {
  const int64_t rows = 6, cols = 32;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<float> w(rows * cols), x(64 * cols);
  for (float &v : w)
    v = normal(rng);
  for (float &v : x)
    v = normal(rng);
  HessianAccumulator h(cols);
  h.add(x.data(), 64);
  std::vector<float> clips = {1.0f, 0.9f, 0.75f, 0.6f, 0.95f, 0.8f};
  for (QuantGrid g : {grid(4, true), grid(4, false, 16)}) {
    QuantizedWeight rtn, gptq, plain;
    std::string error;
    ASSERT_TRUE(
        quantizeRTN(w.data(), rows, cols, g, false, rtn, error, clips.data()));
    GPTQOptions options;
    options.rowClips = clips.data();
    ASSERT_TRUE(quantizeGPTQ(w.data(), rows, cols, h.hessian(), g, options,
                             gptq, error));
    EXPECT_EQ(gptq.scales, rtn.scales);
    EXPECT_EQ(gptq.zeros, rtn.zeros);
    ASSERT_TRUE(
        quantizeGPTQ(w.data(), rows, cols, h.hessian(), g, {}, plain, error));
    EXPECT_NE(plain.scales, gptq.scales);
    for (int64_t r = 0; r < rows; ++r) // row 0 keeps clip 1
      for (int64_t k = 0; k < gptq.groups; ++k)
        EXPECT_EQ(plain.scales[r * gptq.groups + k] ==
                      gptq.scales[r * gptq.groups + k],
                  r == 0);
  }
}

TEST(GPTQ, RejectsBadInput) {
  std::vector<float> w(4 * 8, 1.0f);
  QuantizedWeight q;
  std::string error;
  EXPECT_FALSE(quantizeGPTQ(w.data(), 4, 8, std::vector<double>(9),
                            grid(4, true), {}, q, error));
  EXPECT_EQ(error, "Hessian is not 8x8");
  // A negative definite "Hessian" stays singular after dampening.
  std::vector<double> neg(64, 0.0);
  for (int i = 0; i < 8; ++i)
    neg[i * 8 + i] = -1;
  EXPECT_FALSE(quantizeGPTQ(w.data(), 4, 8, neg, grid(4, true), {}, q, error));
  EXPECT_NE(error.find("not positive definite"), std::string::npos) << error;
}

TEST(QuantSpec, ParsesTheOfficialForms) {
  QuantSpec s;
  std::string error;
  ASSERT_TRUE(parseQuantSpec("w4a4kv4", s, error)) << error;
  EXPECT_EQ(s.wBits, 4u);
  EXPECT_EQ(s.aBits, 4u);
  EXPECT_EQ(s.kBits, 4u);
  EXPECT_EQ(s.vBits, 4u);
  EXPECT_TRUE(s.wSym);
  EXPECT_FALSE(s.aSym);
  ASSERT_TRUE(parseQuantSpec("w4a16", s, error));
  EXPECT_EQ(s.kBits, 16u);
  EXPECT_FALSE(s.quantizesActivations());
  ASSERT_TRUE(parseQuantSpec("w4a8k4v8,wgroup=128,wasym,wclip,gptq,nsamples=64,"
                             "damp=0.05,block=64,actorder,sym,aclip=0.9,"
                             "kgroup=64,vgroup=32,kclip=0.95,vclip=0.9,"
                             "mode=real,calib=c.txt,tokenizer=sp:t.model,"
                             "seqlen=512",
                             s, error))
      << error;
  EXPECT_EQ(s.kBits, 4u);
  EXPECT_EQ(s.vBits, 8u);
  EXPECT_EQ(s.wGroup, 128);
  EXPECT_FALSE(s.wSym);
  EXPECT_TRUE(s.wClip && s.gptq && s.actOrder && s.aSym && s.real);
  EXPECT_EQ(s.nsamples, 64);
  EXPECT_DOUBLE_EQ(s.damp, 0.05);
  EXPECT_DOUBLE_EQ(s.aClip, 0.9);
  EXPECT_EQ(s.tokenizer, "sp:t.model");
  // The canonical spelling round-trips.
  QuantSpec t;
  ASSERT_TRUE(parseQuantSpec(s.str(), t, error)) << s.str() << ": " << error;
  EXPECT_EQ(t.str(), s.str());
}

// Clip ratios and damp are printed with as many digits as they need to
// parse back (the fuzzer's aclip=.99999999 printed as aclip=1, which is no
// clip: test/fuzz/regressions/quantspec/aclip-eight-nines).
TEST(QuantSpec, StrKeepsEveryDigit) {
  QuantSpec s, t;
  std::string error;
  ASSERT_TRUE(parseQuantSpec("w4a4,aclip=.99999999,kclip=0.85,vclip=.95,"
                             "gptq,damp=0.0123456789",
                             s, error))
      << error;
  EXPECT_EQ(s.str(), "w4a4kv16,gptq,nsamples=128,damp=0.0123456789,"
                     "block=128,aclip=0.99999999,kclip=0.85,vclip=0.95");
  ASSERT_TRUE(parseQuantSpec(s.str(), t, error)) << s.str() << ": " << error;
  EXPECT_EQ(t.aClip, s.aClip);
  EXPECT_EQ(t.kClip, s.kClip);
  EXPECT_EQ(t.vClip, s.vClip);
  EXPECT_EQ(t.damp, s.damp);
  EXPECT_EQ(t.str(), s.str());
}

// "none" is the float model; mode= is remembered when written (sq-compile
// packs weights unless it was); the spec a learned rotation trains under is
// derived from the deployed one as a struct.
TEST(QuantSpec, NoneModeAndTrainingSpec) {
  QuantSpec s;
  std::string error;
  ASSERT_TRUE(parseQuantSpec("none", s, error)) << error;
  EXPECT_TRUE(s.quantizesNothing());
  EXPECT_EQ(s.str(), "none");
  ASSERT_TRUE(parseQuantSpec("w16a16", s, error)) << error;
  EXPECT_EQ(s.str(), "none");
  ASSERT_TRUE(parseQuantSpec("w4a4kv4", s, error)) << error;
  EXPECT_FALSE(s.quantizesNothing());
  EXPECT_FALSE(s.modeGiven);
  ASSERT_TRUE(parseQuantSpec("w4a4kv4,mode=fake", s, error)) << error;
  EXPECT_TRUE(s.modeGiven);
  EXPECT_FALSE(s.real);
  EXPECT_EQ(s.str(), "w4a4kv4,mode=fake");
  ASSERT_TRUE(parseQuantSpec("w4a8k4v8,gptq,wgroup=128,aclip=0.9", s, error));
  EXPECT_EQ(s.trainingSpec().str(), "w16a8k4v8");
  ASSERT_TRUE(parseQuantSpec("w4a4kv4,wgroup=128", s, error));
  EXPECT_EQ(s.trainingSpec().str(), "w4a4kv4");
  QuantSpec act = s.activationsOnly();
  EXPECT_EQ(act.wBits, 16u);
  EXPECT_EQ(act.aBits, 4u);
  EXPECT_FALSE(act.gptq);
  // head=: 16 (float) by default and when written; 8 round-trips; neither
  // training spec carries it (lm_head stays float while rotations learn).
  EXPECT_EQ(s.headBits, 16u);
  EXPECT_FALSE(s.quantizesHead());
  ASSERT_TRUE(parseQuantSpec("w4a4kv4,head=16", s, error)) << error;
  EXPECT_EQ(s.headBits, 16u);
  EXPECT_EQ(s.str(), "w4a4kv4");
  ASSERT_TRUE(parseQuantSpec("w4a4kv4,gptq,head=8", s, error)) << error;
  EXPECT_EQ(s.headBits, 8u);
  EXPECT_TRUE(s.quantizesHead());
  QuantSpec again;
  ASSERT_TRUE(parseQuantSpec(s.str(), again, error)) << error;
  EXPECT_EQ(again.headBits, 8u);
  EXPECT_EQ(again.str(), s.str());
  EXPECT_EQ(s.trainingSpec().headBits, 16u);
  EXPECT_EQ(s.activationsOnly().headBits, 16u);
  ASSERT_TRUE(parseQuantSpec("w16a16,head=8", s, error)) << error;
  EXPECT_FALSE(s.quantizesNothing());
}

TEST(QuantSpec, NamesTheBadPart) {
  struct Case {
    const char *spec, *message;
  } cases[] = {
      {"w4", "'w4' is not wXaY"},
      {"w4a4kv", "'w4a4kv' is not wXaY"},
      {"w1a4", "'w1a4' is not wXaY"},
      {"w4a4kv4x", "'w4a4kv4x' is not wXaY"},
      {"W4A4", "'W4A4' is not wXaY"},
      {"w4a4,wgroup=-1", "'wgroup=-1' needs an integer >= 0"},
      {"w4a4,wgroup=abc", "'wgroup=abc' needs an integer >= 0"},
      {"w4a4,aclip=1.5", "'aclip=1.5' needs a number in (0, 1]"},
      {"w4a4,aclip=0", "'aclip=0' needs a number in (0, 1]"},
      {"w4a4,aclip=nan", "'aclip=nan' needs a number in (0, 1]"},
      {"w4a4,frobnicate", "unknown option 'frobnicate'"},
      {"w4a4,,gptq", "empty option"},
      {"w4a4,gptq=1", "'gptq' takes no value"},
      {"w4a4,mode=fast", "mode is fake or real"},
      {"w3a4,mode=real", "mode=real packs 4- or 8-bit weights, not 3"},
      {"w16a4,gptq", "gptq needs quantized weights"},
      {"w4a4,tokenizer=bpe", "tokenizer is byte, sp:PATH or hf:DIR"},
      {"w4a4,head=4", "'head=4': head (the lm_head's bits) is 8 or 16"},
      {"w4a4,head", "'head': head (the lm_head's bits) is 8 or 16"},
  };
  for (const Case &c : cases) {
    QuantSpec s;
    std::string error;
    EXPECT_FALSE(parseQuantSpec(c.spec, s, error)) << c.spec;
    EXPECT_NE(error.find(c.message), std::string::npos)
        << c.spec << " -> " << error;
    EXPECT_NE(error.find("accepted: wXaY"), std::string::npos) << error;
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Learned clipping: the gradient of fake quantization w.r.t. its input and
// its clip ratio, against finite differences of the surrogate it is exact
// for (each rounding offset, the zero point's and the clamp decisions held
// at their values at the point of evaluation).
//===----------------------------------------------------------------------===//

namespace {

enum class Side { Inside, Top, Bottom };

/// The surrogate of one row (one group) of fake quantization: round(u) =
/// u + r with r frozen, the clamp sides frozen; in double.
struct Surrogate {
  QuantGrid grid;
  std::vector<double> r;
  std::vector<Side> side;
  double rz = 0;

  /// Freezes the offsets at (x, clip) as fakeQuantRows rounds them.
  Surrogate(const QuantGrid &g, const std::vector<double> &x, double clip)
      : grid(g) {
    std::vector<float> xf(x.begin(), x.end());
    QuantGrid gc = g;
    gc.clip = clip;
    float scale, zero;
    groupScale(xf.data(), xf.size(), gc, 1.0, scale, zero);
    double lo = 0;
    for (float v : xf)
      lo = std::min(lo, double(v));
    rz = g.symmetric ? 0.0 : zero + clip * lo / scale;
    for (float v : xf) {
      double k = std::nearbyint(v / scale);
      double t = k + zero;
      side.push_back(t > g.qmax()   ? Side::Top
                     : t < g.qmin() ? Side::Bottom
                                    : Side::Inside);
      r.push_back(k - double(v) / scale);
    }
  }

  std::vector<double> operator()(const std::vector<double> &x, double c) const {
    double lo = 0, hi = 0;
    for (double v : x) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    double qmax = grid.qmax(), qmin = grid.qmin();
    std::vector<double> q(x.size());
    if (grid.symmetric) {
      double s = c * std::max(-lo, hi) / qmax;
      for (size_t i = 0; i < x.size(); ++i)
        q[i] = side[i] == Side::Inside ? x[i] + s * r[i]
               : side[i] == Side::Top  ? s * qmax
                                       : s * qmin;
    } else {
      double xmin = c * lo, s = c * (hi - lo) / qmax;
      for (size_t i = 0; i < x.size(); ++i)
        q[i] = side[i] == Side::Inside ? x[i] + s * r[i]
               : side[i] == Side::Top  ? s * qmax + xmin - s * rz
                                       : xmin - s * rz;
    }
    return q;
  }
};

double dot(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

} // namespace

TEST(Quantizer, ClipGradientMatchesFiniteDifferences) {
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  const int64_t cols = 48;
  int checkedClamped = 0;
  for (bool sym : {true, false})
    for (int64_t group : {int64_t(0), int64_t(16)})
      for (double clip : {1.0, 0.9, 0.72}) {
        QuantGrid g = grid(4, sym, group);
        // Two rows with their own clips (per-channel weight clipping).
        const int64_t rows = 2;
        std::vector<float> x(rows * cols), dy(rows * cols);
        for (float &v : x)
          v = float(normal(rng) * (sym ? 1.0 : 0.7) + (sym ? 0.0 : 0.3));
        x[5] = 4.5f; // an outlier, clamped below clip 1
        for (float &v : dy)
          v = float(normal(rng));
        float clips[rows] = {float(clip), float(clip * 0.95)};
        std::vector<float> out(rows * cols), dx(rows * cols);
        double dclip[rows];
        fakeQuantRows(x.data(), rows, cols, g, out.data(), clips);
        fakeQuantRowsBackward(x.data(), rows, cols, g, clips, dy.data(),
                              dx.data(), dclip);
        int64_t gs = group ? group : cols;
        for (int64_t r = 0; r < rows; ++r) {
          double dc = 0;
          for (int64_t g0 = 0; g0 < cols; g0 += gs) {
            std::vector<double> xs(x.begin() + r * cols + g0,
                                   x.begin() + r * cols + g0 + gs),
                w(dy.begin() + r * cols + g0, dy.begin() + r * cols + g0 + gs);
            Surrogate f(g, xs, clips[r]);
            // The surrogate is the quantizer at the point itself.
            std::vector<double> q0 = f(xs, clips[r]);
            for (int64_t i = 0; i < gs; ++i)
              ASSERT_NEAR(q0[i], out[r * cols + g0 + i], 1e-5);
            for (Side s : f.side)
              checkedClamped += s != Side::Inside;
            const double h = 1e-6;
            dc += (dot(w, f(xs, clips[r] + h)) - dot(w, f(xs, clips[r] - h))) /
                  (2 * h);
            for (int64_t i = 0; i < gs; ++i) {
              std::vector<double> xp = xs, xm = xs;
              xp[i] += h;
              xm[i] -= h;
              double fd =
                  (dot(w, f(xp, clips[r])) - dot(w, f(xm, clips[r]))) / (2 * h);
              EXPECT_NEAR(dx[r * cols + g0 + i], fd, 1e-4 * (1 + std::fabs(fd)))
                  << "sym " << sym << " group " << group << " clip " << clips[r]
                  << " row " << r << " value " << g0 + i;
            }
          }
          EXPECT_NEAR(dclip[r], dc, 1e-4 * (1 + std::fabs(dc)))
              << "sym " << sym << " group " << group << " clip " << clips[r];
          EXPECT_NE(dclip[r], 0.0);
        }
      }
  EXPECT_GT(checkedClamped, 0); // clamped values were exercised
}

// With a clip ratio held by the grid and no per-row clips, the forward is
// fakeQuantRows' own and the gradient of a clip shared by every row is the
// sum of the rows'.
TEST(Quantizer, ClipGradientWithoutRowClips) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> x(3 * 32), dy(3 * 32), dx1(x.size()), dx2(x.size());
  for (float &v : x)
    v = normal(rng);
  for (float &v : dy)
    v = normal(rng);
  QuantGrid g = grid(4, false, 0, 0.75); // exact in float
  float clips[3] = {0.75f, 0.75f, 0.75f};
  double d1[3], d2[3];
  fakeQuantRowsBackward(x.data(), 3, 32, g, nullptr, dy.data(), dx1.data(), d1);
  fakeQuantRowsBackward(x.data(), 3, 32, g, clips, dy.data(), dx2.data(), d2);
  for (int i = 0; i < 3; ++i)
    EXPECT_DOUBLE_EQ(d1[i], d2[i]);
  EXPECT_EQ(dx1, dx2);
  // RTN with per-row clips gives the forward's values.
  QuantizedWeight q;
  std::string error;
  ASSERT_TRUE(
      quantizeRTN(x.data(), 3, 32, grid(4, false), false, q, error, clips));
  std::vector<float> deq(x.size()), fq(x.size());
  q.dequantize(deq.data());
  fakeQuantRows(x.data(), 3, 32, g, fq.data());
  EXPECT_EQ(deq, fq);
}
