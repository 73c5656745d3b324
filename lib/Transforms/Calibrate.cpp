//===- Calibrate.cpp - SpinQuant's Cayley calibration of R1/R2 ------------===//
//
// The embedded training loop of SpinQuant (see Calibrate.h): rotations are
// folded into a copy of the frozen weights at every step, the executor runs
// the fake-quantized model forward and backward (dL/dW' for every rotated
// weight W'), the chain rule turns those into dL/dR1 and dL/dR2, and Cayley
// SGD moves the rotations along the orthogonal group.
//
//===----------------------------------------------------------------------===//

#include "sq/Transforms/Calibrate.h"
#include "QuantizeCalibration.h"
#include "WeightAccess.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Exec/TokenLoader.h"
#include "sq/Numerics/Cayley.h"
#include "sq/Numerics/Hadamard.h"
#include "sq/Numerics/Quantize.h"
#include "sq/Transforms/GPTQ.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

using namespace mlir;

namespace sq {

//===----------------------------------------------------------------------===//
// The embedded calibration text
//===----------------------------------------------------------------------===//

static const char defaultText[] = {
#include "DefaultCalibrationText.inc"
};

StringRef defaultCalibrationText() {
  return StringRef(defaultText, sizeof(defaultText));
}

bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::string &error) {
  std::vector<std::vector<int64_t>> heldOut;
  CalibrationOptions noValidation = options;
  noValidation.validate = 0;
  return loadCalibrationWindows(noValidation, seqlen, vocab, windows, heldOut,
                                error);
}

bool loadCalibrationWindows(const CalibrationOptions &options, int64_t seqlen,
                            int64_t vocab,
                            std::vector<std::vector<int64_t>> &windows,
                            std::vector<std::vector<int64_t>> &heldOut,
                            std::string &error) {
  std::vector<int64_t> tokens;
  std::string what =
      options.data.empty()
          ? std::string("the embedded calibration text (WikiText-2)")
          : "calibration data '" + options.data + "'";
  TokenSource source;
  source.path = options.data;
  source.text = defaultCalibrationText();
  source.name = what;
  source.tokenizerSpec = options.tokenizer;
  // No tokenizer given: bytes, which only a byte-level model reads.
  if (vocab == 256)
    source.defaultTokenizerSpec = "byte";
  source.needsTokenizer =
      "calibration text needs the model's tokenizer: give "
      "tokenizer=sp:PATH (its SentencePiece model; byte-level "
      "models, vocabulary 256, default to tokenizer=byte) or "
      "pre-tokenized data=FILE.bin (this model's vocabulary is " +
      std::to_string(vocab) + ")";
  source.vocab = vocab;
  if (!loadTokens(source, tokens, error))
    return false;
  heldOut.clear();
  if (options.validate > 0) {
    int64_t need = (options.validate + 1) * seqlen + 1;
    if (int64_t(tokens.size()) < need) {
      error = what + " has " + std::to_string(tokens.size()) +
              " tokens: validate=" + std::to_string(options.validate) +
              " needs at least " + std::to_string(need) + " at seqlen " +
              std::to_string(seqlen);
      return false;
    }
    size_t end = tokens.size();
    for (int64_t i = 0; i < options.validate; ++i, end -= seqlen)
      heldOut.emplace_back(tokens.begin() + end - seqlen, tokens.begin() + end);
    tokens.resize(end);
  }
  if (int64_t(tokens.size()) <= seqlen) {
    error = what + " has " + std::to_string(tokens.size()) +
            " tokens, fewer than seqlen " + std::to_string(seqlen);
    return false;
  }
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int64_t> start(0, tokens.size() - seqlen - 1);
  windows.clear();
  for (int64_t i = 0; i < options.samples; ++i) {
    int64_t s = start(rng);
    windows.emplace_back(tokens.begin() + s, tokens.begin() + s + seqlen);
  }
  return true;
}

//===----------------------------------------------------------------------===//
// The objective
//===----------------------------------------------------------------------===//

namespace {

enum class Role { Embedding, Reader, Writer };

/// A weight that R1 (and maybe R2) rotates, [rows, cols] row-major.
struct Entry {
  std::string name;
  Role role;
  int64_t rows = 0, cols = 0;
  /// v_proj (R2^T on the rows of each KV head) or o_proj (R2 on the
  /// columns of each head) of this layer; -1 for neither.
  int64_t r2Layer = -1;
  bool isValue = false;
  /// The embedding table read only by sq.embedding: only the rows of the
  /// batch's tokens are rotated (and contribute to dL/dR1).
  bool rowsOnly = false;
  /// Fake-quantized while training (linear weights but lm_head, when the
  /// spec quantizes weights).
  bool quantize = false;
  /// Training under gptq: the float model's Hessian of this weight's input
  /// (shared by the weights that read the same input: q/k/v, gate/up).
  std::shared_ptr<const std::vector<double>> hessian;
  /// The linear of the float module that reads this weight.
  Operation *linear = nullptr;
  std::vector<float> base;
  /// W R1 (v_proj) or R1^T W (o_proj) of the current step, for dL/dR2.
  std::vector<float> partial;
};

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
          int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
          float beta = 0.0f) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
              beta, c, ldc);
}

} // namespace

