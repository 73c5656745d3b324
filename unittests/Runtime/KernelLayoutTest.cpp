//===- KernelLayoutTest.cpp - kernel-layout weights in the sidecar --------===//
//
// The CPU kernels' weight layout as the compiler writes it into the weights
// sidecar (writeKernelLayout) and the runtime maps it (WeightsFile +
// viewPackedWeight): the same bytes as packWeight builds from the rows, the
// documented layout (KernelLayout.h) decoded back to the weight, the same
// GEMM bits, and the sidecar's checks (version, entry sizes, truncation).
//
//===----------------------------------------------------------------------===//

#include "QGemm.h"

#include "sq/Numerics/Pack.h"
#include "sq/Runtime/KernelLayout.h"
#include "sq/Runtime/ModelFormat.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <unistd.h>

using namespace sq;
using namespace sq::rt;

namespace {

struct Shape {
  int64_t n, k;
  unsigned bits;
  int64_t wGroup, aGroup;
};

/// A model with one quantized linear: slot 0 the fp32 scales, slot 1 the
/// weight (in the kernels' layout when integerPathLayout says so).
struct Sidecar {
  Shape s;
  std::vector<int8_t> values;
  std::vector<uint8_t> rows; // !sq.packed
  std::vector<float> scales;
  Manifest m;
  std::string manifestText, bytes;
  KernelLayout layout;

