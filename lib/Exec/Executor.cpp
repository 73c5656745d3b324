//===- Executor.cpp - reference executor for sq modules -------------------===//
//
// An interpreter over the ops of @forward. Values are dense fp32 (or int64
// for ids/positions) tensors; intermediates are freed after their last use.
// The kernels live in Kernels.cpp.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Executor.h"
#include "Grad.h"
#include "Kernels.h"
#include "sq/Numerics/Quantize.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Float16.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringMap.h"

#include <cmath>
#include <cstring>

using namespace mlir;

namespace sq {

struct Executor::Impl {
  func::FuncOp func;
  ModelInfo info;
  llvm::DenseMap<Operation *, exec::Tensor> weights;
  /// Float weights by name (for training).
  llvm::StringMap<Operation *> weightByName;
  /// sq.qlinear's weights, dequantized to fp32 once at load.
  llvm::DenseMap<Operation *, exec::Tensor> qweights;
  LinearObserver observer;
  /// Per attention op (in program order): keys and values so far,
  /// [batch, cached, kv_features].
  struct Cache {
    std::shared_ptr<exec::FloatBuffer> keys, values;
  };
  llvm::DenseMap<Operation *, Cache> caches;
  int64_t cached = 0, cachedBatch = 0;
  /// For each op, the values whose last use it is.
  llvm::DenseMap<Operation *, SmallVector<Value>> lastUses;
  /// For each op, the values whose first use it is (the backward pass frees
  /// them from the tape after that op).
  llvm::DenseMap<Operation *, SmallVector<Value>> firstUses;
  /// ExecPrecision::BF16.
  bool bf16 = false;
  /// Learned clipping: each sq.fake_quant's index in program order, the
  /// clip ratios that replace the attributes' (empty: none) and the last
  /// dL/dclip.
  llvm::DenseMap<Operation *, int64_t> fakeQuantSite;
  std::vector<double> clips, clipGrads;
  /// The loss: the sq.linear computing the logits (lm_head) when @forward
  /// returns one directly; its logits are then computed a chunk of
  /// `lossChunkRows` rows at a time with the loss (exec::headLoss). Null:
  /// the whole logits, then the loss.
  LinearOp head;
  int64_t lossChunkRows = 0;
  /// Checkpointing (lossAndGradients): the first op of each segment (one
  /// transformer block; the first starts the body) and the one activation
  /// live there (null for the first), see findSegments.
  SmallVector<Operation *> segmentStart;
  SmallVector<Value> segmentInput;
  ExecCheckpoint checkpoint = ExecCheckpoint::Auto;
  bool quantRangeGradient = false;
};

Executor::Executor() : impl(std::make_unique<Impl>()) {}
Executor::~Executor() = default;

const ModelInfo &Executor::info() const { return impl->info; }
int64_t Executor::cachedTokens() const { return impl->cached; }
void Executor::setLinearObserver(LinearObserver observer) {
  impl->observer = std::move(observer);
}

void Executor::setCheckpoint(ExecCheckpoint checkpoint) {
  impl->checkpoint = checkpoint;
}

int64_t Executor::checkpointSegments() const {
  return impl->segmentStart.size();
}

void Executor::reset() {
  impl->caches.clear();
  impl->cached = 0;
  impl->cachedBatch = 0;
}

/// True when every use of `op` is as the weight of an sq.linear or the
/// table of an sq.embedding (the kernels that read 16-bit weights in place).
static bool readInPlace(WeightOp op) {
  auto type = cast<RankedTensorType>(op.getType());
  if (type.getRank() != 2 || op->use_empty())
    return false;
  for (OpOperand &use : op->getUses()) {
    Operation *user = use.getOwner();
    if (auto l = dyn_cast<LinearOp>(user)) {
      if (use.get() != l.getWeight() || l.getInput() == use.get() ||
          l.getBias() == use.get())
        return false;
    } else if (auto e = dyn_cast<EmbeddingOp>(user)) {
      if (use.get() != e.getTable())
        return false;
    } else {
      return false;
    }
  }
  return true;
}

/// Widens a weight's resource blob to fp32, or, for a 16-bit weight that
/// only linears and embeddings read, points at it in place.
static bool loadWeight(WeightOp op, bool bf16, exec::Tensor &out,
                       std::string &error) {
  auto resource = cast<DenseResourceElementsAttr>(op.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob) {
    error = "weight '" + op.getName().str() +
            "' has no data (was the IR printed with elided resources?)";
    return false;
  }
  if (isa<PackedType>(op.getType())) {
    error = "weight '" + op.getName().str() +
            "' is packed; the executor runs float and fake-quantized models "
            "(quantized sq.qlinear comes with the quantization issue)";
    return false;
  }
  auto type = cast<RankedTensorType>(op.getType());
  out.shape.assign(type.getShape().begin(), type.getShape().end());
  ArrayRef<char> data = blob->getData();
  int64_t n = type.getNumElements();
  Type et = type.getElementType();
  if (std::optional<numerics::FloatFormat> format = floatFormatOf(et)) {
    if (int64_t(data.size()) != n * numerics::bytesPerValue(*format)) {
      error = "weight '" + op.getName().str() + "' has " +
              std::to_string(data.size()) + " bytes for " + std::to_string(n) +
              " values";
      return false;
    }
    // bf16 precision: a bf16 weight is viewed as a packed matrix in place,
    // an f32 one packed in bf16 once; an f16 one is read in place and
    // rounded to bf16 as it is read (linears pack a panel of rows at a
    // time: no copy of the model).
    if (bf16 && readInPlace(op) && *format != numerics::FloatFormat::F16) {
      int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
      out.packed = std::make_shared<numerics::PackedMatrix>(
          *format == numerics::FloatFormat::BF16
              ? numerics::PackedMatrix::viewBF16(
                    reinterpret_cast<const uint16_t *>(data.data()), rows, cols)
              : numerics::PackedMatrix::fromBits(data.data(), *format, rows,
                                                 cols));
      return true;
    }
    if (*format != numerics::FloatFormat::F32 && readInPlace(op)) {
      out.half = data.data();
      out.format = *format;
      out.roundToBF16 = bf16 && *format == numerics::FloatFormat::F16;
      return true;
    }
    out.data = std::make_shared<exec::FloatBuffer>(n);
    numerics::widenToFloat(data.data(), n, *format, out.data->data());
  } else {
    error = "weight '" + op.getName().str() +
            "' has element type that is "
            "not f32, f16 or bf16";
    return false;
  }
  return true;
}

/// Unpacks and dequantizes an sq.qlinear's weight: (q - zero) * scale in
/// fp32, the same arithmetic as numerics::QuantizedWeight::dequantize (so
/// mode=real runs exactly like mode=fake).
static bool
loadQLinearWeight(QLinearOp op,
                  const llvm::DenseMap<Operation *, exec::Tensor> &weights,
                  exec::Tensor &out, std::string &error) {
  auto packedOp = op.getWeight().getDefiningOp<WeightOp>();
  auto scalesOp = op.getScales().getDefiningOp<WeightOp>();
  WeightOp zerosOp = op.getZeroPoints()
                         ? op.getZeroPoints().getDefiningOp<WeightOp>()
                         : WeightOp();
  if (!packedOp || !scalesOp || (op.getZeroPoints() && !zerosOp)) {
    error = "sq.qlinear's weight, scales and zero points must be sq.weight";
    return false;
  }
  auto resource = cast<DenseResourceElementsAttr>(packedOp.getValue());
  AsmResourceBlob *blob = resource.getRawHandle().getBlob();
  if (!blob) {
    error = "weight '" + packedOp.getName().str() + "' has no data";
    return false;
  }
  PackedType type = op.getWeight().getType();
  int64_t rows = type.getShape()[0], cols = type.getShape()[1];
  int64_t rowBytes = type.getRowBytes();
  ArrayRef<char> bytes = blob->getData();
  if (int64_t(bytes.size()) != rows * rowBytes) {
    error = "weight '" + packedOp.getName().str() + "' has " +
            std::to_string(bytes.size()) + " bytes, expected " +
            std::to_string(rows * rowBytes);
    return false;
  }
  const exec::Tensor &scales = weights.lookup(scalesOp);
  const exec::Tensor *zeros =
      zerosOp ? &weights.find(zerosOp)->second : nullptr;
  QuantAttr wq = op.getWeightQuant();
  out.shape = {rows, cols};
  out.data = std::make_shared<exec::FloatBuffer>(rows * cols);
  numerics::dequantizePackedRows(
      reinterpret_cast<const uint8_t *>(bytes.data()), rows, cols,
      type.getBits(), wq.getSymmetric(), cols / wq.getNumGroups(cols),
      scales.data->data(), zeros ? zeros->data->data() : nullptr,
      out.data->data());
  return true;
}

/// The segments of checkpointing: @forward's ops (weights aside) up to the
/// head (or the return) are cut where exactly one activation is live, i.e.
/// defined before the cut and used after it (the ids and positions are
/// always there; of the return's operands only the logits count). In a
/// residual network those cuts are the residual stream between two blocks
/// (after each residual add; inside a block the stream and the block's own
/// values are live together). A segment starts at such a cut when the ops
/// up to the next cut hold an attention (a transformer block: attention
/// and MLP), and at the last cut (the final norm): one segment per layer,
/// whatever the layer holds (biases, GQA, fake quantizers, sq.rotate or
/// sq.hadamard ops), plus the embedding before the first. A model without
/// such cuts is one segment (no checkpointing).
static void findSegments(Executor::Impl &impl) {
  Block &body = impl.func.getBody().front();
  Operation *end = impl.head ? impl.head.getOperation() : body.getTerminator();
  SmallVector<Operation *> ops;
  for (Operation &op : body) {
    if (&op == end)
      break;
    if (!isa<WeightOp>(op))
      ops.push_back(&op);
  }
  int64_t n = ops.size();
  llvm::DenseMap<Operation *, int64_t> index;
  for (int64_t i = 0; i < n; ++i)
    index[ops[i]] = i;
  // The last op (index; n: the head or the return) that reads each value.
  llvm::DenseMap<Value, int64_t> last;
  for (int64_t i = 0; i < n; ++i)
    for (Value v : ops[i]->getOperands())
      if (v.getDefiningOp() && index.count(v.getDefiningOp()))
        last[v] = i;
  for (Value v : end->getOperands()) {
    if (isa<func::ReturnOp>(end) && v != end->getOperand(0))
      continue;
    if (v.getDefiningOp() && index.count(v.getDefiningOp()))
      last[v] = n;
  }
  std::vector<int64_t> cuts;
  std::vector<Value> cutValue;
  llvm::DenseSet<Value> live;
  for (int64_t i = 1; i < n; ++i) {
    for (Value r : ops[i - 1]->getResults())
      if (last.count(r))
        live.insert(r);
    for (Value v : ops[i - 1]->getOperands())
      if (last.count(v) && last[v] == i - 1)
        live.erase(v);
    if (live.size() == 1) {
      cuts.push_back(i);
      cutValue.push_back(*live.begin());
    }
  }
  impl.segmentStart.assign(1, n ? ops[0] : end);
  impl.segmentInput.assign(1, Value());
  for (size_t c = 0; c < cuts.size(); ++c) {
    int64_t to = c + 1 < cuts.size() ? cuts[c + 1] : n;
    bool block = c + 1 == cuts.size();
    for (int64_t i = cuts[c]; i < to && !block; ++i)
      block = isa<AttentionOp>(ops[i]);
    if (!block)
      continue;
    impl.segmentStart.push_back(ops[cuts[c]]);
    impl.segmentInput.push_back(cutValue[c]);
  }
}

std::unique_ptr<Executor> Executor::create(ModuleOp module, std::string &error,
                                           const ExecutorOptions &options) {
  std::unique_ptr<Executor> ex(new Executor());
  Impl &impl = *ex->impl;
  impl.bf16 = options.precision == ExecPrecision::BF16;
  impl.quantRangeGradient = options.quantRangeGradient;
  impl.func = module.lookupSymbol<func::FuncOp>("forward");
  if (!impl.func) {
    error = "the module has no @forward function";
    return nullptr;
  }
  func::FuncOp func = impl.func;
  if (func.getNumArguments() < 2 || func.getNumResults() < 1) {
    error = "@forward must take (input_ids, positions, ...) and return the "
            "logits first";
    return nullptr;
  }
  auto logitsType = dyn_cast<RankedTensorType>(func.getResultTypes()[0]);
  if (!logitsType || logitsType.getRank() != 3 || logitsType.isDynamicDim(2)) {
    error = "@forward's first result must be logits [batch, seq, vocab]";
    return nullptr;
  }
  impl.info.vocabSize = logitsType.getDimSize(2);
  if (auto config = module->getAttrOfType<DictionaryAttr>("sq.config")) {
    if (auto layers = config.getAs<IntegerAttr>("num_hidden_layers"))
      impl.info.numLayers = layers.getInt();
    if (auto maxPos = config.getAs<IntegerAttr>("max_position_embeddings"))
      impl.info.maxPositions = maxPos.getInt();
  }

  // Which ops can run, and the weights.
  Block &body = func.getBody().front();
  for (Operation &op : body) {
    if (auto w = dyn_cast<WeightOp>(op)) {
      if (isa<PackedType>(w.getType()))
        continue; // read by its sq.qlinear
      exec::Tensor t;
      if (!loadWeight(w, impl.bf16, t, error))
        return nullptr;
      impl.weights[&op] = std::move(t);
      impl.weightByName[w.getName()] = &op;
      continue;
    }
    if (auto q = dyn_cast<QLinearOp>(op)) {
      exec::Tensor t;
      if (!loadQLinearWeight(q, impl.weights, t, error))
        return nullptr;
      impl.qweights[&op] = std::move(t);
      continue;
    }
    if (isa<FakeQuantOp>(op)) {
      int64_t site = impl.fakeQuantSite.size();
      impl.fakeQuantSite[&op] = site;
      continue;
    }
    if (isa<EmbeddingOp, RMSNormOp, LinearOp, RopeOp, AttentionOp, SiluOp,
            MulOp, AddOp, RotateOp, HadamardOp, func::ReturnOp>(op))
      continue;
    error = "the executor cannot run '" + op.getName().getStringRef().str() +
            "' yet";
    return nullptr;
  }
  // Last uses, to free intermediates early.
  llvm::DenseMap<Value, Operation *> last;
  for (Operation &op : body)
    for (Value v : op.getOperands())
      last[v] = &op;
  for (auto &[v, op] : last)
    if (v.getDefiningOp() && !isa<WeightOp>(v.getDefiningOp()))
      impl.lastUses[op].push_back(v);
  llvm::DenseSet<Value> seen;
  for (Operation &op : body)
    for (Value v : op.getOperands())
      if (v.getDefiningOp() && !isa<WeightOp>(v.getDefiningOp()) &&
          seen.insert(v).second)
        impl.firstUses[&op].push_back(v);
  impl.checkpoint = options.checkpoint;
  impl.lossChunkRows = options.lossChunkRows > 0
                           ? options.lossChunkRows
                           : exec::headLossChunkRows(impl.info.vocabSize);
  Value logits = body.getTerminator()->getOperand(0);
  if (auto head = logits.getDefiningOp<LinearOp>())
    if (logits.hasOneUse() && head.getWeight().getDefiningOp<WeightOp>() &&
        (!head.getBias() || head.getBias().getDefiningOp<WeightOp>()))
      impl.head = head;
  findSegments(impl);
  return ex;
}

/// Every id must index the vocabulary.
static bool checkTokenIds(const ModelInfo &info, ArrayRef<int64_t> tokens,
                          std::string &error) {
  for (int64_t t : tokens)
    if (t < 0 || t >= info.vocabSize) {
      error = "token id " + std::to_string(t) +
              " is outside the vocabulary [0, " +
              std::to_string(info.vocabSize) + ")";
      return false;
    }
  return true;
}

/// The ids and positions of `tokens` ([batch, seq]; positions from
/// `cached` on) as @forward's first two arguments in `values`.
static void setInputs(Executor::Impl &impl, ArrayRef<int64_t> tokens,
                      int64_t batch, int64_t seq, int64_t cached,
                      llvm::DenseMap<Value, exec::Tensor> &values) {
  Block &body = impl.func.getBody().front();
  exec::Tensor ids, positions;
  ids.shape = {batch, seq};
  ids.ints =
      std::make_shared<std::vector<int64_t>>(tokens.begin(), tokens.end());
  positions.shape = {batch, seq};
  positions.ints = std::make_shared<std::vector<int64_t>>(batch * seq);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      (*positions.ints)[b * seq + s] = cached + s;
  values[body.getArgument(0)] = ids;
  values[body.getArgument(1)] = positions;
}

/// Runs the ops of @forward's body from `begin` up to `end` (exclusive; the
/// return or null: up to the return) on `values`, which holds their inputs.
/// For inference (training = false) attention continues after the KV cache
/// and extends it; for training it starts at position 0 and leaves the
/// cache alone. Each value is freed after its last use unless it is in
/// `keep` (a tape for the backward pass). `observe`: call the linear
/// observer.
static bool runOps(Executor::Impl &impl, Operation *begin, Operation *end,
                   bool training, llvm::DenseMap<Value, exec::Tensor> &values,
                   std::string &error,
                   const llvm::DenseSet<Value> *keep = nullptr,
                   bool observe = true) {
  int64_t cached = training ? 0 : impl.cached;
  for (Operation *opp = begin; opp && opp != end; opp = opp->getNextNode()) {
    Operation &op = *opp;
    auto get = [&](Value v) -> const exec::Tensor & {
      if (auto w = v.getDefiningOp<WeightOp>())
        return impl.weights[w];
      return values[v];
    };
    exec::Tensor out;
    bool ok = true;
    if (isa<WeightOp>(op)) {
      continue;
    } else if (auto e = dyn_cast<EmbeddingOp>(op)) {
      ok = exec::embedding(get(e.getTable()), get(e.getIds()), out, error);
    } else if (auto n = dyn_cast<RMSNormOp>(op)) {
      const exec::Tensor *scale = n.getScale() ? &get(n.getScale()) : nullptr;
      exec::rmsNorm(get(n.getInput()), scale, n.getEpsilon().convertToDouble(),
                    out);
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      const exec::Tensor *bias = l.getBias() ? &get(l.getBias()) : nullptr;
      const exec::Tensor &x = get(l.getInput());
      if (impl.observer && observe)
        impl.observer(&op, x.data->data(), x.numel() / x.lastDim(),
                      x.lastDim());
      exec::linear(x, get(l.getWeight()), bias, out);
    } else if (auto ql = dyn_cast<QLinearOp>(op)) {
      const exec::Tensor *bias = ql.getBias() ? &get(ql.getBias()) : nullptr;
      const exec::Tensor &x = get(ql.getInput());
      if (impl.observer && observe)
        impl.observer(&op, x.data->data(), x.numel() / x.lastDim(),
                      x.lastDim());
      if (std::optional<QuantAttr> aq = ql.getActQuant()) {
        exec::Tensor xq;
        exec::fakeQuant(x, aq->getBits(), aq->getSymmetric(),
                        static_cast<int>(aq->getGranularity()),
                        aq->getGroupSize(), aq->getClipRatio(), xq);
        exec::linear(xq, impl.qweights[&op], bias, out);
      } else {
        exec::linear(x, impl.qweights[&op], bias, out);
      }
    } else if (auto r = dyn_cast<RopeOp>(op)) {
      exec::rope(get(r.getInput()), get(r.getPositions()), r.getNumHeads(),
                 r.getTheta().convertToDouble(),
                 r.getLayout() == RopeLayout::Interleaved, out,
                 ropeScalingOf(r));
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      static Executor::Impl::Cache none;
      Executor::Impl::Cache &cache = training ? none : impl.caches[&op];
      const exec::Tensor &q = get(a.getQuery()), &k = get(a.getKey()),
                         &v = get(a.getValue());
      exec::Tensor present[2];
      int64_t headDim = q.shape[2] / a.getNumHeads();
      double scale = a.getScale() ? a.getScale()->convertToDouble()
                                  : 1.0 / std::sqrt(double(headDim));
      static const exec::FloatBuffer empty;
      exec::attention(q, k, v, cache.keys ? *cache.keys : empty,
                      cache.values ? *cache.values : empty, cached,
                      a.getNumHeads(), a.getNumKvHeads(), scale, a.getCausal(),
                      a.getWindow().value_or(0), out, present[0], present[1]);
      // The cache shares the present buffers (no copy).
      if (!training) {
        cache.keys = present[0].data;
        cache.values = present[1].data;
      }
      // (The keys and values @forward returns are not kept: only the
      // logits are read back.)
      for (auto [i, result] : llvm::enumerate(a.getPresent()))
        if (llvm::any_of(result.getUsers(),
                         [](Operation *u) { return !isa<func::ReturnOp>(u); }))
          values[result] = present[i];
      values[a.getOutput()] = std::move(out);
      goto freeDead;
    } else if (auto s = dyn_cast<SiluOp>(op)) {
      exec::silu(get(s.getInput()), out);
    } else if (auto m = dyn_cast<MulOp>(op)) {
      exec::binary(get(m.getLhs()), get(m.getRhs()), /*add=*/false, out);
    } else if (auto ad = dyn_cast<AddOp>(op)) {
      exec::binary(get(ad.getLhs()), get(ad.getRhs()), /*add=*/true, out);
    } else if (auto ro = dyn_cast<RotateOp>(op)) {
      exec::rotate(get(ro.getInput()), get(ro.getRotation()),
                   ro.getTransposed(), out, impl.bf16);
    } else if (auto h = dyn_cast<HadamardOp>(op)) {
      ok = exec::hadamard(get(h.getInput()), h.getBlockSize(),
                          h.getSeed() ? *h.getSeed() : 0, out, error);
    } else if (auto f = dyn_cast<FakeQuantOp>(op)) {
      QuantAttr qa = f.getQuant();
      double clip = impl.clips.empty()
                        ? qa.getClipRatio()
                        : impl.clips[impl.fakeQuantSite.lookup(&op)];
      exec::fakeQuant(get(f.getInput()), qa.getBits(), qa.getSymmetric(),
                      static_cast<int>(qa.getGranularity()), qa.getGroupSize(),
                      clip, out);
    } else if (isa<func::ReturnOp>(op)) {
      break;
    }
    if (!ok)
      return false;
    values[op.getResult(0)] = std::move(out);
  freeDead:
    // A tape keeps what the backward pass reads.
    auto dead = impl.lastUses.find(&op);
    if (dead != impl.lastUses.end())
      for (Value v : dead->second)
        if (!keep || !keep->contains(v))
          values.erase(v);
  }
  return true;
}

/// Runs @forward over `tokens` (inference: after the KV cache) and returns
/// the logits.
static bool evaluate(Executor::Impl &impl, ArrayRef<int64_t> tokens,
                     int64_t batch, int64_t seq, exec::Tensor &logits,
                     std::string &error) {
  llvm::DenseMap<Value, exec::Tensor> values;
  setInputs(impl, tokens, batch, seq, impl.cached, values);
  Block &body = impl.func.getBody().front();
  if (!runOps(impl, &body.front(), nullptr, /*training=*/false, values, error))
    return false;
  logits = values[body.getTerminator()->getOperand(0)];
  return true;
}

bool Executor::forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
                       std::vector<float> &logits, std::string &error) {
  Impl &impl = *this->impl;
  if (batch <= 0 || seq <= 0 ||
      static_cast<int64_t>(tokens.size()) != batch * seq) {
    error = "forward needs batch * seq tokens";
    return false;
  }
  if (impl.cached && batch != impl.cachedBatch) {
    error = "the batch size changed while the KV cache holds tokens";
    return false;
  }
  if (impl.info.maxPositions && impl.cached + seq > impl.info.maxPositions) {
    error = "position " + std::to_string(impl.cached + seq) +
            " exceeds the model's context of " +
            std::to_string(impl.info.maxPositions) + " tokens";
    return false;
  }
  if (!checkTokenIds(impl.info, tokens, error))
    return false;

  exec::Tensor out;
  if (!evaluate(impl, tokens, batch, seq, out, error))
    return false;
  logits.assign(out.data->begin(), out.data->end());
  impl.cached += seq;
  impl.cachedBatch = batch;
  return true;
}

} // namespace sq