struct RotationObjective::Impl {
  ModuleOp source;
  OwningOpRef<ModuleOp> clone;
  std::unique_ptr<Executor> ex;
  QuantSpec spec;
  std::vector<Entry> entries;
  /// The trainable R3 weights of the clone, one per layer (learnR3).
  std::vector<std::string> r3Names;
  /// The R1/R2 and embedding rows of the last complete fold: the executor
  /// holds its weights (and the entries their `partial`) while they match.
  bool folded = false;
  std::vector<double> foldedR1;
  std::vector<std::vector<double>> foldedR2;
  std::vector<int64_t> foldedRows;
  int64_t hidden = 0, headDim = 0, layers = 0, vocab = 0, maxPositions = 0;
};

RotationObjective::RotationObjective() : impl(std::make_unique<Impl>()) {}
RotationObjective::~RotationObjective() = default;
int64_t RotationObjective::hidden() const { return impl->hidden; }
int64_t RotationObjective::headDim() const { return impl->headDim; }
int64_t RotationObjective::numLayers() const { return impl->layers; }
int64_t RotationObjective::vocabSize() const { return impl->vocab; }
int64_t RotationObjective::maxPositions() const { return impl->maxPositions; }

std::unique_ptr<RotationObjective>
RotationObjective::create(ModuleOp module, const std::string &quant,
                          std::string &error, bool learnR3) {
  std::unique_ptr<RotationObjective> obj(new RotationObjective());
  Impl &impl = *obj->impl;
  if (!parseQuantSpec(quant, impl.spec, error)) {
    error = "quant=" + quant + ": " + error;
    return nullptr;
  }
  if (impl.spec.real) {
    error = "quant=" + quant +
            ": rotations are trained under fake quantization (no mode=real)";
    return nullptr;
  }
  if (impl.spec.gptq && !impl.spec.calib.empty()) {
    error = "quant=" + quant +
            ": calib= is not used while training: the GPTQ Hessians come "
            "from the calibration windows (data=)";
    return nullptr;
  }
  if (impl.spec.gptq && !impl.spec.quantizesWeights()) {
    error = "quant=" + quant + ": gptq needs quantized weights (wN, N < 16)";
    return nullptr;
  }
  impl.source = module;

  // Which weight plays which part, read off the structure (as
  // --spinquant-rotate does).
  auto nameOf = [](Value v) -> std::string {
    if (auto w = v.getDefiningOp<WeightOp>())
      return w.getName().str();
    return "";
  };
  bool ok = true;
  auto fail = [&](Operation *op, const Twine &msg) {
    if (ok)
      error = (op->getName().getStringRef() + ": " + msg).str();
    ok = false;
  };
  module.walk([&](RMSNormOp n) {
    if (n.getScale())
      fail(n, "has a scale, which does not commute with R1 (run "
              "--sq-fuse-norms first)");
  });
  EmbeddingOp embedding;
  module.walk([&](EmbeddingOp e) { embedding = e; });
  if (!embedding) {
    error = "no sq.embedding: nothing to rotate";
    return nullptr;
  }
  impl.hidden = embedding.getTable().getType().getDimSize(1);
  std::map<std::string, size_t> index;
  auto add = [&](Value w, Role role, Operation *user) -> Entry * {
    std::string name = nameOf(w);
    if (name.empty()) {
      fail(user, "weight must be an sq.weight");
      return nullptr;
    }
    if (index.count(name)) {
      Entry &e = impl.entries[index[name]];
      e.rowsOnly = false; // a tied embedding is read by lm_head too
      return &e;
    }
    auto type = cast<RankedTensorType>(w.getType());
    Entry e;
    e.name = name;
    e.role = role;
    e.rows = type.getDimSize(0);
    e.cols = type.getDimSize(1);
    index[name] = impl.entries.size();
    impl.entries.push_back(std::move(e));
    return &impl.entries.back();
  };
  add(embedding.getTable(), Role::Embedding, embedding)->rowsOnly = true;
  module.walk([&](LinearOp linear) {
    bool reads = linear.getInput().getDefiningOp<RMSNormOp>() != nullptr;
    bool writes = llvm::any_of(linear.getOutput().getUsers(),
                               [](Operation *u) { return isa<AddOp>(u); });
    bool head = llvm::any_of(linear.getOutput().getUsers(), [](Operation *u) {
      return isa<func::ReturnOp>(u);
    });
    if (reads && writes)
      return fail(linear, "both reads and writes the residual stream");
    if (!reads && !writes)
      return;
    if (Entry *e = add(linear.getWeight(), reads ? Role::Reader : Role::Writer,
                       linear)) {
      e->quantize = impl.spec.quantizesWeights() && !head;
      e->linear = linear;
    }
  });
  module.walk([&](AttentionOp attn) {
    auto v = attn.getValue().getDefiningOp<LinearOp>();
    LinearOp o;
    for (Operation *u : attn.getOutput().getUsers())
      o = dyn_cast<LinearOp>(u);
    if (!v || !o || !attn.getOutput().hasOneUse())
      return fail(attn, "R2 needs the value to be a linear projection and "
                        "the output to feed one linear (o_proj)");
    impl.headDim = attn.getHeadDim();
    auto vi = index.find(nameOf(v.getWeight()));
    auto oi = index.find(nameOf(o.getWeight()));
    if (vi == index.end() || oi == index.end() ||
        impl.entries[vi->second].role != Role::Reader ||
        impl.entries[oi->second].role != Role::Writer)
      return fail(attn, "v_proj must read the residual stream and o_proj "
                        "write it");
    impl.entries[vi->second].r2Layer = impl.layers;
    impl.entries[vi->second].isValue = true;
    impl.entries[oi->second].r2Layer = impl.layers;
    ++impl.layers;
  });
  if (!ok)
    return nullptr;

  // The training model: activations and KV cache fake-quantized as the
  // spec says; weights are quantized here, after rotation, at every step.
  impl.clone = module.clone();
  // Trainable R3: the clone's online Hadamards on Q/K become sq.rotate by
  // weights (the same matrices), set at every step like the rotated weights.
  // (Named apart from the R3 weights the caller folds into the model.)
  if (learnR3 && !replaceR3WithRotations(*impl.clone, {}, &impl.r3Names, error,
                                         "R3_training"))
    return nullptr;
  QuantSpec actOnly = impl.spec;
  actOnly.wBits = 16;
  actOnly.gptq = false;
  if (actOnly.quantizesActivations() || actOnly.kBits < 16 ||
      actOnly.vBits < 16) {
    PassManager pm(module.getContext());
    std::unique_ptr<Pass> pass = createSQQuantize();
    std::string specError;
    if (failed(pass->initializeOptions(actOnly.str(), [&](const Twine &msg) {
          specError = msg.str();
          return failure();
        }))) {
      error = "quant=" + quant + ": " + specError;
      return nullptr;
    }
    pm.addPass(std::move(pass));
    if (failed(pm.run(*impl.clone))) {
      error = "cannot insert the fake quantization of quant=" + quant;
      return nullptr;
    }
  }
  impl.ex = Executor::create(*impl.clone, error);
  if (!impl.ex)
    return nullptr;
  impl.vocab = impl.ex->info().vocabSize;
  impl.maxPositions = impl.ex->info().maxPositions;
  for (Entry &e : impl.entries) {
    ArrayRef<float> v = impl.ex->weightValues(e.name);
    if (v.size() != size_t(e.rows * e.cols)) {
      error = "weight '" + e.name + "' is not a float weight of the executor";
      return nullptr;
    }
    e.base.assign(v.begin(), v.end());
  }
  return obj;
}

