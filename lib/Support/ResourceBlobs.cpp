//===- ResourceBlobs.cpp - check textual IR's resource blobs --------------===//
//
// A linear scan that follows MLIR's lexer (mlir/lib/AsmParser/Lexer.cpp) as
// far as it matters for finding the `{-#` file metadata: `//` comments,
// string literals (with their escapes), and the raw, bracket-balanced bodies
// of dialect symbols (`#dialect<...>`, `!dialect.type<...>`, scanned without
// comments, as Parser::parseDialectSymbolBody does). Inside the metadata it
// follows the grammar TopLevelOperationParser accepts:
//
//   {-# (dialect_resources|external_resources) : { group : { key : value,
//       ... }, ... }, ... #-}
//
// Wherever MLIR's lexer or parser would stop with an error, the scan stops
// too and reports nothing (MLIR then reports its own error); every blob MLIR
// would parse before such a point is checked.
//
//===----------------------------------------------------------------------===//

#include "sq/Support/ResourceBlobs.h"

#include "mlir/Bytecode/BytecodeReader.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/ToolUtilities.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cctype>

using namespace llvm;

namespace sq {
namespace {

bool isPunct(char c) { return c == '$' || c == '.' || c == '_' || c == '-'; }
bool isAlpha(char c) { return std::isalpha(static_cast<unsigned char>(c)); }
bool isDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)); }

class Scanner {
public:
  explicit Scanner(StringRef text) : text(text) {}

  /// The first bad blob, if any.
  std::optional<ResourceBlobProblem> run() {
    const size_t n = text.size();
    while (pos < n && !problem) {
      char c = text[pos];
      switch (c) {
      case '/':
        if (!startsWith("//"))
          return std::nullopt; // MLIR: "unexpected character"
        skipComment();
        break;
      case '"':
        if (!skipString())
          return std::nullopt;
        break;
      case '{':
        if (startsWith("{-#")) {
          pos += 3;
          if (!scanMetadata())
            return problem;
        } else {
          ++pos;
        }
        break;
      case '#':
        if (startsWith("#-}")) {
          pos += 3;
          break;
        }
        [[fallthrough]];
      case '!':
        ++pos;
        if (!skipSuffixId())
          return std::nullopt; // MLIR: "invalid attribute name" etc.
        // `#name<` with the `<` right after the name: a dialect symbol body.
        if (pos < n && text[pos] == '<' && !skipSymbolBody())
          return std::nullopt;
        break;
      default:
        ++pos;
      }
    }
    return problem;
  }

private:
  StringRef text;
  size_t pos = 0;
  std::optional<ResourceBlobProblem> problem;

  bool startsWith(StringRef s) const { return text.substr(pos).starts_with(s); }

  void skipComment() {
    pos += 2;
    while (pos < text.size()) {
      char c = text[pos++];
      if (c == '\n' || c == '\r')
        return;
    }
  }

  /// At a '"': past the closing quote, or false where MLIR's lexString
  /// fails (newline, unknown escape, end of file).
  bool skipString() {
    const size_t n = text.size();
    ++pos;
    while (pos < n) {
      char c = text[pos++];
      if (c == '"')
        return true;
      if (c == '\n' || c == '\v' || c == '\f')
        return false;
      if (c == '\\') {
        if (pos < n && (text[pos] == '"' || text[pos] == '\\' ||
                        text[pos] == 'n' || text[pos] == 't'))
          ++pos;
        else if (pos + 1 < n && isHexDigit(text[pos]) &&
                 isHexDigit(text[pos + 1]))
          pos += 2;
        else
          return false;
      }
    }
    return false;
  }

  /// After '#' or '!': the suffix-id of lexPrefixedIdentifier.
  bool skipSuffixId() {
    const size_t n = text.size();
    if (pos < n && isDigit(text[pos])) {
      while (pos < n && isDigit(text[pos]))
        ++pos;
      return true;
    }
    if (pos < n && (isAlpha(text[pos]) || isPunct(text[pos]))) {
      while (pos < n &&
             (isAlpha(text[pos]) || isDigit(text[pos]) || isPunct(text[pos])))
        ++pos;
      return true;
    }
    return false;
  }

