//===- CudaDriverTest.cpp - the CUDA runtime without (and with) a GPU -----===//
//
// The driver loader (missing library, cuInit failing, zero devices) against
// a fake libcuda (fake_libcuda.c, loaded through SQ_CUDA_LIBRARY), the
// host-side preparation of the kernels' data (Hadamard factors, integer
// GEMM plans, repacked weights) against the CPU numerics, and the whole C
// API of lib/Runtime/CUDA over a tiny hand-written model program on the fake
// device (memory is host memory; embedding, fp32 linear and add are computed
// by the fake, every other kernel launch is recorded and checked against
// KernelABI.h). Tests that need a real GPU skip without one.
//
//===----------------------------------------------------------------------===//

#include "CudaDriver.h"
#include "Repack.h"

#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Pack.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Runtime/ModelFormat.h"
#include "sq/Runtime/sq_runtime.h"

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace sq;
using namespace sq::cuda;

namespace {

/// Sets (or unsets, for nullptr) an environment variable for a scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    const char *old = std::getenv(name);
    had = old != nullptr;
    if (had)
      previous = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had)
      setenv(name.c_str(), previous.c_str(), 1);
    else
      unsetenv(name.c_str());
  }

private:
  std::string name, previous;
  bool had = false;
};

const char *kFake = SQ_FAKE_LIBCUDA;

} // namespace

//===----------------------------------------------------------------------===//
// The loader
//===----------------------------------------------------------------------===//

TEST(CudaDriver, MissingLibrary) {
  std::string error;
  EXPECT_EQ(loadDriver("/nonexistent", error), nullptr);
  EXPECT_EQ(error.rfind("no NVIDIA driver: /nonexistent not found (", 0), 0u)
      << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);

  ScopedEnv env("SQ_CUDA_LIBRARY", "/nonexistent");
  EXPECT_EQ(driverLibraryPath(), "/nonexistent");
  error.clear();
  EXPECT_EQ(globalDriver(error), nullptr);
  EXPECT_NE(error.find("/nonexistent not found"), std::string::npos) << error;
}

TEST(CudaDriver, DefaultLibraryName) {
  ScopedEnv env("SQ_CUDA_LIBRARY", nullptr);
  EXPECT_EQ(driverLibraryPath(), "libcuda.so.1");
  ScopedEnv empty("SQ_CUDA_LIBRARY", "");
  EXPECT_EQ(driverLibraryPath(), "libcuda.so.1");
}

TEST(CudaDriver, LibraryWithoutTheApi) {
  // A shared library that is not a driver.
  std::string error;
  EXPECT_EQ(loadDriver("libm.so.6", error), nullptr);
  EXPECT_EQ(error, "no NVIDIA driver: libm.so.6 lacks cuInit");
}

TEST(CudaDriver, InitFails) {
  ScopedEnv mode("FAKE_CUDA_MODE", "noinit");
  std::string error;
  std::unique_ptr<Driver> d = loadDriver(kFake, error);
  ASSERT_TRUE(d) << error;
  Device dev;
  Unavailable why;
  EXPECT_FALSE(openDevice(*d, -1, dev, error, why));
  EXPECT_EQ(why, Unavailable::InitFailed);
  EXPECT_EQ(error, "CUDA error CUDA_ERROR_NO_DEVICE (no CUDA-capable device "
                   "is detected) in cuInit");
}

TEST(CudaDriver, ZeroDevices) {
  ScopedEnv mode("FAKE_CUDA_MODE", "zero");
  std::string error;
  std::unique_ptr<Driver> d = loadDriver(kFake, error);
  ASSERT_TRUE(d) << error;
  Device dev;
  Unavailable why;
  EXPECT_FALSE(openDevice(*d, -1, dev, error, why));
  EXPECT_EQ(why, Unavailable::NoDevice);
  EXPECT_EQ(error, "no CUDA device: cuDeviceGetCount found 0 devices");
}

