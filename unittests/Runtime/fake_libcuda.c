/*===- fake_libcuda.c - a stand-in for libcuda.so.1 in the CUDA tests ----===//
 *
 * Loaded by the tests through SQ_CUDA_LIBRARY. FAKE_CUDA_MODE, read at every
 * call, picks the machine it pretends to be:
 *   noinit  cuInit returns CUDA_ERROR_NO_DEVICE (100)
 *   zero    cuInit succeeds, cuDeviceGetCount finds 0 devices
 *   device  (default) one device "Fake GPU", compute capability
 *           FAKE_CUDA_SM (default 86): memory is host memory, launches are
 *           recorded (and sq_embedding, sq_linear16 with fp32 weights and
 *           sq_add are computed, so that a model's logits can be checked).
 * FAKE_CUDA_PTX_ERROR set: cuModuleLoadDataEx fails with
 * CUDA_ERROR_INVALID_PTX and an error log. The kernels and their parameter
 * types are those of lib/Runtime/CUDA/KernelABI.h (p pointer, l i64, i i32,
 * f f32): cuModuleGetFunction knows nothing else.
 *
 *===----------------------------------------------------------------------===*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef uint64_t CUdeviceptr;

static const char *mode(void) {
  const char *m = getenv("FAKE_CUDA_MODE");
  return m && *m ? m : "device";
}

struct kernel {
  const char *name, *params;
  long launches;
  unsigned grid[2], block, smem;
  uint64_t last[32];
};

static struct kernel kernels[] = {
    {.name = "sq_add", .params = "pppl"},
    {.name = "sq_mul", .params = "pppl"},
    {.name = "sq_silu", .params = "ppl"},
    {.name = "sq_embedding",
     .params = "pppll"
               "i"},
    {.name = "sq_rms_norm", .params = "pppllf"},
    {.name = "sq_rope", .params = "ppplllfi"},
    {.name = "sq_hadamard", .params = "ppllpl"},
    {.name = "sq_fake_quant",
     .params = "ppllii"
               "lf"},
    {.name = "sq_quantize",
     .params = "ppppll"
               "liilf"
               "pli"},
    {.name = "sq_qgemm_s8",
     .params = "ppppppp"
               "p"
               "lllll"
               "l"},
    {.name = "sq_qgemm_s4",
     .params = "ppppppp"
               "p"
               "lllll"
               "l"},
    {.name = "sq_linear16",
     .params = "pppplll"
               "i"},
    {.name = "sq_kv_append",
     .params = "ppppp"
               "lllll"
               "iilf"},
    {.name = "sq_attention",
     .params = "pppppppppp"
               "lllllll"
               "filiiliil"},
};
enum { kNumKernels = sizeof(kernels) / sizeof(kernels[0]) };

static long liveAllocations;

EXPORT CUresult cuInit(unsigned flags) {
  (void)flags;
  return strcmp(mode(), "noinit") == 0 ? 100 : 0;
}

EXPORT CUresult cuDeviceGetCount(int *count) {
  *count = strcmp(mode(), "zero") == 0 ? 0 : 1;
  return 0;
}

EXPORT CUresult cuDeviceGet(int *device, int ordinal) {
  if (ordinal != 0)
    return 101; /* CUDA_ERROR_INVALID_DEVICE */
  *device = 0;
  return 0;
}

EXPORT CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
  (void)device;
  const char *sm = getenv("FAKE_CUDA_SM");
  int cc = sm && *sm ? atoi(sm) : 86;
  if (attribute == 75)
    *value = cc / 10;
  else if (attribute == 76)
    *value = cc % 10;
  else if (attribute == 97)
    *value = 99 * 1024;
  else
    return 1; /* CUDA_ERROR_INVALID_VALUE */
  return 0;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, int device) {
  (void)device;
  snprintf(name, (size_t)len, "Fake GPU");
  return 0;
}

static int contextObject;

EXPORT CUresult cuDevicePrimaryCtxRetain(void **ctx, int device) {
  (void)device;
  *ctx = &contextObject;
  return 0;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(int device) {
  (void)device;
  return 0;
}
EXPORT CUresult cuCtxSetCurrent(void *ctx) {
  (void)ctx;
  return 0;
}
EXPORT CUresult cuCtxSynchronize(void) { return 0; }

static int moduleObject;

EXPORT CUresult cuModuleLoadDataEx(void **module, const void *image, unsigned n,
                                   int *options, void **values) {
  (void)image;
  if (getenv("FAKE_CUDA_PTX_ERROR")) {
    for (unsigned i = 0; i < n; ++i)
      if (options[i] == 5) { /* CU_JIT_ERROR_LOG_BUFFER */
        size_t size = 0;
        for (unsigned j = 0; j < n; ++j)
          if (options[j] == 6)
            size = (size_t)(uintptr_t)values[j];
        snprintf((char *)values[i], size, "ptxas fatal   : fake error\n");
      }
    return 218; /* CUDA_ERROR_INVALID_PTX */
  }
  *module = &moduleObject;
  return 0;
}

EXPORT CUresult cuModuleUnload(void *module) {
  (void)module;
  return 0;
}

EXPORT CUresult cuModuleGetFunction(void **fn, void *module, const char *name) {
  (void)module;
  const char *missing = getenv("FAKE_CUDA_MISSING");
  for (int i = 0; i < kNumKernels; ++i)
    if (strcmp(kernels[i].name, name) == 0 &&
        !(missing && strcmp(missing, name) == 0)) {
      *fn = &kernels[i];
      return 0;
    }
  return 500; /* CUDA_ERROR_NOT_FOUND */
}

EXPORT CUresult cuFuncSetAttribute(void *fn, int attribute, int value) {
  (void)fn;
  (void)attribute;
  (void)value;
  return 0;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p)
    return 2;
  ++liveAllocations;
  *ptr = (CUdeviceptr)(uintptr_t)p;
  return 0;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr) {
  if (ptr) {
    --liveAllocations;
    free((void *)(uintptr_t)ptr);
  }
  return 0;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
  memcpy((void *)(uintptr_t)dst, src, n);
  return 0;
}
EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
  memcpy(dst, (const void *)(uintptr_t)src, n);
  return 0;
}
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
  memset((void *)(uintptr_t)dst, v, n);
  return 0;
}

