//===- Executor.cpp - reference executor for sq modules -------------------===//
//
// An interpreter over the ops of @forward. Values are dense fp32 (or int64
// for ids/positions) tensors; intermediates are freed after their last use.
// The kernels live in Kernels.cpp.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Executor.h"
#include "ExecutorImpl.h"
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

using namespace detail;

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
  // Which segment first reads each weight (the head's: past the last).
  size_t segment = 0;
  bool past = false;
  for (Operation &op : body) {
    if (&op == end)
      past = true;
    if (!past && segment + 1 < impl.segmentStart.size() &&
        &op == impl.segmentStart[segment + 1])
      ++segment;
    if (isa<WeightOp>(op))
      continue;
    size_t at = past ? impl.segmentStart.size() : segment;
    for (Value v : op.getOperands())
      if (auto w = v.getDefiningOp<WeightOp>()) {
        auto [it, fresh] = impl.weightSegment.insert({w, at});
        if (!fresh)
          it->second = std::min(it->second, at);
      }
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
namespace detail {
bool checkTokenIds(const ModelInfo &info, ArrayRef<int64_t> tokens,
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
} // namespace detail

/// The ids and positions of `tokens` ([batch, seq]; positions from
/// `cached` on) as @forward's first two arguments in `values`.
namespace detail {
void setInputs(Executor::Impl &impl, ArrayRef<int64_t> tokens, int64_t batch,
               int64_t seq, int64_t cached,
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
} // namespace detail

/// Runs the ops of @forward's body from `begin` up to `end` (exclusive; the
/// return or null: up to the return) on `values`, which holds their inputs.
/// For inference (training = false) attention continues after the KV cache
/// and extends it; for training it starts at position 0 and leaves the
/// cache alone. Each value is freed after its last use unless it is in
/// `keep` (a tape for the backward pass). `observe`: call the linear
/// observer.
namespace detail {
bool runOps(Executor::Impl &impl, Operation *begin, Operation *end,
            bool training, llvm::DenseMap<Value, exec::Tensor> &values,
            std::string &error, const llvm::DenseSet<Value> *keep,
            bool observe) {
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
                      a.getWindow().value_or(0), out, present[0], present[1],
                      impl.bf16);
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
} // namespace detail

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
