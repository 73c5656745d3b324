//===- gpu_gemm_bench.cpp - the GPU GEMM kernels vs cuBLAS bf16 -----------===//
//
// Times the tensor-core GEMMs of the kernel library (sq_qgemm_s4,
// sq_qgemm_s8; lib/Runtime/CUDA/KernelABI.h) on LLaMA-7B projection shapes
// against cuBLAS bf16 (cublasGemmEx, bf16 A/B/C, fp32 compute) in the same
// process, and checks sampled outputs of the SQ kernels against a CPU
// reference of the KernelABI formula (issue #10).
//
//   lib/Conversion/SQToNVVM/emit_ptx.sh lib/Conversion/SQToNVVM/Kernels.mlir \
//     86 sq_kernels.ptx
//   build/bench/gpu_gemm_bench sq_kernels.ptx [--min-ms 20] [--repeats 5]
//   build/bench/gpu_gemm_bench --probe     # "SM PEAK_GB/s NAME" and exit
//   bench/gpu_ratios.sh                     # PTX + this + decode
//
// The driver is loaded with SQ's own loader (CudaDriver.h: dlopen of
// libcuda.so.1 or $SQ_CUDA_LIBRARY); without a driver or device the program
// prints "gpu_gemm_bench: skipped: <why>" and exits 0. cuBLAS is dlopen()ed
// too ($SQ_CUBLAS_LIBRARY, libcublas.so.13, .so.12, .so): nothing CUDA is
// linked. Without cuBLAS the SQ columns are still printed.
//
// Shapes: M = 1, 16, 128, 512 x (K, N) = (4096, 4096), (4096, 11008),
// (11008, 4096). Per channel: blockk = kpad, ablocks = wblocks = 1. Codes
// are random u8 (s8 kernel: 0..255) or u4 (s4 kernel: 0..15), weights random
// s8 (-127..127) or s4 (-8..7), scales random. TOP/s = 2 M N K / time. The
// weights (and cuBLAS's) are cycled over copies totalling >= 2x the L2 size,
// so M = 1 reads DRAM as decoding does; its weight bytes / time is compared
// with the peak bandwidth (2 x memory clock x bus width).
//
// Timing: CUDA events around a batch of launches (resolved from the driver
// library by name; the batch is queued behind device memsets so that the
// host's launch rate does not limit short kernels), best of --repeats
// batches of about --min-ms each (at most 500 launches); without events
// cuCtxSynchronize + steady_clock. Exit status: 0, or 1 if a check or a CUDA
// call failed.
//
//===----------------------------------------------------------------------===//

#include "CudaDriver.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace sq::cuda;

namespace {

// Device attributes (values of cuda.h; the loader declares only the ones the
// runtime needs).
constexpr int kAttrMultiprocessors = 16;
constexpr int kAttrMemoryClockKHz = 36;
constexpr int kAttrBusWidthBits = 37;
constexpr int kAttrL2Bytes = 38;

// cuBLAS (values of cublas_api.h and library_types.h).
using cublasHandle_t = struct cublasContext *;
using cublasStatus_t = int;
constexpr int CUBLAS_OP_N = 0;
constexpr int CUBLAS_OP_T = 1;
constexpr int CUDA_R_16BF = 14;
constexpr int CUBLAS_COMPUTE_32F = 68;
constexpr int CUBLAS_GEMM_DEFAULT = -1;

struct Cublas {
  cublasStatus_t (*create)(cublasHandle_t *) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*gemmEx)(cublasHandle_t, int transa, int transb, int m, int n,
                           int k, const void *alpha, const void *a, int atype,
                           int lda, const void *b, int btype, int ldb,
                           const void *beta, void *c, int ctype, int ldc,
                           int computeType, int algo) = nullptr;
  const char *(*statusString)(cublasStatus_t) = nullptr; // optional
  cublasHandle_t handle = nullptr;
  std::string path;

  std::string status(cublasStatus_t s) const {
    std::string m = "cuBLAS status " + std::to_string(s);
    if (statusString)
      if (const char *t = statusString(s))
        m += std::string(" (") + t + ")";
    return m;
  }
};