bool RotationObjective::prepareGPTQ(
    const std::vector<std::vector<int64_t>> &windows, std::string &error) {
  Impl &impl = *this->impl;
  if (!impl.spec.gptq)
    return true;
  SmallVector<Operation *> ops;
  for (Entry &e : impl.entries)
    if (e.quantize && e.linear)
      ops.push_back(e.linear);
  std::map<Operation *, HessianAccumulator> acc;
  if (failed(collectHessians(impl.source, windows, ops, acc))) {
    error = "cannot collect the GPTQ Hessians of the float model";
    return false;
  }
  // Linears that read the same input get identical Hessians: keep one copy.
  std::map<const void *, std::shared_ptr<const std::vector<double>>> byInput;
  for (Entry &e : impl.entries) {
    if (!e.quantize || !e.linear)
      continue;
    auto &shared = byInput[e.linear->getOperand(0).getAsOpaquePointer()];
    if (!shared)
      shared = std::make_shared<const std::vector<double>>(
          acc.at(e.linear).hessian());
    e.hessian = shared;
  }
  return true;
}

/// The Hessian of a rotated weight's input: the float model's H seen through
/// the rotation. A reader of the residual stream (W' = W R1) gets the input
/// R1^T x, so H' = R1^T H R1; o_proj (W' = R1^T W B, B = blockdiag(R2)) gets
/// B^T x, so H' = B^T H B; any other writer (down_proj) keeps H.
static std::vector<double> rotatedHessian(const std::vector<double> &h,
                                          int64_t cols, const double *r,
                                          int64_t d, bool blockDiagonal) {
  std::vector<double> t(h.size()), out(h.size());
  if (!blockDiagonal) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, cols, cols,
                1.0, h.data(), cols, r, cols, 0.0, t.data(), cols);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, cols, cols, 1.0,
                r, cols, t.data(), cols, 0.0, out.data(), cols);
    return out;
  }
  for (int64_t j = 0; j < cols; j += d) // T[:, blk j] = H[:, blk j] R2
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, d, d, 1.0,
                h.data() + j, cols, r, d, 0.0, t.data() + j, cols);
  for (int64_t i = 0; i < cols; i += d) // H'[blk i, :] = R2^T T[blk i, :]
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, cols, d, 1.0, r, d,
                t.data() + i * cols, cols, 0.0, out.data() + i * cols, cols);
  return out;
}

