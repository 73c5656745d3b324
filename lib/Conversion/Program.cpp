//===- Program.cpp - the program shared by the CPU and NVPTX lowerings ----===//
//
// lowerToProgram (Program.h): @forward becomes a straight-line program over
// buffer slots, `sq_model_program(ctx)`, plus the manifest
// (`sq_model_manifest`, include/sq/Runtime/ModelFormat.h) and the weights
// sidecar. The heavy ops are calls into the runtime: sqrt_* for the CPU
// (lib/Runtime/CPU/ProgramCalls.cpp), sqcu_* for CUDA
// (lib/Runtime/CUDA/ProgramCalls.cpp), elementwise ops included. Used by
// --sq-lower-cpu (SQToCPU) and --sq-lower-nvptx (SQToNVVM).
//
//===----------------------------------------------------------------------===//

#include "Program.h"
#include "sq/Conversion/Passes.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Buffer.h"
#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Pack.h"
#include "sq/Runtime/KernelLayout.h"
#include "sq/Runtime/ModelFormat.h"
#include "sq/Support/Distributed.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace sq {
namespace {

rt::QuantDesc quantDesc(std::optional<QuantAttr> q) {
  rt::QuantDesc d;
  if (!q)
    return d;
  d.bits = q->getBits();
  d.symmetric = q->getSymmetric();
  d.group = q->isGrouped() ? q->getGroupSize() : 0;
  d.clip = q->getClipRatio();
  return d;
}

int64_t lastDim(Value v) {
  return cast<RankedTensorType>(v.getType()).getShape().back();
}

/// Builds the program and the manifest.
class Lowering {
public:
  /// `gpu`: the program calls the CUDA runtime (sqcu_*) and elementwise ops
  /// are calls too (kernels) instead of loops.
  Lowering(ModuleOp module, func::FuncOp forward, bool gpu = false)
      : module(module), forward(forward), b(module.getContext()), gpu(gpu) {}

  LogicalResult run(const std::string &weightsFile,
                    const std::string &description);

private:
  LogicalResult plan();
  void planLastRows();
  void planKernelLayouts();
  LogicalResult emit();
  LogicalResult writeWeights(const std::string &path);

  /// The value a folded op's result stands for.
  Value resolve(Value v) {
    while (Operation *def = v.getDefiningOp()) {
      if (folded.count(def))
        v = def->getOperand(0);
      else
        break;
    }
    return v;
  }
  /// The slot of the sq.weight `v` used by `user`; `narrow`: the use can
  /// read f16/bf16 (linear weights, embedding tables).
  int weightSlot(Value v, Operation *user, StringRef what, bool narrow = false);
  int slotOf(Value v) { return slots.lookup(resolve(v)); }

  Value i32(int64_t v) {
    return arith::ConstantOp::create(b, loc(), b.getI32IntegerAttr(v));
  }
  Value i64(int64_t v) {
    return arith::ConstantOp::create(b, loc(), b.getI64IntegerAttr(v));
  }
  Value f64(double v) {
    return arith::ConstantOp::create(b, loc(), b.getF64FloatAttr(v));
  }
  Location loc() { return current ? current->getLoc() : forward.getLoc(); }
  Value call(StringRef name, ArrayRef<Value> args, Type result = {});
  void emitElementwise(Operation *op, int out, ArrayRef<int> ins, int64_t dim);

  ModuleOp module;
  func::FuncOp forward;
  OpBuilder b;
  bool gpu;
  Operation *current = nullptr;
  Value ctx;