/// Loads cuBLAS and creates a handle on the current context, or says why
/// not.
bool loadCublas(Cublas &c, std::string &why) {
  std::vector<std::string> names;
  if (const char *env = std::getenv("SQ_CUBLAS_LIBRARY"))
    if (*env)
      names.push_back(env);
  const char *cudaHome = std::getenv("CUDA_HOME");
  std::string home = cudaHome && *cudaHome ? cudaHome : "/usr/local/cuda";
  for (const char *n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
    names.push_back(n);
  for (const char *n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
    names.push_back(home + "/lib64/" + n);
  void *h = nullptr;
  std::string tried;
  for (const std::string &n : names) {
    if ((h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL))) {
      c.path = n;
      break;
    }
    tried += (tried.empty() ? "" : ", ") + n;
  }
  if (!h) {
    why = "no cuBLAS (tried " + tried + ")";
    return false;
  }
  c.create = reinterpret_cast<decltype(c.create)>(dlsym(h, "cublasCreate_v2"));
  c.destroy =
      reinterpret_cast<decltype(c.destroy)>(dlsym(h, "cublasDestroy_v2"));
  c.gemmEx = reinterpret_cast<decltype(c.gemmEx)>(dlsym(h, "cublasGemmEx"));
  c.statusString = reinterpret_cast<decltype(c.statusString)>(
      dlsym(h, "cublasGetStatusString"));
  if (!c.create || !c.destroy || !c.gemmEx) {
    why = c.path + " lacks cublasCreate_v2/cublasDestroy_v2/cublasGemmEx";
    return false;
  }
  cublasStatus_t s = c.create(&c.handle);
  if (s != 0) {
    why = "cublasCreate_v2 failed: " + c.status(s);
    c.handle = nullptr;
    return false;
  }
  return true;
}

/// CUDA events, resolved from the driver library (not in the loader).
using CUevent = struct CUevent_st *;
struct Events {
  CUresult (*create)(CUevent *, unsigned) = nullptr;
  CUresult (*record)(CUevent, CUstream) = nullptr;
  CUresult (*synchronize)(CUevent) = nullptr;
  CUresult (*elapsed)(float *, CUevent, CUevent) = nullptr;
  CUresult (*destroy)(CUevent) = nullptr;
  CUevent start = nullptr, stop = nullptr;
  bool ok = false;
};

void loadEvents(const Driver &d, Events &e) {
  auto get = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(d.handle, name));
  };
  get(e.create, "cuEventCreate");
  get(e.record, "cuEventRecord");
  get(e.synchronize, "cuEventSynchronize");
  get(e.elapsed, "cuEventElapsedTime_v2");
  if (!e.elapsed)
    get(e.elapsed, "cuEventElapsedTime");
  get(e.destroy, "cuEventDestroy_v2");
  e.ok = e.create && e.record && e.synchronize && e.elapsed && e.destroy &&
         e.create(&e.start, 0) == CUDA_SUCCESS &&
         e.create(&e.stop, 0) == CUDA_SUCCESS;
}

using Args = KernelArgs; // the runtime's launch parameters

/// splitmix64: fast, seeded, reproducible.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int uniformInt(int lo, int hi) { // [lo, hi]
    return lo + int(next() % uint64_t(hi - lo + 1));
  }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * float(next() >> 40) * (1.0f / 16777216.0f);
  }
};

uint16_t toBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

int fail(const std::string &message) {
  std::fprintf(stderr, "gpu_gemm_bench: error: %s\n", message.c_str());
  return 1;
}

struct Options {
  std::string ptx;
  double minMs = 20;
  int repeats = 5;
  bool probe = false, cublas = true;
  std::vector<int64_t> ms = {1, 16, 128, 512};
};

/// The process-wide state of one run.
struct Bench {
  const Driver *d = nullptr;
  Device dev;
  Options opt;
  Events ev;
  Cublas blas;
  bool haveBlas = false;
  double peakGBs = 0; // 0: unknown
  int64_t l2Bytes = 0;
  CUdeviceptr filler = 0;
  size_t fillerBytes = 0;
  std::string error; // the first CUDA failure