bool RotationObjective::evaluate(const Rotations &r, ArrayRef<int64_t> tokens,
                                 int64_t batch, int64_t seq, double &loss,
                                 Rotations *grad, std::string &error,
                                 std::vector<double> *sequenceLosses) {
  Impl &impl = *this->impl;
  int64_t n = impl.hidden, d = impl.headDim;
  if (r.r1.size() != size_t(n * n) || int64_t(r.r2.size()) != impl.layers) {
    error = "rotations do not match the model (R1 " + std::to_string(n) + "x" +
            std::to_string(n) + ", " + std::to_string(impl.layers) + " R2)";
    return false;
  }
  std::vector<float> r1(r.r1.begin(), r.r1.end());
  std::vector<std::vector<float>> r2(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l) {
    if (r.r2[l].size() != size_t(d * d)) {
      error = "R2 of layer " + std::to_string(l) + " is not " +
              std::to_string(d) + "x" + std::to_string(d);
      return false;
    }
    r2[l].assign(r.r2[l].begin(), r.r2[l].end());
  }
  if (!impl.r3Names.empty() && (int64_t(r.r3.size()) != impl.layers ||
                                llvm::any_of(r.r3, [&](const auto &m) {
                                  return m.size() != size_t(d * d);
                                }))) {
    error = "R3 is learned: " + std::to_string(impl.layers) + " R3 of " +
            std::to_string(d) + "x" + std::to_string(d) + " are needed";
    return false;
  }

  // The embedding rows the batch reads.
  std::vector<int64_t> used(tokens.begin(), tokens.end());
  llvm::sort(used);
  used.erase(std::unique(used.begin(), used.end()), used.end());
  auto gatherRows = [&](const std::vector<float> &m, int64_t cols) {
    std::vector<float> g(used.size() * cols);
    for (size_t i = 0; i < used.size(); ++i)
      std::memcpy(g.data() + i * cols, m.data() + used[i] * cols,
                  cols * sizeof(float));
    return g;
  };

  // 1. Fold the rotations into copies of the frozen weights.
  std::vector<std::string> names;
  // Training under gptq: the rotated Hessians of this step, by source
  // Hessian and rotation (-1: R1, l >= 0: R2 of layer l, -2: none).
  std::map<std::pair<const void *, int64_t>, std::vector<double>> rotatedH;
  // Evaluations that change only R3 (the R3 search) reuse the last fold and
  // its weight quantization; only the embedding rows a new batch reads are
  // rotated again.
  bool refold =
      !(impl.folded && r.r1 == impl.foldedR1 && r.r2 == impl.foldedR2);
  bool newRows = refold || used != impl.foldedRows;
  if (refold)
    impl.folded = false; // until this fold completes
  for (Entry &e : impl.entries) {
    names.push_back(e.name);
    if (!(e.rowsOnly ? newRows : refold))
      continue;
    if (e.rowsOnly) {
      if (used.empty() || used.back() >= e.rows || used.front() < 0) {
        error = "token ids outside the embedding table";
        return false;
      }
      std::vector<float> rows = gatherRows(e.base, n), w(rows.size());
      gemm(false, false, used.size(), n, n, rows.data(), n, r1.data(), n,
           w.data(), n);
      if (!impl.ex->setWeightRows(e.name, used, w, error))
        return false;
      continue;
    }
    std::vector<float> w(e.rows * e.cols);
    if (e.role != Role::Writer) { // W R1
      gemm(false, false, e.rows, n, n, e.base.data(), n, r1.data(), n, w.data(),
           n);
    } else { // R1^T W
      gemm(true, false, n, e.cols, n, r1.data(), n, e.base.data(), e.cols,
           w.data(), e.cols);
    }
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      e.partial = w;
      if (e.isValue) { // rows of each KV head: R2^T A_h
        for (int64_t r0 = 0; r0 < e.rows; r0 += d)
          gemm(true, false, d, n, d, q.data(), d, e.partial.data() + r0 * n, n,
               w.data() + r0 * n, n);
      } else { // columns of each head: A_h R2 ([rows * heads, d] x R2)
        gemm(false, false, e.rows * e.cols / d, d, d, e.partial.data(), d,
             q.data(), d, w.data(), d);
      }
    }
    if (e.quantize) {
      const std::vector<double> *hessian = nullptr;
      if (impl.spec.gptq) {
        if (!e.hessian) {
          error = "no GPTQ Hessian for '" + e.name + "' (prepareGPTQ)";
          return false;
        }
        int64_t kind = e.role == Role::Reader ? -1
                       : e.r2Layer >= 0       ? e.r2Layer
                                              : -2;
        auto key = std::make_pair((const void *)e.hessian.get(), kind);
        auto it = rotatedH.find(key);
        if (it == rotatedH.end()) {
          std::vector<double> h =
              kind == -2 ? *e.hessian
              : kind == -1
                  ? rotatedHessian(*e.hessian, e.cols, r.r1.data(), n, false)
                  : rotatedHessian(*e.hessian, e.cols, r.r2[kind].data(), d,
                                   true);
          it = rotatedH.emplace(key, std::move(h)).first;
        }
        hessian = &it->second;
      }
      numerics::QuantizedWeight qw;
      if (!quantizeWeight(w.data(), e.rows, e.cols, impl.spec, hessian, qw,
                          error)) {
        error = "cannot quantize '" + e.name + "': " + error;
        return false;
      }
      qw.dequantize(w.data()); // straight-through: dL/dW' = dL/dQ(W')
    }
    if (!impl.ex->setWeightValues(e.name, w, error))
      return false;
  }
  if (refold) {
    impl.folded = true;
    impl.foldedR1 = r.r1;
    impl.foldedR2 = r.r2;
  }
  impl.foldedRows = used;
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    names.push_back(impl.r3Names[l]);
    std::vector<float> m(r.r3[l].begin(), r.r3[l].end());
    if (!impl.ex->setWeightValues(impl.r3Names[l], m, error))
      return false;
  }
  if (!grad)
    return impl.ex->loss(tokens, batch, seq, loss, error, sequenceLosses);

  // 2. dL/dW' for every rotated weight.
  std::vector<std::vector<float>> dw;
  if (!impl.ex->lossAndGradients(tokens, batch, seq, names, loss, dw, error))
    return false;

  // 3. The chain rule back to R1 and R2 (float products, summed in double).
  std::vector<float> g1(n * n, 0.0f);
  std::vector<std::vector<float>> g2(impl.layers,
                                     std::vector<float>(d * d, 0.0f));
  for (size_t i = 0; i < impl.entries.size(); ++i) {
    Entry &e = impl.entries[i];
    std::vector<float> &dW = dw[i];
    if (e.r2Layer >= 0) {
      const std::vector<float> &q = r2[e.r2Layer];
      std::vector<float> &g = g2[e.r2Layer];
      std::vector<float> dA(dW.size());
      if (e.isValue) {
        // W' = blockdiag(R2^T) A: dR2 += sum_h A_h dW'_h^T, dA_h = R2 dW'_h.
        for (int64_t r0 = 0; r0 < e.rows; r0 += d) {
          gemm(false, true, d, d, n, e.partial.data() + r0 * n, n,
               dW.data() + r0 * n, n, g.data(), d, 1.0f);
          gemm(false, false, d, n, d, q.data(), d, dW.data() + r0 * n, n,
               dA.data() + r0 * n, n);
        }
      } else {
        // W' = A blockdiag(R2): dR2 += sum_h A_h^T dW'_h, dA = dW' R2^T.
        int64_t blocks = e.rows * e.cols / d;
        gemm(true, false, d, d, blocks, e.partial.data(), d, dW.data(), d,
             g.data(), d, 1.0f);
        gemm(false, true, blocks, d, d, dW.data(), d, q.data(), d, dA.data(),
             d);
      }
      dW.swap(dA);
    }
    if (e.rowsOnly) { // only the rows read contribute
      std::vector<float> rows = gatherRows(e.base, n),
                         drows = gatherRows(dW, n);
      gemm(true, false, n, n, used.size(), rows.data(), n, drows.data(), n,
           g1.data(), n, 1.0f);
    } else if (e.role != Role::Writer) // W' = W R1: dR1 += W^T dW'
      gemm(true, false, n, n, e.rows, e.base.data(), n, dW.data(), n, g1.data(),
           n, 1.0f);
    else // W' = R1^T W: dR1 += W dW'^T
      gemm(false, true, n, n, e.cols, e.base.data(), e.cols, dW.data(), e.cols,
           g1.data(), n, 1.0f);
  }
  grad->hidden = n;
  grad->headDim = d;
  grad->r1.assign(g1.begin(), g1.end());
  grad->r2.resize(impl.layers);
  for (int64_t l = 0; l < impl.layers; ++l)
    grad->r2[l].assign(g2[l].begin(), g2[l].end());
  grad->r3.clear();
  for (size_t l = 0; l < impl.r3Names.size(); ++l) {
    const std::vector<float> &g = dw[impl.entries.size() + l];
    grad->r3.emplace_back(g.begin(), g.end());
  }
  return true;
}