  /// At the '<' of a dialect symbol: past its matching '>', or false where
  /// parseDialectSymbolBody fails. The nesting is a stack, not recursion.
  bool skipSymbolBody() {
    std::string nested;
    const size_t n = text.size();
    do {
      if (pos >= n)
        return false;
      char c = text[pos++];
      switch (c) {
      case '\0':
        return false;
      case '<':
      case '[':
      case '(':
      case '{':
        nested.push_back(c);
        break;
      case '-':
        if (pos < n && text[pos] == '>')
          ++pos;
        break;
      case '>':
      case ']':
      case ')':
      case '}': {
        char open = c == '>' ? '<' : c == ']' ? '[' : c == ')' ? '(' : '{';
        if (nested.back() != open)
          return false;
        nested.pop_back();
        break;
      }
      case '"':
        --pos;
        if (!skipString())
          return false;
        break;
      default:
        break;
      }
    } while (!nested.empty());
    return true;
  }

  // Tokens of the metadata section.
  enum Kind { LBrace, RBrace, Colon, Comma, End, String, Ident, Other };
  struct Token {
    Kind kind;
    size_t begin, end; ///< the spelling, quotes included
  };

  Token next() {
    const size_t n = text.size();
    while (pos < n) {
      char c = text[pos];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\0') {
        ++pos;
      } else if (startsWith("//")) {
        skipComment();
      } else {
        break;
      }
    }
    size_t begin = pos;
    if (pos >= n)
      return {Other, begin, begin};
    char c = text[pos];
    auto single = [&](Kind k) {
      ++pos;
      return Token{k, begin, pos};
    };
    switch (c) {
    case '{':
      return startsWith("{-#") ? Token{Other, begin, begin} : single(LBrace);
    case '}':
      return single(RBrace);
    case ':':
      return single(Colon);
    case ',':
      return single(Comma);
    case '#':
      if (startsWith("#-}")) {
        pos += 3;
        return {End, begin, pos};
      }
      return {Other, begin, begin};
    case '"':
      if (!skipString())
        return {Other, begin, begin};
      return {String, begin, pos};
    default:
      if (isAlpha(c) || c == '_') {
        while (pos < n &&
               (isAlpha(text[pos]) || isDigit(text[pos]) || text[pos] == '_' ||
                text[pos] == '$' || text[pos] == '.'))
          ++pos;
        return {Ident, begin, pos};
      }
      return {Other, begin, begin};
    }
  }

  StringRef spelling(const Token &t) const {
    return text.slice(t.begin, t.end);
  }

  /// After a list element: true (with `t` the next element's first token)
  /// when a comma follows, false (with `t` the token that ends the list)
  /// otherwise.
  bool moreAfterComma(Token &t) {
    t = next();
    if (t.kind != Comma)
      return false;
    t = next();
    return true;
  }

  /// After `{-#`: checks every blob up to `#-}`. False when the scan must
  /// stop (a problem was found, or MLIR would fail here).
  bool scanMetadata() {
    Token t = next();
    if (t.kind == End)
      return true;
    for (;;) {
      StringRef key = spelling(t);
      if (t.kind != Ident ||
          (key != "dialect_resources" && key != "external_resources"))
        return false;
      if (next().kind != Colon || next().kind != LBrace)
        return false;
      t = next();
      if (t.kind != RBrace)
        for (;;) { // group: NAME : { entries }
          if (t.kind != Ident || next().kind != Colon || next().kind != LBrace)
            return false;
          t = next();
          if (t.kind != RBrace)
            for (;;) { // entry: KEY : VALUE
              if (t.kind != Ident && t.kind != String)
                return false;
              StringRef name = spelling(t);
              if (t.kind == String)
                name = name.drop_front().drop_back();
              if (next().kind != Colon)
                return false;
              Token value = next();
              if (value.kind == String) {
                checkBlob(name, value);
                if (problem)
                  return false;
              } else if (value.kind != Ident) {
                return false;
              }
              if (moreAfterComma(t))
                continue;
              if (t.kind != RBrace)
                return false;
              break;
            }
          if (moreAfterComma(t))
            continue;
          if (t.kind != RBrace)
            return false;
          break;
        }
      if (moreAfterComma(t))
        continue;
      return t.kind == End;
    }
  }

  /// A hex blob "0x<alignment, 4 bytes LE><data>" as Token::getHexStringValue
  /// and ParsedResourceEntry::parseAsBlob read it.
  void checkBlob(StringRef name, const Token &value) {
    StringRef hex = spelling(value).drop_front().drop_back();
    if (!hex.consume_front("0x") || hex.size() % 2 || hex.size() <= 8)
      return; // not a blob (MLIR's error), or no data: nothing is allocated
    for (char c : hex)
      if (!isHexDigit(c))
        return;
    uint32_t align = 0;
    for (int i = 0; i < 4; ++i)
      align |= uint32_t(hexFromNibbles(hex[2 * i], hex[2 * i + 1])) << (8 * i);
    if (align != 0 && (!isPowerOf2_32(align) || align <= kMaxResourceAlignment))
      return; // fine, or a non-power of two (a clean MLIR error)
    ResourceBlobProblem p;
    StringRef before = text.substr(0, value.begin);
    p.line = 1 + before.count('\n');
    size_t lineStart = before.rfind('\n');
    p.column =
        value.begin - (lineStart == StringRef::npos ? 0 : lineStart + 1) + 1;
    if (align == 0)
      p.message = ("resource blob '" + name +
                   "' has alignment 0 (its first 4 bytes); expected a power "
                   "of two up to " +
                   Twine(kMaxResourceAlignment))
                      .str();
    else
      p.message =
          ("resource blob '" + name + "' has alignment " + Twine(align) +
           "; SQ accepts powers of two up to " + Twine(kMaxResourceAlignment))
              .str();
    problem = std::move(p);
  }
};

} // namespace