TEST(CudaDriver, FakeDevice) {
  ScopedEnv mode("FAKE_CUDA_MODE", "device");
  std::string error;
  std::unique_ptr<Driver> d = loadDriver(kFake, error);
  ASSERT_TRUE(d) << error;
  EXPECT_NE(d->cuFuncSetAttribute, nullptr);
  Device dev;
  Unavailable why;
  ASSERT_TRUE(openDevice(*d, -1, dev, error, why)) << error;
  EXPECT_EQ(why, Unavailable::None);
  EXPECT_EQ(dev.major, 8);
  EXPECT_EQ(dev.minor, 6);
  EXPECT_EQ(dev.name, "Fake GPU");
  EXPECT_EQ(dev.maxSharedOptin, 99 * 1024);
  closeDevice(*d, dev);

  ScopedEnv ordinal("SQ_CUDA_DEVICE", "3");
  EXPECT_FALSE(openDevice(*d, -1, dev, error, why));
  EXPECT_EQ(why, Unavailable::NoDevice);
  EXPECT_EQ(error, "no CUDA device: device 3 requested (SQ_CUDA_DEVICE), 1 "
                   "found");
}

TEST(CudaDriver, ErrorMessages) {
  std::string error;
  std::unique_ptr<Driver> d = loadDriver(kFake, error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(
      d->errorMessage(2, "cuMemAlloc"),
      "CUDA error CUDA_ERROR_OUT_OF_MEMORY (out of memory) in cuMemAlloc");
  EXPECT_EQ(d->errorMessage(12345, "cuLaunchKernel"),
            "CUDA error 12345 (unknown error) in cuLaunchKernel");
  // A code the driver does not name (the fake knows only a few).
  EXPECT_EQ(d->errorMessage(34, "cuInit"),
            "CUDA error CUDA_ERROR_STUB_LIBRARY (CUDA driver is a stub "
            "library) in cuInit");
  EXPECT_TRUE(d->check(0, "cuInit", error));
  EXPECT_FALSE(d->check(100, "cuInit", error));
  EXPECT_EQ(error, "CUDA error CUDA_ERROR_NO_DEVICE (no CUDA-capable device "
                   "is detected) in cuInit");
}

/// The toolkit's stub libcuda.so (when installed): cuInit fails.
TEST(CudaDriver, ToolkitStub) {
  const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (access(stub, R_OK) != 0)
    GTEST_SKIP() << stub << " is not installed";
  std::string error;
  std::unique_ptr<Driver> d = loadDriver(stub, error);
  ASSERT_TRUE(d) << error;
  Device dev;
  Unavailable why;
  EXPECT_FALSE(openDevice(*d, -1, dev, error, why));
  EXPECT_EQ(why, Unavailable::InitFailed);
  EXPECT_EQ(error, "CUDA error CUDA_ERROR_STUB_LIBRARY (CUDA driver is a stub "
                   "library) in cuInit");
}

/// The machine's own driver: on this machine (no GPU, no libcuda.so.1) a
/// "no device" class error; with a GPU, memory round trips.
TEST(CudaDriver, DefaultDriver) {
  ScopedEnv env("SQ_CUDA_LIBRARY", nullptr);
  std::string error;
  const Driver *d = globalDriver(error);
  Device dev;
  Unavailable why = Unavailable::NoDriver;
  if (!d || !openDevice(*d, -1, dev, error, why)) {
    EXPECT_TRUE(why == Unavailable::NoDriver ||
                why == Unavailable::InitFailed || why == Unavailable::NoDevice)
        << error;
    if (!d)
      EXPECT_EQ(error.rfind("no NVIDIA driver: libcuda.so.1 not found (", 0),
                0u)
          << error;
    else if (why == Unavailable::InitFailed)
      EXPECT_EQ(error.rfind("CUDA error ", 0), 0u) << error;
    GTEST_SKIP() << "no CUDA device: " << error;
  }
  CUdeviceptr p = 0;
  ASSERT_TRUE(d->check(d->cuMemAlloc(&p, 64), "cuMemAlloc", error)) << error;
  std::vector<uint8_t> in(64, 7), out(64, 0);
  EXPECT_TRUE(
      d->check(d->cuMemcpyHtoD(p, in.data(), 64), "cuMemcpyHtoD", error))
      << error;
  EXPECT_TRUE(d->check(d->cuMemsetD8(p, 0, 16), "cuMemsetD8", error)) << error;
  EXPECT_TRUE(
      d->check(d->cuMemcpyDtoH(out.data(), p, 64), "cuMemcpyDtoH", error))
      << error;
  EXPECT_TRUE(d->check(d->cuCtxSynchronize(), "cuCtxSynchronize", error))
      << error;
  for (int i = 0; i < 64; ++i)
    EXPECT_EQ(out[i], i < 16 ? 0 : 7) << i;
  d->cuMemFree(p);
  closeDevice(*d, dev);
}

//===----------------------------------------------------------------------===//
// Host-side preparation
//===----------------------------------------------------------------------===//

/// x (Q kron H_p) / sqrt(p): the formula of sq_hadamard in KernelABI.h.
static std::vector<float> applyFactor(const std::vector<float> &x, int64_t m,
                                      const std::vector<float> &q) {
  int64_t n = int64_t(x.size()), p = n / m;
  std::vector<float> y(n, 0.0f);
  for (int64_t a = 0; a < m; ++a)
    for (int64_t b = 0; b < p; ++b) {
      double s = 0;
      for (int64_t c = 0; c < m; ++c)
        for (int64_t d = 0; d < p; ++d) {
          double qca = m == 1 ? 1.0 : q[c * m + a];
          int sign = __builtin_popcountll(uint64_t(d & b)) % 2 ? -1 : 1;
          s += x[c * p + d] * qca * sign;
        }
      y[a * p + b] = float(s / std::sqrt(double(p)));
    }
  return y;
}

TEST(CudaRepack, HadamardFactorMatchesTheTransform) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  // Hadamard splits (1 * 2^k, 12, 20 * 2, 172 * 2) and the random fallback
  // (7 * 8, 3 * 2, 11).
  for (int64_t n : {1, 2, 64, 12, 24, 40, 344, 56, 6, 11}) {
    for (uint64_t seed : {0ull, 42ull}) {
      int64_t m = 0;
      std::vector<float> q;
      hadamardFactor(n, seed, m, q);
      ASSERT_EQ(n % m, 0) << n;
      int64_t p = n / m;
      EXPECT_EQ(p & (p - 1), 0) << n;
      EXPECT_EQ(q.size(), size_t(m == 1 ? 0 : m * m)) << n;
      std::vector<float> x(n);
      for (float &v : x)
        v = dist(rng);
      std::vector<float> want = x;
      numerics::orthogonalTransformInPlace(want.data(), n, seed);
      // A +-1 Hadamard factor stands for H_m / sqrt(m) (KernelABI.h).
      if (!q.empty() && std::fabs(q[0]) == 1.0f)
        for (float &v : q)
          v /= std::sqrt(float(m));
      std::vector<float> got = applyFactor(x, m, q);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(got[i], want[i], 1e-5) << "n " << n << " i " << i;
    }
  }
}

