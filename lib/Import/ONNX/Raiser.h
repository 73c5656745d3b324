//===- Raiser.h - the raiser and its op table -------------------*- C++ -*-===//
//
// Internal to lib/Import/ONNX. The Raiser (Raise.cpp) walks the graph node by
// node; for each node it evaluates all-constant operands concretely and
// otherwise hands the node to the handlers that an OpTable (OpTable.cpp)
// holds for its (domain, op_type). The handlers live in one file per
// component and domain (ShapeOps, LinearOps, RMSNormOps, RopeOps,
// InterleavedRopeOps, AttentionOps, ComMicrosoftOps, Opset23Ops,
// QuantizedOps, StaticCache) and use the Raiser's helpers declared here.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_RAISER_H
#define SQ_LIB_IMPORT_ONNX_RAISER_H

#include "AbstractValue.h"
#include "ONNXModel.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <map>

namespace sq {
namespace onnx_import {

//===----------------------------------------------------------------------===//
// The op table
//===----------------------------------------------------------------------===//

class Raiser;

/// One node as its handlers see it. `outs` holds one null entry per output
/// of the node when the first handler runs.
struct OpCall {
  const onnx::NodeProto &node;
  const std::string &op;
  const std::vector<AValRef> &in;
  std::vector<AValRef> &outs;
  bool declined = false;

  /// Operand `i`, or null when the node has no such (or an empty) input.
  AValRef input(size_t i) const { return i < in.size() ? in[i] : nullptr; }
  AValRef &out() { return outs[0]; }
  /// For a commutative op: true with `a` and `b` set to the two operands in
  /// the first order (as given, then swapped) for which `match(a, b)` holds.
  template <typename Match>
  bool commuted(Match match, AValRef &a, AValRef &b) const {
    for (size_t swap = 0; swap < 2; ++swap) {
      a = input(swap);
      b = input(1 - swap);
      if (match(a, b))
        return true;
    }
    return false;
  }
  /// commuted() for operands of kinds `ka` and `kb`.
  bool commutedKinds(AVal::Kind ka, AVal::Kind kb, AValRef &a,
                     AValRef &b) const {
    return commuted(
        [&](const AValRef &x, const AValRef &y) {
          return x->kind == ka && y->kind == kb;
        },
        a, b);
  }
  /// commuted() for an operand of kind `kind` and a one-element constant
  /// `s`.
  bool commutedScalar(AVal::Kind kind, AValRef &a, double &s) const {
    AValRef b;
    return commuted(
        [&](const AValRef &x, const AValRef &y) {
          return x->kind == kind && isScalar(y, s);
        },
        a, b);
  }
  /// The handler does not recognize this node's form: the next handler for
  /// the op is tried. Returns true, so that a handler can `return
  /// call.decline();` (it must not have touched `outs`).
  bool decline() {
    declined = true;
    return true;
  }
};

/// Handles one node: true when done, false with the Raiser's error set, or
/// OpCall::decline().
using OpHandler = bool (*)(Raiser &raiser, OpCall &call);

/// Handlers keyed by (domain, op_type). For one node the raiser
///  1. runs the op's PreFold handler, if any (Constant, Shape: they take any
///     operands, even all-constant ones, and never decline);
///  2. otherwise evaluates the node concretely (Concrete.cpp) when all its
///     operands are constants, without any handler;
///  3. otherwise checks the first operand and the arity (requireInputs), then
///     tries the op's Pattern handlers in registration order (each recognizes
///     one form and declines the others; two Patterns of one op must never
///     both match a node, so that the order of the register* calls does not
///     matter), then its Fallback (at most one per domain and op; it never
///     declines: it takes every form left or says what was expected);
///  4. reports "unsupported op" when all decline or the op has no handler.
/// A node is matched against the handlers of its own domain ("ai.onnx" is
/// ""); when its domain has none for the op, against those of every domain
/// (the importer has always accepted, say, a Mul labelled com.microsoft).
class OpTable {
public:
  enum Stage { PreFold, Pattern, Fallback };