std::optional<ResourceBlobProblem> findBadResourceBlob(StringRef text) {
  return Scanner(text).run();
}

static std::string format(StringRef name, const ResourceBlobProblem &p) {
  return (name + ":" + Twine(p.line) + ":" + Twine(p.column) +
          ": error: " + p.message)
      .str();
}

std::string checkResourceBlobs(StringRef text, StringRef name,
                               StringRef splitMarker) {
  if (splitMarker.empty()) {
    if (auto p = findBadResourceBlob(text))
      return format(name, *p);
    return "";
  }
  // The chunks exactly as MlirOptMain splits them.
  std::string error;
  (void)mlir::splitAndProcessBuffer(
      MemoryBuffer::getMemBuffer(text, name, /*RequiresNullTerminator=*/false),
      [&](std::unique_ptr<MemoryBuffer> chunk, raw_ostream &) {
        if (error.empty())
          if (auto p = findBadResourceBlob(chunk->getBuffer()))
            error = format(chunk->getBufferIdentifier(), *p);
        return mlir::success();
      },
      nulls(), splitMarker, "");
  return error;
}

mlir::OwningOpRef<mlir::ModuleOp> parseModuleFile(StringRef path,
                                                  mlir::MLIRContext *context) {
  std::string message;
  std::unique_ptr<MemoryBuffer> buffer = mlir::openInputFile(path, &message);
  if (!buffer) {
    mlir::emitError(mlir::UnknownLoc::get(context), message);
    return nullptr;
  }
  if (!mlir::isBytecode(*buffer))
    if (auto p = findBadResourceBlob(buffer->getBuffer())) {
      mlir::emitError(
          mlir::FileLineColLoc::get(context, path, p->line, p->column),
          p->message);
      return nullptr;
    }
  auto sourceMgr = std::make_shared<SourceMgr>();
  sourceMgr->AddNewSourceBuffer(std::move(buffer), SMLoc());
  return mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr,
                                               mlir::ParserConfig(context));
}

} // namespace sq
