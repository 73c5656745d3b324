//===- Raise.cpp - raising an ONNX LLaMA graph into sq ops ----------------===//
//
// See Raise.h. The core of the raiser: @forward's signature from the graph
// inputs, the walk over the nodes, concrete evaluation of all-constant
// operands (Concrete.cpp) and the dispatch of every other node to the
// handlers the op table holds for its (domain, op_type) (Raiser.h,
// OpTable.cpp), then the results. What each op means for a LLaMA lives in
// the handler files; anything no handler takes is reported with the node.
//
//===----------------------------------------------------------------------===//

#include "Raise.h"
#include "Raiser.h"

#include <cstdio>
#include <cstdlib>

using namespace mlir;

namespace sq {
namespace onnx_import {

//===----------------------------------------------------------------------===//
// Helpers for the handlers
//===----------------------------------------------------------------------===//

bool Raiser::attrInt(const onnx::NodeProto &node, const char *name,
                     int64_t &v) {
  for (const auto &a : node.attribute())
    if (a.name() == name) {
      v = a.i();
      return true;
    }
  return false;
}

bool Raiser::attrInts(const onnx::NodeProto &node, const char *name,
                      std::vector<int64_t> &v) {
  for (const auto &a : node.attribute())
    if (a.name() == name) {
      v.assign(a.ints().begin(), a.ints().end());
      return true;
    }
  return false;
}

bool Raiser::concreteOf(const AValRef &a, CTensor &c) {
  if (a->kind == AVal::Concrete) {
    c = a->c;
    return true;
  }
  if (a->kind == AVal::Weight) {
    TensorBytes bytes;
    if (!model.readTensor(*a->tensor, bytes, err))
      return false;
    return toConcrete(bytes, c, err);
  }
  return false;
}

bool Raiser::asAct(const AValRef &a, AValRef &out, const char *expected) {
  if (a->kind == AVal::Act) {
    out = a;
    return true;
  }
  if (a->kind == AVal::Normed) {
    // A weightless RMSNorm (its scale, if any, was not found next to it).
    auto op = RMSNormOp::create(builder, loc, a->x->v, Value(),
                                builder.getF64FloatAttr(a->eps));
    out = act(op, a->x->view);
    return true;
  }
  return fail(std::string("found ") + kindName(a->kind) + " where " + expected +
              " was expected");
}

bool Raiser::canonicalAct(const AValRef &a, AValRef &out,
                          const char *expected) {
  if (!asAct(a, out, expected))
    return false;
  if (out->kv || !isCanonical(out->view))
    return fail(std::string("activation laid out as ") + viewStr(out->view) +
                " where " + expected + " [batch, seq, features] was expected");
  return true;
}

double roundAsFloat32(double v) {
  float f = static_cast<float>(v);
  for (int precision = 1; precision <= 9; ++precision) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.*g", precision, v);
    double d = std::strtod(text, nullptr);
    if (static_cast<float>(d) == f)
      return d;
  }
  return v;
}

double attrFloat(const onnx::NodeProto &node, const char *name, double def) {
  for (const auto &at : node.attribute())
    if (at.name() == name)
      return static_cast<double>(at.f());
  return def;
}

//===----------------------------------------------------------------------===//
// One node
//===----------------------------------------------------------------------===//

bool Raiser::resolveInputs(const onnx::NodeProto &node,
                           std::vector<AValRef> &in) {
  for (const std::string &name : node.input()) {
    if (name.empty()) {
      in.push_back(nullptr);
      continue;
    }
    auto it = values.find(name);
    if (it != values.end()) {
      in.push_back(it->second);
      continue;
    }
    auto init = initializers.find(name);
    if (init != initializers.end()) {
      AValRef w = AVal::make(AVal::Weight);
      w->tensor = init->second;
      values[name] = w;
      in.push_back(w);
      continue;
    }
    return fail("input '" + name +
                "' is not produced by an earlier node, an initializer or a "
                "graph input");
  }
  return true;
}

/// Evaluates a node whose operands are all constants (or small weights).
bool Raiser::foldConcrete(const onnx::NodeProto &node,
                          const std::vector<AValRef> &in, AValRef &out) {
  const std::string &op = node.op_type();
  std::vector<CTensor> cin;
  for (const AValRef &a : in) {
    CTensor c;
    if (a && !concreteOf(a, c))
      return false;
    cin.push_back(c);
  }
  ConcreteAttrs attrs;
  attrs.hasAxis = attrInt(node, "axis", attrs.axis);
  attrs.hasAxes = attrInts(node, "axes", attrs.axes);
  attrs.hasPerm = attrInts(node, "perm", attrs.perm);
  attrInt(node, "to", attrs.to);
  attrInt(node, "upper", attrs.upper);
  attrInt(node, "keepdims", attrs.keepdims);
  attrInt(node, "allowzero", attrs.allowzero);
  CTensor value;
  for (const auto &a : node.attribute())
    if (a.name() == "value" && op == "ConstantOfShape") {
      TensorBytes bytes;
      if (!model.readTensor(a.t(), bytes, err) ||
          !toConcrete(bytes, value, err))
        return false;
      attrs.value = &value;
    }
  std::vector<CTensor> r;
  if (!evalConcrete(op, cin, attrs, r, err)) {
    if (err.find("is not evaluated on constants") != std::string::npos)
      err = "unsupported op '" + op +
            "' in a shape computation; expected the shape, mask or RoPE "
            "table computations of a LLaMA export";
    return false;
  }
  out = AVal::make(AVal::Concrete);
  out->c = r[0];
  return true;
}

bool Raiser::evalNode(const onnx::NodeProto &node, std::vector<AValRef> &outs) {
  const std::string &op = node.op_type();
  std::vector<AValRef> in;
  if (!resolveInputs(node, in))
    return false;
  outs.assign(std::max(1, node.output_size()), nullptr);
  OpCall call{node, op, in, outs};
  const OpTable &table = opTable();
  auto handlers = table.lookup(node.domain(), op);

  // An operand that could not be computed at the probe sizes: what is
  // computed from it cannot be either (the error travels with it), and only
  // ops that re-evaluate such operands may consume it.
  AValRef invalid;
  for (const AValRef &a : in)
    if (a && a->kind == AVal::Concrete && !a->invalid.empty()) {
      invalid = a;
      break;
    }
  auto propagate = [&]() {
    outs[0] = AVal::make(AVal::Concrete);
    outs[0]->invalid = invalid->invalid;
    return true;
  };

  // Constant and Shape take any operands.
  for (const auto &[stage, handler] : handlers)
    if (stage == OpTable::PreFold)
      return invalid ? propagate() : handler(*this, call);

  // Fully concrete operands: evaluate. Small weights count as constants
  // when they meet a constant (an index, a cos cache gathered at positions);
  // weights alone stay weights (a transposed lm_head, a cast table).
  bool allConcrete = !in.empty(), anyConcrete = false;
  for (const AValRef &a : in) {
    if (!a)
      continue;
    if (a->kind == AVal::Concrete) {
      anyConcrete = true;
      continue;
    }
    // Declared dims are not validated yet (readTensor does that): a product
    // past int64 (2^40 x 2^40) is large, not signed overflow.
    int64_t numel = 1;
    bool overflow = false;
    if (a->kind == AVal::Weight)
      for (int64_t d : a->tensor->dims())
        overflow |= __builtin_mul_overflow(numel, d, &numel);
    if (a->kind != AVal::Weight || overflow || numel > (int64_t(1) << 20))
      allConcrete = false;
  }
  if (!anyConcrete)
    allConcrete = false;
  if (allConcrete) {
    if (invalid)
      return propagate();
    if (foldConcrete(node, in, outs[0]))
      return true;
    // Deferred: the value may be read only where it is valid.
    outs[0] = AVal::make(AVal::Concrete);
    outs[0]->invalid = nodeLabel + ": " + err;
    err.clear();
    return true;
  }
  if (invalid && !table.acceptsInvalidOperands(op)) {
    errNamesNode = true;
    return fail(invalid->invalid);
  }

  // Ops on activations and patterns.
  AValRef a = call.input(0);
  if (!a)
    return fail("missing first input");
  unsigned needed = table.requiredInputs(op);
  if (needed > 1 && !call.input(needed - 1))
    return fail(op + " needs " +
                (needed == 2 ? std::string("two") : std::to_string(needed)) +
                " inputs");
  for (const auto &[stage, handler] : handlers) {
    call.declined = false;
    if (!handler(*this, call))
      return false;
    if (!call.declined)
      return true;
  }
  return fail("unsupported op '" + op + "' on " + kindName(a->kind) +
              ": expected part of a LLaMA layer (RMSNorm, RoPE, "
              "attention, SwiGLU MLP) or a shape computation");
}

bool Raiser::probeValue(const std::string &name, int64_t seq, int64_t past,
                        CTensor &out, std::string &why,
                        const std::map<std::string, AValRef> *rebind) {
  // The main walk's state, restored on every path.
  std::map<std::string, AValRef> saved;
  saved.swap(values);
  OnnxImportOptions savedOptions = options;
  int64_t savedStart = positionStart;
  std::string savedErr = err;
  auto restore = [&](bool ok) {
    values.swap(saved);
    options = savedOptions;
    positionStart = savedStart;
    err = savedErr;
    return ok;
  };
  options.probeSeq = seq;
  options.probePast = past;
  positionStart = hasCache ? past : 0;
  if (!bindInputs(pendingInputs, forwardBody, why))
    return restore(false);
  if (rebind)
    for (const auto &[input, value] : *rebind)
      values[input] = value;

  // Depth-first over the producers, without recursion (graphs can be long
  // chains); the graph is sorted and acyclic (GraphOrder.cpp).
  const OpTable &table = opTable();
  std::vector<const onnx::NodeProto *> stack;
  auto resolved = [&](const std::string &v) {
    return v.empty() || values.count(v) || initializers.count(v);
  };
  auto pushProducer = [&](const std::string &v) {
    auto it = producers.find(v);
    if (it == producers.end()) {
      why = "'" + v + "' is not computed by the graph";
      return false;
    }
    stack.push_back(it->second);
    return true;
  };
  if (!resolved(name) && !pushProducer(name))
    return restore(false);
  size_t steps = 0;
  while (!stack.empty()) {
    if (++steps > 4 * producers.size() + 16) {
      why = "the computation does not terminate";
      return restore(false);
    }
    const onnx::NodeProto &node = *stack.back();
    bool ready = true;
    for (const std::string &v : node.input())
      if (!resolved(v)) {
        if (!pushProducer(v))
          return restore(false);
        ready = false;
      }
    if (!ready)
      continue;
    stack.pop_back();
    if (node.output_size() == 0 || values.count(node.output(0)))
      continue;
    std::vector<AValRef> in;
    if (!resolveInputs(node, in)) {
      why = err;
      return restore(false);
    }
    std::vector<AValRef> outs(std::max(1, node.output_size()), nullptr);
    OpCall call{node, node.op_type(), in, outs};
    bool preFold = false, ok = true;
    for (const auto &[stage, handler] :
         table.lookup(node.domain(), node.op_type()))
      if (stage == OpTable::PreFold) {
        preFold = true;
        ok = handler(*this, call);
        break;
      }
    if (!preFold) {
      for (const AValRef &a : in)
        if (a && a->kind != AVal::Concrete && a->kind != AVal::Weight) {
          why = "it depends on " + std::string(kindName(a->kind)) + " (node '" +
                node.name() + "')";
          return restore(false);
        }
      ok = foldConcrete(node, in, outs[0]);
    }
    if (!ok) {
      why = "node '" + node.name() + "' (" + node.op_type() + "): " + err;
      return restore(false);
    }
    for (int i = 0; i < node.output_size(); ++i)
      if (!node.output(i).empty())
        values[node.output(i)] =
            i < static_cast<int>(outs.size()) ? outs[i] : nullptr;
  }
  AValRef v;
  auto it = values.find(name);
  if (it != values.end())
    v = it->second;
  CTensor c;
  if (!v || !concreteOf(v, c)) {
    why = "'" + name + "' is not a constant there";
    return restore(false);
  }
  out = std::move(c);
  return restore(true);
}

//===----------------------------------------------------------------------===//
// The graph
//===----------------------------------------------------------------------===//

/// The graph inputs a LLaMA export has, in order; KV caches must be
/// [batch, kv_heads, past_seq, head_dim] with static kv_heads and head_dim.
bool Raiser::declareInputs(std::vector<PendingInput> &pending,
                           int64_t &kvFeatures, std::string &error) {
  const onnx::GraphProto &graph = model.graph();
  // Errors before the nodes name no node: they go to `error` directly.
  auto failRun = [&](const std::string &msg) {
    error = msg;
    return false;
  };
  for (const auto &input : graph.input()) {
    if (initializers.count(input.name()))
      continue; // old-style graphs list initializers as inputs
    const std::string &name = input.name();
    const auto &type = input.type().tensor_type();
    int rank = type.shape().dim_size();
    if (name.find("past_key_values") == 0 || name.find("past_key") == 0 ||
        name.find("past.") == 0) {
      if (rank != 4)
        return failRun(
            "graph input '" + name +
            "' is a KV cache but not 4-D [batch, kv_heads, past_seq, "
            "head_dim]");
      const auto &d = type.shape().dim();
      if (!d[1].has_dim_value() || !d[3].has_dim_value() ||
          d[1].dim_value() <= 0 || d[3].dim_value() <= 0)
        return failRun("graph input '" + name +
                       "' needs static kv_heads and head_dim");
      if (d[1].dim_value() > (int64_t(1) << 31) / d[3].dim_value())
        return failRun("graph input '" + name +
                       "' declares an absurdly large KV cache (kv_heads " +
                       std::to_string(d[1].dim_value()) + " x head_dim " +
                       std::to_string(d[3].dim_value()) + ")");
      kvFeatures = d[1].dim_value() * d[3].dim_value();
      hasCache = true;
      pending.push_back({name, 2, 4});
    } else if (name.find("key_cache") == 0 || name.find("value_cache") == 0) {
      // A static cache (ONNX Runtime's opset-24 builders): max_seq slots
      // written in place by TensorScatter at write_indices, as [batch,
      // max_seq, kv_heads * head_dim] or [batch, kv_heads, max_seq,
      // head_dim].
      const auto &d = type.shape().dim();
      bool ok =
          rank == 3 ? d[2].has_dim_value() && d[2].dim_value() > 0
          : rank == 4
              ? d[1].has_dim_value() && d[3].has_dim_value() &&
                    d[1].dim_value() > 0 && d[3].dim_value() > 0 &&
                    d[1].dim_value() <= (int64_t(1) << 31) / d[3].dim_value()
              : false;
      if (!ok)
        return failRun("graph input '" + name +
                       "' is a static KV cache but not [batch, max_seq, "
                       "kv_heads * head_dim] or [batch, kv_heads, max_seq, "
                       "head_dim] with static features");
      int64_t features =
          rank == 3 ? d[2].dim_value() : d[1].dim_value() * d[3].dim_value();
      if (features > (int64_t(1) << 31))
        return failRun("graph input '" + name +
                       "' declares an absurdly large KV cache");
      const auto &seqDim = d[rank == 3 ? 1 : 2];
      kvFeatures = features;
      hasCache = true;
      staticCache = true;
      pending.push_back(
          {name, 4, rank, seqDim.has_dim_value() ? seqDim.dim_value() : 0});
    } else if (name == "write_indices") {
      pending.push_back({name, 5});
    } else if (name == "nonpad_kv_seqlen") {
      pending.push_back({name, 6});
    } else if (name == "input_ids") {
      pending.push_back({name, 0});
    } else if (name == "position_ids") {
      pending.push_back({name, 1});
    } else if (name == "attention_mask") {
      pending.push_back({name, 3});
    } else {
      return failRun("graph input '" + name +
                     "' is not one a LLaMA export has (input_ids, "
                     "position_ids, attention_mask, past_key_values.*, or "
                     "key_cache.*, value_cache.*, write_indices, "
                     "nonpad_kv_seqlen with static caches)");
    }
  }
  bool dynamicCache =
      llvm::any_of(pending, [](const PendingInput &p) { return p.kind == 2; });
  if (staticCache && dynamicCache)
    return failRun("the graph mixes static caches (key_cache.*) and "
                   "past_key_values.* inputs");
  return true;
}

/// @forward(input_ids, positions, caches...) with an empty body.
func::FuncOp Raiser::createForward(const std::vector<PendingInput> &pending,
                                   int64_t kvFeatures,
                                   SmallVectorImpl<Type> &argTypes) {
  SmallVector<std::string> argNames;
  // Signature: input_ids, positions, then the caches.
  auto i64 = builder.getI64Type();
  auto idsType =
      RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, i64);
  argTypes.assign({idsType, idsType});
  argNames = {"input_ids", "positions"};
  SmallVector<const PendingInput *> caches;
  for (const PendingInput &p : pending)
    if (p.kind == 2 || p.kind == 4) {
      argTypes.push_back(actType(kvFeatures));
      argNames.push_back(p.name);
      caches.push_back(&p);
    }
  builder.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(builder, loc, "forward",
                                   builder.getFunctionType(argTypes, {}));
  Block *body = func.addEntryBlock();
  for (size_t i = 0; i < argNames.size(); ++i) {
    func.setArgAttr(i, "sq.name", builder.getStringAttr(argNames[i]));
    if (i < 2)
      continue;
    // ONNX caches are [batch, kv_heads, past_seq, head_dim] (or, static,
    // [batch, max_seq, kv_heads * head_dim]); here they are [batch,
    // past_seq, kv_heads * head_dim]. A static cache ("static:" layouts)
    // has max_seq slots, written at write_indices = past_seq, the first
    // nonpad_kv_seqlen = past_seq + seq of them valid: the argument is its
    // first past_seq slots and the result its first past_seq + seq.
    const PendingInput &p = *caches[i - 2];
    std::string layout =
        p.rank == 3 ? "batch,seq,heads*head_dim" : "batch,heads,seq,head_dim";
    if (p.kind == 4)
      layout = "static:" + layout;
    func.setArgAttr(i, "sq.onnx_layout", builder.getStringAttr(layout));
    if (p.kind == 4 && p.capacity > 0)
      func.setArgAttr(i, "sq.onnx_max_seq",
                      builder.getI64IntegerAttr(p.capacity));
  }
  builder.setInsertionPointToStart(body);
  positions = body->getArgument(1);
  return func;
}