  void add(llvm::StringRef domain, llvm::StringRef opType, OpHandler handler,
           Stage stage = Pattern);
  /// A node of `opType` needs operand `n - 1`; without it the error is
  /// "OP needs two inputs" (n = 2) before any Pattern or Fallback runs.
  void requireInputs(llvm::StringRef opType, unsigned n);
  /// Nodes of `opType` see operands that could not be computed at the
  /// probe sizes (AVal::invalid) instead of failing with their error: an
  /// attention re-evaluates its mask at the shapes its runtime feeds.
  void acceptInvalidOperands(llvm::StringRef opType) {
    invalidOk.insert(opType);
  }
  bool acceptsInvalidOperands(llvm::StringRef opType) const {
    return invalidOk.contains(opType);
  }

  /// The handlers to try for a node, in order.
  std::vector<std::pair<Stage, OpHandler>> lookup(llvm::StringRef domain,
                                                  llvm::StringRef opType) const;
  unsigned requiredInputs(llvm::StringRef opType) const;

private:
  struct Entry {
    std::string domain;
    Stage stage;
    OpHandler handler;
  };
  llvm::StringMap<std::vector<Entry>> entries;
  llvm::StringMap<unsigned> arity;
  llvm::StringSet<> invalidOk;
};

/// The table of all handlers, built once.
const OpTable &opTable();

/// One function per handler file; opTable() calls them all.
void registerShapeOps(OpTable &table);
void registerLinearOps(OpTable &table);
void registerRMSNormOps(OpTable &table);
void registerRopeOps(OpTable &table);
void registerInterleavedRopeOps(OpTable &table);
void registerAttentionOps(OpTable &table);
void registerComMicrosoftOps(OpTable &table);
void registerOpset23Ops(OpTable &table);
void registerQuantizedOps(OpTable &table);
void registerStaticCacheOps(OpTable &table);

//===----------------------------------------------------------------------===//
// The raiser
//===----------------------------------------------------------------------===//

class Raiser {
public:
  Raiser(OnnxModel &model, mlir::ModuleOp module,
         const OnnxImportOptions &options)
      : model(model), module(module), options(options),
        builder(module.getContext()), loc(builder.getUnknownLoc()) {}

  bool run(std::string &error);

  // Helpers for the handlers.

  /// Sets the node's error; returns false.
  bool fail(const std::string &msg) {
    err = msg;
    return false;
  }
  bool attrInt(const onnx::NodeProto &node, const char *name, int64_t &v);
  bool attrInts(const onnx::NodeProto &node, const char *name,
                std::vector<int64_t> &v);
  /// An int attribute, `def` when absent.
  int64_t attrIntOr(const onnx::NodeProto &node, const char *name,
                    int64_t def) {
    int64_t v = def;
    attrInt(node, name, v);
    return v;
  }
  /// The value of a Concrete, or of a Weight read as a concrete tensor.
  bool concreteOf(const AValRef &a, CTensor &c);

  AValRef act(mlir::Value v, View view) {
    AValRef a = AVal::make(AVal::Act);
    a->v = v;
    a->view = std::move(view);
    return a;
  }
  /// `a` as an activation (a weightless RMSNorm becomes one); otherwise
  /// fails with "found X where EXPECTED was expected".
  bool asAct(const AValRef &a, AValRef &out, const char *expected);
  /// asAct, and the view must be [batch, seq, features].
  bool canonicalAct(const AValRef &a, AValRef &out, const char *expected);
  View flatView(int64_t features, AK seq = AK::S) {
    return {{{AK::B, options.probeBatch}},
            {{seq, seq == AK::S ? options.probeSeq : options.probePast}},
            {{AK::F, features}}};
  }
  mlir::RankedTensorType actType(int64_t features) {
    return mlir::RankedTensorType::get(
        {mlir::ShapedType::kDynamic, mlir::ShapedType::kDynamic, features},
        builder.getF32Type());
  }
  int64_t featureSize(const View &view) { return axisSize(view.back()); }

  /// An sq.weight of `tensor` (Weights.cpp), transposed if asked.
  bool weightValue(const onnx::TensorProto *tensor, bool transpose,
                   mlir::Value &out);

  /// True when the graph has KV-cache inputs.
  bool cached() const { return hasCache; }
  /// Evaluates the concrete value `name` (a mask, a shape) again as if the
  /// graph ran `seq` new tokens after `past` cached ones; the values of
  /// the main walk are left alone. False with `why` when the value cannot
  /// be computed there (it depends on activations, or the graph's own
  /// computation fails at those shapes).
  /// `rebind` gives graph inputs other values after they are bound (a
  /// static cache's write_indices).
  bool probeValue(const std::string &name, int64_t seq, int64_t past,
                  CTensor &out, std::string &why,
                  const std::map<std::string, AValRef> *rebind = nullptr);

