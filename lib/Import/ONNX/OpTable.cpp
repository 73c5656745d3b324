//===- OpTable.cpp - the raiser's handlers by (domain, op_type) -----------===//
//
// The op table (see Raiser.h) and the one place that lists the handler
// files: a new op, exporter form or architecture adds its file's register
// function to opTable() below.
//
//===----------------------------------------------------------------------===//

#include "Raiser.h"

#include <cassert>

namespace sq {
namespace onnx_import {

namespace {

/// ONNX's default domain is spelled "" or "ai.onnx".
llvm::StringRef canonicalDomain(llvm::StringRef domain) {
  return domain == "ai.onnx" ? llvm::StringRef() : domain;
}

} // namespace

void OpTable::add(llvm::StringRef domain, llvm::StringRef opType,
                  OpHandler handler, Stage stage) {
  std::vector<Entry> &list = entries[opType];
  domain = canonicalDomain(domain);
  assert((stage != Fallback || llvm::none_of(list,
                                             [&](const Entry &e) {
                                               return e.stage == Fallback &&
                                                      e.domain == domain;
                                             })) &&
         "one Fallback handler per domain and op");
  list.push_back({domain.str(), stage, handler});
}

void OpTable::requireInputs(llvm::StringRef opType, unsigned n) {
  arity[opType] = n;
}

std::vector<std::pair<OpTable::Stage, OpHandler>>
OpTable::lookup(llvm::StringRef domain, llvm::StringRef opType) const {
  std::vector<std::pair<Stage, OpHandler>> handlers;
  auto it = entries.find(opType);
  if (it == entries.end())
    return handlers;
  domain = canonicalDomain(domain);
  bool ownDomain = llvm::any_of(
      it->second, [&](const Entry &e) { return e.domain == domain; });
  for (Stage stage : {PreFold, Pattern, Fallback})
    for (const Entry &e : it->second)
      if (e.stage == stage && (!ownDomain || e.domain == domain))
        handlers.push_back({stage, e.handler});
  return handlers;
}

unsigned OpTable::requiredInputs(llvm::StringRef opType) const {
  auto it = arity.find(opType);
  return it == arity.end() ? 0 : it->second;
}

const OpTable &opTable() {
  static const OpTable table = [] {
    OpTable t;
    // Binary ops of the default domain.
    for (const char *op : {"MatMul", "Mul", "Add", "Div"})
      t.requireInputs(op, 2);
    // By component and domain. Patterns of one op are disjoint and an op
    // has at most one Fallback per domain (and, today, one in all domains),
    // so the order of these calls does not change what a node becomes.
    registerShapeOps(t);
    registerLinearOps(t);
    registerRMSNormOps(t);
    registerRopeOps(t);
    registerInterleavedRopeOps(t);
    registerAttentionOps(t);
    registerComMicrosoftOps(t);
    registerOpset23Ops(t);
    registerQuantizedOps(t);
    registerStaticCacheOps(t);
    return t;
  }();
  return table;
}

} // namespace onnx_import
} // namespace sq