  explicit Sidecar(Shape s, uint32_t seed = 1) : s(s) {
    std::mt19937 rng(seed);
    int lo = s.bits == 4 ? -8 : -128, hi = s.bits == 4 ? 7 : 127;
    std::uniform_int_distribution<int> val(lo, hi);
    values.resize(s.n * s.k);
    for (auto &v : values)
      v = int8_t(val(rng));
    rows.assign(s.n * numerics::packedBytes(s.k, s.bits), 0);
    if (s.bits == 4)
      EXPECT_TRUE(numerics::packInt4Rows(values.data(), s.n, s.k, rows.data()));
    else
      std::memcpy(rows.data(), values.data(), values.size());
    int64_t groups = s.wGroup ? s.k / s.wGroup : 1;
    std::uniform_real_distribution<float> sc(0.001f, 0.05f);
    scales.resize(s.n * groups);
    for (auto &v : scales)
      v = sc(rng);

    m.numSlots = 2;
    WeightDesc sd;
    sd.slot = 0;
    sd.name = "scales";
    sd.rows = s.n;
    sd.cols = groups;
    WeightDesc wd;
    wd.slot = 1;
    wd.name = "layers.0.q_proj";
    wd.packedBits = s.bits;
    wd.rows = s.n;
    wd.cols = s.k;
    QLinearDesc q;
    q.weight = 1;
    q.scales = 0;
    q.n = s.n;
    q.k = s.k;
    q.weightQuant.bits = s.bits;
    q.weightQuant.group = s.wGroup;
    q.actQuant.bits = 4;
    q.actQuant.symmetric = false;
    q.actQuant.group = s.aGroup;
    EXPECT_TRUE(integerPathLayout(q, layout));
    wd.kernelBlock = layout.blockSize;
    m.weights = {sd, wd};
    m.qlinears = {q};
    manifestText = m.serialize();
    // As the manifest the library carries: parsed back.
    Manifest parsed;
    std::string error;
    EXPECT_TRUE(Manifest::parse(manifestText, parsed, error)) << error;
    EXPECT_EQ(parsed.weights[1].kernelBlock, layout.blockSize);
    EXPECT_EQ(parsed.weights[1].bytes(), layout.bytes());

    // The sidecar, as Program.cpp's writeWeights writes it.
    uint64_t header, total;
    std::vector<uint64_t> offsets;
    planSidecar(m, header, offsets, total);
    bytes = sidecarHeader(m, fnv1a(manifestText.data(), manifestText.size()));
    bytes.resize(total, '\0');
    std::memcpy(&bytes[offsets[0]], scales.data(), scales.size() * 4);
    writeKernelLayout(layout, rows.data(), scales.data(),
                      reinterpret_cast<uint8_t *>(&bytes[offsets[1]]));
  }
};

std::string tempFile(const std::string &bytes, const char *tag) {
  std::string path = ::testing::TempDir() + "sq-kernel-layout-" + tag + "-" +
                     std::to_string(getpid()) + ".weights";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

const Shape kShapes[] = {
    {100, 96, 4, 0, 0},   // N and K padded, per channel / per token
    {64, 256, 4, 32, 0},  // weight groups
    {130, 256, 4, 0, 64}, // activation groups
    {70, 128, 4, 64, 32}, // both, activations finer
    {64, 192, 8, 0, 0},   // int8
    {33, 128, 8, 32, 64}, // int8, groups
};

TEST(KernelLayout, SidecarViewEqualsPackWeight) {
  for (const Shape &s : kShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.n) + " K=" + std::to_string(s.k) +
                 " w" + std::to_string(s.bits) + " wg=" +
                 std::to_string(s.wGroup) + " ag=" + std::to_string(s.aGroup));
    Sidecar sc(s);
    std::string path = tempFile(sc.bytes, "view");
    WeightsFile file;
    std::string error;
    bool io = false;
    ASSERT_TRUE(file.open(path, sc.m, sc.manifestText, error, io)) << error;
    unlink(path.c_str());
    PackedWeight view;
    ASSERT_TRUE(viewPackedWeight(sc.layout, file.data(1),
                                 sc.m.weights[1].bytes(), view, error))
        << error;
    EXPECT_EQ(view.data, file.data(1)); // mapped, not copied
    EXPECT_FALSE(view.owned);

    PackedWeight built;
    ASSERT_TRUE(packWeight(sc.rows.data(), sc.scales.data(), s.n, s.k, s.bits,
                           s.wGroup, s.aGroup, built, error))
        << error;
    ASSERT_TRUE(built.owned);
    EXPECT_EQ(built.blockSize, view.blockSize);
    EXPECT_EQ(built.blocks, view.blocks);
    EXPECT_EQ(built.panels, view.panels);
    EXPECT_EQ(built.kPadded, view.kPadded);
    EXPECT_EQ(built.group, view.group);
    EXPECT_EQ(built.actGroup, view.actGroup);
    EXPECT_EQ(0, std::memcmp(built.data, view.data, view.dataBytes()));
    EXPECT_EQ(0,
              std::memcmp(built.blockSums, view.blockSums, view.sumsBytes()));
    EXPECT_EQ(0, std::memcmp(built.blockScales, view.blockScales,
                             view.scalesBytes()));

    // The documented layout, decoded back: every weight, sum and scale.
    const int64_t wg = s.wGroup ? s.wGroup : s.k;
    bool ok = true;
    for (int64_t n = 0; n < view.panels * 64 && ok; ++n) {
      int64_t panel = n / 64, col = n % 64;
      const uint8_t *p = view.data + panel * view.panelBytes();
      for (int64_t k = 0; k < view.kPadded && ok; ++k) {
        int64_t c = k / 8, t = k % 8;
        int v;
        if (s.bits == 4) {
          uint8_t byte = p[c * 256 + col * 4 + t % 4];
          v = (t < 4 ? byte & 0xF : byte >> 4) - 8;
        } else {
          v = int8_t(p[c * 512 + (t / 4) * 256 + col * 4 + t % 4]);
        }
        int want = n < s.n && k < s.k ? sc.values[n * s.k + k] : 0;
        if (v != want) {
          ADD_FAILURE() << "w[" << n << ", " << k << "] = " << v << ", want "
                        << want;
          ok = false;
        }
      }
      for (int64_t b = 0; b < view.blocks && ok; ++b) {
        int32_t sum = 0;
        float scale = 0;
        if (n < s.n) {
          for (int64_t k = b * view.blockSize; k < (b + 1) * view.blockSize;
               ++k)
            sum += sc.values[n * s.k + k];
          scale = sc.scales[n * (s.k / wg) + b * view.blockSize / wg];
        }
        int64_t at = (panel * view.blocks + b) * 64 + col;
        EXPECT_EQ(view.blockSums[at], sum);
        EXPECT_EQ(view.blockScales[at], scale);
      }
    }

    // The kernels give the same bits on the mapped layout as on their own.
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int64_t m : {1, 5}) {
      std::vector<float> x(m * s.k);
      for (auto &v : x)
        v = nd(rng);
      QuantizedActs acts;
      quantizeActivations(x.data(), m, s.k, 4, false, s.aGroup, 1.0, acts);
      for (KernelPath path :
           {KernelPath::Scalar, KernelPath::AVX2, KernelPath::AVX512VNNI}) {
        if (!kernelPathSupported(path))
          continue;
        std::vector<float> a(m * s.n), b(m * s.n);
        qgemm(acts, built, a.data(), path);
        qgemm(acts, view, b.data(), path);
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4))
            << kernelPathName(path) << " M=" << m;
      }
    }
  }
}