//===----------------------------------------------------------------------===//
// The training loop
//===----------------------------------------------------------------------===//

/// The rotations Cayley SGD moves (R3 only when it trains it: a searched R3
/// is exactly orthogonal and stays as found).
static std::vector<std::vector<double> *> rotationList(Rotations &r,
                                                       bool withR3) {
  std::vector<std::vector<double> *> list{&r.r1};
  for (auto &m : r.r2)
    list.push_back(&m);
  if (withR3)
    for (auto &m : r.r3)
      list.push_back(&m);
  return list;
}

/// The mean loss over a fixed set of windows (the progress report's
/// before/after comparison, independent of which batches the steps saw).
static bool evalLoss(RotationObjective &objective, const Rotations &r,
                     const std::vector<std::vector<int64_t>> &windows,
                     int64_t count, int64_t seqlen, double &loss,
                     std::string &error,
                     std::vector<double> *windowLosses = nullptr) {
  // In batches of up to 8 windows (the weights are folded once per set of
  // rotations).
  loss = 0;
  count = std::min<int64_t>(count, windows.size());
  if (windowLosses)
    windowLosses->clear();
  for (int64_t i = 0; i < count; i += 8) {
    int64_t b = std::min<int64_t>(8, count - i);
    std::vector<int64_t> tokens;
    for (int64_t j = 0; j < b; ++j)
      tokens.insert(tokens.end(), windows[i + j].begin(), windows[i + j].end());
    double l;
    std::vector<double> each;
    if (!objective.evaluate(r, tokens, b, seqlen, l, nullptr, error,
                            windowLosses ? &each : nullptr))
      return false;
    loss += l * b / count;
    if (windowLosses)
      windowLosses->insert(windowLosses->end(), each.begin(), each.end());
  }
  return true;
}