//===----------------------------------------------------------------------===//
// Training: weights by name, loss and gradients
//===----------------------------------------------------------------------===//

namespace sq {

int64_t Executor::numFakeQuantSites() const {
  return impl->fakeQuantSite.size();
}

bool Executor::setFakeQuantClips(ArrayRef<double> clips, std::string &error) {
  if (!clips.empty() && int64_t(clips.size()) != numFakeQuantSites()) {
    error = std::to_string(clips.size()) + " clip ratios for " +
            std::to_string(numFakeQuantSites()) + " sq.fake_quant ops";
    return false;
  }
  for (double c : clips)
    if (!(c > 0 && c <= 1)) {
      error = "clip ratio " + std::to_string(c) + " is not in (0, 1]";
      return false;
    }
  impl->clips.assign(clips.begin(), clips.end());
  impl->clipGrads.assign(clips.size(), 0.0);
  return true;
}

const std::vector<double> &Executor::clipGradients() const {
  return impl->clipGrads;
}

std::vector<float> Executor::weightValues(StringRef name) const {
  auto it = impl->weightByName.find(name);
  if (it == impl->weightByName.end())
    return {};
  const exec::Tensor &t = impl->weights.find(it->second)->second;
  std::shared_ptr<exec::FloatBuffer> values = exec::floatValues(t);
  return std::vector<float>(values->begin(), values->end());
}

bool Executor::setWeightValues(StringRef name, ArrayRef<float> values,
                               std::string &error) {
  auto it = impl->weightByName.find(name);
  if (it == impl->weightByName.end()) {
    error = "the model has no float weight '" + name.str() + "'";
    return false;
  }
  exec::Tensor &t = impl->weights.find(it->second)->second;
  if (int64_t(values.size()) != t.numel()) {
    error = "weight '" + name.str() + "' has " + std::to_string(t.numel()) +
            " values, not " + std::to_string(values.size());
    return false;
  }
  // A fresh buffer: tensors handed out earlier keep the old values.
  bool wasHalf = t.half != nullptr;
  t.half = nullptr;
  if (t.packed || (wasHalf && impl->bf16)) { // bf16 precision: in bf16 again
    t.packed = std::make_shared<numerics::PackedMatrix>(
        numerics::PackedMatrix::fromFloat(values.data(), t.shape[0],
                                          t.shape[1]));
    return true;
  }
  t.data = std::make_shared<exec::FloatBuffer>(values.begin(), values.end());
  return true;
}

bool Executor::setWeightRows(StringRef name, ArrayRef<int64_t> rows,
                             ArrayRef<float> values, std::string &error) {
  auto it = impl->weightByName.find(name);
  if (it == impl->weightByName.end()) {
    error = "the model has no float weight '" + name.str() + "'";
    return false;
  }
  exec::Tensor &t = impl->weights.find(it->second)->second;
  if (t.shape.size() != 2 || values.size() != rows.size() * t.shape[1]) {
    error = "weight '" + name.str() + "': " + std::to_string(values.size()) +
            " values for " + std::to_string(rows.size()) + " rows";
    return false;
  }
  int64_t cols = t.shape[1];
  for (int64_t row : rows)
    if (row < 0 || row >= t.shape[0]) {
      error = "weight '" + name.str() + "' has no row " + std::to_string(row);
      return false;
    }
  if (t.half && impl->bf16) // bf16 precision: stored in bf16 from now on
    t.packed = std::make_shared<numerics::PackedMatrix>(
        numerics::PackedMatrix::fromBits(t.half, t.format, t.shape[0], cols));
  if (t.packed) { // bf16 precision: the rows rounded to bf16 in place
    t.half = nullptr;
    if (t.packed->isView() || t.packed.use_count() > 1)
      t.packed = std::make_shared<numerics::PackedMatrix>(
          numerics::PackedMatrix::fromBits(
              t.packed->row(0), numerics::FloatFormat::BF16, t.shape[0], cols,
              t.packed->stride()));
    for (size_t i = 0; i < rows.size(); ++i)
      t.packed->setRows(rows[i], 1, values.data() + i * cols);
    return true;
  }
  if (t.half) { // read in place until now: an fp32 copy of its own
    t.data = exec::floatValues(t);
    t.half = nullptr;
  } else if (t.data.use_count() > 1) { // still read elsewhere: copy first
    t.data = std::make_shared<exec::FloatBuffer>(*t.data);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= t.shape[0]) {
      error =
          "weight '" + name.str() + "' has no row " + std::to_string(rows[i]);
      return false;
    }
    std::memcpy(t.data->data() + rows[i] * cols, values.data() + i * cols,
                cols * sizeof(float));
  }
  return true;
}