  bool check(CUresult r, const char *call) {
    if (r == CUDA_SUCCESS)
      return true;
    if (error.empty())
      error = d->errorMessage(r, call);
    return false;
  }
  CUdeviceptr alloc(size_t bytes) {
    CUdeviceptr p = 0;
    if (!check(d->cuMemAlloc(&p, bytes), "cuMemAlloc"))
      return 0;
    return p;
  }
  void free(CUdeviceptr &p) {
    if (p)
      d->cuMemFree(p);
    p = 0;
  }
  bool upload(CUdeviceptr dst, const void *src, size_t bytes) {
    return check(d->cuMemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD");
  }

  /// Seconds per call of `launch(i)` (i: the iteration, to cycle weight
  /// copies): best of opt.repeats batches. Negative on a failure.
  double time(const std::function<bool(int)> &launch) {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point a, clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    for (int i = 0; i < 3; ++i)
      if (!launch(i))
        return -1;
    if (!check(d->cuCtxSynchronize(), "cuCtxSynchronize"))
      return -1;
    // Calibration: the batch size for opt.minMs.
    int n = 10;
    auto t0 = clock::now();
    for (int i = 0; i < n; ++i)
      if (!launch(i))
        return -1;
    if (!check(d->cuCtxSynchronize(), "cuCtxSynchronize"))
      return -1;
    double per = secs(t0, clock::now()) / n;
    // With events, at most 500 launches per batch: they fit in the launch
    // queue, behind the memsets below.
    int iters = int(std::clamp(opt.minMs * 1e-3 / std::max(per, 1e-7), 10.0,
                               ev.ok ? 500.0 : 20000.0));
    double best = 1e30, enqueue = iters * 10e-6; // a guess, then measured
    for (int r = 0; r < opt.repeats; ++r) {
      if (ev.ok) {
        // Memsets ahead of the batch keep the device busy while the host
        // queues it (at least twice the host's enqueue time).
        if (filler && peakGBs > 0) {
          double memsetSec = fillerBytes / (peakGBs * 1e9);
          int fills = int(std::min(2 * enqueue / memsetSec + 1, 64.0));
          for (int f = 0; f < fills; ++f)
            if (!check(d->cuMemsetD8(filler, uint8_t(f), fillerBytes),
                       "cuMemsetD8"))
              return -1;
        }
        if (!check(ev.record(ev.start, nullptr), "cuEventRecord"))
          return -1;
        auto q0 = clock::now();
        for (int i = 0; i < iters; ++i)
          if (!launch(i))
            return -1;
        enqueue = secs(q0, clock::now());
        if (!check(ev.record(ev.stop, nullptr), "cuEventRecord") ||
            !check(ev.synchronize(ev.stop), "cuEventSynchronize"))
          return -1;
        float ms = 0;
        if (!check(ev.elapsed(&ms, ev.start, ev.stop), "cuEventElapsedTime"))
          return -1;
        best = std::min(best, ms * 1e-3 / iters);
      } else {
        auto a = clock::now();
        for (int i = 0; i < iters; ++i)
          if (!launch(i))
            return -1;
        if (!check(d->cuCtxSynchronize(), "cuCtxSynchronize"))
          return -1;
        best = std::min(best, secs(a, clock::now()) / iters);
      }
    }
    if (!check(d->cuCtxSynchronize(), "cuCtxSynchronize"))
      return -1;
    return best;
  }

  /// How many copies of `bytes` of weights to cycle over (>= 2x L2).
  int copiesFor(size_t bytes) const {
    int64_t l2 = l2Bytes > 0 ? l2Bytes : 64ll << 20;
    return int(std::clamp<int64_t>(
        (2 * l2 + int64_t(bytes) - 1) / int64_t(bytes), 1, 32));
  }
};

/// One SQ kernel on one (K, N): weights (copies), scales, sums, and the
/// host data for the reference.
struct QWeights {
  bool s4 = false;
  int64_t k = 0, n = 0, kpad = 0;
  std::vector<int8_t> w;      // [n, kpad] values
  std::vector<float> wscales; // [n]
  std::vector<int32_t> wsums; // [n]
  std::vector<CUdeviceptr> copies;
  CUdeviceptr wscalesDev = 0, wsumsDev = 0;
  size_t bytes = 0; // per copy
};

bool makeWeights(Bench &b, QWeights &q, bool s4, int64_t k, int64_t n,
                 uint64_t seed) {
  q.s4 = s4;
  q.k = k;
  q.n = n;
  q.kpad = (k + 63) / 64 * 64;
  Rng rng(seed);
  q.w.assign(size_t(n * q.kpad), 0);
  q.wscales.resize(n);
  q.wsums.assign(n, 0);
  for (int64_t j = 0; j < n; ++j) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      int v = s4 ? rng.uniformInt(-8, 7) : rng.uniformInt(-127, 127);
      q.w[j * q.kpad + i] = int8_t(v);
      sum += v;
    }
    q.wsums[j] = sum;
    q.wscales[j] = rng.uniform(0.5e-3f, 1.5e-3f);
  }
  std::vector<uint8_t> packed;
  if (s4) { // element 2j in the low nibble of byte j
    packed.resize(size_t(n * q.kpad / 2));
    for (size_t i = 0; i < packed.size(); ++i)
      packed[i] = uint8_t((q.w[2 * i] & 0xf) | ((q.w[2 * i + 1] & 0xf) << 4));
  }
  const void *src = s4 ? static_cast<const void *>(packed.data())
                       : static_cast<const void *>(q.w.data());
  q.bytes = size_t(n * q.kpad) / (s4 ? 2 : 1);
  int copies = b.copiesFor(q.bytes);
  for (int c = 0; c < copies; ++c) {
    CUdeviceptr p = b.alloc(q.bytes);
    if (!p || !b.upload(p, src, q.bytes))
      return false;
    q.copies.push_back(p);
  }
  q.wscalesDev = b.alloc(4 * n);
  q.wsumsDev = b.alloc(4 * n);
  return q.wscalesDev && q.wsumsDev &&
         b.upload(q.wscalesDev, q.wscales.data(), 4 * n) &&
         b.upload(q.wsumsDev, q.wsums.data(), 4 * n);
}

