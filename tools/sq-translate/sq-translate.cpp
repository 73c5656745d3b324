//===- sq-translate.cpp - import models into the sq dialect ---------------===//
//
//   sq-translate --import-onnx model.onnx -o model.mlir [--emit-bytecode]
//   sq-translate --import-hf DIR -o model.mlirbc --emit-bytecode
//
// The output is written to a temporary file and renamed at the end, so a
// failed import leaves no output behind.
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/HF.h"
#include "sq/Import/ONNX.h"
#include "sq/Support/ToolSupport.h"

#include "mlir/Bytecode/BytecodeWriter.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

static cl::OptionCategory category("sq-translate options");
static cl::opt<bool> importOnnx(
    "import-onnx",
    cl::desc("Import an ONNX LLaMA model (with its external data) into the sq "
             "dialect"),
    cl::cat(category));
static cl::opt<bool> importHF(
    "import-hf",
    cl::desc("Import a Hugging Face checkpoint folder (config.json, "
             "model.safetensors or shards with model.safetensors.index.json) "
             "into the sq dialect"),
    cl::cat(category));
static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<model.onnx | DIR>"),
                                      cl::Required, cl::cat(category));
static cl::opt<std::string> outputFile("o",
                                       cl::desc("Output file ('-' for "
                                                "stdout)"),
                                       cl::value_desc("file"), cl::init("-"),
                                       cl::cat(category));
static cl::opt<bool>
    emitBytecode("emit-bytecode",
                 cl::desc("Write MLIR bytecode instead of text (the default "
                          "for an output named *.mlirbc)"),
                 cl::cat(category));
static cl::opt<unsigned> elideLarger(
    "elide-weights-larger-than",
    cl::desc("In text output, replace weight blobs larger than N bytes by a "
             "placeholder (the output can then not be re-read)"),
    cl::init(0), cl::cat(category));

static int error(const Twine &message) {
  return sq::fail("sq-translate", message);
}

/// The module as text or bytecode.
static bool writeModule(mlir::ModuleOp module, raw_ostream &os,
                        std::string &message) {
  if (emitBytecode) {
    if (failed(mlir::writeBytecodeToFile(module, os))) {
      message = "could not write bytecode";
      return false;
    }
    return true;
  }
  mlir::OpPrintingFlags flags;
  if (elideLarger)
    flags.elideLargeResourceString(elideLarger);
  module.print(os, flags);
  return true;
}

int main(int argc, char **argv) {
  sq::InitTool tool(
      argc, argv, category,
      "sq-translate: import models into the sq dialect\n\n"
      "  sq-translate --import-onnx model.onnx -o model.mlir\n"
      "  sq-translate --import-onnx model.onnx --emit-bytecode -o "
      "model.mlirbc\n"
      "  sq-translate --import-hf llama-folder --emit-bytecode -o "
      "model.mlirbc\n\n"
      "The importer recognizes LLaMA-family graphs as exporters write them\n"
      "(RMSNorm, rotate-half RoPE, grouped-query attention with a causal\n"
      "mask and optional KV cache, SwiGLU) and writes one sq.attention, two\n"
      "sq.rms_norm and seven sq.linear per layer, weights as named\n"
      "resources, and the model configuration as the module attribute\n"
      "sq.config.\n\n"
      "--import-hf reads a Hugging Face folder (LlamaForCausalLM incl.\n"
      "LLaMA-3.x rope_scaling, Qwen2ForCausalLM, MistralForCausalLM; F32,\n"
      "F16 and BF16 safetensors, memory-mapped, shards through the index)\n"
      "into the same IR, with the same weight names and sq.config.\n");
  if (int(importOnnx) + int(importHF) != 1)
    return error(importOnnx ? "choose one of --import-onnx and --import-hf"
                            : "nothing to do: pass --import-onnx model.onnx "
                              "or --import-hf DIR");
  // A `.mlirbc` output is bytecode without --emit-bytecode (text there
  // would hold every weight as hex: twice the bytes, parsed into a copy).
  if (StringRef(outputFile).ends_with(".mlirbc"))
    emitBytecode = true;
  if (emitBytecode && outputFile == "-" &&
      sys::Process::StandardOutIsDisplayed())
    return error("refusing to write bytecode to a terminal; use -o FILE");

  mlir::MLIRContext context;
  // The importer's warnings (an already quantized file) go to stderr.
  mlir::ScopedDiagnosticHandler warnings(&context, [](mlir::Diagnostic &d) {
    if (d.getSeverity() != mlir::DiagnosticSeverity::Warning &&
        d.getSeverity() != mlir::DiagnosticSeverity::Remark)
      return mlir::failure();
    errs() << "sq-translate: warning: " << d.str() << "\n";
    return mlir::success();
  });
  std::string message;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      importHF ? sq::importHFModel(inputFile, &context, message)
               : sq::importOnnxModel(inputFile, &context, message);
  if (!module)
    return error(message);

  if (outputFile == "-")
    return writeModule(*module, outs(), message) ? 0 : error(message);
  // Written to a temporary, then renamed: no partial output files.
  switch (sq::writeFileAtomically(
      outputFile,
      [&](raw_ostream &os, std::string &e) {
        return writeModule(*module, os, e);
      },
      message)) {
  case sq::WriteStatus::Written:
    return 0;
  case sq::WriteStatus::IOError:
    return error("cannot write '" + outputFile + "': " + message);
  case sq::WriteStatus::WriterFailed:
    return error(message);
  }
  return 1;
}