/// The next-token targets of `tokens` [batch, seq]: token i + 1 of the same
/// sequence, -1 (not scored) for the last position.
static std::vector<int64_t> nextTokenTargets(ArrayRef<int64_t> tokens,
                                             int64_t batch, int64_t seq) {
  std::vector<int64_t> targets(batch * seq, -1);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s + 1 < seq; ++s)
      targets[b * seq + s] = tokens[b * seq + s + 1];
  return targets;
}

/// `soft` as the loss's raw rows, checked against a [batch, seq] call.
static bool softRows(const Executor::Impl &impl, const SoftTargets *soft,
                     int64_t batch, int64_t seq, exec::SoftRows &rows,
                     std::string &error) {
  if (!soft)
    return true;
  int64_t vocab = impl.info.vocabSize, w = soft->width;
  if (w <= 0 || int64_t(soft->logProbs.size()) != batch * seq * w ||
      (soft->ids.empty() ? w != vocab
                         : soft->ids.size() != soft->logProbs.size())) {
    error = "the reference distributions need width * batch * seq "
            "log-probabilities (and as many token ids, or width = vocabulary)";
    return false;
  }
  for (int32_t id : soft->ids)
    if (id < 0 || id >= vocab) {
      error = "reference token id " + std::to_string(id) +
              " outside the vocabulary";
      return false;
    }
  rows.width = w;
  rows.ids = soft->ids.empty() ? nullptr : soft->ids.data();
  rows.logProbs = soft->logProbs.data();
  return true;
}

