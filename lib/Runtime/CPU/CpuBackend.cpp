//===- CpuBackend.cpp - the CPU backend of the C API ----------------------===//
//
// Loading a model for the CPU kernels (the weights sidecar mapped; the
// quantized linears of the integer GEMM read their weights where they are
// mapped, in the layout the compiler wrote; the others are dequantized),
// contexts with their KV caches, and one run of the program --sq-lower-cpu
// generates.
//
//===----------------------------------------------------------------------===//

#include "CpuBackend.h"

#include "sq/Numerics/Quantize.h"

#include <algorithm>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sq {
namespace rt {

std::unique_ptr<Model> newModel() { return std::make_unique<CpuModel>(); }

sq_status CpuModel::load(sq_error **err) {
  if (sq_status s = mapWeights(err))
    return s;
  kernels = selectKernelPath(&kernelNote);
  return prepareQLinears(err);
}

sq_status CpuModel::prepareQLinears(sq_error **err) {
  for (const QLinearDesc &d : manifest.qlinears) {
    PreparedQLinear q;
    q.desc = d;
    q.bias = f32(d.bias);
    int64_t groups =
        d.weightQuant.group ? d.k / d.weightQuant.group : int64_t(1);
    const WeightDesc &wd = manifest.weights[d.weight];
    const WeightDesc &sd = manifest.weights[d.scales];
    if (wd.packedBits != d.weightQuant.bits || wd.rows != d.n ||
        wd.cols != d.k || sd.rows * sd.cols != d.n * groups)
      return fail(err, SQ_ERR_FORMAT,
                  sidecar + ": weight '" + wd.name +
                      "' does not match its quantized linear");
    std::string error;
    KernelLayout layout;
    bool integer = integerPathLayout(d, layout);
    if (wd.kernelBlock && (!integer || layout.blockSize != wd.kernelBlock))
      return fail(err, SQ_ERR_FORMAT,
                  sidecar + ": weight '" + wd.name +
                      "' is in a kernel layout its quantized linear does not "
                      "run with");
    if (wd.kernelBlock) {
      // Written in the kernels' layout at compile time: used where it is
      // mapped, shared with every process that maps the same file.
      if (!viewPackedWeight(layout, weights[d.weight], wd.bytes(), q.packed,
                            error))
        return fail(err, SQ_ERR_FORMAT,
                    sidecar + ": weight '" + wd.name + "': " + error);
      q.integer = true;
    } else if (integer && packWeight(weights[d.weight], f32(d.scales), d.n, d.k,
                                     d.weightQuant.bits, d.weightQuant.group,
                                     d.actQuant.group, q.packed, error)) {
      // Rows the compiler did not lay out (a weight two linears share):
      // the kernels read their own copy, the mapped bytes are not needed.
      q.integer = true;
      file.release(d.weight, wd.bytes());
    } else {
      // Weight-only quantization (W4A16) and asymmetric weights run on
      // fp32 weights dequantized here, exactly as the executor does.
      q.dense.resize(size_t(d.n) * d.k);
      sq::numerics::dequantizePackedRows(
          weights[d.weight], d.n, d.k, d.weightQuant.bits,
          d.weightQuant.symmetric, d.weightQuant.group, f32(d.scales),
          f32(d.zeros), q.dense.data());
    }
    qlinears.push_back(std::move(q));
  }
  return SQ_OK;
}

std::string CpuModel::describe() const {
  int integer = 0;
  for (const PreparedQLinear &q : qlinears)
    integer += q.integer;
  std::string d = std::string("kernels ") + kernelPathName(kernels) + ", " +
                  std::to_string(integer) + "/" +
                  std::to_string(qlinears.size()) +
                  " quantized linears on the integer path, " +
                  std::to_string(ThreadPool::global().size()) + " threads";
  if (!kernelNote.empty())
    d += " (" + kernelNote + ")";
  return d;
}

std::unique_ptr<Context>
CpuModel::createContext(int64_t maxContext, int64_t maxBatch, sq_error **err) {
  auto c = std::make_unique<CpuContext>(*this, maxContext, maxBatch);
  for (const AttentionDesc &a : manifest.attentions) {
    std::unique_ptr<KVStore[]> kv(new KVStore[2]);
    int64_t kvf = a.kvHeads * a.headDim;
    if (!kv[0].allocate(maxBatch, maxContext, kvf, a.keyQuant,
                        /*tiled=*/true) ||
        !kv[1].allocate(maxBatch, maxContext, kvf, a.valueQuant)) {
      fail(err, SQ_ERR_OUT_OF_MEMORY,
           "sq_context_create: cannot allocate the KV cache for " +
               std::to_string(maxBatch) + " x " + std::to_string(maxContext) +
               " tokens");
      return nullptr;
    }
    c->caches.push_back(std::move(kv));
  }
  c->exec.model = this;
  c->exec.context = c.get();
  c->exec.slots.resize(manifest.numSlots);
  if (const char *p = std::getenv("SQ_PROFILE"); p && *p && *p != '0') {
    c->profile = std::make_unique<Profile>();
    c->exec.profile = c->profile.get();
  }
  return c;
}

CpuContext::~CpuContext() {
  if (profile)
    profile->print();
}

const char *Profile::name(Op op) {
  static const char *const names[NumOps] = {
      "embedding",        "rms_norm",     "linear (float)",  "R4 hadamard",
      "activation quant", "integer gemm", "qlinear (float)", "rope",
      "kv-cache append",  "attention",    "rotate",          "hadamard (R3)",
      "fake_quant",       "last rows",    "add/mul/silu"};
  return names[op];
}

void Profile::print() const {
  for (int phase = 0; phase < 2; ++phase) {
    if (!runs[phase])
      continue;
    std::fprintf(stderr,
                 "sq profile: %s: %lld runs, %lld tokens, %.3f ms per run\n",
                 phase ? "decode" : "prefill", (long long)runs[phase],
                 (long long)tokens[phase], 1e3 * total[phase] / runs[phase]);
    double sum = 0;
    for (int op = 0; op < NumOps; ++op)
      sum += seconds[phase][op];
    auto line = [&](const char *what, double s) {
      std::fprintf(stderr, "  %-18s %9.3f ms/run %5.1f%%\n", what,
                   1e3 * s / runs[phase],
                   total[phase] > 0 ? 100 * s / total[phase] : 0.0);
    };
    for (int op = 0; op < NumOps; ++op)
      if (seconds[phase][op] > 0)
        line(name(Op(op)), seconds[phase][op]);
    line("other", std::max(0.0, total[phase] - sum));
  }
}

bool CpuContext::run(const int32_t *tokens, int64_t batch, int64_t n,
                     std::string &error) {
  Exec &x = exec;
  x.begin(batch, n, cached);
  x.actsSlot = -1;
  x.lastOnly = lastOnly;
  x.ids = tokens;
  x.fillPositions(x.positions);
  if (!profile) {
    sq_model_program(&x);
    return x.finish(error);
  }
  x.phase = n == 1 ? 1 : 0;
  auto t0 = std::chrono::steady_clock::now();
  sq_model_program(&x);
  profile->total[x.phase] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  profile->runs[x.phase] += 1;
  profile->tokens[x.phase] += batch * n;
  return x.finish(error);
}

bool CpuContext::readLogits(float *logits, bool every, std::string &error) {
  Exec &x = exec;
  int64_t vocab = model.manifest.vocabSize;
  const float *l = x.in(x.logits);
  if (every && x.narrowed) {
    error = "the last run computed the last position's logits only";
    return false;
  }
  if (every)
    std::memcpy(logits, l, x.tokens * vocab * sizeof(float));
  else
    for (int64_t b = 0; b < x.batch; ++b)
      std::memcpy(logits + b * vocab, l + ((b + 1) * x.seq - 1) * vocab,
                  vocab * sizeof(float));
  return true;
}

} // namespace rt
} // namespace sq