/// Gives the graph inputs their abstract values: the ids, positions and
/// attention mask at the probe sizes, the caches as activations.
bool Raiser::bindInputs(const std::vector<PendingInput> &pending, Block *body,
                        std::string &error) {
  const onnx::GraphProto &graph = model.graph();
  size_t cacheArg = 2;
  bool sawIds = false;
  for (const PendingInput &p : pending) {
    if (p.kind == 0) {
      AValRef ids = AVal::make(AVal::Ids);
      ids->v = body->getArgument(0);
      values[p.name] = ids;
      sawIds = true;
    } else if (p.kind == 1) {
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      c->c.shape = {options.probeBatch, options.probeSeq};
      for (int64_t bI = 0; bI < options.probeBatch; ++bI)
        for (int64_t s = 0; s < options.probeSeq; ++s)
          c->c.data.push_back(positionStart + s);
      values[p.name] = c;
    } else if (p.kind == 3) {
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      int64_t total = positionStart + options.probeSeq;
      c->c.shape = {options.probeBatch, total};
      c->c.data.assign(options.probeBatch * total, 1.0);
      values[p.name] = c;
    } else if (p.kind == 5 || p.kind == 6) {
      // write_indices = past_length, nonpad_kv_seqlen = past_length + seq:
      // the static cache used as a growing one.
      AValRef c = AVal::make(AVal::Concrete);
      c->c.kind = CTensor::Int;
      c->c.shape = {options.probeBatch};
      c->c.data.assign(options.probeBatch,
                       positionStart + (p.kind == 6 ? options.probeSeq : 0));
      values[p.name] = c;
    } else if (p.rank == 3) {
      // A static cache [B, max_seq, K*D]: its first past_seq slots.
      Value arg = body->getArgument(cacheArg);
      View view = {
          {{AK::B, options.probeBatch}},
          {{AK::P, options.probePast}},
          {{AK::F, cast<RankedTensorType>(arg.getType()).getDimSize(2)}}};
      values[p.name] = act(body->getArgument(cacheArg++), view);
    } else {
      // [B, K, P, D] in ONNX; [B, P, K*D] here.
      const auto &d = [&]() -> const onnx::TensorShapeProto & {
        for (const auto &in : graph.input())
          if (in.name() == p.name)
            return in.type().tensor_type().shape();
        return graph.input(0).type().tensor_type().shape();
      }();
      int64_t heads = d.dim(1).dim_value(), headDim = d.dim(3).dim_value();
      View view = {{{AK::B, options.probeBatch}},
                   {{AK::N, heads}},
                   {{AK::P, options.probePast}},
                   {{AK::D, headDim}}};
      values[p.name] = act(body->getArgument(cacheArg++), view);
    }
  }
  if (!sawIds) {
    error = "the graph has no 'input_ids' input";
    return false;
  }
  return true;
}