static rt::QLinearDesc qdesc(int64_t n, int64_t k, unsigned wbits,
                             int64_t wgroup, unsigned abits, bool asym,
                             int64_t agroup) {
  rt::QLinearDesc d;
  d.weight = 0;
  d.scales = 1;
  d.n = n;
  d.k = k;
  d.weightQuant.bits = wbits;
  d.weightQuant.group = wgroup;
  d.actQuant.bits = abits;
  d.actQuant.symmetric = !asym;
  d.actQuant.group = agroup;
  return d;
}

TEST(CudaRepack, Plans) {
  QGemmPlan p = planQGemm(qdesc(8, 100, 4, 0, 4, true, 0), 8, 6, true);
  EXPECT_TRUE(p.integer);
  EXPECT_TRUE(p.s4);
  EXPECT_EQ(p.kpad, 128);
  EXPECT_EQ(p.blockk, 128);
  EXPECT_EQ(p.blocks, 1);
  EXPECT_EQ(p.ablocks, 1);
  EXPECT_EQ(p.wblocks, 1);
  // sm_90 has no int4 mma (nor without the kernel): s8.
  EXPECT_FALSE(planQGemm(qdesc(8, 100, 4, 0, 4, true, 0), 9, 0, true).s4);
  EXPECT_FALSE(planQGemm(qdesc(8, 100, 4, 0, 4, true, 0), 8, 6, false).s4);
  EXPECT_TRUE(planQGemm(qdesc(8, 100, 4, 0, 4, true, 0), 8, 0, true).s4);
  EXPECT_TRUE(planQGemm(qdesc(8, 100, 4, 0, 4, true, 0), 8, 9, true).s4);
  // 8-bit activations or weights: s8.
  p = planQGemm(qdesc(8, 256, 4, 0, 8, true, 128), 8, 6, true);
  EXPECT_TRUE(p.integer);
  EXPECT_FALSE(p.s4);
  EXPECT_EQ(p.kpad, 256);
  EXPECT_EQ(p.blockk, 128);
  EXPECT_EQ(p.blocks, 2);
  EXPECT_EQ(p.ablocks, 1);
  EXPECT_EQ(p.wblocks, 2);
  p = planQGemm(qdesc(8, 256, 8, 0, 4, false, 0), 8, 6, true);
  EXPECT_TRUE(p.integer);
  EXPECT_FALSE(p.s4);
  // Weight groups finer than the activation's.
  p = planQGemm(qdesc(8, 256, 4, 64, 4, false, 128), 8, 6, true);
  EXPECT_TRUE(p.s4);
  EXPECT_EQ(p.blockk, 64);
  EXPECT_EQ(p.blocks, 4);
  EXPECT_EQ(p.ablocks, 2);
  EXPECT_EQ(p.wblocks, 1);
  // Blocks of 32: s8 only.
  p = planQGemm(qdesc(8, 256, 4, 32, 4, false, 0), 8, 6, true);
  EXPECT_TRUE(p.integer);
  EXPECT_FALSE(p.s4);
  EXPECT_EQ(p.ablocks, 8);
  // The float path: W4A16, asymmetric weights, blocks of 16, no nesting.
  EXPECT_FALSE(planQGemm(qdesc(8, 256, 4, 0, 0, false, 0), 8, 6, true).integer);
  rt::QLinearDesc asym = qdesc(8, 256, 4, 0, 4, false, 0);
  asym.weightQuant.symmetric = false;
  asym.zeros = 2;
  EXPECT_FALSE(planQGemm(asym, 8, 6, true).integer);
  EXPECT_FALSE(
      planQGemm(qdesc(8, 256, 4, 16, 4, false, 0), 8, 6, true).integer);
  EXPECT_FALSE(
      planQGemm(qdesc(8, 192, 4, 64, 4, false, 96), 8, 6, true).integer);
}