static bool checkTrainingInput(const Executor::Impl &impl,
                               ArrayRef<int64_t> tokens, int64_t batch,
                               int64_t seq, std::string &error) {
  if (batch <= 0 || seq < 2 ||
      static_cast<int64_t>(tokens.size()) != batch * seq) {
    error = "the loss needs batch * seq tokens with seq >= 2";
    return false;
  }
  if (impl.info.maxPositions && seq > impl.info.maxPositions) {
    error = "sequences of " + std::to_string(seq) +
            " tokens exceed the model's context of " +
            std::to_string(impl.info.maxPositions);
    return false;
  }
  if (!checkTokenIds(impl.info, tokens, error))
    return false;
  return true;
}

/// The first forward of the loss: @forward from position 0 up to the head
/// (up to the return without one) into `values`, freeing what `keep` does
/// not hold. With `segments` (checkpointing), only the last segment keeps
/// its values; `saved` receives the input of each other segment.
static bool forwardForLoss(Executor::Impl &impl, ArrayRef<int64_t> tokens,
                           int64_t batch, int64_t seq, bool segments,
                           llvm::DenseMap<Value, exec::Tensor> &values,
                           std::vector<exec::Tensor> &saved,
                           const llvm::DenseSet<Value> *keep,
                           std::string &error) {
  Block &body = impl.func.getBody().front();
  Operation *end = impl.head ? impl.head.getOperation() : body.getTerminator();
  setInputs(impl, tokens, batch, seq, 0, values);
  if (!segments)
    return runOps(impl, &body.front(), end, /*training=*/true, values, error,
                  keep);
  size_t count = impl.segmentStart.size();
  saved.assign(count, exec::Tensor());
  for (size_t s = 0; s < count; ++s) {
    bool last = s + 1 == count;
    if (!runOps(impl, s ? impl.segmentStart[s] : &body.front(),
                last ? end : impl.segmentStart[s + 1], /*training=*/true,
                values, error, last ? keep : nullptr))
      return false;
    if (!last)
      saved[s + 1] = values.lookup(impl.segmentInput[s + 1]);
  }
  return true;
}