  OnnxModel &model;
  mlir::ModuleOp module;
  OnnxImportOptions options;
  mlir::OpBuilder builder;
  mlir::Location loc;
  /// The current node's error.
  std::string err;
  /// @forward's positions argument.
  mlir::Value positions;
  /// The position of the probe's first token (its past length with a cache).
  int64_t positionStart = 0;
  /// "node 'X' (Op, #i)" of the node being raised.
  std::string nodeLabel;
  /// `err` already names its node (an operand's deferred error).
  bool errNamesNode = false;
  /// Tensors the importer makes (dequantized weights, QuantizedOps.cpp):
  /// Weight values point into them.
  std::vector<std::unique_ptr<onnx::TensorProto>> madeTensors;

  /// The graph has static caches (key_cache.* written by TensorScatter at
  /// write_indices; StaticCache.cpp).
  bool staticCache = false;

  /// probeValue at the probe sizes with the graph inputs in `rebind` given
  /// other values, failing with the error set (StaticCache.cpp): the mask of
  /// a static cache with the cache full.
  bool reevaluate(const std::string &name,
                  const std::map<std::string, AValRef> &rebind, CTensor &out);

private:
  /// A graph input, before @forward exists.
  struct PendingInput {
    std::string name;
    // 0 ids, 1 positions, 2 past, 3 attention mask, 4 static cache,
    // 5 write_indices, 6 nonpad_kv_seqlen
    int kind;
    int rank = 0;         // caches: 3 ([batch, seq, kv*hd]) or 4 (BNSH)
    int64_t capacity = 0; // static caches: max_seq when declared
  };

  bool declareInputs(std::vector<PendingInput> &pending, int64_t &kvFeatures,
                     std::string &error);
  mlir::func::FuncOp createForward(const std::vector<PendingInput> &pending,
                                   int64_t kvFeatures,
                                   llvm::SmallVectorImpl<mlir::Type> &argTypes);
  bool bindInputs(const std::vector<PendingInput> &pending, mlir::Block *body,
                  std::string &error);
  bool evalNode(const onnx::NodeProto &node, std::vector<AValRef> &outs);
  bool resolveInputs(const onnx::NodeProto &node, std::vector<AValRef> &in);
  bool foldConcrete(const onnx::NodeProto &node, const std::vector<AValRef> &in,
                    AValRef &out);
  bool returnResults(mlir::func::FuncOp func,
                     llvm::ArrayRef<mlir::Type> argTypes, std::string &error);

