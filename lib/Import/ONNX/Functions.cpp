//===- Functions.cpp - model-local functions inlined ----------------------===//
//
// The PyTorch dynamo exporter (torch.onnx.export(..., dynamo=True)) writes
// many ops as calls of model-local functions (onnxscript's torch_lib:
// aten_*, common::Rank, ...) whose bodies live in ModelProto.functions.
// inlineLocalFunctions replaces every call of such a function in the main
// graph by the function's nodes: formal inputs and outputs renamed to the
// call's values, the body's own values given a prefix unique to the call,
// attribute references (ref_attr_name) resolved from the call's attributes.
// Calls inside bodies are inlined too, up to a nesting depth that also catches
// recursion.
//
//===----------------------------------------------------------------------===//

#include "ONNXModel.h"

#include "llvm/ADT/StringMap.h"

#include <map>

namespace sq {
namespace onnx_import {

namespace {

constexpr int kMaxDepth = 32;
/// Nodes an inlining may produce: a hostile file must not make the importer
/// build an exponentially large graph.
constexpr size_t kMaxNodes = size_t(1) << 22;

std::string functionKey(const std::string &domain, const std::string &name) {
  return (domain == "ai.onnx" ? std::string() : domain) + "::" + name;
}

class Inliner {
public:
  Inliner(const onnx::ModelProto &model, std::string &error) : error(error) {
    for (const auto &f : model.functions())
      functions.try_emplace(functionKey(f.domain(), f.name()), &f);
  }

  bool empty() const { return functions.empty(); }

  /// Appends `node` to `out`, inlining it when it calls a local function.
  /// `root` names the main graph's node the call comes from.
  bool emit(const onnx::NodeProto &node, int depth, const std::string &root,
            google::protobuf::RepeatedPtrField<onnx::NodeProto> &out) {
    auto it = functions.find(functionKey(node.domain(), node.op_type()));
    if (it == functions.end()) {
      if (static_cast<size_t>(out.size()) >= kMaxNodes)
        return fail("inlining the model's functions gives more than " +
                    std::to_string(kMaxNodes) + " nodes");
      *out.Add() = node;
      return true;
    }
    const onnx::FunctionProto &f = *it->second;
    if (depth >= kMaxDepth)
      return fail("node '" + root + "': function '" + f.name() +
                  "' is called more than " + std::to_string(kMaxDepth) +
                  " deep (a recursive function?)");
    if (node.input_size() > f.input_size() ||
        node.output_size() > f.output_size())
      return fail("node '" + node.name() + "' calls function '" + f.name() +
                  "' with " + std::to_string(node.input_size()) +
                  " inputs and " + std::to_string(node.output_size()) +
                  " outputs; it takes " + std::to_string(f.input_size()) +
                  " and " + std::to_string(f.output_size()));
    // Formal -> actual names; "" for an optional input not given.
    std::map<std::string, std::string> rename;
    for (int i = 0; i < f.input_size(); ++i)
      rename[f.input(i)] = i < node.input_size() ? node.input(i) : "";
    for (int i = 0; i < f.output_size(); ++i)
      rename[f.output(i)] = i < node.output_size() ? node.output(i) : "";
    std::string prefix = (node.name().empty() ? f.name() : node.name()) + "/" +
                         std::to_string(calls++) + "/";
    auto mapped = [&](const std::string &name) {
      if (name.empty())
        return name;
      auto r = rename.find(name);
      return r != rename.end() ? r->second : prefix + name;
    };
    // Attribute values of the call. (Defaults in FunctionProto's
    // attribute_proto, IR 9, are not in onnx 1.12's schema: a reference the
    // call leaves unset is dropped, and the op's own default applies.)
    std::map<std::string, const onnx::AttributeProto *> attrs;
    for (const auto &a : node.attribute())
      attrs[a.name()] = &a;

    for (const onnx::NodeProto &inner : f.node()) {
      onnx::NodeProto copy = inner;
      copy.set_name(prefix + inner.name());
      for (auto &in : *copy.mutable_input())
        in = mapped(in);
      for (auto &o : *copy.mutable_output())
        o = mapped(o);
      google::protobuf::RepeatedPtrField<onnx::AttributeProto> resolved;
      for (const auto &a : inner.attribute()) {
        if (a.ref_attr_name().empty()) {
          *resolved.Add() = a;
          continue;
        }
        auto v = attrs.find(a.ref_attr_name());
        if (v == attrs.end())
          continue; // not given and no default: the attribute is absent
        onnx::AttributeProto *r = resolved.Add();
        *r = *v->second;
        r->set_name(a.name());
      }
      copy.mutable_attribute()->Swap(&resolved);
      if (!emit(copy, depth + 1, root, out))
        return false;
    }
    return true;
  }

private:
  bool fail(const std::string &msg) {
    error = msg;
    return false;
  }

  llvm::StringMap<const onnx::FunctionProto *> functions;
  std::string &error;
  size_t calls = 0;
};

} // namespace

bool inlineLocalFunctions(onnx::ModelProto &model, std::string &error) {
  Inliner inliner(model, error);
  if (inliner.empty())
    return true;
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  for (const onnx::NodeProto &node : model.graph().node())
    if (!inliner.emit(node, 0, node.name(), nodes))
      return false;
  model.mutable_graph()->mutable_node()->Swap(&nodes);
  return true;
}

} // namespace onnx_import
} // namespace sq