  rt::Manifest manifest;
  llvm::DenseMap<Operation *, int> weightSlots; // sq.weight -> slot
  std::vector<WeightOp> weightOps;              // by slot
  llvm::DenseMap<Value, int> slots;             // activations
  llvm::DenseSet<Operation *> folded;           // results alias operand 0
  llvm::DenseMap<Operation *, HadamardOp> fusedHadamard; // qlinear -> h
  llvm::DenseMap<Operation *, int> qlinearIndex, attentionIndex;
  /// By weight slot: the quantized linear whose kernel layout the weight is
  /// written in (CPU), or -1 (the !sq.packed rows, float weights).
  std::vector<int> layoutOf;
  int logitsSlot = -1;
  // The head (planLastRows): from `headStart` on, every op works row by row
  // towards the logits only; `headInputs` are the values it reads from
  // before (slot, row length).
  Operation *headStart = nullptr;
  SmallVector<std::pair<int, int64_t>> headInputs;
};

int Lowering::weightSlot(Value v, Operation *user, StringRef what,
                         bool narrow) {
  auto w = v.getDefiningOp<WeightOp>();
  if (!w) {
    user->emitOpError() << "the CPU lowering needs the " << what
                        << " to be an sq.weight";
    return -1;
  }
  auto it = weightSlots.find(w);
  if (it != weightSlots.end()) {
    // A weight shared with a use that needs fp32 is stored as fp32.
    if (!narrow)
      manifest.weights[it->second].storage = rt::FloatStorage::F32;
    return it->second;
  }
  int slot = static_cast<int>(weightOps.size());
  weightSlots[w] = slot;
  weightOps.push_back(w);
  rt::WeightDesc d;
  d.slot = slot;
  d.name = w.getName().str();
  if (auto p = dyn_cast<PackedType>(w.getType())) {
    d.packedBits = p.getBits();
    d.cols = p.getLastDim();
    d.rows = p.getNumRows();
  } else {
    auto t = cast<RankedTensorType>(w.getType());
    if (!floatFormatOf(t.getElementType())) {
      user->emitOpError() << "weight '" << w.getName()
                          << "' is not f32, f16 or bf16";
      return -1;
    }
    d.cols = t.getShape().back();
    d.rows = t.getNumElements() / std::max<int64_t>(d.cols, 1);
    if (narrow && t.getElementType().isF16())
      d.storage = rt::FloatStorage::F16;
    else if (narrow && t.getElementType().isBF16())
      d.storage = rt::FloatStorage::BF16;
  }
  manifest.weights.push_back(d);
  return slot;
}

LogicalResult Lowering::plan() {
  Block &body = forward.getBody().front();
  if (forward.getNumArguments() < 2)
    return forward.emitOpError("must take (input_ids, positions, ...)");
  Value ids = body.getArgument(0), positions = body.getArgument(1);

  // Fusions: KV-cache quantizers into their attention, Hadamards into the
  // activation quantization of the qlinear they feed.
  for (Operation &op : body) {
    if (auto f = dyn_cast<FakeQuantOp>(op)) {
      if (!f->hasOneUse())
        continue;
      auto a = dyn_cast<AttentionOp>(*f->getUsers().begin());
      if (a && (a.getKey() == f.getResult() || a.getValue() == f.getResult()) &&
          a.getQuery() != f.getResult() &&
          f.getQuant().getGranularity() != Granularity::PerTensor)
        folded.insert(f);
    } else if (auto h = dyn_cast<HadamardOp>(op)) {
      if (!h->hasOneUse() || h.getBlockSize() != lastDim(h.getInput()))
        continue;
      auto q = dyn_cast<QLinearOp>(*h->getUsers().begin());
      if (q && q.getActQuant()) {
        folded.insert(h);
        fusedHadamard[q] = h;
      }
    }
  }

  // Weights first (slots 0..W-1), in op order.
  for (Operation &op : body) {
    current = &op;
    auto need = [&](Value v, StringRef what, bool narrow = false) {
      return v ? weightSlot(v, &op, what, narrow) : -2;
    };
    if (auto e = dyn_cast<EmbeddingOp>(op)) {
      if (need(e.getTable(), "embedding table", /*narrow=*/true) < 0)
        return failure();
      if (e.getIds() != ids)
        return e.emitOpError("the CPU lowering needs the ids to be "
                             "@forward's first argument");
    } else if (auto n = dyn_cast<RMSNormOp>(op)) {
      if (need(n.getScale(), "RMSNorm scale") == -1)
        return failure();
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      if (need(l.getWeight(), "linear weight", /*narrow=*/true) < 0 ||
          need(l.getBias(), "linear bias") == -1)
        return failure();
    } else if (auto q = dyn_cast<QLinearOp>(op)) {
      rt::QLinearDesc d;
      d.weight = need(q.getWeight(), "packed weight");
      d.scales = need(q.getScales(), "weight scales");
      d.zeros = q.getZeroPoints() ? need(q.getZeroPoints(), "zero points") : -1;
      d.bias = q.getBias() ? need(q.getBias(), "bias") : -1;
      if (d.weight < 0 || d.scales < 0 || (q.getZeroPoints() && d.zeros < 0) ||
          (q.getBias() && d.bias < 0))
        return failure();
      PackedType p = q.getWeight().getType();
      d.n = p.getShape()[0];
      d.k = p.getLastDim();
      d.weightQuant = quantDesc(q.getWeightQuant());
      d.actQuant = quantDesc(q.getActQuant());
      if (q.getActQuant() &&
          q.getActQuant()->getGranularity() == Granularity::PerTensor)
        return q.emitOpError("per-tensor activation quantization is not "
                             "supported by the CPU lowering (use per_token "
                             "or groups)");
      qlinearIndex[&op] = manifest.qlinears.size();
      manifest.qlinears.push_back(d);
    } else if (auto r = dyn_cast<RopeOp>(op)) {
      if (r.getPositions() != positions)
        return r.emitOpError("the CPU lowering needs the positions to be "
                             "@forward's second argument");
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      for (Value past : {a.getPastKey(), a.getPastValue()})
        if (past && !isa<BlockArgument>(past))
          return a.emitOpError("the CPU lowering keeps the KV cache itself: "
                               "past keys/values must be arguments of "
                               "@forward");
      for (Value present : a.getPresent())
        for (Operation *user : present.getUsers())
          if (!isa<func::ReturnOp>(user))
            return a.emitOpError("the CPU lowering keeps the KV cache "
                                 "itself: present keys/values may only be "
                                 "returned");
      rt::AttentionDesc d;
      d.heads = a.getNumHeads();
      d.kvHeads = a.getNumKvHeads();
      d.headDim = lastDim(a.getQuery()) / d.heads;
      d.scale = a.getScale() ? a.getScale()->convertToDouble()
                             : 1.0 / std::sqrt(double(d.headDim));
      d.causal = a.getCausal();
      d.window = a.getWindow().value_or(0);
      if (auto f = a.getKey().getDefiningOp<FakeQuantOp>();
          f && folded.count(f))
        d.keyQuant = quantDesc(f.getQuant());
      if (auto f = a.getValue().getDefiningOp<FakeQuantOp>();
          f && folded.count(f))
        d.valueQuant = quantDesc(f.getQuant());
      attentionIndex[&op] = manifest.attentions.size();
      manifest.attentions.push_back(d);
    } else if (auto ro = dyn_cast<RotateOp>(op)) {
      if (need(ro.getRotation(), "rotation") < 0)
        return failure();
    } else if (isa<WeightOp, SiluOp, MulOp, AddOp, HadamardOp, FakeQuantOp,
                   func::ReturnOp>(op)) {
    } else {
      return op.emitOpError("the CPU lowering cannot compile this op");
    }
  }
  current = nullptr;

  // Activation slots: linear scan, a slot is free after its value's last
  // use (resolved through folded ops).
  llvm::DenseMap<Value, Operation *> lastUse;
  for (Operation &op : body)
    for (Value v : op.getOperands())
      lastUse[resolve(v)] = &op;
  std::vector<int> freeSlots;
  int next = static_cast<int>(weightOps.size());
  for (Operation &op : body) {
    if (isa<WeightOp, func::ReturnOp>(op) || folded.count(&op))
      continue;
    Value result = op.getResult(0);
    if (freeSlots.empty()) {
      slots[result] = next++;
    } else {
      slots[result] = freeSlots.back();
      freeSlots.pop_back();
    }
    for (Value v : op.getOperands()) {
      Value r = resolve(v);
      if (lastUse.lookup(r) == &op && slots.count(r) &&
          !isa<BlockArgument>(r)) {
        freeSlots.push_back(slots[r]);
        lastUse.erase(r); // once, if an op uses a value twice
      }
    }
  }
  manifest.numSlots = next;
  if (!gpu)
    planLastRows();
  return success();
}

/// The ops at the end of @forward that only compute the logits, row by row
/// (final norm, lm_head, anything per token between them): when the caller
/// wants the last position's logits only (sq_prefill, sq_decode), the
/// program selects the last row of each sequence before them
/// (sqrt_last_rows) and runs them on those rows alone.
void Lowering::planLastRows() {
  Block &body = forward.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value logits = ret.getOperand(0);
  llvm::DenseSet<Operation *> head;
  auto rowWise = [](Operation &op) {
    if (auto f = dyn_cast<FakeQuantOp>(op))
      return f.getQuant().getGranularity() != Granularity::PerTensor;
    return isa<RMSNormOp, LinearOp, QLinearOp, HadamardOp, RotateOp, AddOp,
               MulOp, SiluOp>(op);
  };
  // Backwards: an op is in the head if it is row-wise and every use of its
  // result is a head op or the logits.
  for (Operation &op : llvm::reverse(body)) {
    if (!rowWise(op) || op.getNumResults() != 1)
      continue;
    bool onlyHead = !op.getResult(0).use_empty();
    for (OpOperand &use : op.getResult(0).getUses()) {
      Operation *user = use.getOwner();
      if (user == ret ? use.getOperandNumber() != 0 : !head.count(user))
        onlyHead = false;
    }
    if (onlyHead)
      head.insert(&op);
  }
  if (!head.count(logits.getDefiningOp()))
    return;
  // The head must be the end of the program: the first head op, and only
  // head ops (or weights) after it.
  Operation *start = nullptr;
  for (Operation &op : body) {
    if (head.count(&op)) {
      if (!start)
        start = &op;
    } else if (start && !isa<WeightOp, func::ReturnOp>(op)) {
      start = nullptr; // a non-head op after a head op: give up at this one
    }
  }
  if (!start)
    return;
  // What the head reads from the ops before it.
  llvm::DenseSet<int> seen;
  for (Operation *op = start; op; op = op->getNextNode()) {
    if (!head.count(op))
      continue;
    for (Value v : op->getOperands()) {
      if (v.getDefiningOp<WeightOp>())
        continue;
      Value r = resolve(v);
      if (Operation *def = r.getDefiningOp(); def && head.count(def))
        continue;
      if (isa<BlockArgument>(r) || !slots.count(r))
        return; // reads an argument of @forward: keep every row
      int slot = slots.lookup(r);
      if (seen.insert(slot).second)
        headInputs.push_back({slot, lastDim(r)});
    }
  }
  headStart = start;
}

Value Lowering::call(StringRef cpuName, ArrayRef<Value> args, Type result) {
  // The same entry points, named sqcu_* in the CUDA runtime.
  std::string name =
      gpu ? "sqcu_" + cpuName.drop_front(strlen("sqrt_")).str() : cpuName.str();
  SmallVector<Type> types;
  for (Value a : args)
    types.push_back(a.getType());
  auto fnType =
      b.getFunctionType(types, result ? TypeRange{result} : TypeRange{});
  auto fn = module.lookupSymbol<func::FuncOp>(name);
  if (!fn) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(module.getBody());
    fn = func::FuncOp::create(b, forward.getLoc(), name, fnType);
    fn.setPrivate();
  }
  auto c = func::CallOp::create(b, loc(), fn, args);
  return result ? c.getResult(0) : Value();
}