/// The mean of the paired differences a[i] - b[i] and its standard error.
static std::pair<double, double> pairedDifference(ArrayRef<double> a,
                                                  ArrayRef<double> b) {
  size_t k = a.size();
  double mean = 0, var = 0;
  for (size_t i = 0; i < k; ++i)
    mean += (a[i] - b[i]) / double(k);
  for (size_t i = 0; i < k; ++i)
    var += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
  double se = k > 1 ? std::sqrt(var / double(k - 1) / double(k)) : 0.0;
  return {mean, se};
}

/// r3=search (after the Cayley steps): layer by layer, seeded signed
/// permutations of the Hadamard matrix (x -> x P D H: the same spreading of
/// the key's channels, other ones mixed) against the current R3, on the
/// forward loss of fixed windows under the training quantization. The
/// candidate with the lowest mean loss replaces the current R3 only if its
/// mean paired improvement over the windows exceeds `r3Sigma` standard
/// errors of that improvement: a choice among many on few windows otherwise
/// keeps differences that are noise (never worse on those windows).
static bool searchR3(RotationObjective &objective, Rotations &rotations,
                     const std::vector<std::vector<int64_t>> &windows,
                     int64_t seqlen, const CalibrationOptions &options,
                     std::string &error) {
  int64_t d = rotations.headDim, count = options.r3Windows;
  bool terminal =
      options.progress && llvm::sys::Process::StandardErrIsDisplayed();
  auto start = std::chrono::steady_clock::now();
  double first = 0, current = 0;
  std::vector<double> currentEach;
  if (!evalLoss(objective, rotations, windows, count, seqlen, current, error,
                &currentEach))
    return false;
  first = current;
  const std::vector<float> &h = numerics::denseTransform(d, /*seed=*/0);
  std::mt19937_64 rng(options.seed * 0x9e3779b97f4a7c15ULL + 3);
  int64_t kept = 0;
  for (size_t l = 0; l < rotations.r3.size(); ++l) {
    double layerStart = current, bestLoss = current;
    std::vector<double> start = rotations.r3[l], best, bestEach;
    for (int64_t c = 0; c < options.r3Candidates; ++c) {
      std::vector<int64_t> perm(d);
      for (int64_t i = 0; i < d; ++i)
        perm[i] = i;
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<double> &r = rotations.r3[l];
      for (int64_t i = 0; i < d; ++i) {
        double sign = (rng() & 1) ? -1.0 : 1.0;
        for (int64_t j = 0; j < d; ++j)
          r[i * d + j] = sign * h[perm[i] * d + j];
      }
      double loss;
      std::vector<double> each;
      if (!evalLoss(objective, rotations, windows, count, seqlen, loss, error,
                    &each))
        return false;
      if (loss < bestLoss) {
        bestLoss = loss;
        best = r;
        bestEach = std::move(each);
      }
    }
    auto [gain, se] = best.empty() ? std::pair<double, double>{0.0, 0.0}
                                   : pairedDifference(currentEach, bestEach);
    bool accept = !best.empty() && gain > options.r3Sigma * se;
    if (accept) {
      ++kept;
      current = bestLoss;
      currentEach = std::move(bestEach);
      rotations.r3[l] = std::move(best);
    } else {
      rotations.r3[l] = std::move(start);
    }
    if (terminal)
      llvm::errs() << llvm::format(
          "calibrate: R3 of layer %zu: loss %.4f, best of %lld candidates "
          "%.4f (gain %.4f +- %.4f): %s\n",
          l, layerStart, (long long)options.r3Candidates,
          best.empty() ? layerStart : layerStart - gain, gain, se,
          accept ? "kept" : "not significant");
  }
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (options.progress)
    llvm::errs() << llvm::format(
        "calibrate: R3 search: %lld of %zu layers changed, loss on %lld "
        "windows %.4f -> %.4f in %.1f s\n",
        (long long)kept, rotations.r3.size(),
        (long long)std::min<int64_t>(count, windows.size()), first, current,
        secs);
  return true;
}