void freeWeights(Bench &b, QWeights &q) {
  for (CUdeviceptr &p : q.copies)
    b.free(p);
  q.copies.clear();
  b.free(q.wscalesDev);
  b.free(q.wsumsDev);
}

/// Activation codes for M rows.
struct QActs {
  int64_t m = 0;
  std::vector<uint8_t> codes; // [m, kpad]
  std::vector<float> ascales;
  std::vector<int32_t> azeros;
  CUdeviceptr codesDev = 0, ascalesDev = 0, azerosDev = 0, outDev = 0;
};

bool makeActs(Bench &b, QActs &a, const QWeights &q, int64_t m, uint64_t seed) {
  Rng rng(seed);
  int hi = q.s4 ? 15 : 255;
  a.m = m;
  a.codes.assign(size_t(m * q.kpad), 0);
  a.ascales.resize(m);
  a.azeros.resize(m);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t t = 0; t < q.k; ++t)
      a.codes[i * q.kpad + t] = uint8_t(rng.uniformInt(0, hi));
    a.ascales[i] = rng.uniform(0.5e-2f, 1.5e-2f);
    a.azeros[i] = rng.uniformInt(0, hi);
  }
  a.codesDev = b.alloc(a.codes.size());
  a.ascalesDev = b.alloc(4 * m);
  a.azerosDev = b.alloc(4 * m);
  a.outDev = b.alloc(size_t(4 * m * q.n));
  return a.codesDev && a.ascalesDev && a.azerosDev && a.outDev &&
         b.upload(a.codesDev, a.codes.data(), a.codes.size()) &&
         b.upload(a.ascalesDev, a.ascales.data(), 4 * m) &&
         b.upload(a.azerosDev, a.azeros.data(), 4 * m);
}

void freeActs(Bench &b, QActs &a) {
  b.free(a.codesDev);
  b.free(a.ascalesDev);
  b.free(a.azerosDev);
  b.free(a.outDev);
}

bool launchQGemm(Bench &b, CUfunction f, const QWeights &q, const QActs &a,
                 int copy) {
  Args g;
  g.ptr(a.outDev)
      .ptr(a.codesDev)
      .ptr(a.ascalesDev)
      .ptr(a.azerosDev)
      .ptr(q.copies[size_t(copy) % q.copies.size()])
      .ptr(q.wscalesDev)
      .ptr(q.wsumsDev)
      .ptr(0) // bias: none
      .i64(a.m)
      .i64(q.n)
      .i64(q.kpad)
      .i64(q.kpad) // blockk: per channel
      .i64(1)      // ablocks
      .i64(1);     // wblocks
  unsigned gx = unsigned((q.n + 63) / 64), gy = unsigned((a.m + 63) / 64);
  return b.check(b.d->cuLaunchKernel(f, gx, gy, 1, 128, 1, 1, 0, nullptr,
                                     g.params(), nullptr),
                 "cuLaunchKernel");
}

struct CheckResult {
  double maxAbs = 0, maxRef = 0, rel = 0;
  long checked = 0;
  bool ok = true;
  std::string worst; // where the largest error is
};

