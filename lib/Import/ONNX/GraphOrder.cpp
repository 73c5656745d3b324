//===- GraphOrder.cpp - nodes in dependency order -------------------------===//
//
// ONNX requires a graph's nodes to be topologically sorted, but producers do
// not always write them so (ONNX Runtime GenAI's model builder emits its
// attention-mask subgraph out of order) and ONNX Runtime sorts graphs itself.
// sortGraphNodes reorders the nodes of the main graph so that every node
// comes after the producers of its inputs, keeping the file's order wherever
// the file is already ordered; a cycle is an error that names a node on it.
//
//===----------------------------------------------------------------------===//

#include "ONNXModel.h"

#include "llvm/ADT/StringMap.h"

#include <algorithm>
#include <queue>

namespace sq {
namespace onnx_import {

namespace {

std::string nodeLabel(const onnx::NodeProto &node, size_t index) {
  return "node '" + node.name() + "' (" + node.op_type() + ", #" +
         std::to_string(index) + ")";
}

} // namespace

bool sortGraphNodes(onnx::GraphProto &graph, std::vector<size_t> &fileIndex,
                    std::string &error) {
  size_t n = graph.node_size();
  fileIndex.clear();
  // The producer of every value (the first one, should a name be written
  // twice: the raiser reports that as it does today).
  llvm::StringMap<size_t> producer;
  for (size_t i = 0; i < n; ++i)
    for (const std::string &out : graph.node(i).output())
      if (!out.empty())
        producer.try_emplace(out, i);

  // Edges producer -> consumer; an input nothing produces (a graph input, an
  // initializer, or a dangling name the raiser will report) has no edge.
  std::vector<std::vector<size_t>> consumers(n);
  std::vector<size_t> pending(n, 0);
  bool sorted = true;
  for (size_t i = 0; i < n; ++i) {
    std::vector<size_t> preds;
    for (const std::string &in : graph.node(i).input()) {
      auto it = in.empty() ? producer.end() : producer.find(in);
      if (it == producer.end() || it->second == i)
        continue;
      if (std::find(preds.begin(), preds.end(), it->second) != preds.end())
        continue;
      preds.push_back(it->second);
      sorted &= it->second < i;
    }
    pending[i] = preds.size();
    for (size_t p : preds)
      consumers[p].push_back(i);
  }
  // A node that reads its own output is a cycle of one.
  for (size_t i = 0; i < n; ++i)
    for (const std::string &in : graph.node(i).input()) {
      auto it = in.empty() ? producer.end() : producer.find(in);
      if (it != producer.end() && it->second == i) {
        error = nodeLabel(graph.node(i), i) + " reads its own output '" + in +
                "' (the graph has a cycle)";
        return false;
      }
    }
  if (sorted) {
    for (size_t i = 0; i < n; ++i)
      fileIndex.push_back(i);
    return true;
  }

  // Kahn's algorithm, always taking the earliest ready node: a sorted file
  // keeps its order, an unsorted one moves only what must move.
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < n; ++i)
    if (!pending[i])
      ready.push(i);
  std::vector<size_t> order;
  order.reserve(n);
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t c : consumers[i])
      if (--pending[c] == 0)
        ready.push(c);
  }

  if (order.size() != n) {
    // Every node left waits on another node left; walking back from one of
    // them along unfinished producers must revisit a node, which is on a
    // cycle.
    std::vector<bool> done(n, false);
    for (size_t i : order)
      done[i] = true;
    size_t at = 0;
    while (done[at])
      ++at;
    std::vector<int> seen(n, 0);
    for (;;) {
      seen[at] = 1;
      size_t next = n;
      for (const std::string &in : graph.node(at).input()) {
        auto it = in.empty() ? producer.end() : producer.find(in);
        if (it != producer.end() && !done[it->second]) {
          next = it->second;
          break;
        }
      }
      if (next == n || seen[next]) {
        at = next == n ? at : next;
        break;
      }
      at = next;
    }
    error = "the graph has a cycle through " + nodeLabel(graph.node(at), at);
    return false;
  }

  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  nodes.Reserve(static_cast<int>(n));
  for (size_t i : order)
    *nodes.Add() = std::move(*graph.mutable_node(static_cast<int>(i)));
  graph.mutable_node()->Swap(&nodes);
  fileIndex = std::move(order);
  return true;
}

} // namespace onnx_import
} // namespace sq