bool Executor::loss(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
                    double &loss, std::string &error,
                    std::vector<double> *sequenceLosses,
                    const SoftTargets *soft) {
  Impl &impl = *this->impl;
  exec::SoftRows rowsOf;
  if (!checkTrainingInput(impl, tokens, batch, seq, error) ||
      !softRows(impl, soft, batch, seq, rowsOf, error))
    return false;
  llvm::DenseMap<Value, exec::Tensor> values;
  std::vector<exec::Tensor> saved;
  if (!forwardForLoss(impl, tokens, batch, seq, /*segments=*/false, values,
                      saved, nullptr, error))
    return false;
  std::vector<int64_t> targets = nextTokenTargets(tokens, batch, seq);
  std::vector<double> rows;
  if (impl.head) { // the logits a chunk of rows at a time
    Value x = impl.head.getInput();
    const exec::Tensor *bias =
        impl.head.getBias() ? &impl.weights[impl.head.getBias().getDefiningOp()]
                            : nullptr;
    exec::NextTokenRows rowLoss(targets, impl.info.vocabSize,
                                soft ? &rowsOf : nullptr);
    loss = exec::headLoss(
        values[x], impl.weights[impl.head.getWeight().getDefiningOp()], bias,
        rowLoss, impl.lossChunkRows, sequenceLosses ? &rows : nullptr, nullptr,
        nullptr, nullptr);
  } else {
    Block &body = impl.func.getBody().front();
    exec::Tensor dl;
    int64_t count = 0;
    loss =
        exec::crossEntropy(values[body.getTerminator()->getOperand(0)], targets,
                           dl, count, sequenceLosses ? &rows : nullptr,
                           /*withGradient=*/false, soft ? &rowsOf : nullptr);
  }
  if (sequenceLosses) { // seq - 1 positions of each sequence are scored
    sequenceLosses->assign(batch, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t s = 0; s + 1 < seq; ++s)
        (*sequenceLosses)[b] += rows[b * seq + s];
      (*sequenceLosses)[b] /= double(seq - 1);
    }
  }
  return true;
}

