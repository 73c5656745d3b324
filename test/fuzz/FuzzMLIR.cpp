//===- FuzzMLIR.cpp - fuzz textual IR with the sq dialect -----------------===//
//
// mlir::parseSourceString in a context with the sq, func, arith and tensor
// dialects, then verify. Bad input must produce diagnostics, not crashes.
// What parses and verifies is printed and must parse and verify again (the
// custom syntax of the sq ops round-trips).
//
// The input first goes through the tools' prescans, as in sq-opt, sq-run and
// sq-compile: sq::findBadResourceBlob (resource blobs that would abort
// MLIR's own parser: alignment 0, huge alignments; refused with a message
// and a position) and sq::checkNestingDepth.
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <cstdlib>

static mlir::DialectRegistry &registry() {
  static mlir::DialectRegistry r = [] {
    mlir::DialectRegistry r;
    r.insert<sq::SQDialect, mlir::func::FuncDialect, mlir::arith::ArithDialect,
             mlir::tensor::TensorDialect>();
    return r;
  }();
  return r;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // MLIR's lexer reads up to a terminating NUL: pass a std::string's buffer,
  // not libFuzzer's unterminated bytes.
  std::string owned(reinterpret_cast<const char *>(data), size);
  llvm::StringRef text(owned.c_str(), size);
  if (std::optional<sq::ResourceBlobProblem> bad =
          sq::findBadResourceBlob(text)) {
    if (bad->message.empty() || !bad->line || !bad->column)
      std::abort(); // a refusal must say why and where
    return 0;
  }
  // The tools' nesting bound too (sq/Support/NestingDepth.h): MLIR's parser
  // recurses per level, so deeper input is refused before it, as in sq-opt.
  if (!sq::checkNestingDepth(text, "fuzz").empty())
    return 0;

  // A fresh context per input: nothing uniqued by one input leaks into the
  // next, and memory stays flat (one context shared by all inputs was
  // slower, not faster: 1.7x the time on the seed corpus). The dialects are
  // not loaded up front: the parser loads the ones an input names, as in
  // sq-opt (2.5x faster than loading all four for every input).
  mlir::MLIRContext context(registry(), mlir::MLIRContext::Threading::DISABLED);
  unsigned errors = 0;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &d) {
    errors += d.getSeverity() == mlir::DiagnosticSeverity::Error;
    return mlir::success();
  });
  mlir::ParserConfig config(&context, /*verifyAfterParse=*/false);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, config, "fuzz");
  if (!module) {
    if (!errors)
      std::abort(); // a failure must say why
    return 0;
  }
  if (mlir::failed(mlir::verify(*module)))
    return 0;

  std::string printed;
  llvm::raw_string_ostream os(printed);
  module->print(os);
  errors = 0;
  mlir::OwningOpRef<mlir::ModuleOp> again =
      mlir::parseSourceString<mlir::ModuleOp>(printed, config, "printed");
  if (!again || mlir::failed(mlir::verify(*again))) {
    std::fprintf(stderr, "sq-fuzz-mlir: verified IR does not print back:\n%s\n",
                 printed.c_str());
    std::abort();
  }
  return 0;
}