  std::map<std::string, AValRef> values;
  llvm::StringMap<const onnx::TensorProto *> initializers;
  bool hasCache = false;
  /// For probeValue: the graph inputs, @forward's body and each value's
  /// producer.
  std::vector<PendingInput> pendingInputs;
  mlir::Block *forwardBody = nullptr;
  llvm::StringMap<const onnx::NodeProto *> producers;
};

//===----------------------------------------------------------------------===//
// Helpers shared by handler files
//===----------------------------------------------------------------------===//

/// Element `i` of a tensor as a double (Weights.cpp).
double tensorElement(const TensorBytes &t, int64_t i);

/// Decodes a small tensor into a concrete one (Weights.cpp).
bool toConcrete(const TensorBytes &t, CTensor &c, std::string &error);

/// Exported constants are float32: 1e-5 arrives as 9.99999974e-06. Returns
/// the shortest decimal that rounds to the same float32.
double roundAsFloat32(double v);

/// Extracts the [seq, head_dim] table that `table` broadcasts onto `view`
/// (RopeOps.cpp).
bool extractTable(const View &view, const CTensor &table,
                  std::vector<double> &t2, int64_t &rows, int64_t &cols);

/// Checks cos/sin tables, recovers theta and builds sq.rope (RopeOps.cpp).
bool finishRope(Raiser &raiser, const AValRef &x, const View &resultView,
                const std::vector<double> &cosT,
                const std::vector<double> &sinT, int64_t rows, int64_t cols,
                RopeLayout layout, AValRef &out, int64_t heads = 0,
                int64_t firstPosition = -1);

/// RoPE from constant cos/sin caches [max_positions, rotary_dim/2]
/// (ComMicrosoftOps.cpp).
bool ropeFromCaches(Raiser &raiser, const AValRef &x, const AValRef &cosCache,
                    const AValRef &sinCache, bool interleaved, int64_t heads,
                    AValRef &out);

/// RoPE from half-width cos/sin tables [rows, rotary_dim/2] (row-major in
/// `cosHalf`/`sinHalf`; a cache from position 0, or rows gathered at the
/// probe positions with `firstPosition` -1): checks that the rotation covers
/// every feature and builds sq.rope (ComMicrosoftOps.cpp).
bool ropeFromHalfTables(Raiser &raiser, const AValRef &x,
                        const std::vector<double> &cosHalf,
                        const std::vector<double> &sinHalf, int64_t rows,
                        int64_t half, bool interleaved, int64_t heads,
                        AValRef &out, int64_t firstPosition = -1);

/// The sq.attention of a fused attention op (ComMicrosoftOps.cpp).
bool buildAttention(Raiser &raiser, const std::string &op, const AValRef &q,
                    const AValRef &k, const AValRef &v, const AValRef &pastK,
                    const AValRef &pastV, int64_t heads, int64_t kvHeads,
                    int64_t headDim, double scale, const onnx::NodeProto &node,
                    std::vector<AValRef> &outs, int64_t window = 0);

/// Checks the explicit mask of an ONNX Attention (input 3) against its
/// values (StaticCache.cpp): 0 (or true) where a query may see a key, very
/// negative (false) elsewhere, causal over `totalKeys` keys, with
/// `window` set to the sliding window it also applies (0: none). With a
/// static cache, the mask is evaluated again with the cache full to find
/// a window the probe is too short to show.
bool attentionMask(Raiser &raiser, OpCall &call, int64_t totalKeys,
                   int64_t &window);

/// Checks ONNX Attention's nonpad_kv_seqlen (input 6): every sequence's
/// keys are all valid (StaticCache.cpp).
bool checkNonpad(Raiser &raiser, OpCall &call, int64_t totalKeys);

/// RoPE from cos/sin already gathered at the positions ([batch, seq,
/// rotary_dim/2], ONNX RotaryEmbedding without position_ids)
/// (StaticCache.cpp).
bool ropeFromGathered(Raiser &raiser, const AValRef &x, const AValRef &cosIn,
                      const AValRef &sinIn, bool interleaved, int64_t heads,
                      AValRef &out);

/// RotaryEmbedding of com.microsoft (input, position_ids, cos_cache,
/// sin_cache) or, with `onnxOrder`, of opset 23 (X, cos_cache, sin_cache,
/// position_ids) (ComMicrosoftOps.cpp).
bool rotaryEmbedding(Raiser &raiser, OpCall &call, bool onnxOrder);

/// True when `mask` ([..., seq, past + seq]) is 0 where a query may see a
/// key (causal) and very negative elsewhere; else false with `why`
/// ("has shape ...", "is not causal: ...") (AttentionOps.cpp).
bool isCausalMaskTensor(const CTensor &mask, int64_t seq, int64_t past,
                        std::string &why);

/// Checks that operand `index` of an attention node, an additive mask, is
/// causal at the probe and, with a KV cache, for a prompt without cache and
/// for one token after the cache (ComMicrosoftOps.cpp).
bool verifyCausalBias(Raiser &raiser, OpCall &call, size_t index);

/// True when `a` is the output of an sq.linear without a bias, and when `b`
/// is a constant vector (a weight or Constant shaped [n] or [1, ..., 1, n],
/// n > 1) that can be one (LinearOps.cpp).
bool isBiaslessLinear(const AValRef &a);
bool isBiasVector(const AValRef &b);

/// `x` (isBiaslessLinear) + `b` (isBiasVector) as a new sq.linear with the
/// bias, stored as an fp32 sq.weight named like its initializer (or the
/// node's output); fails naming the bias when its size is not the linear's
/// out_features (LinearOps.cpp).
bool addLinearBias(Raiser &raiser, OpCall &call, const AValRef &x,
                   const AValRef &b, AValRef &out);

/// A float attribute, `def` when absent.
double attrFloat(const onnx::NodeProto &node, const char *name, double def);

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_RAISER_H