void Lowering::emitElementwise(Operation *op, int out, ArrayRef<int> ins,
                               int64_t dim) {
  // Runtime calls on both targets: the CPU runtime splits the elements over
  // its threads with the executor's arithmetic (silu: x / (1 + exp(-x))).
  SmallVector<Value> args = {ctx, i32(out)};
  for (int s : ins)
    args.push_back(i32(s));
  args.push_back(i64(dim));
  call(isa<AddOp>(op)   ? "sqrt_add"
       : isa<MulOp>(op) ? "sqrt_mul"
                        : "sqrt_silu",
       args);
}

LogicalResult Lowering::emit() {
  MLIRContext *mctx = module.getContext();
  auto ptrType = LLVM::LLVMPointerType::get(mctx);
  b.setInsertionPointToEnd(module.getBody());
  auto program = func::FuncOp::create(b, forward.getLoc(), "sq_model_program",
                                      b.getFunctionType({ptrType}, {}));
  Block *entry = program.addEntryBlock();
  ctx = entry->getArgument(0);
  b.setInsertionPointToStart(entry);

  Block &body = forward.getBody().front();
  for (Operation &op : body) {
    current = &op;
    if (&op == headStart) {
      // Only the rows the logits need from here on (a no-op when the caller
      // asked for every position's logits).
      for (auto [slot, dim] : headInputs)
        call("sqrt_last_rows", {ctx, i32(slot), i64(dim)});
      call("sqrt_last_rows", {ctx, i32(-1), i64(0)});
    }
    if (isa<WeightOp>(op) || folded.count(&op))
      continue;
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      logitsSlot = slotOf(ret.getOperand(0));
      call("sqrt_logits", {ctx, i32(logitsSlot)});
      continue;
    }
    int out = slots.lookup(op.getResult(0));
    auto wslot = [&](Value v) {
      return v ? weightSlots.lookup(v.getDefiningOp()) : -1;
    };
    if (auto e = dyn_cast<EmbeddingOp>(op)) {
      call("sqrt_embedding", {ctx, i32(out), i32(wslot(e.getTable())),
                              i64(lastDim(e.getResult()))});
    } else if (auto n = dyn_cast<RMSNormOp>(op)) {
      call("sqrt_rms_norm",
           {ctx, i32(out), i32(slotOf(n.getInput())), i32(wslot(n.getScale())),
            i64(lastDim(n.getInput())), f64(n.getEpsilon().convertToDouble())});
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      call("sqrt_linear",
           {ctx, i32(out), i32(slotOf(l.getInput())), i32(wslot(l.getWeight())),
            i32(wslot(l.getBias())), i64(lastDim(l.getInput())),
            i64(lastDim(l.getResult()))});
    } else if (auto q = dyn_cast<QLinearOp>(op)) {
      int64_t block = 0, seed = 0;
      int in = slotOf(q.getInput());
      if (HadamardOp h = fusedHadamard.lookup(&op)) {
        block = h.getBlockSize();
        seed = h.getSeed() ? static_cast<int64_t>(*h.getSeed()) : 0;
      }
      call("sqrt_qlinear", {ctx, i32(out), i32(in), i32(qlinearIndex[&op]),
                            i64(block), i64(seed)});
    } else if (auto r = dyn_cast<RopeOp>(op)) {
      // LLaMA-3.1 scaling: factor, low/high frequency factors, original max
      // positions (factor 0: none).
      numerics::RopeScaling s = ropeScalingOf(r);
      call("sqrt_rope", {ctx, i32(out), i32(slotOf(r.getInput())),
                         i64(lastDim(r.getInput())), i64(r.getNumHeads()),
                         f64(r.getTheta().convertToDouble()),
                         i32(r.getLayout() == RopeLayout::Interleaved),
                         f64(s.factor), f64(s.lowFreqFactor),
                         f64(s.highFreqFactor), f64(s.originalMaxPositions)});
    } else if (auto a = dyn_cast<AttentionOp>(op)) {
      call("sqrt_attention",
           {ctx, i32(out), i32(slotOf(a.getQuery())), i32(slotOf(a.getKey())),
            i32(slotOf(a.getValue())), i32(attentionIndex[&op])});
    } else if (auto ro = dyn_cast<RotateOp>(op)) {
      // R [block, block] on every block of the last dimension (a per-head
      // rotation: block = head_dim).
      call("sqrt_rotate",
           {ctx, i32(out), i32(slotOf(ro.getInput())),
            i32(wslot(ro.getRotation())), i64(lastDim(ro.getInput())),
            i64(ro.getRotation().getType().getDimSize(0)),
            i32(ro.getTransposed() ? 1 : 0)});
    } else if (auto h = dyn_cast<HadamardOp>(op)) {
      call("sqrt_hadamard",
           {ctx, i32(out), i32(slotOf(h.getInput())),
            i64(lastDim(h.getInput())), i64(h.getBlockSize()),
            i64(h.getSeed() ? static_cast<int64_t>(*h.getSeed()) : 0)});
    } else if (auto f = dyn_cast<FakeQuantOp>(op)) {
      QuantAttr qa = f.getQuant();
      call("sqrt_fake_quant",
           {ctx, i32(out), i32(slotOf(f.getInput())),
            i64(lastDim(f.getInput())), i32(qa.getBits()),
            i32(qa.getSymmetric() ? 1 : 0),
            i64(qa.isGrouped() ? qa.getGroupSize() : 0), f64(qa.getClipRatio()),
            i32(qa.getGranularity() == Granularity::PerTensor ? 1 : 0)});
    } else if (isa<AddOp, MulOp>(op)) {
      emitElementwise(&op, out,
                      {slotOf(op.getOperand(0)), slotOf(op.getOperand(1))},
                      lastDim(op.getResult(0)));
    } else if (isa<SiluOp>(op)) {
      emitElementwise(&op, out, {slotOf(op.getOperand(0))},
                      lastDim(op.getResult(0)));
    }
  }
  current = nullptr;
  func::ReturnOp::create(b, program.getLoc());
  return success();
}