/// The graph outputs: the logits and the present caches.
bool Raiser::returnResults(func::FuncOp func, ArrayRef<Type> argTypes,
                           std::string &error) {
  const onnx::GraphProto &graph = model.graph();
  SmallVector<Value> results;
  SmallVector<std::string> resultNames;
  SmallVector<BlockArgument> resultPast; // per result: its cache argument
  for (const auto &output : graph.output()) {
    auto it = values.find(output.name());
    if (it == values.end() || !it->second) {
      error = "graph output '" + output.name() + "' is not computed";
      return false;
    }
    AValRef a = it->second;
    if (a->kind == AVal::Concrete && !a->invalid.empty()) {
      error = a->invalid;
      return false;
    }
    if (a->kind == AVal::Act && a->kv) {
      if (!a->kv->presentOut) {
        error = "graph output '" + output.name() +
                "' is a KV cache that no attention reads";
        return false;
      }
      results.push_back(a->kv->presentOut);
      resultPast.push_back(dyn_cast<BlockArgument>(a->kv->past));
    } else {
      AValRef x;
      if (!canonicalAct(a, x, "the logits")) {
        error = "graph output '" + output.name() + "': " + err;
        return false;
      }
      results.push_back(x->v);
      resultPast.push_back(nullptr);
    }
    resultNames.push_back(output.name());
  }
  func::ReturnOp::create(builder, loc, results);
  SmallVector<Type> resultTypes;
  for (Value v : results)
    resultTypes.push_back(v.getType());
  func.setFunctionType(builder.getFunctionType(argTypes, resultTypes));
  for (size_t i = 0; i < resultNames.size(); ++i) {
    func.setResultAttr(i, "sq.name", builder.getStringAttr(resultNames[i]));
    // A present cache is laid out as its past argument.
    if (BlockArgument past = resultPast[i])
      for (StringRef attr : {"sq.onnx_layout", "sq.onnx_max_seq"})
        if (Attribute a = func.getArgAttr(past.getArgNumber(), attr))
          func.setResultAttr(i, attr, a);
  }
  return true;
}

