//===- CudaDriver.cpp - a tiny loader of the CUDA driver API --------------===//

#include "CudaDriver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <type_traits>

namespace sq {
namespace cuda {

/// Names for the errors of a driver that cannot name them (the toolkit's
/// stub libcuda.so answers CUDA_ERROR_STUB_LIBRARY but has no names).
static void fallbackName(CUresult result, const char *&name,
                         const char *&text) {
  static const struct {
    CUresult code;
    const char *name, *text;
  } known[] = {
      {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
      {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
      {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
      {35, "CUDA_ERROR_INSUFFICIENT_DRIVER",
       "CUDA driver version is insufficient for CUDA runtime version"},
      {46, "CUDA_ERROR_DEVICE_UNAVAILABLE",
       "CUDA-capable device(s) is/are busy or unavailable"},
      {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
      {803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
       "system has unsupported display driver / cuda driver combination"},
  };
  for (const auto &k : known)
    if (k.code == result) {
      if (!name)
        name = k.name;
      if (!text)
        text = k.text;
    }
}

std::string Driver::errorMessage(CUresult result, const char *call) const {
  const char *name = nullptr, *text = nullptr;
  if (cuGetErrorName && cuGetErrorName(result, &name) != CUDA_SUCCESS)
    name = nullptr;
  if (cuGetErrorString && cuGetErrorString(result, &text) != CUDA_SUCCESS)
    text = nullptr;
  fallbackName(result, name, text);
  std::string message = "CUDA error ";
  message += name ? name : std::to_string(result);
  message += " (";
  message += text ? text : "unknown error";
  message += ") in ";
  message += call;
  return message;
}

std::string driverLibraryPath() {
  const char *env = std::getenv("SQ_CUDA_LIBRARY");
  return env && *env ? env : "libcuda.so.1";
}

/// Replaces newlines so that messages stay on one line.
static std::string oneLine(std::string s) {
  for (char &c : s)
    if (c == '\n' || c == '\r')
      c = ' ';
  return s;
}

std::unique_ptr<Driver> loadDriver(const std::string &path,
                                   std::string &error) {
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    error = "no NVIDIA driver: " + path + " not found (" +
            oneLine(why ? why : "dlopen failed") + ")";
    return nullptr;
  }
  auto d = std::make_unique<Driver>();
  d->path = path;
  d->handle = handle;
  bool ok = true;
  auto resolve = [&](auto &fn, const char *name, bool required = true) {
    void *sym = dlsym(handle, name);
    if (!sym && required && ok) {
      error = "no NVIDIA driver: " + path + " lacks " + name;
      ok = false;
    }
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(sym);
  };
  resolve(d->cuInit, "cuInit");
  resolve(d->cuDeviceGetCount, "cuDeviceGetCount");
  resolve(d->cuDeviceGet, "cuDeviceGet");
  resolve(d->cuDeviceGetAttribute, "cuDeviceGetAttribute");
  resolve(d->cuDeviceGetName, "cuDeviceGetName");
  resolve(d->cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  resolve(d->cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
  resolve(d->cuCtxSetCurrent, "cuCtxSetCurrent");
  resolve(d->cuCtxSynchronize, "cuCtxSynchronize");
  resolve(d->cuModuleLoadDataEx, "cuModuleLoadDataEx");
  resolve(d->cuModuleGetFunction, "cuModuleGetFunction");
  resolve(d->cuModuleUnload, "cuModuleUnload");
  resolve(d->cuMemAlloc, "cuMemAlloc_v2");
  resolve(d->cuMemFree, "cuMemFree_v2");
  resolve(d->cuMemcpyHtoD, "cuMemcpyHtoD_v2");
  resolve(d->cuMemcpyDtoH, "cuMemcpyDtoH_v2");
  resolve(d->cuMemsetD8, "cuMemsetD8_v2");
  resolve(d->cuLaunchKernel, "cuLaunchKernel");
  resolve(d->cuGetErrorName, "cuGetErrorName");
  resolve(d->cuGetErrorString, "cuGetErrorString");
  resolve(d->cuFuncSetAttribute, "cuFuncSetAttribute", /*required=*/false);
  if (!ok)
    return nullptr; // the handle stays open: dlclose of a driver is unsafe
  return d;
}

const Driver *globalDriver(std::string &error) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Driver>> drivers;
  std::string path = driverLibraryPath();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = drivers.find(path);
  if (it != drivers.end())
    return it->second.get();
  std::unique_ptr<Driver> d = loadDriver(path, error);
  if (!d)
    return nullptr;
  return (drivers[path] = std::move(d)).get();
}

bool openDevice(const Driver &driver, int ordinal, Device &out,
                std::string &error, Unavailable &why) {
  why = Unavailable::None;
  if (!driver.check(driver.cuInit(0), "cuInit", error)) {
    why = Unavailable::InitFailed;
    return false;
  }
  int count = 0;
  if (!driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount",
                    error)) {
    why = Unavailable::NoDevice;
    return false;
  }
  if (count <= 0) {
    error = "no CUDA device: cuDeviceGetCount found 0 devices";
    why = Unavailable::NoDevice;
    return false;
  }
  if (ordinal < 0) {
    ordinal = 0;
    if (const char *env = std::getenv("SQ_CUDA_DEVICE"))
      if (*env)
        ordinal = std::atoi(env);
  }
  if (ordinal < 0 || ordinal >= count) {
    error = "no CUDA device: device " + std::to_string(ordinal) +
            " requested (SQ_CUDA_DEVICE), " + std::to_string(count) + " found";
    why = Unavailable::NoDevice;
    return false;
  }
  Device d;
  d.ordinal = ordinal;
  why = Unavailable::Other;
  if (!driver.check(driver.cuDeviceGet(&d.device, ordinal), "cuDeviceGet",
                    error) ||
      !driver.check(
          driver.cuDeviceGetAttribute(
              &d.major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d.device),
          "cuDeviceGetAttribute", error) ||
      !driver.check(
          driver.cuDeviceGetAttribute(
              &d.minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d.device),
          "cuDeviceGetAttribute", error))
    return false;
  int optin = 0;
  if (driver.cuDeviceGetAttribute(
          &optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
          d.device) == CUDA_SUCCESS &&
      optin > 0)
    d.maxSharedOptin = optin;
  char name[256] = {0};
  if (driver.cuDeviceGetName(name, sizeof(name) - 1, d.device) == CUDA_SUCCESS)
    d.name = oneLine(name);
  if (d.name.empty())
    d.name = "device " + std::to_string(ordinal);
  if (!driver.check(driver.cuDevicePrimaryCtxRetain(&d.context, d.device),
                    "cuDevicePrimaryCtxRetain", error))
    return false;
  if (!driver.check(driver.cuCtxSetCurrent(d.context), "cuCtxSetCurrent",
                    error)) {
    driver.cuDevicePrimaryCtxRelease(d.device);
    return false;
  }
  why = Unavailable::None;
  out = d;
  return true;
}

void closeDevice(const Driver &driver, Device &device) {
  if (device.context) {
    driver.cuDevicePrimaryCtxRelease(device.device);
    device.context = nullptr;
  }
}

} // namespace cuda
} // namespace sq