TEST(KernelLayout, ViewChecksSizeAndAlignment) {
  Sidecar sc({100, 96, 4, 0, 0});
  std::vector<uint8_t> buf(sc.layout.bytes() + 128);
  uint8_t *aligned = buf.data() + (64 - uintptr_t(buf.data()) % 64) % 64;
  PackedWeight w;
  std::string error;
  EXPECT_TRUE(viewPackedWeight(sc.layout, aligned, sc.layout.bytes(), w, error))
      << error;
  EXPECT_FALSE(
      viewPackedWeight(sc.layout, aligned, sc.layout.bytes() - 1, w, error));
  EXPECT_NE(error.find("expected"), std::string::npos) << error;
  EXPECT_FALSE(
      viewPackedWeight(sc.layout, aligned + 4, sc.layout.bytes(), w, error));
  EXPECT_NE(error.find("aligned"), std::string::npos) << error;
}

TEST(KernelLayout, SidecarChecksAtOpen) {
  Sidecar sc({100, 96, 4, 0, 0});
  auto openError = [&](const std::string &bytes, const char *tag) {
    std::string path = tempFile(bytes, tag);
    WeightsFile file;
    std::string error;
    bool io = false;
    bool ok = file.open(path, sc.m, sc.manifestText, error, io);
    unlink(path.c_str());
    EXPECT_FALSE(ok) << tag;
    EXPECT_FALSE(io) << tag;
    // One line naming the file.
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    return error;
  };
  // A sidecar of the previous format (version 1, rows only).
  std::string old = sc.bytes;
  old[8] = 1;
  EXPECT_NE(openError(old, "old")
                .find("weights file version 1, expected " +
                      std::to_string(kSidecarVersion)),
            std::string::npos);
  // The kernel-layout entry one byte short of what its manifest implies.
  std::string shortEntry = sc.bytes;
  uint64_t header, total;
  std::vector<uint64_t> offsets;
  planSidecar(sc.m, header, offsets, total);
  shortEntry[32 + 16 * 1 + 8] -= 1; // weight 1's byte count, low byte
  EXPECT_NE(openError(shortEntry, "entry")
                .find("corrupt entry for weight 'layers.0.q_proj'"),
            std::string::npos);
  // Cut in the middle of the kernel-layout entry.
  EXPECT_NE(
      openError(sc.bytes.substr(0, offsets[1] + sc.layout.bytes() / 2), "cut")
          .find("truncated"),
      std::string::npos);
}

TEST(KernelLayout, ManifestRejectsBadKernelBlocks) {
  Manifest m;
  std::string error;
  // A block that does not divide K, one on a float weight, a negative one.
  for (const char *w : {"weight 0 4 0 8 64 48 w", "weight 0 0 0 8 64 32 w",
                        "weight 0 4 0 8 64 -1 w", "weight 0 4 0 8 64 128 w"}) {
    EXPECT_FALSE(Manifest::parse(
        std::string("sq-model 2\nslots 1\n") + w + "\nend\n", m, error))
        << w;
    EXPECT_NE(error.find("line 3"), std::string::npos) << error;
  }
  ASSERT_TRUE(Manifest::parse(
      "sq-model 2\nslots 1\nweight 0 4 0 8 64 32 w\nend\n", m, error))
      << error;
  EXPECT_EQ(m.weights[0].bytes(), kernelLayoutBytes(8, 64, 4, 32));
  // 1 panel x 64 columns x 64 K x 4 bits, then sums and scales [1, 2, 64].
  EXPECT_EQ(m.weights[0].bytes(), 64u * 64 / 2 + 2 * (2 * 64 * 4));
}

TEST(KernelLayout, IntegerPathCondition) {
  QLinearDesc q;
  q.n = 64;
  q.k = 128;
  q.weightQuant.bits = 4;
  q.actQuant.bits = 4;
  KernelLayout l;
  EXPECT_TRUE(integerPathLayout(q, l));
  EXPECT_EQ(l.blockSize, 128);
  q.actQuant.group = 32;
  q.weightQuant.group = 64;
  EXPECT_TRUE(integerPathLayout(q, l));
  EXPECT_EQ(l.blockSize, 32);
  QLinearDesc w = q;
  w.actQuant.bits = 0; // weight-only: float path
  EXPECT_FALSE(integerPathLayout(w, l));
  w = q;
  w.weightQuant.symmetric = false;
  EXPECT_FALSE(integerPathLayout(w, l));
  w = q;
  w.zeros = 3;
  EXPECT_FALSE(integerPathLayout(w, l));
  w = q;
  w.weightQuant.bits = 3;
  EXPECT_FALSE(integerPathLayout(w, l));
  w = q;
  w.weightQuant.group = 48; // does not nest with 32
  w.k = 96;
  EXPECT_FALSE(integerPathLayout(w, l));
}

} // namespace