/// The CPU runtime runs the quantized linears of integerPathLayout on its
/// integer kernels: their weights go into the sidecar in the kernels' layout
/// (sq/Runtime/KernelLayout.h) instead of the !sq.packed rows, so that
/// loading maps them as they are. A weight several linears share keeps its
/// rows unless they all run with the same layout.
void Lowering::planKernelLayouts() {
  layoutOf.assign(manifest.weights.size(), -1);
  std::vector<bool> rows(manifest.weights.size(), false);
  for (size_t i = 0; i < manifest.qlinears.size(); ++i) {
    const rt::QLinearDesc &q = manifest.qlinears[i];
    rt::KernelLayout layout;
    int &use = layoutOf[q.weight];
    if (!rt::integerPathLayout(q, layout))
      rows[q.weight] = true;
    else if (use < 0)
      use = int(i);
    else if (manifest.qlinears[use].actQuant.group != q.actQuant.group ||
             manifest.qlinears[use].weightQuant.group != q.weightQuant.group)
      rows[q.weight] = true;
  }
  for (size_t w = 0; w < layoutOf.size(); ++w) {
    if (rows[w])
      layoutOf[w] = -1;
    if (layoutOf[w] < 0)
      continue;
    rt::KernelLayout layout;
    rt::integerPathLayout(manifest.qlinears[layoutOf[w]], layout);
    manifest.weights[w].kernelBlock = layout.blockSize;
  }
}

