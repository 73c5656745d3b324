//===- QGemmTest.cpp - the CPU runtime's quantized GEMM kernels -----------===//
//
// Every kernel path this CPU runs against a double-precision evaluation of
// the formula in QGemm.h, quantizeActivations against numerics'
// fakeQuantRows, the thread pool, and the SQ_CPU_KERNEL override.
//
//===----------------------------------------------------------------------===//

#include "QGemm.h"

#include "sq/Numerics/Pack.h"
#include "sq/Numerics/Quantize.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

using namespace sq;
using namespace sq::rt;

namespace {

std::vector<KernelPath> availablePaths() {
  std::vector<KernelPath> paths;
  for (KernelPath p : {KernelPath::Scalar, KernelPath::AVX2,
                       KernelPath::AVX512VNNI, KernelPath::AMX})
    if (kernelPathSupported(p))
      paths.push_back(p);
  return paths;
}

/// A random weight [n, k] with its Pack.h bytes and scales.
struct TestWeight {
  int64_t n, k, group;
  unsigned bits;
  std::vector<int8_t> values;
  std::vector<uint8_t> packed;
  std::vector<float> scales;
};

TestWeight makeWeight(int64_t n, int64_t k, unsigned bits, int64_t group,
                      std::mt19937 &rng, bool extreme = false) {
  TestWeight w{n, k, group, bits, {}, {}, {}};
  int lo = bits == 4 ? -8 : -128, hi = bits == 4 ? 7 : 127;
  std::uniform_int_distribution<int> val(lo, hi), coin(0, 1);
  w.values.resize(n * k);
  for (auto &v : w.values)
    v = static_cast<int8_t>(extreme ? (coin(rng) ? lo : hi) : val(rng));
  size_t rowBytes = numerics::packedBytes(k, bits);
  w.packed.assign(n * rowBytes, 0);
  if (bits == 4)
    EXPECT_TRUE(numerics::packInt4Rows(w.values.data(), n, k, w.packed.data()));
  else
    std::memcpy(w.packed.data(), w.values.data(), n * k);
  int64_t groups = group > 0 ? k / group : 1;
  std::uniform_real_distribution<float> sc(0.001f, 0.05f);
  w.scales.resize(n * groups);
  for (auto &s : w.scales)
    s = sc(rng);
  return w;
}

std::vector<float> randomActs(int64_t m, int64_t k, std::mt19937 &rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * k);
  for (int64_t i = 0; i < m * k; ++i)
    x[i] = nd(rng) + (i % 7 == 0 ? 0.7f : 0.0f); // a little asymmetry
  return x;
}

/// The formula of QGemm.h in double; `mag` gets sum |terms| for tolerances.
void reference(const QuantizedActs &a, const TestWeight &w,
               std::vector<double> &out, std::vector<double> &mag) {
  int64_t ag = a.group > 0 ? a.group : a.k;
  int64_t wg = w.group > 0 ? w.group : w.k;
  int64_t actGroups = a.k / ag, wGroups = w.k / wg;
  out.assign(a.m * w.n, 0.0);
  mag.assign(a.m * w.n, 0.0);
  for (int64_t m = 0; m < a.m; ++m)
    for (int64_t n = 0; n < w.n; ++n) {
      double s = 0, t = 0;
      for (int64_t k = 0; k < a.k; ++k) {
        double q = a.codes[m * a.kPadded + k];
        double z = a.zeros[m * actGroups + k / ag];
        double sa = a.scales[m * actGroups + k / ag];
        double sw = w.scales[n * wGroups + k / wg];
        double term = (q - z) * w.values[n * w.k + k] * sa * sw;
        s += term;
        t += std::fabs(term);
      }
      out[m * w.n + n] = s;
      mag[m * w.n + n] = t;
    }
}

struct Case {
  int64_t m, n, k;
  unsigned wBits, aBits;
  bool symmetric;
  int64_t wGroup, aGroup;
};

std::string describe(const Case &c) {
  return "M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) +
         " K=" + std::to_string(c.k) + " w" + std::to_string(c.wBits) + "a" +
         std::to_string(c.aBits) + (c.symmetric ? " sym" : " asym") +
         " wg=" + std::to_string(c.wGroup) + " ag=" + std::to_string(c.aGroup);
}