/// The qgemm formula of KernelABI.h on the repacked weight, against the
/// dequantized product of the executor's quantizers.
static void checkQGemm(int64_t n, int64_t k, unsigned wbits, int64_t wgroup,
                       unsigned abits, bool asym, int64_t agroup, int major,
                       int minor) {
  SCOPED_TRACE("n " + std::to_string(n) + " k " + std::to_string(k) + " w" +
               std::to_string(wbits) + "g" + std::to_string(wgroup) + " a" +
               std::to_string(abits) + "g" + std::to_string(agroup) + " sm_" +
               std::to_string(major * 10 + minor));
  rt::QLinearDesc d = qdesc(n, k, wbits, wgroup, abits, asym, agroup);
  QGemmPlan p = planQGemm(d, major, minor, true);
  ASSERT_TRUE(p.integer) << p.reason;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  const int64_t m = 3;
  // Weights: values and scales, packed as !sq.packed.
  numerics::QuantGrid wgrid;
  wgrid.bits = wbits;
  wgrid.group = wgroup;
  std::vector<float> wf(n * k), x(m * k);
  for (float &v : wf)
    v = dist(rng);
  for (float &v : x)
    v = dist(rng);
  numerics::QuantizedWeight qw;
  std::string error;
  ASSERT_TRUE(numerics::quantizeRTN(wf.data(), n, k, wgrid, false, qw, error));
  size_t rowBytes = numerics::packedBytes(k, wbits);
  std::vector<uint8_t> packed(n * rowBytes, 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      int v = qw.values[r * k + c];
      if (wbits == 8)
        packed[r * rowBytes + c] = uint8_t(int8_t(v));
      else
        packed[r * rowBytes + c / 2] |= uint8_t((v & 0xF) << (4 * (c % 2)));
    }
  std::vector<uint8_t> w;
  std::vector<int32_t> wsums;
  repackWeight(packed.data(), n, k, wbits, p, w, wsums);
  ASSERT_EQ(w.size(), size_t(n * (p.s4 ? p.kpad / 2 : p.kpad)));
  ASSERT_EQ(wsums.size(), size_t(n * p.blocks));
  auto wval = [&](int64_t j, int64_t c) {
    if (!p.s4)
      return int(int8_t(w[j * p.kpad + c]));
    int nib = (w[j * (p.kpad / 2) + c / 2] >> (4 * (c % 2))) & 0xF;
    return nib >= 8 ? nib - 16 : nib;
  };
  // Activations: codes as sq_quantize writes them.
  numerics::QuantGrid agrid;
  agrid.bits = abits;
  agrid.symmetric = !asym;
  agrid.group = agroup;
  int64_t ag = agroup ? agroup : k, ascalesPerRow = k / ag;
  std::vector<uint8_t> codes(m * p.kpad, 0);
  std::vector<float> ascales(m * ascalesPerRow);
  std::vector<int32_t> azeros(m * ascalesPerRow);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < ascalesPerRow; ++g) {
      float s, z;
      numerics::groupScale(x.data() + i * k + g * ag, ag, agrid, 1.0, s, z);
      int32_t zero = asym ? int32_t(z) : 1 << (abits - 1);
      ascales[i * ascalesPerRow + g] = s;
      azeros[i * ascalesPerRow + g] = zero;
      for (int64_t c = g * ag; c < (g + 1) * ag; ++c) {
        int64_t q = numerics::quantizeValue(x[i * k + c], s, z, agrid);
        codes[i * p.kpad + c] = uint8_t(asym ? q : q + (1 << (abits - 1)));
      }
    }
  // The reference: fake-quantized activations times dequantized weights.
  std::vector<float> xq(m * k), wd(n * k);
  numerics::fakeQuantRows(x.data(), m, k, agrid, xq.data());
  qw.dequantize(wd.data());
  int64_t wScalesPerRow = p.kpad / p.blockk / p.wblocks;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = 0;
      for (int64_t c = 0; c < k; ++c)
        want += double(xq[i * k + c]) * wd[j * k + c];
      double got = 0;
      for (int64_t b = 0; b < p.blocks; ++b) {
        int64_t dot = 0, sum = 0;
        for (int64_t c = b * p.blockk; c < (b + 1) * p.blockk; ++c) {
          dot += int64_t(codes[i * p.kpad + c]) * wval(j, c);
          sum += wval(j, c);
        }
        ASSERT_EQ(sum, wsums[j * p.blocks + b]);
        got += double(ascales[i * ascalesPerRow + b / p.ablocks]) *
               qw.scales[j * wScalesPerRow + b / p.wblocks] *
               double(dot - int64_t(azeros[i * ascalesPerRow + b / p.ablocks]) *
                                wsums[j * p.blocks + b]);
      }
      EXPECT_NEAR(got, want, 1e-4 * (1 + std::fabs(want))) << i << "," << j;
    }
}