LogicalResult Lowering::writeWeights(const std::string &path) {
  std::string manifestText = manifest.serialize();
  uint64_t headerBytes, total;
  std::vector<uint64_t> offsets;
  rt::planSidecar(manifest, headerBytes, offsets, total);
  std::string tmp = path + ".tmp";
  std::error_code ec;
  {
    llvm::raw_fd_ostream os(tmp, ec);
    if (ec)
      return module.emitError()
             << "cannot write '" << tmp << "': " << ec.message();
    auto abandon = [&]() -> LogicalResult {
      os.close();
      llvm::sys::fs::remove(tmp);
      return failure();
    };
    auto blobOf = [&](WeightOp w, ArrayRef<char> &data) -> LogicalResult {
      auto resource = cast<DenseResourceElementsAttr>(w.getValue());
      AsmResourceBlob *blob = resource.getRawHandle().getBlob();
      if (!blob)
        return w.emitOpError() << "weight '" << w.getName()
                               << "' has no data (was the IR printed with "
                                  "elided resources?)";
      data = blob->getData();
      return success();
    };
    os << rt::sidecarHeader(
        manifest, rt::fnv1a(manifestText.data(), manifestText.size()));
    uint64_t at = headerBytes;
    for (size_t i = 0; i < weightOps.size(); ++i) {
      WeightOp w = weightOps[i];
      const rt::WeightDesc &d = manifest.weights[i];
      os.write_zeros(offsets[i] - at);
      at = offsets[i];
      ArrayRef<char> data;
      if (failed(blobOf(w, data)))
        return abandon();
      if (d.packedBits) {
        uint64_t rowBytes =
            uint64_t(d.rows) * numerics::packedBytes(d.cols, d.packedBits);
        if (data.size() != rowBytes) {
          (void)abandon();
          return w.emitOpError()
                 << "weight '" << w.getName() << "' has " << data.size()
                 << " bytes, expected " << rowBytes;
        }
        if (layoutOf.empty() || layoutOf[i] < 0) {
          os.write(data.data(), data.size());
        } else {
          // The kernels' layout, built from the rows and the fp32 scales.
          const rt::QLinearDesc &q = manifest.qlinears[layoutOf[i]];
          rt::KernelLayout layout;
          rt::integerPathLayout(q, layout);
          WeightOp sw = weightOps[q.scales];
          ArrayRef<char> sdata;
          if (failed(blobOf(sw, sdata)))
            return abandon();
          Type st = cast<RankedTensorType>(sw.getType()).getElementType();
          int64_t groups = layout.group ? d.cols / layout.group : 1;
          int64_t sn = d.rows * groups;
          if (sdata.size() != size_t(sn) * (st.isF32() ? 4 : 2)) {
            (void)abandon();
            return sw.emitOpError() << "weight scales '" << sw.getName()
                                    << "' do not match their weight";
          }
          std::vector<float> scales(sn);
          numerics::widenToFloat(sdata.data(), sn, *floatFormatOf(st),
                                 scales.data());
          std::vector<uint8_t> bytes(layout.bytes());
          rt::writeKernelLayout(layout,
                                reinterpret_cast<const uint8_t *>(data.data()),
                                scales.data(), bytes.data());
          os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
        }
      } else {
        Type et = cast<RankedTensorType>(w.getType()).getElementType();
        int64_t n = d.rows * d.cols;
        size_t elt = et.isF32() ? 4 : 2;
        if (data.size() != size_t(n) * elt) {
          os.close();
          llvm::sys::fs::remove(tmp);
          return w.emitOpError()
                 << "weight '" << w.getName() << "' has " << data.size()
                 << " bytes, expected " << n * elt;
        }
        numerics::FloatFormat format =
            *floatFormatOf(et); // checked in weightSlot
        int64_t first;
        if (int64_t bad =
                numerics::countNonFinite(data.data(), n, format, &first)) {
          os.close();
          llvm::sys::fs::remove(tmp);
          return w.emitOpError()
                 << "weight '" << w.getName() << "' holds " << bad
                 << " non-finite value" << (bad > 1 ? "s" : "")
                 << " (NaN or Inf), the first at row " << first / d.cols
                 << ", column " << first % d.cols
                 << ": the model's weights are corrupt";
        }
        if (et.isF32() || d.storage != rt::FloatStorage::F32) {
          os.write(data.data(), data.size()); // as stored
        } else {
          std::vector<float> wide(n);
          numerics::widenToFloat(data.data(), n, format, wide.data());
          os.write(reinterpret_cast<const char *>(wide.data()), n * 4);
        }
      }
      at += d.bytes();
    }
    os.write_zeros(total - at);
    os.close();
    if (os.has_error()) {
      std::string reason = os.error().message(); // before clear_error()
      os.clear_error();
      llvm::sys::fs::remove(tmp);
      return module.emitError() << "cannot write '" << tmp << "': " << reason;
    }
  }
  if (std::error_code rc = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return module.emitError() << "cannot rename '" << tmp << "' to '" << path
                              << "': " << rc.message();
  }
  return success();
}

