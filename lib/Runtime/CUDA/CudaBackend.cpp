//===- CudaBackend.cpp - the CUDA backend of the C API --------------------===//
//
// Loading a model on the GPU (the device first: without one sq_model_open
// fails with SQ_ERR_NO_DEVICE before anything is mapped; then the PTX
// compiled into the library, `sq_model_ptx`, JIT-compiled by the driver, and
// the device copies of the weights), contexts with their device KV caches,
// and one run of the program the NVPTX lowering generates. The driver is
// loaded with dlopen (CudaDriver.h).
//
//===----------------------------------------------------------------------===//

#include "CudaBackend.h"

#include <cstring>

namespace sq {
namespace cuda {

const char *const kKernelNames[kNumKernels] = {
    "sq_add",       "sq_mul",      "sq_silu",     "sq_embedding",
    "sq_rms_norm",  "sq_rope",     "sq_hadamard", "sq_fake_quant",
    "sq_quantize",  "sq_qgemm_s8", "sq_qgemm_s4", "sq_linear16",
    "sq_kv_append", "sq_attention"};

CudaModel::~CudaModel() {
  if (!haveDevice)
    return;
  drv->cuCtxSetCurrent(device.context);
  drv->cuCtxSynchronize();
  for (CUdeviceptr p : allocations)
    drv->cuMemFree(p);
  if (module)
    drv->cuModuleUnload(module);
  closeDevice(*drv, device);
}

bool CudaModel::upload(const void *data, uint64_t bytes, CUdeviceptr &out,
                       std::string &error, CUresult *result) {
  out = 0;
  CUresult r = drv->cuMemAlloc(&out, std::max<uint64_t>(bytes, 4));
  if (result)
    *result = r;
  if (!drv->check(r, "cuMemAlloc", error))
    return false;
  allocations.push_back(out);
  if (bytes)
    r = drv->cuMemcpyHtoD(out, data, bytes);
  if (result)
    *result = r;
  return drv->check(r, "cuMemcpyHtoD", error);
}

bool Exec::launch(Kernel k, uint64_t gridX, uint64_t gridY, unsigned block,
                  uint64_t smem, void **params) {
  if (failed)
    return false;
  const char *name = kKernelNames[k];
  CUfunction f = model->fn[k];
  if (!f) {
    setError(std::string(name) + ": the embedded PTX has no such kernel");
    return false;
  }
  if (gridX == 0 || gridY == 0)
    return true; // nothing to do
  if (gridX > 0x7fffffffu || gridY > 65535) {
    setError(std::string(name) + ": grid " + std::to_string(gridX) + " x " +
             std::to_string(gridY) + " exceeds the device's limits");
    return false;
  }
  if (smem > kDefaultSharedBytes) {
    std::lock_guard<std::mutex> lock(model->mutex);
    if (smem > uint64_t(model->device.maxSharedOptin) ||
        !model->drv->cuFuncSetAttribute) {
      setError(std::string(name) + " needs " + std::to_string(smem) +
               " bytes of shared memory; the device allows " +
               std::to_string(model->drv->cuFuncSetAttribute
                                  ? model->device.maxSharedOptin
                                  : int(kDefaultSharedBytes)));
      return false;
    }
    if (model->sharedSet[k] < smem) {
      std::string e;
      if (!drv().check(drv().cuFuncSetAttribute(
                           f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                           model->device.maxSharedOptin),
                       "cuFuncSetAttribute", e)) {
        setError(std::string(name) + ": " + e);
        return false;
      }
      model->sharedSet[k] = model->device.maxSharedOptin;
    }
  }
  std::string e;
  if (!drv().check(drv().cuLaunchKernel(f, unsigned(gridX), unsigned(gridY), 1,
                                        block, 1, 1, unsigned(smem), nullptr,
                                        params, nullptr),
                   "cuLaunchKernel", e)) {
    setError(std::string(name) + ": " + e);
    return false;
  }
  return true;
}

/// The device factor Q for a Hadamard of size n (built once per model).
bool hadamardFor(Exec &x, int64_t n, uint64_t seed, HadamardFactor &f) {
  CudaModel &m = *x.model;
  std::lock_guard<std::mutex> lock(m.mutex);
  auto it = m.hadamards.find({n, seed});
  if (it == m.hadamards.end()) {
    HadamardFactor h;
    std::vector<float> q;
    hadamardFactor(n, seed, h.m, q);
    std::string e;
    if (!q.empty() && !m.upload(q.data(), q.size() * 4, h.q, e)) {
      x.setError("sq_hadamard: " + e);
      return false;
    }
    it = m.hadamards.emplace(std::make_pair(n, seed), h).first;
  }
  f = it->second;
  return true;
}

//===----------------------------------------------------------------------===//
// Loading
//===----------------------------------------------------------------------===//

/// Loads the PTX and resolves the kernels.
static sq_status loadKernels(CudaModel &m, sq_error **err) {
  std::vector<char> log(8192, 0);
  int options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log.data(),
                    reinterpret_cast<void *>(uintptr_t(log.size() - 1))};
  CUresult r =
      m.drv->cuModuleLoadDataEx(&m.module, sq_model_ptx, 2, options, values);
  std::string e;
  if (!m.drv->check(r, "cuModuleLoadDataEx", e)) {
    m.module = nullptr;
    std::string text(log.data());
    for (char &c : text)
      if (c == '\n' || c == '\r')
        c = ' ';
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    if (!text.empty())
      e += ": " + text;
    std::string sm =
        "sm_" + std::to_string(m.device.major) + std::to_string(m.device.minor);
    return fail(err,
                r == CUDA_ERROR_UNSUPPORTED_PTX_VERSION ||
                        r == CUDA_ERROR_NO_BINARY_FOR_GPU
                    ? SQ_ERR_UNSUPPORTED
                    : SQ_ERR_INTERNAL,
                m.path + ": the model's PTX does not load on " + m.device.name +
                    " (" + sm + "): " + e);
  }
  for (int k = 0; k < kNumKernels; ++k) {
    CUfunction f = nullptr;
    if (m.drv->cuModuleGetFunction(&f, m.module, kKernelNames[k]) ==
        CUDA_SUCCESS)
      m.fn[k] = f;
    else if (k != kQGemmS4) // optional: sq_qgemm_s8 covers every case
      return fail(err, SQ_ERR_FORMAT,
                  m.path + ": the model's PTX lacks the kernel " +
                      kKernelNames[k]);
  }
  return SQ_OK;
}

static sq_status uploadError(CudaModel &m, sq_error **err,
                             const std::string &what, const std::string &e,
                             CUresult r) {
  return fail(
      err,
      r == CUDA_ERROR_OUT_OF_MEMORY ? SQ_ERR_OUT_OF_MEMORY : SQ_ERR_INTERNAL,
      m.path + ": cannot upload " + what + " to " + m.device.name + ": " + e);
}

/// Uploads the float weights as stored (fp32, f16 or bf16).
static sq_status uploadWeights(CudaModel &m, sq_error **err) {
  m.dweights.assign(m.manifest.weights.size(), 0);
  for (size_t i = 0; i < m.manifest.weights.size(); ++i) {
    const WeightDesc &w = m.manifest.weights[i];
    if (w.packedBits)
      continue; // repacked by prepareQLinears
    std::string e;
    CUresult r = CUDA_SUCCESS;
    if (!m.upload(m.weights[i], w.bytes(), m.dweights[i], e, &r))
      return uploadError(m, err, "weight '" + w.name + "'", e, r);
  }
  return SQ_OK;
}

static sq_status prepareQLinears(CudaModel &m, sq_error **err) {
  for (const QLinearDesc &d : m.manifest.qlinears) {
    PreparedQLinear q;
    q.desc = d;
    int64_t groups =
        d.weightQuant.group ? d.k / d.weightQuant.group : int64_t(1);
    const WeightDesc &wd = m.manifest.weights[d.weight];
    const WeightDesc &sd = m.manifest.weights[d.scales];
    if (wd.packedBits != d.weightQuant.bits || wd.rows != d.n ||
        wd.cols != d.k || sd.rows * sd.cols != d.n * groups || sd.packedBits ||
        sd.storage != FloatStorage::F32)
      return fail(err, SQ_ERR_FORMAT,
                  m.sidecar + ": weight '" + wd.name +
                      "' does not match its quantized linear");
    q.plan =
        planQGemm(d, m.device.major, m.device.minor, m.fn[kQGemmS4] != nullptr);
    q.bias = d.bias >= 0 ? m.dweights[d.bias] : 0;
    q.wscales = m.dweights[d.scales];
    std::string e;
    CUresult r = CUDA_SUCCESS;
    if (q.plan.integer) {
      std::vector<uint8_t> w;
      std::vector<int32_t> sums;
      repackWeight(m.weights[d.weight], d.n, d.k, wd.packedBits, q.plan, w,
                   sums);
      if (!m.upload(w.data(), w.size(), q.w, e, &r) ||
          !m.upload(sums.data(), sums.size() * 4, q.wsums, e, &r))
        return uploadError(m, err, "weight '" + wd.name + "'", e, r);
    } else {
      // Weight-only quantization (W4A16), asymmetric weights and blocks the
      // kernels do not take run on fp32 weights dequantized here, exactly as
      // the executor does.
      std::vector<float> dense;
      const float *zeros =
          d.zeros >= 0 ? reinterpret_cast<const float *>(m.weights[d.zeros])
                       : nullptr;
      dequantizeWeight(m.weights[d.weight],
                       reinterpret_cast<const float *>(m.weights[d.scales]),
                       zeros, d, dense);
      if (!m.upload(dense.data(), dense.size() * 4, q.dense, e, &r))
        return uploadError(m, err, "weight '" + wd.name + "'", e, r);
    }
    m.qlinears.push_back(std::move(q));
  }
  return SQ_OK;
}

sq_status CudaModel::load(sq_error **err) {
  // The device first: without one nothing else matters (and nothing is
  // mapped or uploaded).
  std::string error;
  drv = globalDriver(error);
  Unavailable why = Unavailable::NoDriver;
  if (!drv || !openDevice(*drv, -1, device, error, why)) {
    // Every "no device" cause reads "no CUDA device: <why>".
    if (why != Unavailable::Other && error.rfind("no CUDA device", 0) != 0)
      error = "no CUDA device: " + error;
    return fail(err,
                why == Unavailable::Other ? SQ_ERR_INTERNAL : SQ_ERR_NO_DEVICE,
                path + ": " + error);
  }
  haveDevice = true;
  if (sq_status s = loadKernels(*this, err))
    return s;
  if (sq_status s = mapWeights(err))
    return s;
  if (sq_status s = uploadWeights(*this, err))
    return s;
  return prepareQLinears(*this, err);
}

std::string CudaModel::describe() const {
  int integer = 0, s4 = 0;
  for (const PreparedQLinear &q : qlinears) {
    integer += q.plan.integer;
    s4 += q.plan.integer && q.plan.s4;
  }
  std::string d = "target nvptx sm_" + std::to_string(device.major) +
                  std::to_string(device.minor) + ", device " + device.name +
                  ", " + std::to_string(integer) + "/" +
                  std::to_string(qlinears.size()) +
                  " quantized linears on the integer path";
  if (integer)
    d += " (" + std::to_string(s4) + " sq_qgemm_s4, " +
         std::to_string(integer - s4) + " sq_qgemm_s8)";
  return d;
}

std::unique_ptr<rt::Context>
CudaModel::createContext(int64_t maxContext, int64_t maxBatch, sq_error **err) {
  std::string e;
  if (!makeCurrent(e)) {
    fail(err, SQ_ERR_INTERNAL, "sq_context_create: " + e);
    return nullptr;
  }
  auto c = std::make_unique<CudaContext>(*this, maxContext, maxBatch);
  c->exec.model = this;
  c->exec.context = c.get();
  c->exec.slots.resize(manifest.numSlots);
  uint64_t rows = uint64_t(maxBatch) * maxContext;
  for (const AttentionDesc &a : manifest.attentions) {
    for (const QuantDesc *q : {&a.keyQuant, &a.valueQuant}) {
      KVCache kv;
      kv.quant = *q;
      kv.features = a.kvHeads * a.headDim;
      kv.group = q->group ? q->group : kv.features;
      bool ok;
      if (!q->bits) {
        ok = c->exec.ensure(kv.fp, rows * kv.features * 4, "KV cache");
      } else {
        uint64_t rowBytes =
            q->bits <= 4 ? (kv.features + 1) / 2 : uint64_t(kv.features);
        uint64_t groups = kv.features / kv.group;
        ok = c->exec.ensure(kv.codes, rows * rowBytes, "KV cache") &&
             c->exec.ensure(kv.scales, rows * groups * 4, "KV cache") &&
             c->exec.ensure(kv.zeros, rows * groups * 4, "KV cache") &&
             drv->check(drv->cuMemsetD8(kv.codes.ptr, 0, rows * rowBytes),
                        "cuMemsetD8", c->exec.error);
      }
      c->caches.push_back(kv); // freed with the context, even on failure
      if (!ok) {
        std::string why = c->exec.error;
        fail(err, SQ_ERR_OUT_OF_MEMORY,
             "sq_context_create: cannot allocate the KV cache for " +
                 std::to_string(maxBatch) + " x " + std::to_string(maxContext) +
                 " tokens (" + why + ")");
        return nullptr;
      }
    }
  }
  return c;
}

CudaContext::~CudaContext() {
  std::string e;
  cudaModel().makeCurrent(e);
  cudaModel().drv->cuCtxSynchronize();
  for (KVCache &c : caches) {
    exec.release(c.codes);
    exec.release(c.scales);
    exec.release(c.zeros);
    exec.release(c.fp);
  }
  for (Buffer &b : exec.slots)
    exec.release(b);
  for (Buffer *b : {&exec.ids, &exec.positions, &exec.codes, &exec.ascales,
                    &exec.azeros, &exec.scratch, &exec.scratch2})
    exec.release(*b);
}

bool CudaContext::run(const int32_t *tokens, int64_t batch, int64_t n,
                      std::string &error) {
  Exec &x = exec;
  const Driver &d = *cudaModel().drv;
  x.begin(batch, n, cached);
  std::string e;
  if (!cudaModel().makeCurrent(e)) {
    error = e;
    return false;
  }
  std::vector<int64_t> positions;
  x.fillPositions(positions);
  // The previous call synchronized: the buffers are free to overwrite.
  if (x.ensure(x.ids, x.tokens * 4, "token ids") &&
      x.ensure(x.positions, x.tokens * 8, "positions") &&
      d.check(d.cuMemcpyHtoD(x.ids.ptr, tokens, x.tokens * 4), "cuMemcpyHtoD",
              e) &&
      d.check(d.cuMemcpyHtoD(x.positions.ptr, positions.data(), x.tokens * 8),
              "cuMemcpyHtoD", e))
    sq_model_program(&x);
  else if (!x.failed)
    x.setError(e);
  CUresult sync = d.cuCtxSynchronize();
  if (!x.failed && !d.check(sync, "cuCtxSynchronize", e))
    x.setError(e);
  return x.finish(error);
}

bool CudaContext::readLogits(float *logits, bool every, std::string &error) {
  Exec &x = exec;
  const Driver &d = *cudaModel().drv;
  int64_t vocab = model.manifest.vocabSize;
  CUdeviceptr l = x.in(x.logits);
  std::string e;
  bool ok = !x.failed;
  if (ok && every)
    ok = d.check(d.cuMemcpyDtoH(logits, l, x.tokens * vocab * sizeof(float)),
                 "cuMemcpyDtoH", e);
  else
    for (int64_t b = 0; ok && b < x.batch; ++b)
      ok = d.check(d.cuMemcpyDtoH(logits + b * vocab,
                                  l + ((b + 1) * x.seq - 1) * vocab * 4,
                                  vocab * sizeof(float)),
                   "cuMemcpyDtoH", e);
  if (!ok)
    error = x.failed ? x.error : e;
  return ok;
}

} // namespace cuda

namespace rt {

std::unique_ptr<Model> newModel() {
  return std::make_unique<cuda::CudaModel>();
}

} // namespace rt
} // namespace sq