/// Runs one case on every path and checks against the reference; all paths
/// must also agree bit for bit.
void checkCase(const Case &c, uint32_t seed) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(seed);
  TestWeight w = makeWeight(c.n, c.k, c.wBits, c.wGroup, rng);
  std::vector<float> x = randomActs(c.m, c.k, rng);
  QuantizedActs acts;
  quantizeActivations(x.data(), c.m, c.k, c.aBits, c.symmetric, c.aGroup, 1.0,
                      acts);
  PackedWeight pw;
  std::string error;
  ASSERT_TRUE(packWeight(w.packed.data(), w.scales.data(), c.n, c.k, c.wBits,
                         c.wGroup, c.aGroup, pw, error))
      << error;
  std::vector<double> ref, mag;
  reference(acts, w, ref, mag);
  std::vector<float> first;
  for (KernelPath path : availablePaths()) {
    SCOPED_TRACE(kernelPathName(path));
    std::vector<float> out(c.m * c.n, -1.0f);
    qgemm(acts, pw, out.data(), path);
    int bad = 0;
    for (int64_t i = 0; i < c.m * c.n && bad < 5; ++i) {
      double tol = 1e-5 * mag[i] + 1e-30;
      if (!(std::fabs(out[i] - ref[i]) <= tol)) {
        ++bad;
        ADD_FAILURE() << "at m=" << i / c.n << " n=" << i % c.n << ": "
                      << out[i] << " vs " << ref[i];
      }
    }
    if (first.empty())
      first = out;
    else
      EXPECT_EQ(
          0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
          << "differs from the scalar path";
  }
}

} // namespace

TEST(QGemm, PathsAvailable) {
  auto paths = availablePaths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), KernelPath::Scalar);
#if defined(__x86_64__)
  // The CI machine has both; report what this one has.
  for (KernelPath p : paths)
    std::printf("path available: %s\n", kernelPathName(p));
#endif
}

TEST(QGemm, PerChannelPerToken) {
  uint32_t seed = 1;
  for (unsigned wBits : {4u, 8u})
    for (unsigned aBits : {4u, 8u})
      for (bool sym : {true, false})
        for (int64_t k : {64, 100, 344, 512})
          for (int64_t m : {1, 3, 16, 33})
            checkCase({m, 67, k, wBits, aBits, sym, 0, 0}, seed++);
}

TEST(QGemm, WeightGroups) {
  uint32_t seed = 100;
  for (unsigned wBits : {4u, 8u})
    for (int64_t g : {32, 64, 128})
      for (int64_t m : {1, 3, 16, 33})
        checkCase({m, 131, 384, wBits, 4, false, g, 0}, seed++);
}

TEST(QGemm, ActivationGroups) {
  uint32_t seed = 200;
  for (unsigned aBits : {4u, 8u})
    for (bool sym : {true, false})
      for (int64_t g : {32, 64, 128})
        for (int64_t m : {1, 3, 16, 33})
          checkCase({m, 65, 384, 4, aBits, sym, 0, g}, seed++);
}

TEST(QGemm, MixedGroupsAndPaddedK) {
  uint32_t seed = 300;
  // K = 352 = 11 x 32 is not a multiple of 64; K = 96 has one 64-chunk
  // and a half.
  for (unsigned wBits : {4u, 8u}) {
    checkCase({5, 33, 352, wBits, 8, false, 32, 32}, seed++);
    checkCase({17, 33, 352, wBits, 4, true, 0, 32}, seed++);
    checkCase({16, 33, 352, wBits, 8, true, 32, 0}, seed++);
    checkCase({33, 129, 384, wBits, 8, false, 128, 64}, seed++);
    checkCase({7, 9, 96, wBits, 4, false, 96 / 4, 0}, seed++); // group 24
    checkCase({1, 1, 1, wBits, 8, false, 0, 0}, seed++);
  }
}

// The AMX path takes 32-row tiles (the rest of the rows go to the VNNI
// tiles) over K tiles of 64 within each kernel block: several row tiles, a
// remainder, panels past the first, one and several blocks; the same bits
// as every other path (checkCase compares them).
TEST(QGemm, RowTilesOfThirtyTwo) {
  uint32_t seed = 400;
  for (unsigned wBits : {4u, 8u})
    for (int64_t m : {32, 64, 97}) {
      checkCase({m, 130, 256, wBits, 4, true, 0, 0}, seed++);
      checkCase({m, 67, 384, wBits, 8, false, 128, 0}, seed++);
      checkCase({m, 67, 384, wBits, 4, true, 0, 64}, seed++);
    }
}