TEST(CudaRepack, QGemmFormulaOnRepackedWeights) {
  checkQGemm(5, 100, 4, 0, 4, true, 0, 8, 6);     // s4, K padded
  checkQGemm(5, 100, 4, 0, 4, true, 0, 9, 0);     // s8, K padded
  checkQGemm(7, 256, 4, 64, 4, false, 128, 8, 6); // s4, groups
  checkQGemm(7, 256, 4, 128, 8, true, 64, 8, 6);  // s8 (8-bit codes)
  checkQGemm(4, 96, 8, 32, 8, false, 0, 8, 0);    // s8 weights, blocks 32
  checkQGemm(3, 75, 4, 0, 4, false, 0, 8, 6);     // odd K
}

TEST(CudaRepack, DequantizedWeight) {
  rt::QLinearDesc d = qdesc(2, 3, 4, 0, 0, false, 0);
  // Rows [1, -2, 7] and [-8, 0, 3], scales 0.5 and 2.
  std::vector<uint8_t> packed = {uint8_t(0x1 | (0xE << 4)), 0x7,
                                 uint8_t(0x8 | (0x0 << 4)), 0x3};
  std::vector<float> scales = {0.5f, 2.0f}, out;
  dequantizeWeight(packed.data(), scales.data(), nullptr, d, out);
  EXPECT_EQ(out, (std::vector<float>{0.5f, -1.0f, 3.5f, -16.0f, 0.0f, 6.0f}));
}
