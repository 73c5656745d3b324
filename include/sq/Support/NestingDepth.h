//===- NestingDepth.h - bound the nesting of textual IR ---------*- C++ -*-===//
//
// MLIR's text parser recurses once per level of nesting (regions, attribute
// and type brackets): a file of 10,000 nested `[` or `({` overflows the
// stack and crashes sq-opt, sq-run and sq-compile. It also recurses once per
// operator of an affine expression: `affine_map<(d0) -> (d0 + d0 + ...)>`
// with 100,000 terms crashes the same way. Real IR nests a few dozen levels
// and writes a handful of terms. The tools scan the text first, in linear
// time, and refuse nesting deeper than kMaxNestingDepth or an expression of
// more than kMaxExpressionOperators operators, with a one-line error at the
// place.
//
// The scan counts (, [, { and < (not the > of ->) outside string literals
// and // comments, and the + and * of each bracket level between two commas
// (not the + of an exponent, 1.0e+00). An alias counts with the depth its
// definition reaches, so a chain of aliases (`#a1 = [#a0]`, `#a2 = [#a1]`,
// ...), which nests without nested brackets, is bounded too, and so is
// the total size that alias references expand to. The scan
// over-approximates what MLIR nests, which is what a bound needs. Bytecode
// (which starts with "ML\xEFR") is not scanned.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_NESTINGDEPTH_H
#define SQ_SUPPORT_NESTINGDEPTH_H

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace sq {

constexpr unsigned kMaxNestingDepth = 512;
constexpr unsigned kMaxExpressionOperators = 4096;
/// What all alias references expand to, summed: `#a1 = [#a0, #a0]`,
/// `#a2 = [#a1, #a1]`, ... doubles per line, and MLIR's printer walks the
/// expansion (60 such lines did not finish printing).
constexpr uint64_t kMaxAliasExpansion = uint64_t(1) << 24;

/// "NAME:LINE:COL: error: ..." (MLIR's diagnostic layout; without
/// "error: " when `mlirLayout` is false, for a tool's own "error:" prefix)
/// at the first bracket nested deeper than `maxDepth` in textual IR, or ""
/// when there is none (or `text` is bytecode). Aliases count with the depth
/// of their definition: `#a1 = [#a0]`, `#a2 = [#a1]`, ... nests as deep as
/// the brackets written out would.
inline std::string checkNestingDepth(llvm::StringRef text, llvm::StringRef name,
                                     bool mlirLayout = true,
                                     unsigned maxDepth = kMaxNestingDepth) {
  if (text.starts_with("ML\xEFR"))
    return "";
  unsigned depth = 0, line = 1;
  size_t lineStart = 0;
  // Operators of the expression open at each depth, since its last comma.
  std::vector<unsigned> operators(maxDepth + 2, 0);
  // Alias definitions (`#name = ...`, `!name = ...` at the start of a line)
  // and the depth each one's value reaches.
  struct Alias {
    unsigned depth;
    uint64_t size; // attributes/types it expands to
  };
  llvm::StringMap<Alias> aliases;
  std::string defining; // the alias being defined, until its line ends
  unsigned definingDepth = 0;
  uint64_t definingSize = 0, expansion = 0;
  auto at = [&](size_t i, const llvm::Twine &what) {
    return (name + ":" + llvm::Twine(line) + ":" +
            llvm::Twine(i - lineStart + 1) + ": " +
            (mlirLayout ? "error: " : "") + what)
        .str();
  };
  auto isIdChar = [](char c) {
    return llvm::isAlnum(c) || c == '_' || c == '$' || c == '.' || c == '-';
  };
  auto tooDeep = [&](size_t i) {
    return at(i, "nested more than " + llvm::Twine(maxDepth) +
                     " levels deep (brackets, regions, types, aliases); "
                     "MLIR's parser would overflow its stack");
  };
  for (size_t i = 0, n = text.size(); i < n; ++i) {
    char c = text[i];
    switch (c) {
    case '\n':
      ++line;
      lineStart = i + 1;
      if (!defining.empty() && depth == 0) {
        aliases[defining] = {definingDepth, definingSize};
        defining.clear();
      }
      break;
    case '"': // a string literal, with backslash escapes, on one line
      for (++i; i < n && text[i] != '"' && text[i] != '\n'; ++i)
        if (text[i] == '\\')
          ++i;
      if (i < n && text[i] == '\n')
        --i; // let the newline be counted
      break;
    case '/':
      if (i + 1 < n && text[i + 1] == '/')
        while (i + 1 < n && text[i + 1] != '\n')
          ++i;
      break;
    case '#':
    case '!': {
      size_t e = i + 1;
      while (e < n && isIdChar(text[e]))
        ++e;
      if (e == i + 1)
        break;
      llvm::StringRef id = text.slice(i, e);
      bool atLineStart = depth == 0 && text.slice(lineStart, i).trim().empty();
      size_t f = e;
      while (f < n && (text[f] == ' ' || text[f] == '\t'))
        ++f;
      if (atLineStart && f < n && text[f] == '=' &&
          (f + 1 >= n || text[f + 1] != '=')) {
        defining = id.str();
        definingDepth = 0;
        definingSize = 1;
      } else {
        auto it = aliases.find(id);
        if (it != aliases.end()) {
          unsigned d = depth + it->second.depth;
          if (d > maxDepth)
            return tooDeep(i);
          expansion += it->second.size;
          if (expansion > kMaxAliasExpansion)
            return at(i, "aliases that expand to more than " +
                             llvm::Twine(kMaxAliasExpansion) +
                             " attributes and types; printing or walking "
                             "them would not finish");
          if (!defining.empty()) {
            definingDepth = std::max(definingDepth, d);
            definingSize += it->second.size;
          }
        }
      }
      i = e - 1;
      break;
    }
    case '(':
    case '[':
    case '{':
    case '<':
      if (++depth > maxDepth)
        return tooDeep(i);
      if (!defining.empty())
        definingDepth = std::max(definingDepth, depth);
      operators[depth] = 0;
      break;
    case '+':
    case '*':
      // Not the sign of an exponent (1.0e+00, 2E+5).
      if (c == '+' && i >= 2 && (text[i - 1] == 'e' || text[i - 1] == 'E') &&
          (llvm::isDigit(text[i - 2]) || text[i - 2] == '.'))
        break;
      if (++operators[depth] > kMaxExpressionOperators)
        return at(i, "more than " + llvm::Twine(kMaxExpressionOperators) +
                         " operators in one expression; MLIR's parser "
                         "would overflow its stack");
      break;
    case ',':
      operators[depth] = 0;
      break;
    case ')':
    case ']':
    case '}':
    case '>':
      if (c == '>' && i > 0 && text[i - 1] == '-')
        break; // the arrow of a function type
      if (depth)
        --depth;
      break;
    default:
      break;
    }
  }
  return "";
}

} // namespace sq

#endif // SQ_SUPPORT_NESTINGDEPTH_H