// The GEMV reads groups of 4 panels (256 columns) as separate streams: a
// group and a rest, one and several blocks, both weight widths.
TEST(QGemm, GemvPanelGroups) {
  uint32_t seed = 500;
  for (unsigned wBits : {4u, 8u})
    for (int64_t n : {256, 300, 577}) {
      checkCase({1, n, 384, wBits, 4, true, 0, 0}, seed++);
      checkCase({1, n, 384, wBits, 8, false, 128, 0}, seed++);
      checkCase({1, n, 384, wBits, 4, true, 0, 64}, seed++);
    }
}

TEST(QGemm, ExtremeValuesNoSaturation) {
  // Codes 0/255 against weights -128/127 (and -8/7): the worst case for
  // vpmaddubsw's int16 saturation.
  std::mt19937 rng(7);
  for (unsigned wBits : {4u, 8u}) {
    SCOPED_TRACE(wBits);
    int64_t m = 7, n = 70, k = 1000;
    TestWeight w = makeWeight(n, k, wBits, 0, rng, true);
    QuantizedActs acts;
    acts.m = m;
    acts.k = k;
    acts.kPadded = 1024;
    acts.codes.assign(m * acts.kPadded, 0);
    std::uniform_int_distribution<int> coin(0, 3);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k; ++i)
        acts.codes[r * acts.kPadded + i] = coin(rng) ? 255 : 0;
    acts.scales.assign(m, 0.01f);
    acts.zeros.assign(m, 3);
    PackedWeight pw;
    std::string error;
    ASSERT_TRUE(packWeight(w.packed.data(), w.scales.data(), n, k, wBits, 0, 0,
                           pw, error));
    std::vector<double> ref, mag;
    reference(acts, w, ref, mag);
    for (KernelPath path : availablePaths()) {
      SCOPED_TRACE(kernelPathName(path));
      std::vector<float> out(m * n);
      qgemm(acts, pw, out.data(), path);
      for (int64_t i = 0; i < m * n; ++i)
        ASSERT_NEAR(out[i], ref[i], 1e-5 * mag[i]) << "at " << i;
    }
  }
}

TEST(QGemm, MismatchedGroupsGiveNaN) {
  std::mt19937 rng(9);
  TestWeight w = makeWeight(8, 128, 4, 0, rng);
  PackedWeight pw;
  std::string error;
  ASSERT_TRUE(
      packWeight(w.packed.data(), w.scales.data(), 8, 128, 4, 0, 0, pw, error));
  std::vector<float> x = randomActs(2, 128, rng);
  QuantizedActs acts;
  quantizeActivations(x.data(), 2, 128, 8, false, 32, 1.0, acts);
  std::vector<float> out(16, 0.0f);
  qgemm(acts, pw, out.data(), KernelPath::Scalar);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_FALSE(packWeight(w.packed.data(), w.scales.data(), 8, 128, 4, 48, 0,
                          pw, error));
  EXPECT_FALSE(
      packWeight(w.packed.data(), w.scales.data(), 8, 128, 3, 0, 0, pw, error));
}

TEST(QGemm, QuantizeActivationsMatchesFakeQuant) {
  std::mt19937 rng(11);
  for (unsigned bits : {4u, 8u})
    for (bool sym : {true, false})
      for (int64_t group : {0, 32, 128})
        for (double clip : {1.0, 0.9}) {
          int64_t m = 5, k = 384;
          SCOPED_TRACE(std::to_string(bits) + (sym ? " sym" : " asym") +
                       " group " + std::to_string(group) + " clip " +
                       std::to_string(clip));
          std::vector<float> x = randomActs(m, k, rng);
          // A zero row and a constant row.
          std::fill(x.begin(), x.begin() + k, 0.0f);
          std::fill(x.begin() + k, x.begin() + 2 * k, 0.25f);
          numerics::QuantGrid grid;
          grid.bits = bits;
          grid.symmetric = sym;
          grid.group = group;
          grid.clip = clip;
          std::vector<float> fake(m * k);
          numerics::fakeQuantRows(x.data(), m, k, grid, fake.data());
          QuantizedActs acts;
          ThreadPool pool(2);
          quantizeActivations(x.data(), m, k, bits, sym, group, clip, acts,
                              &pool);
          ASSERT_EQ(acts.kPadded, 384);
          int64_t g = group ? group : k, groups = k / g;
          ASSERT_EQ(acts.scales.size(), size_t(m * groups));
          for (int64_t r = 0; r < m; ++r)
            for (int64_t i = 0; i < k; ++i) {
              int q = acts.codes[r * acts.kPadded + i];
              ASSERT_LE(q, (1 << bits) - 1);
              float z = float(acts.zeros[r * groups + i / g]);
              float s = acts.scales[r * groups + i / g];
              ASSERT_EQ((float(q) - z) * s, fake[r * k + i])
                  << "row " << r << " col " << i;
            }
        }
  // Padding codes are zero.
  std::vector<float> x = randomActs(3, 100, rng);
  QuantizedActs acts;
  quantizeActivations(x.data(), 3, 100, 4, true, 0, 1.0, acts);
  ASSERT_EQ(acts.kPadded, 128);
  numerics::QuantGrid grid; // 4 bits, symmetric, per token
  std::vector<float> fake(3 * 100);
  numerics::fakeQuantRows(x.data(), 3, 100, grid, fake.data());
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t i = 0; i < 100; ++i) // a tail of 4 after 6 x 16
      ASSERT_EQ((float(acts.codes[r * 128 + i]) - float(acts.zeros[r])) *
                    acts.scales[r],
                fake[r * 100 + i]);
    for (int64_t i = 100; i < 128; ++i)
      EXPECT_EQ(acts.codes[r * 128 + i], 0);
  }
}