/// Runs the kernel once on copy 0 and compares sampled outputs with the
/// KernelABI formula in double: the whole first 64 x 64 tile (every mma
/// fragment position), the last 16 x 16 outputs and 512 random ones.
CheckResult verify(Bench &b, CUfunction f, const QWeights &q, const QActs &a) {
  CheckResult r;
  std::vector<float> out(size_t(a.m * q.n));
  if (!b.check(b.d->cuMemsetD8(a.outDev, 0xff, out.size() * 4),
               "cuMemsetD8") || // NaN where the kernel writes nothing
      !launchQGemm(b, f, q, a, 0) ||
      !b.check(b.d->cuCtxSynchronize(), "cuCtxSynchronize") ||
      !b.check(b.d->cuMemcpyDtoH(out.data(), a.outDev, out.size() * 4),
               "cuMemcpyDtoH")) {
    r.ok = false;
    r.worst = b.error;
    return r;
  }
  std::vector<std::pair<int64_t, int64_t>> at;
  for (int64_t i = 0; i < std::min<int64_t>(a.m, 64); ++i)
    for (int64_t j = 0; j < std::min<int64_t>(q.n, 64); ++j)
      at.push_back({i, j});
  for (int64_t i = std::max<int64_t>(0, a.m - 16); i < a.m; ++i)
    for (int64_t j = std::max<int64_t>(0, q.n - 16); j < q.n; ++j)
      at.push_back({i, j});
  Rng rng(a.m * 7919 + q.n * 31 + q.k);
  for (int s = 0; s < 512; ++s)
    at.push_back({int64_t(rng.next() % uint64_t(a.m)),
                  int64_t(rng.next() % uint64_t(q.n))});
  for (auto [i, j] : at) {
    const uint8_t *c = &a.codes[size_t(i * q.kpad)];
    const int8_t *w = &q.w[size_t(j * q.kpad)];
    int64_t dot = 0;
    for (int64_t t = 0; t < q.kpad; ++t)
      dot += int64_t(c[t]) * w[t];
    double ref = double(a.ascales[i]) * q.wscales[j] *
                 double(dot - int64_t(a.azeros[i]) * q.wsums[j]);
    double got = out[size_t(i * q.n + j)];
    double err = std::fabs(got - ref);
    if (std::isnan(err))
      err = INFINITY; // the worst (the first one is reported)
    if (err > r.maxAbs) {
      r.maxAbs = err;
      char buf[160];
      std::snprintf(buf, sizeof(buf), "out[%lld, %lld] = %.7g, reference %.7g",
                    (long long)i, (long long)j, got, ref);
      r.worst = buf;
    }
    r.maxRef = std::max(r.maxRef, std::fabs(ref));
    ++r.checked;
  }
  r.rel = r.maxAbs / std::max(r.maxRef, 1e-30);
  // The integer sums are exact; only the fp32 epilogue rounds.
  r.ok = r.rel <= 1e-4;
  return r;
}