LogicalResult Lowering::run(const std::string &weightsFile,
                            const std::string &description) {
  if (auto config = module->getAttrOfType<DictionaryAttr>("sq.config")) {
    auto get = [&](StringRef key, int64_t dflt) {
      auto a = config.getAs<IntegerAttr>(key);
      return a ? a.getInt() : dflt;
    };
    manifest.hiddenSize = get("hidden_size", 0);
    manifest.intermediateSize = get("intermediate_size", 0);
    manifest.numLayers = get("num_hidden_layers", 0);
    manifest.numHeads = get("num_attention_heads", 0);
    manifest.numKvHeads = get("num_key_value_heads", manifest.numHeads);
    manifest.headDim = get("head_dim", 0);
    manifest.maxPositions = get("max_position_embeddings", 0);
    manifest.bosTokenId = int32_t(get("bos_token_id", -1));
    manifest.eosTokenId = int32_t(get("eos_token_id", -1));
  }
  auto logits =
      dyn_cast<RankedTensorType>(forward.getFunctionType().getResult(0));
  if (!logits || logits.getRank() != 3 || logits.isDynamicDim(2))
    return forward.emitOpError("must return logits [batch, seq, vocab] first");
  manifest.vocabSize = logits.getDimSize(2);
  manifest.description = description;

  if (failed(plan()))
    return failure();
  if (!gpu)
    planKernelLayouts();
  if (failed(emit()))
    return failure();
  // Under mpirun (sq/Support/Distributed.h) every process lowers the same
  // module: rank 0 writes the sidecar, the others would race on its file.
  if (!weightsFile.empty() && distributed::rank() == 0 &&
      failed(writeWeights(weightsFile)))
    return failure();

  // The manifest, NUL-terminated, as a global the runtime reads.
  std::string text = manifest.serialize();
  text.push_back('\0');
  b.setInsertionPointToStart(module.getBody());
  auto arrayType = LLVM::LLVMArrayType::get(b.getI8Type(), text.size());
  LLVM::GlobalOp::create(b, module.getLoc(), arrayType, /*isConstant=*/true,
                         LLVM::Linkage::External, "sq_model_manifest",
                         b.getStringAttr(text));

  // The graph is gone: @forward, its weights, the sq attributes.
  forward.erase();
  for (StringRef attr : {"sq.config", "sq.source"})
    module->removeAttr(attr);
  SmallVector<NamedAttribute> keep;
  for (NamedAttribute a : module->getAttrs())
    if (!a.getName().getValue().starts_with("sq."))
      keep.push_back(a);
  module->setAttrs(keep);
  return success();
}

} // namespace

LogicalResult lowerToProgram(ModuleOp module, const std::string &weightsFile,
                             const std::string &description, bool gpu) {
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward)
    return module.emitError("the module has no @forward function to lower");
  if (module.lookupSymbol("sq_model_program"))
    return module.emitError("the module is already lowered "
                            "(@sq_model_program exists)");
  Lowering lowering(module, forward, gpu);
  return lowering.run(weightsFile, description);
}

} // namespace sq