TEST(QGemm, ThreadCountDoesNotChangeResults) {
  std::mt19937 rng(13);
  for (int64_t m : {1, 16, 200}) {
    int64_t n = 300, k = 512;
    TestWeight w = makeWeight(n, k, 4, 128, rng);
    std::vector<float> x = randomActs(m, k, rng);
    QuantizedActs acts;
    quantizeActivations(x.data(), m, k, 4, false, 0, 1.0, acts);
    PackedWeight pw;
    std::string error;
    ASSERT_TRUE(packWeight(w.packed.data(), w.scales.data(), n, k, 4, 128, 0,
                           pw, error));
    for (KernelPath path : availablePaths()) {
      SCOPED_TRACE(kernelPathName(path));
      std::vector<float> serial(m * n);
      qgemm(acts, pw, serial.data(), path);
      for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        ASSERT_EQ(pool.size(), threads);
        std::vector<float> out(m * n);
        qgemm(acts, pw, out.data(), path, &pool);
        EXPECT_EQ(0, std::memcmp(serial.data(), out.data(),
                                 out.size() * sizeof(float)))
            << threads << " threads, M = " << m;
      }
    }
  }
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 7, 1000, 12345}) {
      std::vector<std::atomic<int>> hits(n);
      for (auto &h : hits)
        h = 0;
      pool.parallelFor(n, [&](int64_t b, int64_t e) {
        ASSERT_LT(b, e);
        for (int64_t i = b; i < e; ++i)
          hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(hits[i].load(), 1) << i;
    }
  }
}

TEST(ThreadPool, ConcurrentCallersAndNesting) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallelFor(100, [&](int64_t b, int64_t e) {
          // A nested call runs inline.
          pool.parallelFor(e - b,
                           [&](int64_t b2, int64_t e2) { total += e2 - b2; });
        });
    });
  for (auto &t : callers)
    t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 100);
}

TEST(ThreadPool, SizeFromEnvironment) {
  setenv("SQ_NUM_THREADS", "3", 1);
  {
    ThreadPool pool;
    EXPECT_EQ(pool.size(), 3);
  }
  unsetenv("SQ_NUM_THREADS");
  ThreadPool pool;
  EXPECT_GE(pool.size(), 1);
  EXPECT_GE(ThreadPool::global().size(), 1);
}

TEST(QGemm, KernelOverride) {
  unsetenv("SQ_CPU_KERNEL");
  std::string note;
  KernelPath best = selectKernelPath(&note);
  EXPECT_TRUE(note.empty());
  EXPECT_TRUE(kernelPathSupported(best));
  EXPECT_EQ(best, availablePaths().back());

  setenv("SQ_CPU_KERNEL", "scalar", 1);
  EXPECT_EQ(selectKernelPath(&note), KernelPath::Scalar);
  for (KernelPath p : availablePaths()) {
    setenv("SQ_CPU_KERNEL", kernelPathName(p), 1);
    note.clear();
    EXPECT_EQ(selectKernelPath(&note), p);
    EXPECT_TRUE(note.empty()) << note;
  }
  setenv("SQ_CPU_KERNEL", "neon", 1);
  note.clear();
  EXPECT_EQ(selectKernelPath(&note), best);
  EXPECT_NE(note.find("neon"), std::string::npos);
  unsetenv("SQ_CPU_KERNEL");
}
