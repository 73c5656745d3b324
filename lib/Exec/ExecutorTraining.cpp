//===- ExecutorTraining.cpp - the executor's loss and gradients -----------===//
//
// Executor's training interface: weights by name, the learned clip ratios,
// the loss (the head and the loss a chunk of rows at a time) and its
// gradients by a backward pass over the tape, with per-block activation
// checkpointing. The forward ops are Executor.cpp's (ExecutorImpl.h).
//
//===----------------------------------------------------------------------===//

#include "ExecutorImpl.h"
#include "Grad.h"
#include "Kernels.h"
#include "sq/Numerics/Quantize.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Float16.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__unix__)
#include <unistd.h>
#endif

using namespace mlir;

//===----------------------------------------------------------------------===//
// Training: weights by name, loss and gradients
//===----------------------------------------------------------------------===//

namespace sq {

using namespace detail;

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
  if (!llvm::equal(clips, impl->clips))
    impl->invalidateFrom(0); // every fake quantizer may have changed
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

Executor::WeightSnapshot Executor::weightSnapshot(StringRef name) const {
  WeightSnapshot snap;
  auto it = impl->weightByName.find(name);
  if (it == impl->weightByName.end())
    return snap;
  const exec::Tensor &t = impl->weights.find(it->second)->second;
  if (t.shape.empty() || t.shape.size() > 2 || t.ints)
    return snap;
  // A copy of the tensor shares its buffers (setWeightValues and
  // setWeightRows never write into a buffer shared so); a 16-bit resource
  // read in place lives as long as the module. A vector (a bias) is read as
  // one column.
  auto copy = std::make_shared<exec::Tensor>(t);
  if (copy->shape.size() == 1)
    copy->shape.push_back(1);
  snap.t = std::move(copy);
  return snap;
}

int64_t Executor::WeightSnapshot::rows() const { return t ? t->shape[0] : 0; }
int64_t Executor::WeightSnapshot::cols() const { return t ? t->shape[1] : 0; }
const float *Executor::WeightSnapshot::f32() const {
  return t && !t->half && !t->packed && t->data ? t->data->data() : nullptr;
}
void Executor::WeightSnapshot::widenRows(int64_t row, int64_t count,
                                         float *out) const {
  exec::widenRows(*t, row, count, out);
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
  // The same fp32 values again (a rotation set at every evaluation): no
  // change, which keeps the prefix cache's segments valid.
  if (t.data && !t.half && !t.packed && t.data->size() == values.size() &&
      std::memcmp(t.data->data(), values.data(),
                  values.size() * sizeof(float)) == 0)
    return true;
  impl->invalidateWeight(it->second);
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
  if (!impl->prefixes.empty()) {
    bool same = t.data && !t.half && !t.packed;
    for (size_t i = 0; same && i < rows.size(); ++i)
      same = std::memcmp(t.data->data() + rows[i] * cols,
                         values.data() + i * cols, cols * sizeof(float)) == 0;
    if (same)
      return true;
    impl->invalidateWeight(it->second);
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
/// checkpoint=auto checkpoints when the whole tape of a step would exceed
/// a quarter of the machine's physical memory (at least 2 GiB): a model
/// whose activations fit is not made to run every block's forward twice.
/// A quarter of the machine's physical memory (0 where it is unknown).
static double quarterOfMemory() {
#if defined(__unix__)
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0)
    return double(pages) * double(page) / 4.0;
#endif
  return 0.0;
}

static double autoCheckpointBytes() {
  return std::max(double(int64_t(2) << 30), quarterOfMemory());
}

void Executor::setPrefixCache(int64_t maxBytes) {
  if (maxBytes == kPrefixCacheAuto) {
    double quarter = quarterOfMemory();
    maxBytes = quarter > 0 ? int64_t(quarter) : int64_t(1) << 30;
  }
  impl->prefixMaxBytes = std::max<int64_t>(maxBytes, 0);
  if (!impl->prefixMaxBytes)
    std::vector<Impl::Prefix>().swap(impl->prefixes);
}

Executor::SegmentCounts Executor::segmentCounts() const {
  return impl->segmentCounts;
}

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
/// its values; `saved` receives the input of each other segment. With
/// `from` > 0 (segments only), the forward starts at segment `from` with
/// the input `saved` already holds for it (the prefix cache); `saved`'s
/// earlier entries are left as they are.
static bool forwardForLoss(Executor::Impl &impl, ArrayRef<int64_t> tokens,
                           int64_t batch, int64_t seq, bool segments,
                           llvm::DenseMap<Value, exec::Tensor> &values,
                           std::vector<exec::Tensor> &saved,
                           const llvm::DenseSet<Value> *keep,
                           std::string &error, size_t from = 0) {
  Block &body = impl.func.getBody().front();
  Operation *end = impl.head ? impl.head.getOperation() : body.getTerminator();
  size_t count = impl.segmentStart.size();
  impl.segmentCounts.run += count - from;
  impl.segmentCounts.whole += count;
  setInputs(impl, tokens, batch, seq, 0, values);
  if (!segments)
    return runOps(impl, &body.front(), end, /*training=*/true, values, error,
                  keep);
  saved.resize(count);
  if (from > 0)
    values[impl.segmentInput[from]] = saved[from];
  for (size_t s = from; s < count; ++s) {
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

/// loss()'s forward: through forwardForLoss, or (setPrefixCache) from the
/// first segment whose weights changed since this batch last ran, its
/// input from the cache; the cache then holds this run's segment inputs.
static bool prefixForward(Executor::Impl &impl, ArrayRef<int64_t> tokens,
                          int64_t batch, int64_t seq,
                          llvm::DenseMap<Value, exec::Tensor> &values,
                          std::string &error) {
  size_t count = impl.segmentStart.size();
  std::vector<exec::Tensor> inputs;
  if (impl.prefixMaxBytes <= 0 || count < 2 || impl.observer)
    return forwardForLoss(impl, tokens, batch, seq, /*segments=*/false, values,
                          inputs, nullptr, error);
  using Prefix = Executor::Impl::Prefix;
  Prefix *entry = nullptr;
  for (Prefix &p : impl.prefixes)
    if (p.batch == batch && p.seq == seq && llvm::equal(p.tokens, tokens))
      entry = &p;
  size_t from = entry ? std::min(entry->dirtyFrom, count - 1) : 0;
  if (entry) // the inputs of segments up to `from` are still valid
    inputs.assign(entry->inputs.begin(), entry->inputs.begin() + from + 1);
  if (!forwardForLoss(impl, tokens, batch, seq, /*segments=*/true, values,
                      inputs, nullptr, error, from))
    return false;
  // Keep this run's inputs; drop the least recently used beyond the budget.
  int64_t bytes = 0;
  for (const exec::Tensor &t : inputs)
    bytes += t.data ? int64_t(t.data->size() * sizeof(float)) : 0;
  if (!entry) {
    impl.prefixes.emplace_back();
    entry = &impl.prefixes.back();
    entry->tokens.assign(tokens.begin(), tokens.end());
    entry->batch = batch;
    entry->seq = seq;
  }
  entry->inputs = std::move(inputs);
  entry->bytes = bytes;
  entry->dirtyFrom = SIZE_MAX;
  entry->used = ++impl.prefixClock;
  for (;;) {
    int64_t total = 0;
    auto oldest = impl.prefixes.end();
    for (auto it = impl.prefixes.begin(); it != impl.prefixes.end(); ++it) {
      total += it->bytes;
      if (oldest == impl.prefixes.end() || it->used < oldest->used)
        oldest = it;
    }
    if (total <= impl.prefixMaxBytes || oldest == impl.prefixes.end())
      break;
    impl.prefixes.erase(oldest);
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
  if (!prefixForward(impl, tokens, batch, seq, values, error))
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
  std::vector<std::vector<float>> out(wrt.size());
  auto collect = [&](size_t k, MutableArrayRef<float> g, std::string &) {
    out[k].assign(g.begin(), g.end());
    return true;
  };
  if (!lossAndGradients(tokens, batch, seq, wrt, loss, collect, error, soft))
    return false;
  grads = std::move(out);
  return true;
}

bool Executor::lossAndGradients(ArrayRef<int64_t> tokens, int64_t batch,
                                int64_t seq, ArrayRef<std::string> wrt,
                                double &loss, GradientSink sink,
                                std::string &error, const SoftTargets *soft) {
  Impl &impl = *this->impl;
  exec::SoftRows rowsOf;
  if (!checkTrainingInput(impl, tokens, batch, seq, error) ||
      !softRows(impl, soft, batch, seq, rowsOf, error))
    return false;
  // The weights asked for, each with its indices in `wrt`.
  llvm::DenseMap<Operation *, SmallVector<size_t, 1>> wanted;
  for (const std::string &name : wrt) {
    auto it = impl.weightByName.find(name);
    if (it == impl.weightByName.end()) {
      error = "the model has no float weight '" + name + "'";
      return false;
    }
    wanted[it->second].push_back(&name - wrt.data());
  }
  Block &body = impl.func.getBody().front();
  // The weights whose gradient is complete once the backward has passed an
  // op: those it is the first reader of.
  llvm::DenseMap<Operation *, SmallVector<Operation *, 1>> completes;
  {
    llvm::DenseSet<Operation *> seen;
    for (Operation &op : body)
      for (Value v : op.getOperands())
        if (auto w = v.getDefiningOp<WeightOp>())
          if (wanted.count(w) && seen.insert(w).second)
            completes[&op].push_back(w);
  }
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  auto wantsWeight = [&](Value v) {
    auto w = v.getDefiningOp<WeightOp>();
    return w && wanted.count(w);
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
  // exceed a quarter of the machine's memory, at least 2 GiB).
  bool segments =
      impl.segmentStart.size() > 1 && impl.checkpoint != ExecCheckpoint::Off;
  if (segments && impl.checkpoint == ExecCheckpoint::Auto) {
    double bytes = 0;
    for (Value v : keep)
      if (auto type = dyn_cast<ShapedType>(v.getType()))
        if (type.hasRank() && type.getRank() &&
            !ShapedType::isDynamic(type.getShape().back()))
          bytes += double(type.getShape().back()) * 4.0 * double(batch * seq);
    segments = bytes > autoCheckpointBytes();
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
      return wanted.count(w) != 0;
    return true;
  };
  llvm::DenseMap<Value, exec::Tensor> g;
  auto give = [&](Value v, exec::Tensor t) {
    if (wants(v))
      accumulate(g, v, std::move(t));
  };
  // Hands a complete weight gradient to the sink and frees it (zeros for a
  // weight the loss did not reach; a copy for all but the last of repeated
  // names, and where the buffer is shared, since the sink may overwrite it).
  std::vector<bool> delivered(wrt.size(), false);
  auto deliver = [&](Operation *w) -> bool {
    exec::Tensor t;
    auto it = g.find(w->getResult(0));
    if (it != g.end()) {
      t = std::move(it->second);
      g.erase(it);
    }
    const SmallVector<size_t, 1> &ks = wanted[w];
    for (size_t i = 0; i < ks.size(); ++i) {
      std::vector<float> copy;
      MutableArrayRef<float> view;
      if (!t.data || i + 1 < ks.size() || t.data.use_count() > 1) {
        copy.assign(impl.weights[w].numel(), 0.0f);
        if (t.data)
          std::copy(t.data->begin(), t.data->end(), copy.begin());
        view = copy;
      } else {
        view = MutableArrayRef<float>(t.data->data(), t.data->size());
      }
      delivered[ks[i]] = true;
      if (!sink(ks[i], view, error))
        return false;
    }
    return true;
  };
  auto deliverCompleted = [&](Operation *op) -> bool {
    auto it = completes.find(op);
    if (it != completes.end())
      for (Operation *w : it->second)
        if (!deliver(w))
          return false;
    return true;
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
    if (!deliverCompleted(head))
      return false;
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
                              dk, dv, impl.bf16);
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
      if (!backwardOp(*opp) || !deliverCompleted(opp))
        return false;
  }
  // Weights no op reads.
  for (const std::string &name : wrt)
    if (!delivered[&name - wrt.data()] &&
        !deliver(impl.weightByName.find(name)->second))
      return false;
  return true;
}

} // namespace sq
