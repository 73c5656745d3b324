//===- FuzzMLIR.cpp - fuzz textual IR with the sq dialect -----------------===//
//
// mlir::parseSourceString in a context with the sq, func, arith and tensor
// dialects, then verify. Bad input must produce diagnostics, not crashes.
// What parses and verifies is printed and must parse and verify again (the
// custom syntax of the sq ops round-trips).
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"

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
  // A fresh context per input: nothing uniqued by one input leaks into the
  // next (and memory stays flat).
  mlir::MLIRContext context(registry(), mlir::MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  unsigned errors = 0;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &d) {
    errors += d.getSeverity() == mlir::DiagnosticSeverity::Error;
    return mlir::success();
  });
  // MLIR's lexer reads up to a terminating NUL: pass a std::string's buffer,
  // not libFuzzer's unterminated bytes.
  std::string owned(reinterpret_cast<const char *>(data), size);
  llvm::StringRef text(owned.c_str(), size);
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