static void *P(const uint64_t *a, int i) { return (void *)(uintptr_t)a[i]; }

/* The few kernels computed here (fp32 only). */
static void compute(const struct kernel *k, const uint64_t *a) {
  if (strcmp(k->name, "sq_embedding") == 0 && (int32_t)a[5] == 0) {
    float *out = P(a, 0);
    const float *table = P(a, 1);
    const int32_t *ids = P(a, 2);
    int64_t tokens = (int64_t)a[3], dim = (int64_t)a[4];
    for (int64_t t = 0; t < tokens; ++t)
      memcpy(out + t * dim, table + ids[t] * dim, dim * sizeof(float));
  } else if (strcmp(k->name, "sq_linear16") == 0 && (int32_t)a[7] == 0) {
    float *out = P(a, 0);
    const float *x = P(a, 1), *w = P(a, 2), *bias = P(a, 3);
    int64_t m = (int64_t)a[4], kk = (int64_t)a[5], n = (int64_t)a[6];
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        float s = bias ? bias[j] : 0.0f;
        for (int64_t c = 0; c < kk; ++c)
          s += x[i * kk + c] * w[j * kk + c];
        out[i * n + j] = s;
      }
  } else if (strcmp(k->name, "sq_add") == 0) {
    float *out = P(a, 0);
    const float *x = P(a, 1), *y = P(a, 2);
    for (int64_t i = 0; i < (int64_t)a[3]; ++i)
      out[i] = x[i] + y[i];
  }
}

EXPORT CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz,
                               unsigned bx, unsigned by, unsigned bz,
                               unsigned smem, void *stream, void **params,
                               void **extra) {
  (void)stream;
  (void)extra;
  struct kernel *k = fn;
  if (gz != 1 || by != 1 || bz != 1 || !params)
    return 1;
  size_t n = strlen(k->params);
  for (size_t i = 0; i < n; ++i) {
    uint64_t v = 0;
    char t = k->params[i];
    memcpy(&v, params[i], t == 'i' || t == 'f' ? 4 : 8);
    k->last[i] = v;
  }
  k->launches++;
  k->grid[0] = gx;
  k->grid[1] = gy;
  k->block = bx;
  k->smem = smem;
  compute(k, k->last);
  return 0;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **name) {
  switch (error) {
  case 0:
    *name = "CUDA_SUCCESS";
    return 0;
  case 2:
    *name = "CUDA_ERROR_OUT_OF_MEMORY";
    return 0;
  case 100:
    *name = "CUDA_ERROR_NO_DEVICE";
    return 0;
  case 218:
    *name = "CUDA_ERROR_INVALID_PTX";
    return 0;
  default:
    *name = NULL;
    return 1;
  }
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **text) {
  switch (error) {
  case 0:
    *text = "no error";
    return 0;
  case 2:
    *text = "out of memory";
    return 0;
  case 100:
    *text = "no CUDA-capable device is detected";
    return 0;
  case 218:
    *text = "a PTX JIT compilation failed";
    return 0;
  default:
    *text = NULL;
    return 1;
  }
}

/* For the tests (found with dlsym). */
EXPORT long fake_cuda_live_allocations(void) { return liveAllocations; }

/* Launch count of `name`; its last launch's grid, block, dynamic shared
 * memory and parameters (as u64, zero-extended) when the pointers are not
 * NULL. -1 for an unknown kernel. */
EXPORT long fake_cuda_launches(const char *name, unsigned *grid,
                               unsigned *block, unsigned *smem,
                               uint64_t *params) {
  for (int i = 0; i < kNumKernels; ++i)
    if (strcmp(kernels[i].name, name) == 0) {
      if (grid) {
        grid[0] = kernels[i].grid[0];
        grid[1] = kernels[i].grid[1];
      }
      if (block)
        *block = kernels[i].block;
      if (smem)
        *smem = kernels[i].smem;
      if (params)
        memcpy(params, kernels[i].last, sizeof(kernels[i].last));
      return kernels[i].launches;
    }
  return -1;
}