int run(Bench &b) {
  const Driver &d = *b.d;
  int sms = 0, clockKHz = 0, busBits = 0, l2 = 0;
  d.cuDeviceGetAttribute(&sms, kAttrMultiprocessors, b.dev.device);
  if (d.cuDeviceGetAttribute(&clockKHz, kAttrMemoryClockKHz, b.dev.device) !=
          CUDA_SUCCESS ||
      d.cuDeviceGetAttribute(&busBits, kAttrBusWidthBits, b.dev.device) !=
          CUDA_SUCCESS)
    clockKHz = busBits = 0;
  if (d.cuDeviceGetAttribute(&l2, kAttrL2Bytes, b.dev.device) != CUDA_SUCCESS)
    l2 = 0;
  b.l2Bytes = l2;
  // DDR: two transfers per clock.
  b.peakGBs = 2.0 * clockKHz * 1e3 * (busBits / 8.0) / 1e9;
  int sm = b.dev.major * 10 + b.dev.minor;
  if (b.opt.probe) {
    std::printf("%d %.0f %s\n", sm, b.peakGBs, b.dev.name.c_str());
    return 0;
  }
  if (b.opt.ptx.empty())
    return fail("no PTX file given (usage: gpu_gemm_bench KERNELS.ptx; "
                "lib/Conversion/SQToNVVM/emit_ptx.sh "
                "lib/Conversion/SQToNVVM/Kernels.mlir " +
                std::to_string(sm) + " KERNELS.ptx)");
  std::ifstream in(b.opt.ptx, std::ios::binary);
  if (!in)
    return fail("cannot read " + b.opt.ptx);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string ptx = ss.str();

  std::printf("gpu_gemm_bench: %s, sm_%d, %d SMs, L2 %d MB, ",
              b.dev.name.c_str(), sm, sms, l2 >> 20);
  if (b.peakGBs > 0)
    std::printf("peak memory bandwidth %.0f GB/s (%d MHz x %d bit x 2)\n",
                b.peakGBs, clockKHz / 1000, busBits);
  else
    std::printf("peak memory bandwidth unknown (attributes 36/37 failed)\n");

  char log[8192] = {0};
  int options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof(log) - 1))};
  CUmodule module = nullptr;
  CUresult r = d.cuModuleLoadDataEx(&module, ptx.c_str(), 2, options, values);
  if (r != CUDA_SUCCESS) {
    std::string l = log;
    for (char &c : l)
      if (c == '\n')
        c = ' ';
    return fail(d.errorMessage(r, "cuModuleLoadDataEx") + " loading " +
                b.opt.ptx + (l.empty() ? "" : ": " + l));
  }
  CUfunction s8 = nullptr, s4 = nullptr;
  if (!b.check(d.cuModuleGetFunction(&s8, module, "sq_qgemm_s8"),
               "cuModuleGetFunction(sq_qgemm_s8)"))
    return fail(b.error + " (is " + b.opt.ptx + " the kernel library?)");
  if (d.cuModuleGetFunction(&s4, module, "sq_qgemm_s4") != CUDA_SUCCESS)
    s4 = nullptr;

  loadEvents(d, b.ev);
  if (b.ev.ok) {
    b.fillerBytes = 256u << 20;
    if (d.cuMemAlloc(&b.filler, b.fillerBytes) != CUDA_SUCCESS)
      b.filler = 0;
  }
  std::string blasWhy = "disabled (--no-cublas)";
  if (b.opt.cublas)
    b.haveBlas = loadCublas(b.blas, blasWhy);
  std::string baseline =
      b.haveBlas ? "cuBLAS bf16 cublasGemmEx (bf16 A/B/C, fp32 compute) from " +
                       b.blas.path
                 : "none: " + blasWhy;
  std::printf("kernels: sq_qgemm_s8%s; baseline: %s\n",
              s4 ? ", sq_qgemm_s4"
                 : " (no sq_qgemm_s4 in the module: no int4 mma at sm >= 90)",
              baseline.c_str());
  std::printf(
      "per channel (blockk = kpad), codes u8 (s8) / u4 (s4); timing: "
      "%s, best of %d batches of ~%.0f ms (<= 500 calls); weights cycled over "
      ">= 2x L2\n\n",
      b.ev.ok ? "CUDA events" : "cuCtxSynchronize + steady_clock",
      b.opt.repeats, b.opt.minMs);

  const std::pair<int64_t, int64_t> kn[] = {
      {4096, 4096}, {4096, 11008}, {11008, 4096}};
  struct Row {
    int64_t m, k, n;
    double t4 = -1, t8 = -1, tb = -1; // seconds; < 0: not measured
  };
  std::vector<Row> rows;
  std::vector<std::string> bad;
  CheckResult worst4, worst8;
  bool failed = false;

  std::printf("%5s %6s %6s | %9s %8s %8s | %9s %8s %8s | %9s %8s | %9s "
              "%9s\n",
              "M", "K", "N", "s4 us", "TOP/s", "rel.err", "s8 us", "TOP/s",
              "rel.err", "cuBLAS us", "TOP/s", "s4/cuBLAS", "s8/cuBLAS");
  for (const auto &shape : kn) {
    const int64_t k = shape.first, n = shape.second;
    QWeights w8, w4;
    if (!makeWeights(b, w8, false, k, n, 1000 + k + n) ||
        (s4 && !makeWeights(b, w4, true, k, n, 2000 + k + n))) {
      failed = true;
      break;
    }
    // cuBLAS operands: W [n, k] bf16 (copies), X [m, k], Y [m, n].
    std::vector<CUdeviceptr> wb;
    CUdeviceptr xb = 0, yb = 0;
    int64_t maxM = *std::max_element(b.opt.ms.begin(), b.opt.ms.end());
    if (b.haveBlas) {
      Rng rng(3000 + k + n);
      std::vector<uint16_t> hw(size_t(n * k)), hx(size_t(maxM * k));
      for (auto &v : hw)
        v = toBf16(rng.uniform(-0.05f, 0.05f));
      for (auto &v : hx)
        v = toBf16(rng.uniform(-1.0f, 1.0f));
      size_t bytes = hw.size() * 2;
      for (int c = b.copiesFor(bytes); c > 0; --c) {
        CUdeviceptr p = b.alloc(bytes);
        if (!p || !b.upload(p, hw.data(), bytes)) {
          failed = true;
          break;
        }
        wb.push_back(p);
      }
      xb = b.alloc(hx.size() * 2);
      yb = b.alloc(size_t(maxM * n * 2));
      if (failed || !xb || !yb || !b.upload(xb, hx.data(), hx.size() * 2)) {
        failed = true;
        break;
      }
    }
    for (int64_t m : b.opt.ms) {
      Row row{m, k, n};
      CheckResult c4, c8;
      for (int kind = 0; kind < 2 && !failed; ++kind) {
        CUfunction f = kind ? s8 : s4;
        if (!f)
          continue;
        QWeights &q = kind ? w8 : w4;
        QActs a;
        if (!makeActs(b, a, q, m, 4000 + m * 13 + k + n + kind)) {
          failed = true;
          break;
        }
        CheckResult c = verify(b, f, q, a);
        (kind ? c8 : c4) = c;
        CheckResult &worst = kind ? worst8 : worst4;
        if (!worst.checked || (worst.ok && !c.ok) ||
            (worst.ok == c.ok && c.rel > worst.rel))
          worst = c;
        if (!c.ok) {
          char buf[300];
          std::snprintf(buf, sizeof(buf),
                        "%s M=%lld K=%lld N=%lld: max abs err %.3g (%.3g of "
                        "max |ref| %.3g) at %s",
                        kind ? "sq_qgemm_s8" : "sq_qgemm_s4", (long long)m,
                        (long long)k, (long long)n, c.maxAbs, c.rel, c.maxRef,
                        c.worst.c_str());
          bad.push_back(buf);
        }
        double t =
            b.error.empty()
                ? b.time([&](int i) { return launchQGemm(b, f, q, a, i); })
                : -1;
        (kind ? row.t8 : row.t4) = t;
        freeActs(b, a);
        if (t < 0)
          failed = true;
      }
      if (b.haveBlas && !failed) {
        float alpha = 1, beta = 0;
        std::string why;
        row.tb = b.time([&](int i) {
          // Row-major Y [m, n] = X W^T is column-major Y^T [n, m] = W X^T:
          // A = W (column-major k x n, lda k) transposed, B = X^T (k x m).
          cublasStatus_t s = b.blas.gemmEx(
              b.blas.handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k),
              &alpha, reinterpret_cast<const void *>(wb[size_t(i) % wb.size()]),
              CUDA_R_16BF, int(k), reinterpret_cast<const void *>(xb),
              CUDA_R_16BF, int(k), &beta, reinterpret_cast<void *>(yb),
              CUDA_R_16BF, int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
          if (s != 0 && why.empty())
            why = "cublasGemmEx: " + b.blas.status(s);
          return s == 0;
        });
        if (!why.empty()) {
          std::printf("cuBLAS failed (%s); no baseline from here on\n",
                      why.c_str());
          b.haveBlas = false;
          row.tb = -1;
        } else if (row.tb < 0)
          failed = true;
      }
      rows.push_back(row);
      auto tops = [&](double t) { return 2.0 * m * n * k / t / 1e12; };
      auto cell = [&](double t, const CheckResult *c, char *buf) {
        if (t < 0)
          std::snprintf(buf, 40, "%9s %8s %8s", "-", "-", "-");
        else if (c)
          std::snprintf(buf, 40, "%9.2f %8.2f %8.1e", t * 1e6, tops(t), c->rel);
        else
          std::snprintf(buf, 40, "%9.2f %8.2f", t * 1e6, tops(t));
      };
      char a4[48], a8[48], ab[48], r4[16] = "-", r8[16] = "-";
      cell(row.t4, &c4, a4);
      cell(row.t8, &c8, a8);
      if (row.tb < 0)
        std::snprintf(ab, sizeof(ab), "%9s %8s", "-", "-");
      else
        cell(row.tb, nullptr, ab);
      if (row.tb > 0 && row.t4 > 0)
        std::snprintf(r4, sizeof(r4), "%.2f", row.tb / row.t4);
      if (row.tb > 0 && row.t8 > 0)
        std::snprintf(r8, sizeof(r8), "%.2f", row.tb / row.t8);
      std::printf("%5lld %6lld %6lld | %s | %s | %s | %9s %9s\n", (long long)m,
                  (long long)k, (long long)n, a4, a8, ab, r4, r8);
      std::fflush(stdout);
      if (failed)
        break;
    }
    freeWeights(b, w8);
    freeWeights(b, w4);
    for (CUdeviceptr &p : wb)
      b.free(p);
    b.free(xb);
    b.free(yb);
    if (failed)
      break;
  }

  std::printf("\nGEMV (M = 1) bandwidth: weight bytes (s4 N*K/2, s8 N*K, bf16 "
              "2*N*K) / time");
  if (b.peakGBs > 0)
    std::printf(", fraction of the peak %.0f GB/s", b.peakGBs);
  std::printf("\n");
  for (const Row &row : rows) {
    if (row.m != 1)
      continue;
    std::printf("  K=%-6lld N=%-6lld", (long long)row.k, (long long)row.n);
    auto bw = [&](const char *name, double t, double bytes) {
      if (t <= 0)
        return;
      double gbs = bytes / t / 1e9;
      std::printf("  %s %7.0f GB/s", name, gbs);
      if (b.peakGBs > 0)
        std::printf(" (%3.0f%%)", 100 * gbs / b.peakGBs);
    };
    double nk = double(row.n) * row.k;
    bw("s4", row.t4, nk / 2);
    bw("s8", row.t8, nk);
    bw("cuBLAS bf16", row.tb, 2 * nk);
    std::printf("\n");
  }

  auto summary = [&](const char *name, bool present, const CheckResult &w) {
    if (!present)
      return;
    std::printf("check %s: %s (worst: max abs err %.3g = %.3g of max |ref| "
                "%.3g, of %ld sampled outputs; tolerance 1e-4)\n",
                name, w.ok ? "ok" : "MISMATCH", w.maxAbs, w.rel, w.maxRef,
                w.checked);
  };
  std::printf("\n");
  summary("sq_qgemm_s4", s4 != nullptr, worst4);
  summary("sq_qgemm_s8", true, worst8);
  for (const std::string &s : bad)
    std::printf("  MISMATCH %s\n", s.c_str());
  if (b.haveBlas)
    b.blas.destroy(b.blas.handle);
  if (b.filler)
    d.cuMemFree(b.filler);
  d.cuModuleUnload(module);
  if (failed || !b.error.empty())
    return fail(b.error.empty() ? "a CUDA call failed" : b.error);
  return bad.empty() ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  Bench b;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--min-ms" && i + 1 < argc)
      b.opt.minMs = std::atof(argv[++i]);
    else if (a == "--repeats" && i + 1 < argc)
      b.opt.repeats = std::max(1, std::atoi(argv[++i]));
    else if (a == "--m" && i + 1 < argc) { // comma-separated M values
      b.opt.ms.clear();
      std::stringstream s(argv[++i]);
      for (std::string v; std::getline(s, v, ',');)
        if (std::atoll(v.c_str()) > 0)
          b.opt.ms.push_back(std::atoll(v.c_str()));
      if (b.opt.ms.empty())
        return fail("--m needs positive values");
    } else if (a == "--probe")
      b.opt.probe = true;
    else if (a == "--no-cublas")
      b.opt.cublas = false;
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s KERNELS.ptx [--min-ms 20] [--repeats 5] "
                  "[--m 1,16,128,512] [--no-cublas]\n"
                  "       %s --probe   (prints \"SM PEAK_GB/s NAME\")\n",
                  argv[0], argv[0]);
      return 0;
    } else if (!a.empty() && a[0] != '-' && b.opt.ptx.empty())
      b.opt.ptx = a;
    else
      return fail("unknown argument " + a + " (--help)");
  }
  std::string error;
  b.d = globalDriver(error);
  if (!b.d) {
    std::printf("gpu_gemm_bench: skipped: %s\n", error.c_str());
    return 0;
  }
  Unavailable why;
  if (!openDevice(*b.d, -1, b.dev, error, why)) {
    if (why == Unavailable::Other)
      return fail(error);
    std::printf("gpu_gemm_bench: skipped: %s\n", error.c_str());
    return 0;
  }
  int rc = run(b);
  closeDevice(*b.d, b.dev);
  return rc;
}