LogicalResult calibrateRotations(ModuleOp module,
                                 const CalibrationOptions &options,
                                 Rotations &rotations) {
  auto fail = [&](const Twine &msg) {
    return emitError(module.getLoc()) << "spinquant calibration: " << msg;
  };
  if (options.steps < 0 || options.samples <= 0 || options.batch <= 0 ||
      options.seqlen < 0 || !(options.lr > 0) || options.momentum < 0 ||
      options.momentum >= 1 || options.validate < 0 ||
      options.validateEvery <= 0)
    return fail("steps >= 0, samples > 0, batch > 0, seqlen >= 0, lr > 0, "
                "0 <= momentum < 1, validate >= 0 and validate-every > 0 are "
                "required");
  if (options.schedule != "cosine" && options.schedule != "constant")
    return fail("unknown schedule '" + options.schedule +
                "': expected cosine or constant");
  std::string error;
  if (options.r3 != "hadamard" && options.r3 != "search" &&
      options.r3 != "cayley")
    return fail("unknown r3 '" + options.r3 +
                "': expected search, cayley or hadamard");
  if (options.r3Candidates < 0 || options.r3Windows <= 0 ||
      !(options.r3Sigma >= 0))
    return fail("r3-candidates >= 0, r3-windows > 0 and r3-sigma >= 0 are "
                "required");
  bool learnR3 = options.r3 != "hadamard";
  auto objective =
      RotationObjective::create(module, options.quant, error, learnR3);
  if (!objective)
    return fail(error);
  int64_t n = objective->hidden(), d = objective->headDim();
  if (rotations.r1.size() != size_t(n * n) ||
      int64_t(rotations.r2.size()) != objective->numLayers() ||
      int64_t(rotations.r3.size()) != (learnR3 ? objective->numLayers() : 0))
    return fail("the initial rotations do not match the model");
  int64_t seqlen = options.seqlen;
  if (!seqlen)
    // The official 2048, within the model's context; a model that does not
    // record its context gets a conservative 512 (training past a model's
    // context hurts, shorter windows only cost samples).
    seqlen = objective->maxPositions() > 0
                 ? std::min<int64_t>(objective->maxPositions(), 2048)
                 : 512;
  if (objective->maxPositions() > 0 && seqlen > objective->maxPositions())
    return fail("seqlen " + std::to_string(seqlen) +
                " exceeds the model's context of " +
                std::to_string(objective->maxPositions()));
  std::vector<std::vector<int64_t>> windows, heldOut;
  if (!loadCalibrationWindows(options, seqlen, objective->vocabSize(), windows,
                              heldOut, error))
    return fail(error);
  if (!objective->prepareGPTQ(windows, error))
    return fail(error);

  bool terminal =
      options.progress && llvm::sys::Process::StandardErrIsDisplayed();
  std::vector<double> m1;
  std::vector<std::vector<double>> m2(rotations.r2.size()),
      m3(rotations.r3.size());
  numerics::CayleyOptions cayley;
  cayley.momentum = options.momentum;
  double before = 0, after = 0;
  const int64_t evalCount = 8;
  if (options.progress && !evalLoss(*objective, rotations, windows, evalCount,
                                    seqlen, before, error))
    return fail(error);
  // Validation: the held-out loss at the initialization, every
  // validateEvery steps and at the end; the best rotations are kept.
  Rotations best;
  double bestLoss = 0, lastLoss = 0;
  int64_t bestStep = 0;
  auto validate = [&](int64_t step) -> bool {
    double l;
    if (!evalLoss(*objective, rotations, heldOut, heldOut.size(), seqlen, l,
                  error))
      return false;
    lastLoss = l;
    if (step == 0 || l < bestLoss) {
      bestLoss = l;
      bestStep = step;
      best = rotations;
    }
    if (terminal)
      llvm::errs() << llvm::format(
          "calibrate: step %3lld  held-out loss %.4f%s\n", (long long)step, l,
          bestStep == step ? "  (best)" : "");
    return true;
  };
  if (!heldOut.empty() && !validate(0))
    return fail(error);
  auto start = std::chrono::steady_clock::now();
  int64_t next = 0;
  for (int64_t step = 0; step < options.steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> tokens;
    for (int64_t b = 0; b < options.batch; ++b) {
      const std::vector<int64_t> &w = windows[next];
      next = (next + 1) % int64_t(windows.size());
      tokens.insert(tokens.end(), w.begin(), w.end());
    }
    double loss;
    Rotations grad;
    if (!objective->evaluate(rotations, tokens, options.batch, seqlen, loss,
                             &grad, error))
      return fail(error);
    if (!std::isfinite(loss))
      return fail("the loss is not finite at step " + std::to_string(step));
    cayley.lr = options.schedule == "cosine"
                    ? numerics::cosineSchedule(options.lr, step, options.steps)
                    : options.lr;
    double alpha = numerics::cayleyStep(rotations.r1, grad.r1, n, m1, cayley);
    for (size_t l = 0; l < rotations.r2.size(); ++l)
      numerics::cayleyStep(rotations.r2[l], grad.r2[l], d, m2[l], cayley);
    if (options.r3 == "cayley")
      for (size_t l = 0; l < rotations.r3.size(); ++l)
        numerics::cayleyStep(rotations.r3[l], grad.r3[l], d, m3[l], cayley);
    // Five fixed-point iterations solve the Cayley equation only
    // approximately, and for small matrices the step is large relative to
    // their size (about 1e-4 off orthogonal per step at n = 16): a QR pulls
    // them back, every step for small matrices (cheap), every 20 for large.
    for (auto *r : rotationList(rotations, options.r3 == "cayley"))
      if (int64_t(std::lround(std::sqrt(double(r->size())))) <= 512 ||
          (step + 1) % 20 == 0)
        numerics::reorthonormalize(*r,
                                   std::lround(std::sqrt(double(r->size()))));
    double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (terminal)
      llvm::errs() << llvm::format("calibrate: step %3lld/%lld  loss %.4f  "
                                   "lr %.3f  R1 step %.4f  %.2f s\n",
                                   (long long)step + 1,
                                   (long long)options.steps, loss, cayley.lr,
                                   alpha, secs);
    if (!heldOut.empty() &&
        ((step + 1) % options.validateEvery == 0 ||
         step + 1 == options.steps) &&
        !validate(step + 1))
      return fail(error);
  }
  if (!heldOut.empty() && bestStep != options.steps)
    rotations = best;
  numerics::reorthonormalize(rotations.r1, n);
  for (auto &r : rotations.r2)
    numerics::reorthonormalize(r, d);
  if (options.r3 == "cayley")
    for (auto &r : rotations.r3)
      numerics::reorthonormalize(r, d);
  double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  // The R3 search comes last, against the final R1/R2: it can only lower
  // the loss of its windows from there. (It reports its own time.)
  if (options.r3 == "search" &&
      !searchR3(*objective, rotations, windows, seqlen, options, error))
    return fail(error);
  if (options.progress && !evalLoss(*objective, rotations, windows, evalCount,
                                    seqlen, after, error))
    return fail(error);
  if (options.progress)
    llvm::errs() << llvm::format(
        "calibrate: %lld steps of %lld x %lld tokens under %s in %.1f s "
        "(%.3f s/step); loss on %lld fixed windows %.4f -> %.4f\n",
        (long long)options.steps, (long long)options.batch, (long long)seqlen,
        options.quant.c_str(), total,
        options.steps ? total / options.steps : 0.0,
        (long long)std::min<int64_t>(evalCount, windows.size()), before, after);
  if (options.progress && !heldOut.empty())
    llvm::errs() << llvm::format(
        "calibrate: held-out loss on %lld windows: %.4f at step %lld kept "
        "(%.4f at the end)\n",
        (long long)heldOut.size(), bestLoss, (long long)bestStep, lastLoss);
  return success();
}

} // namespace sq
