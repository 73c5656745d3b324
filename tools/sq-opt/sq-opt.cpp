//===- sq-opt.cpp - the sq optimizer driver -------------------------------===//
//
// mlir-opt with the sq dialect and passes: every upstream dialect, pass and
// LLVM IR translation is registered too, so one tool runs a whole pipeline.
//
// The input is read here rather than by MlirOptMain so that its resource
// blobs are checked first (sq/Support/ResourceBlobs.h: MLIR's parser aborts
// on some); otherwise this is MlirOptMain(argc, argv, input, output, ...).
//
//===----------------------------------------------------------------------===//

#include "sq/Compile/Compile.h"
#include "sq/Conversion/Passes.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Support/AttrExpansion.h"
#include "sq/Support/Distributed.h"
#include "sq/Support/FileSizeSignal.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"
#include "sq/Support/ToolSupport.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>

namespace {
/// Runs before the user's passes: refuses attributes that printing would
/// expand without end (sq/Support/AttrExpansion.h; a bytecode input is not
/// prescanned).
struct CheckAttributeExpansion
    : mlir::PassWrapper<CheckAttributeExpansion, mlir::OperationPass<>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CheckAttributeExpansion)
  llvm::StringRef getArgument() const override {
    return "sq-check-attribute-expansion";
  }
  void runOnOperation() override {
    if (mlir::Operation *op =
            sq::findAttributeBlowup(getOperation(), sq::kMaxPrintedExpansion)) {
      op->emitError() << "attributes that expand to more than "
                      << sq::kMaxPrintedExpansion
                      << " attributes and types; printing them would not "
                         "finish";
      signalPassFailure();
    }
  }
};
} // namespace

int main(int argc, char **argv) {
  sq::preferFastBlasKernels(argv); // may run sq-opt again, before anything
  sq::blockFileSizeSignal();       // write errors, not SIGXFSZ (ulimit -f)
  mlir::registerAllPasses();
  sq::registerSQPasses();
  sq::registerSQPassAliases();
  sq::registerSpinQuantPipeline();
  sq::registerSQConversionPasses();

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<sq::SQDialect>();

  auto [input, output] = mlir::registerAndParseCLIOptions(
      argc, argv,
      "sq optimizer driver: SpinQuant rotation and quantization passes over "
      "the sq dialect\n",
      registry);
  // An error on the module would otherwise print the whole model (every
  // weight name and op of a 7B model) as a note. Opt back in with
  // --mlir-print-op-on-diagnostic.
  auto &options = llvm::cl::getRegisteredOptions();
  auto it = options.find("mlir-print-op-on-diagnostic");
  if (it != options.end() && !it->second->getNumOccurrences())
    if (auto *flag = static_cast<llvm::cl::opt<bool> *>(it->second))
      *flag = false;

  // What MlirOptMain(argc, argv, input, output, registry) does, with the
  // resource-blob check between reading the input and parsing it.
  llvm::InitLLVM init(argc, argv);
  mlir::MlirOptMainConfig config =
      mlir::MlirOptMainConfig::createFromCLOptions();
  // A `.mlirbc` output is bytecode without --emit-bytecode: text in a file
  // of that name would hold every weight as hex (twice the bytes, parsed
  // slowly into a copy), where bytecode is read in place (memory-mapped).
  if (llvm::StringRef(output).ends_with(".mlirbc"))
    config.emitBytecode(true);
  mlir::MlirOptMainConfig userConfig = config;
  config.setPassPipelineSetupFn([userConfig](mlir::PassManager &pm) {
    pm.addPass(std::make_unique<CheckAttributeExpansion>());
    return userConfig.setupPassPipeline(pm);
  });
  if (config.shouldShowDialects() || config.shouldListPasses())
    return mlir::asMainReturnCode(mlir::MlirOptMain(
        llvm::outs(), llvm::MemoryBuffer::getMemBuffer(""), registry, config));
  if (input == "-" &&
      llvm::sys::Process::FileDescriptorIsDisplayed(fileno(stdin)))
    llvm::errs() << "(processing input from stdin now, hit ctrl-c/ctrl-d to "
                    "interrupt)\n";
  std::string message;
  std::unique_ptr<llvm::MemoryBuffer> file =
      mlir::openInputFile(input, &message);
  if (!file) {
    llvm::errs() << message << "\n";
    return 1;
  }
  std::string bad =
      sq::checkResourceBlobs(file->getBuffer(), file->getBufferIdentifier(),
                             config.inputSplitMarker());
  if (bad.empty())
    bad = sq::checkNestingDepth(file->getBuffer(), file->getBufferIdentifier());
  if (!bad.empty()) {
    llvm::errs() << bad << "\n";
    return 1;
  }
  // Under mpirun (a data-parallel --sq-spinquant-rotate, see
  // sq/Support/Distributed.h) every process computes the same module: rank 0
  // writes it, the others neither open nor print anything.
  if (sq::distributed::rank() != 0)
    return sq::distributed::exitCode(
        mlir::succeeded(
            mlir::MlirOptMain(llvm::nulls(), std::move(file), registry, config))
            ? 0
            : 1);
  std::unique_ptr<llvm::ToolOutputFile> out =
      mlir::openOutputFile(output, &message);
  if (!out) {
    llvm::errs() << message << "\n";
    return sq::distributed::exitCode(1);
  }
  bool ok = mlir::succeeded(
      mlir::MlirOptMain(out->os(), std::move(file), registry, config));
  // A write error (disk full, a file size limit) names the file here rather
  // than in the stream destructor's "LLVM ERROR: IO failure" abort.
  out->os().flush();
  if (out->os().has_error()) {
    llvm::errs() << output << ": cannot write: " << out->os().error().message()
                 << "\n";
    out->os().clear_error();
    // (the ToolOutputFile removes the partial output)
    return sq::distributed::exitCode(1);
  }
  if (!ok)
    return sq::distributed::exitCode(1);
  out->keep(); // only a successful run leaves its output
  return 0;
}