/// grads[v] += t. Gradient buffers may be shared between values (an add
/// hands its output gradient to both operands), so a shared buffer is
/// copied before it is accumulated into.
static void accumulate(llvm::DenseMap<Value, exec::Tensor> &grads, Value v,
                       exec::Tensor t) {
  auto it = grads.find(v);
  if (it == grads.end()) {
    grads[v] = std::move(t);
    return;
  }
  exec::Tensor &g = it->second;
  if (g.data.use_count() > 1)
    g.data = std::make_shared<exec::FloatBuffer>(*g.data);
  float *d = g.data->data();
  const float *s = t.data->data();
  for (int64_t i = 0, n = g.numel(); i < n; ++i)
    d[i] += s[i];
}

bool Executor::lossAndGradients(ArrayRef<int64_t> tokens, int64_t batch,
                                int64_t seq, ArrayRef<std::string> wrt,
                                double &loss,
                                std::vector<std::vector<float>> &grads,
                                std::string &error, const SoftTargets *soft) {
  Impl &impl = *this->impl;
  exec::SoftRows rowsOf;
  if (!checkTrainingInput(impl, tokens, batch, seq, error) ||
      !softRows(impl, soft, batch, seq, rowsOf, error))
    return false;
  llvm::DenseSet<Operation *> wanted;
  for (const std::string &name : wrt) {
    auto it = impl.weightByName.find(name);
    if (it == impl.weightByName.end()) {
      error = "the model has no float weight '" + name + "'";
      return false;
    }
    wanted.insert(it->second);
  }
  Block &body = impl.func.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  auto wantsWeight = [&](Value v) {
    auto w = v.getDefiningOp<WeightOp>();
    return w && wanted.contains(w);
  };
  // The values some backward step below reads.
  llvm::DenseSet<Value> keep;
  for (Operation &op : body) {
    if (isa<RMSNormOp, SiluOp, MulOp>(op)) {
      keep.insert(op.getOperands().begin(), op.getOperands().end());
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      keep.insert(a.getQuery());
      keep.insert(a.getKey());
      keep.insert(a.getValue());
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      if (wantsWeight(l.getWeight()))
        keep.insert(l.getInput());
    } else if (auto r = dyn_cast<RotateOp>(op)) {
      if (wantsWeight(r.getRotation()))
        keep.insert(r.getInput());
    } else if (auto f = dyn_cast<FakeQuantOp>(op)) {
      // Learned clipping and the range's gradient read the input.
      if (!impl.clips.empty() || impl.quantRangeGradient)
        keep.insert(f.getInput());
    }
  }
  std::fill(impl.clipGrads.begin(), impl.clipGrads.end(), 0.0);
  // Checkpointing: the tape of one segment at a time (estimated from the
  // features per token of the values kept; auto: when the whole tape would
  // exceed 2 GiB).
  bool segments =
      impl.segmentStart.size() > 1 && impl.checkpoint != ExecCheckpoint::Off;
  if (segments && impl.checkpoint == ExecCheckpoint::Auto) {
    double bytes = 0;
    for (Value v : keep)
      if (auto type = dyn_cast<ShapedType>(v.getType()))
        if (type.hasRank() && type.getRank() &&
            !ShapedType::isDynamic(type.getShape().back()))
          bytes += double(type.getShape().back()) * 4.0 * double(batch * seq);
    segments = bytes > double(int64_t(2) << 30);
  }
  llvm::DenseMap<Value, exec::Tensor> tape;
  std::vector<exec::Tensor> saved;
  if (!forwardForLoss(impl, tokens, batch, seq, segments, tape, saved, &keep,
                      error))
    return false;

  auto get = [&](Value v) -> const exec::Tensor & {
    if (auto w = v.getDefiningOp<WeightOp>())
      return impl.weights[w];
    return tape[v];
  };
  // Only activations and the requested weights get gradients.
  auto wants = [&](Value v) {
    if (isa<BlockArgument>(v))
      return false;
    if (auto w = v.getDefiningOp<WeightOp>())
      return wanted.contains(w);
    return true;
  };
  llvm::DenseMap<Value, exec::Tensor> g;
  auto give = [&](Value v, exec::Tensor t) {
    if (wants(v))
      accumulate(g, v, std::move(t));
  };
  // The tape's values whose first use `op` is are not read again.
  auto freeFirstUses = [&](Operation *op) {
    auto first = impl.firstUses.find(op);
    if (first != impl.firstUses.end())
      for (Value v : first->second)
        tape.erase(v);
  };
  std::vector<int64_t> targets = nextTokenTargets(tokens, batch, seq);
  if (LinearOp head = impl.head) {
    // The head and the loss a chunk of rows at a time: the logits and their
    // gradient never exist whole.
    exec::Tensor dx, dw, db;
    bool needX = wants(head.getInput()), needW = wants(head.getWeight()),
         needB = head.getBias() && wants(head.getBias());
    exec::NextTokenRows rowLoss(targets, impl.info.vocabSize,
                                soft ? &rowsOf : nullptr);
    loss =
        exec::headLoss(get(head.getInput()), get(head.getWeight()),
                       head.getBias() ? &get(head.getBias()) : nullptr, rowLoss,
                       impl.lossChunkRows, nullptr, needX ? &dx : nullptr,
                       needW ? &dw : nullptr, needB ? &db : nullptr);
    freeFirstUses(head);
    if (needX)
      give(head.getInput(), std::move(dx));
    if (needW)
      give(head.getWeight(), std::move(dw));
    if (needB)
      give(head.getBias(), std::move(db));
  } else {
    Value logits = ret.getOperand(0);
    exec::Tensor dl;
    int64_t count = 0;
    loss = exec::crossEntropy(tape[logits], targets, dl, count, nullptr,
                              /*withGradient=*/true, soft ? &rowsOf : nullptr);
    g[logits] = std::move(dl);
    tape.erase(logits);
  }

  auto backwardOp = [&](Operation &op) -> bool {
    if (isa<WeightOp, func::ReturnOp>(op) || op.getNumResults() == 0)
      return true;
    llvm::scope_exit freeAfter([&] { freeFirstUses(&op); });
    auto found = g.find(op.getResult(0));
    if (found == g.end())
      return true; // does not reach the loss
    exec::Tensor dy = std::move(found->second);
    g.erase(found);
    if (auto e = dyn_cast<EmbeddingOp>(op)) {
      if (wants(e.getTable())) {
        exec::Tensor dt;
        exec::embeddingBackward(get(e.getIds()), dy, get(e.getTable()).shape[0],
                                dt);
        give(e.getTable(), std::move(dt));
      }
    } else if (auto n = dyn_cast<RMSNormOp>(op)) {
      exec::Tensor dx, ds;
      const exec::Tensor *scale = n.getScale() ? &get(n.getScale()) : nullptr;
      bool needS = scale && wants(n.getScale());
      exec::rmsNormBackward(get(n.getInput()), scale,
                            n.getEpsilon().convertToDouble(), dy, dx,
                            needS ? &ds : nullptr);
      give(n.getInput(), std::move(dx));
      if (needS)
        give(n.getScale(), std::move(ds));
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      exec::Tensor dx, dw, db;
      bool needX = wants(l.getInput()), needW = wants(l.getWeight()),
           needB = l.getBias() && wants(l.getBias());
      // The input is on the tape only when dW needs it; dx needs its shape.
      exec::Tensor shapeOnly;
      if (!needW) {
        shapeOnly.shape = dy.shape;
        shapeOnly.shape.back() = get(l.getWeight()).shape[1];
      }
      exec::linearBackward(needW ? get(l.getInput()) : shapeOnly,
                           get(l.getWeight()), dy, needX ? &dx : nullptr,
                           needW ? &dw : nullptr, needB ? &db : nullptr);
      if (needX)
        give(l.getInput(), std::move(dx));
      if (needW)
        give(l.getWeight(), std::move(dw));
      if (needB)
        give(l.getBias(), std::move(db));
    } else if (auto r = dyn_cast<RopeOp>(op)) {
      exec::Tensor dx;
      exec::ropeBackward(dy, get(r.getPositions()), r.getNumHeads(),
                         r.getTheta().convertToDouble(),
                         r.getLayout() == RopeLayout::Interleaved, dx,
                         ropeScalingOf(r));
      give(r.getInput(), std::move(dx));
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      const exec::Tensor &q = get(a.getQuery());
      int64_t headDim = q.shape[2] / a.getNumHeads();
      double scale = a.getScale() ? a.getScale()->convertToDouble()
                                  : 1.0 / std::sqrt(double(headDim));
      exec::Tensor dq, dk, dv;
      exec::attentionBackward(q, get(a.getKey()), get(a.getValue()),
                              a.getNumHeads(), a.getNumKvHeads(), scale,
                              a.getCausal(), a.getWindow().value_or(0), dy, dq,
                              dk, dv);
      give(a.getQuery(), std::move(dq));
      give(a.getKey(), std::move(dk));
      give(a.getValue(), std::move(dv));
    } else if (auto s = dyn_cast<SiluOp>(op)) {
      exec::Tensor dx;
      exec::siluBackward(get(s.getInput()), dy, dx);
      give(s.getInput(), std::move(dx));
    } else if (auto m = dyn_cast<MulOp>(op)) {
      exec::Tensor da, db;
      exec::mulBackward(get(m.getLhs()), get(m.getRhs()), dy, da, db);
      give(m.getLhs(), std::move(da));
      give(m.getRhs(), std::move(db));
    } else if (auto ad = dyn_cast<AddOp>(op)) {
      give(ad.getLhs(), dy);
      give(ad.getRhs(), std::move(dy));
    } else if (auto ro = dyn_cast<RotateOp>(op)) {
      if (wants(ro.getRotation())) {
        exec::Tensor dr;
        exec::rotateMatrixBackward(get(ro.getInput()), dy,
                                   get(ro.getRotation()).shape[0],
                                   ro.getTransposed(), dr, impl.bf16);
        give(ro.getRotation(), std::move(dr));
      }
      exec::Tensor dx;
      exec::rotateBackward(dy, get(ro.getRotation()), ro.getTransposed(), dx,
                           impl.bf16);
      give(ro.getInput(), std::move(dx));
    } else if (auto h = dyn_cast<HadamardOp>(op)) {
      exec::Tensor dx;
      if (!exec::hadamardBackward(dy, h.getBlockSize(),
                                  h.getSeed() ? *h.getSeed() : 0, dx, error))
        return false;
      give(h.getInput(), std::move(dx));
    } else if (auto f = dyn_cast<FakeQuantOp>(op)) {
      if (!impl.clips.empty()) { // learned clipping: the clip-aware estimator
        // (its dL/dx includes the range's part, as quantRangeGradient's)
        QuantAttr qa = f.getQuant();
        int64_t site = impl.fakeQuantSite.lookup(&op);
        exec::Tensor dx;
        double dclip = 0;
        exec::fakeQuantBackward(
            get(f.getInput()), qa.getBits(), qa.getSymmetric(),
            static_cast<int>(qa.getGranularity()), qa.getGroupSize(),
            impl.clips[site], dy, dx, dclip);
        impl.clipGrads[site] += dclip;
        give(f.getInput(), std::move(dx));
      } else {
        // Straight-through estimator, optionally with the range's part.
        if (impl.quantRangeGradient) {
          QuantAttr qa = f.getQuant();
          exec::fakeQuantRangeBackward(
              get(f.getInput()), qa.getBits(), qa.getSymmetric(),
              static_cast<int>(qa.getGranularity()), qa.getGroupSize(),
              qa.getClipRatio(), dy);
        }
        give(f.getInput(), std::move(dy));
      }
    } else {
      error = "no gradient for '" + op.getName().getStringRef().str() +
              "' (training runs float and fake-quantized models: calibrate "
              "before --quantize=...,mode=real)";
      return false;
    }
    return true;
  };

  // The backward pass, a segment at a time from the last (all at once
  // without checkpointing): the segment's forward again from its saved
  // input, keeping what its backward reads, then its ops in reverse. The
  // same kernels on the same inputs: the tape, and so every gradient, is
  // the same bit for bit as without checkpointing.
  size_t count = segments ? impl.segmentStart.size() : 1;
  Operation *end = impl.head ? impl.head.getOperation() : ret.getOperation();
  for (size_t s = count; s-- > 0;) {
    Operation *first = s ? impl.segmentStart[s] : &body.front();
    Operation *stop = s + 1 < count ? impl.segmentStart[s + 1] : end;
    if (s + 1 < count) { // recompute this segment's tape
      tape[impl.segmentInput[s]] = std::move(saved[s]);
      if (!runOps(impl, first, stop, /*training=*/true, tape, error, &keep,
                  /*observe=*/false))
        return false;
      tape.erase(impl.segmentInput[s + 1]); // the next segment's input
    }
    for (Operation *opp = stop->getPrevNode(); opp;
         opp = opp == first ? nullptr : opp->getPrevNode())
      if (!backwardOp(*opp))
        return false;
  }

  grads.clear();

  for (const std::string &name : wrt) {
    Operation *w = impl.weightByName.find(name)->second;
    auto it = g.find(w->getResult(0));
    if (it == g.end()) {
      grads.emplace_back(impl.weights[w].numel(), 0.0f);
    } else {
      grads.emplace_back(it->second.data->begin(), it->second.data->end());
    }
  }
  return true;
}

} // namespace sq
