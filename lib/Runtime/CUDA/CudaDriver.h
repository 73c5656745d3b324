//===- CudaDriver.h - a tiny loader of the CUDA driver API -------*- C++
//-*-===//
//
// The CUDA runtime of a GPU model.so talks to the driver through this
// loader: libcuda.so.1 is opened with dlopen at run time (SQ_CUDA_LIBRARY
// overrides the path, for tests), so a model.so loads on machines without a
// GPU or driver and fails cleanly when opened. Only the functions the runtime
// uses are resolved. No toolkit header: the few types and constants needed
// are declared here, with the values of cuda.h.
//
// Every failure is a one-line message with the driver's error name and text:
//   CUDA error CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected) in
//   cuInit
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_RUNTIME_CUDA_CUDADRIVER_H
#define SQ_LIB_RUNTIME_CUDA_CUDADRIVER_H

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace sq {
namespace cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = uint64_t;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;

// Values from cuda.h.
constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr CUresult CUDA_ERROR_NO_BINARY_FOR_GPU = 209;
constexpr CUresult CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr int CU_JIT_INFO_LOG_BUFFER = 3;
constexpr int CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
constexpr int CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

/// Why the driver or a device is unavailable.
enum class Unavailable {
  None,       // available
  NoDriver,   // the library is missing or lacks a function
  InitFailed, // cuInit failed
  NoDevice,   // zero devices, or the requested ordinal does not exist
  Other,      // a later call failed (context, attributes)
};

/// The driver's entry points (resolved by name; the _v2 ones where cuda.h
/// maps the API name to them).
struct Driver {
  CUresult (*cuInit)(unsigned flags) = nullptr;
  CUresult (*cuDeviceGetCount)(int *count) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice *device, int ordinal) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int *value, int attribute,
                                   CUdevice device) = nullptr;
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice device) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *ctx,
                                       CUdevice device) = nullptr;
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice device) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext ctx) = nullptr;
  CUresult (*cuCtxSynchronize)() = nullptr;
  CUresult (*cuModuleLoadDataEx)(CUmodule *module, const void *image,
                                 unsigned numOptions, int *options,
                                 void **optionValues) = nullptr;
  CUresult (*cuModuleGetFunction)(CUfunction *fn, CUmodule module,
                                  const char *name) = nullptr;
  CUresult (*cuModuleUnload)(CUmodule module) = nullptr;
  CUresult (*cuMemAlloc)(CUdeviceptr *ptr, size_t bytes) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr ptr) = nullptr;
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src,
                           size_t bytes) = nullptr;
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes) = nullptr;
  CUresult (*cuMemsetD8)(CUdeviceptr dst, unsigned char value,
                         size_t count) = nullptr;
  CUresult (*cuLaunchKernel)(CUfunction f, unsigned gridX, unsigned gridY,
                             unsigned gridZ, unsigned blockX, unsigned blockY,
                             unsigned blockZ, unsigned sharedMemBytes,
                             CUstream stream, void **kernelParams,
                             void **extra) = nullptr;
  CUresult (*cuGetErrorName)(CUresult error, const char **name) = nullptr;
  CUresult (*cuGetErrorString)(CUresult error, const char **text) = nullptr;
  /// Optional (nullptr if absent): raises a kernel's dynamic shared memory
  /// limit above 48 KiB.
  CUresult (*cuFuncSetAttribute)(CUfunction f, int attribute,
                                 int value) = nullptr;

  std::string path; // what was opened
  void *handle = nullptr;

  /// "CUDA error NAME (text) in CALL".
  std::string errorMessage(CUresult result, const char *call) const;
  /// True on CUDA_SUCCESS; otherwise sets `error` to errorMessage().
  bool check(CUresult result, const char *call, std::string &error) const {
    if (result == CUDA_SUCCESS)
      return true;
    error = errorMessage(result, call);
    return false;
  }
};

/// The library to open: $SQ_CUDA_LIBRARY if set and not empty, else
/// "libcuda.so.1".
std::string driverLibraryPath();

/// Opens the driver library at `path` and resolves its functions (a fresh
/// handle each call; the library is never closed). On failure returns null
/// with `error`: "no NVIDIA driver: PATH not found (dlerror)" or "no NVIDIA
/// driver: PATH lacks cuXxx".
std::unique_ptr<Driver> loadDriver(const std::string &path, std::string &error);

/// The driver of driverLibraryPath(), loaded once per distinct path for the
/// process (thread-safe; a failure is not cached).
const Driver *globalDriver(std::string &error);

/// A device with its primary context.
struct Device {
  CUdevice device = 0;
  int ordinal = 0;
  int major = 0, minor = 0; // compute capability
  int maxSharedOptin = 48 * 1024;
  std::string name;
  CUcontext context = nullptr;
};

/// cuInit, device `ordinal` ($SQ_CUDA_DEVICE, default 0 when < 0), its
/// compute capability and name, its primary context (retained and made
/// current). On failure returns false with `error` and the reason in `why`:
///   InitFailed: "CUDA error ... in cuInit"
///   NoDevice:   "no CUDA device: cuDeviceGetCount found 0 devices" (or
///               "... device N requested, M found")
bool openDevice(const Driver &driver, int ordinal, Device &out,
                std::string &error, Unavailable &why);
/// Releases the primary context of openDevice.
void closeDevice(const Driver &driver, Device &device);

/// The parameters of a cuLaunchKernel: each value in its own 8-byte cell
/// (little-endian, so a 4-byte parameter reads the cell's first bytes).
class KernelArgs {
public:
  KernelArgs &ptr(CUdeviceptr v) { return put(&v, 8); }
  KernelArgs &i64(int64_t v) { return put(&v, 8); }
  KernelArgs &i32(int32_t v) { return put(&v, 4); }
  KernelArgs &f32(float v) { return put(&v, 4); }
  void **params() { return p; }

private:
  KernelArgs &put(const void *v, size_t bytes) {
    cells[n] = 0;
    std::memcpy(&cells[n], v, bytes);
    p[n] = &cells[n];
    ++n;
    return *this;
  }
  uint64_t cells[32];
  void *p[32];
  int n = 0;
};

} // namespace cuda
} // namespace sq

#endif // SQ_LIB_RUNTIME_CUDA_CUDADRIVER_H