bool Raiser::run(std::string &error) {
  const onnx::GraphProto &graph = model.graph();
  for (const auto &init : graph.initializer())
    initializers[init.name()] = &init;

  // Function arguments from the graph inputs.
  std::vector<PendingInput> pending;
  int64_t kvFeatures = 0;
  if (!declareInputs(pending, kvFeatures, error))
    return false;
  positionStart = hasCache ? options.probePast : 0;
  SmallVector<Type> argTypes;
  func::FuncOp func = createForward(pending, kvFeatures, argTypes);
  Block *body = &func.getBody().front();
  if (!bindInputs(pending, body, error))
    return false;
  pendingInputs = pending;
  forwardBody = body;
  for (const auto &node : graph.node())
    for (const std::string &out : node.output())
      if (!out.empty())
        producers.try_emplace(out, &node);

  // Nodes in order.
  int index = 0;
  for (const auto &node : graph.node()) {
    std::vector<AValRef> outs;
    nodeLabel = "node '" + node.name() + "' (" + node.op_type() + ", #" +
                std::to_string(model.fileIndex(index)) + ")";
    errNamesNode = false;
    if (!evalNode(node, outs)) {
      error = errNamesNode ? err : nodeLabel + ": " + err;
      return false;
    }
    for (int i = 0; i < node.output_size(); ++i)
      if (!node.output(i).empty())
        values[node.output(i)] =
            i < static_cast<int>(outs.size()) ? outs[i] : nullptr;
    ++index;
  }

  if (!returnResults(func, argTypes, error))
    return false;

  // Drop what no result uses (dead shape patterns left no ops, but e.g. a
  // weightless norm materialized for an unused branch could).
  bool changed = true;
  while (changed) {
    changed = false;
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(*body)))
      if (!isa<func::ReturnOp>(op) && op.use_empty()) {
        op.erase();
        changed = true;
      }
  }
  return true;
}

bool raiseGraph(OnnxModel &model, ModuleOp module,
                const OnnxImportOptions &options, std::string &error) {
  Raiser raiser(model, module, options);
  return raiser.run(error);
}

} // namespace onnx_import
} // namespace sq
