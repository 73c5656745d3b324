//===- AttrExpansion.h - bound what printing an IR expands to ----*- C++
//-*-===//
//
// MLIR uniques attributes and types, so a tiny bytecode file can hold a DAG
// that doubles per level (60 arrays, each holding the previous one twice):
// the text printer writes the expanded tree, 2^60 elements, and sq-opt runs
// until killed. (Textual IR is refused earlier by the prescan of
// NestingDepth.h.) expandedAttributeSize() measures the expansion with one
// memoized, iterative walk over the unique attributes and types, linear in
// their number, so the tool can refuse before printing.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_ATTREXPANSION_H
#define SQ_SUPPORT_ATTREXPANSION_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/Operation.h"
#include "mlir/IR/Types.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <utility>

namespace sq {

/// More than this many attributes and types, expanded, in one IR.
constexpr uint64_t kMaxPrintedExpansion = uint64_t(1) << 28;

/// The op whose attributes (with those of every op before it, in walk
/// order) expand to more than `limit` attributes and types, or nullptr.
inline mlir::Operation *findAttributeBlowup(mlir::Operation *root,
                                            uint64_t limit) {
  // An attribute or a type, as an opaque pointer with a tag bit.
  using Node = std::pair<const void *, bool>; // (pointer, isType)
  llvm::DenseMap<const void *, uint64_t> size;
  auto children = [](Node n, llvm::SmallVectorImpl<Node> &out) {
    auto onAttr = [&](mlir::Attribute a) {
      out.push_back({a.getAsOpaquePointer(), false});
    };
    auto onType = [&](mlir::Type t) {
      out.push_back({t.getAsOpaquePointer(), true});
    };
    if (n.second)
      mlir::Type::getFromOpaquePointer(n.first).walkImmediateSubElements(
          onAttr, onType);
    else
      mlir::Attribute::getFromOpaquePointer(n.first).walkImmediateSubElements(
          onAttr, onType);
  };
  auto sizeOf = [&](Node start) -> uint64_t {
    if (!start.first)
      return 0;
    if (auto it = size.find(start.first); it != size.end())
      return it->second;
    // Post-order without recursion: (node, children pushed?).
    llvm::SmallVector<std::pair<Node, bool>> stack = {{start, false}};
    llvm::SmallVector<Node> kids;
    while (!stack.empty()) {
      auto [n, expanded] = stack.pop_back_val();
      if (size.count(n.first))
        continue;
      kids.clear();
      children(n, kids);
      if (!expanded) {
        stack.push_back({n, true});
        for (Node k : kids)
          if (!size.count(k.first))
            stack.push_back({k, false});
        continue;
      }
      uint64_t s = 1;
      for (Node k : kids)
        s = std::min<uint64_t>(limit + 1, s + size.lookup(k.first));
      size[n.first] = s;
    }
    return size.lookup(start.first);
  };
  uint64_t total = 0;
  mlir::Operation *bad = nullptr;
  root->walk([&](mlir::Operation *op) {
    total += sizeOf({op->getRawDictionaryAttrs().getAsOpaquePointer(), false});
    if (mlir::Attribute props = op->getPropertiesAsAttribute())
      total += sizeOf({props.getAsOpaquePointer(), false});
    if (total > limit) {
      bad = op;
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  return bad;
}

} // namespace sq

#endif // SQ_SUPPORT_ATTREXPANSION_H
