//===- Compile.cpp - model.onnx to model.so, in process -------------------===//
//
// compileModel: import, the recipe (Pipeline.cpp), --sq-lower-cpu or
// --sq-lower-nvptx, the upstream lowering to the LLVM dialect, LLVM IR, an
// object for the target CPU (LLVM TargetMachine), and a link with the
// runtime into a shared library. Everything is written to temporaries
// renamed at the end: a failed compile leaves nothing.
//
//===----------------------------------------------------------------------===//

#include "sq/Compile/Compile.h"
#include "sq/Conversion/Passes.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/HF.h"
#include "sq/Import/ONNX.h"
#include "sq/Support/Distributed.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"
#include "sq/Support/ToolSupport.h"
#include "sq/Transforms/Passes.h"

#include "mlir/Bytecode/BytecodeWriter.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <chrono>
#include <unistd.h>

using namespace llvm;

namespace sq {

bool parseEmit(StringRef text, Emit &emit, std::string &error) {
  auto e = StringSwitch<std::optional<Emit>>(text)
               .Case("so", Emit::SharedLibrary)
               .Case("obj", Emit::Object)
               .Case("llvm", Emit::LLVMIR)
               .Case("mlir", Emit::LoweredMLIR)
               .Case("sq", Emit::SQ)
               .Case("ptx", Emit::PTX)
               .Default(std::nullopt);
  if (!e) {
    error = "expected so, obj, llvm, mlir, sq or ptx";
    return false;
  }
  emit = *e;
  return true;
}

bool parseCompileFlags(StringRef emit, StringRef quantize, StringRef rotate,
                       CompileOptions &o, std::string &error) {
  std::string why;
  if (!parseEmit(emit, o.emit, why))
    error = ("--emit=" + emit + ": " + why).str();
  else if (!readQuantSpecArgument(quantize, o.recipe.quant, why))
    error = ("--quantize=" + quantize + ": " + why).str();
  else if (!parseRotateChoice(rotate, o.recipe.rotate, why))
    error = ("--rotate=" + rotate + ": " + why).str();
  else
    return true;
  return false;
}

namespace {
/// Temporaries next to the output, removed unless renamed.
struct Temporaries {
  std::string output;
  std::vector<std::string> files;
  std::string make(StringRef suffix) {
    std::string f = (output + ".sqtmp" + Twine(::getpid()) + suffix).str();
    files.push_back(f);
    return f;
  }
  ~Temporaries() {
    for (const std::string &f : files)
      sys::fs::remove(f);
  }
};

/// Prints a stage and its time with -v.
struct Stage {
  const char *name;
  bool verbose;
  std::chrono::steady_clock::time_point start =
      std::chrono::steady_clock::now();
  Stage(const char *name, bool verbose) : name(name), verbose(verbose) {
    if (verbose)
      errs() << "sq-compile: " << name << "...\n";
  }
  ~Stage() {
    if (verbose)
      errs() << "sq-compile: " << name << " done in "
             << format("%.2f", std::chrono::duration<double>(
                                   std::chrono::steady_clock::now() - start)
                                   .count())
             << " s\n";
  }
};

/// Collects the first error as a one-line message; remarks and warnings
/// go to stderr.
struct FirstError {
  std::string text;
  mlir::ScopedDiagnosticHandler handler;
  explicit FirstError(mlir::MLIRContext &ctx)
      : handler(&ctx, [this](mlir::Diagnostic &d) {
          if (d.getSeverity() == mlir::DiagnosticSeverity::Error &&
              text.empty()) {
            raw_string_ostream os(text);
            if (auto loc = dyn_cast<mlir::FileLineColLoc>(d.getLocation()))
              os << loc.getFilename().getValue() << ":" << loc.getLine() << ":"
                 << loc.getColumn() << ": ";
            os << d.str();
          } else if (d.getSeverity() == mlir::DiagnosticSeverity::Remark ||
                     d.getSeverity() == mlir::DiagnosticSeverity::Warning) {
            errs() << "sq-compile: " << d.str() << "\n";
          }
          return mlir::success();
        }) {}
  /// The first error, or `fallback` when none was reported.
  std::string orElse(const std::string &fallback) const {
    return text.empty() ? fallback : text;
  }
};

bool isQuantized(mlir::ModuleOp module) {
  bool q = false;
  module.walk([&](mlir::Operation *op) {
    if (isa<sq::QLinearOp, sq::FakeQuantOp>(op))
      q = true;
  });
  return q;
}

std::string findLinkerDriver() {
  if (const char *env = std::getenv("SQ_LINKER"))
    return env;
  for (const char *name : {"clang++-22", "clang++", "g++", "c++"})
    if (auto p = sys::findProgramByName(name))
      return *p;
  if (auto p = sys::findProgramByName("clang++", {"/usr/lib/llvm-22/bin"}))
    return *p;
  return "";
}

/// Writes `path` whole or not at all (sq::writeFileAtomically).
bool writeAtomically(const std::string &path,
                     function_ref<bool(raw_ostream &)> print,
                     std::string &error) {
  std::string why;
  WriteStatus status = writeFileAtomically(
      path,
      [&](raw_ostream &os, std::string &err) {
        if (print(os))
          return true;
        err = "cannot write bytecode";
        return false;
      },
      why);
  if (status == WriteStatus::Written)
    return true;
  error = status == WriteStatus::WriterFailed
              ? why
              : "cannot write '" + path + "': " + why;
  return false;
}

mlir::OwningOpRef<mlir::ModuleOp> importModel(const std::string &input,
                                              mlir::MLIRContext &ctx,
                                              const FirstError &diag,
                                              std::string &error) {
  StringRef path = input;
  if (!sys::fs::exists(path)) {
    error = input + ": no such file";
    return nullptr;
  }
  if (path.ends_with(".onnx"))
    return importOnnxModel(path, &ctx, error);
  // A directory is a Hugging Face checkpoint folder.
  if (isHFModelDir(path))
    return importHFModel(path, &ctx, error);
  if (!path.ends_with(".mlir") && !path.ends_with(".mlirbc")) {
    error = input + ": unknown model type (expected .onnx, a Hugging Face "
                    "folder, .mlir or .mlirbc)";
    return nullptr;
  }
  // A device or a pipe (/dev/zero) would be read without end.
  if (!checkRegularFile(path, error))
    return nullptr;
  if (auto text = MemoryBuffer::getFile(path)) {
    error = checkNestingDepth((*text)->getBuffer(), path, /*mlirLayout=*/false);
    if (!error.empty())
      return nullptr;
  }
  auto module = parseModuleFile(path, &ctx);
  if (!module)
    error = diag.orElse("cannot read '" + input + "'");
  return module;
}

/// Links `object` with the runtime into the shared library `soTmp`.
bool link(const CompileOptions &o, const std::string &object,
          const std::string &soTmp, Temporaries &temps, std::string &error) {
  SmallString<256> rtLib(o.runtimeDir), numLib(o.runtimeDir);
  sys::path::append(rtLib, o.gpu ? "libSQRuntimeCUDA.a" : "libSQRuntimeCPU.a");
  sys::path::append(numLib, "libSQNumerics.a");
  for (StringRef lib : {StringRef(rtLib), StringRef(numLib)})
    if (!sys::fs::exists(lib)) {
      error = ("the runtime '" + lib +
               "' is missing (set SQ_RUNTIME_DIR to the directory holding "
               "libSQRuntimeCPU.a, libSQRuntimeCUDA.a and libSQNumerics.a)")
                  .str();
      return false;
    }
  std::string driver = findLinkerDriver();
  if (driver.empty()) {
    error = "no C++ compiler driver to link with (clang++-22, clang++, g++ "
            "or c++; or set SQ_LINKER)";
    return false;
  }
  // Only the C API (sq_*) is exported; the library binds its own symbols.
  std::string versionScript = temps.make(".map");
  {
    std::error_code ec;
    raw_fd_ostream vs(versionScript, ec);
    if (ec) {
      error = "cannot write '" + versionScript + "': " + ec.message();
      return false;
    }
    vs << "{ global: sq_*; local: *; };\n";
  }
  std::string errFile = temps.make(".log");
  std::vector<std::string> args = {
      driver, "-shared", "-o", soTmp, object, std::string(rtLib),
      std::string(numLib),
      // -Xlinker: paths may hold commas
      "-Xlinker", "--version-script", "-Xlinker", versionScript,
      "-Wl,-Bsymbolic", "-Wl,-z,noexecstack", "-lpthread", "-ldl", "-lm"};
  std::vector<StringRef> argRefs(args.begin(), args.end());
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(errFile),
                                          StringRef(errFile)};
  std::string execErr;
  int rc = sys::ExecuteAndWait(driver, argRefs, std::nullopt, redirects, 0, 0,
                               &execErr);
  if (rc != 0) {
    auto log = MemoryBuffer::getFile(errFile);
    std::string first =
        log ? (*log)->getBuffer().split('\n').first.str() : execErr;
    error = "linking with " + driver + " failed: " + first;
    return false;
  }
  return true;
}
} // namespace

bool checkCompileOptions(const CompileOptions &o, std::string &error) {
  if (o.emit == Emit::PTX && !o.gpu) {
    error = "--emit=ptx needs --target=nvptx";
    return false;
  }
  if (o.gpu && o.sm != 80 && o.sm != 86 && o.sm != 89 && o.sm != 90) {
    error = "--sm=" + std::to_string(o.sm) + ": expected 80, 86, 89 or 90";
    return false;
  }
  // An unknown --mcpu would abort LLVM's code generator: check it first.
  if (!o.mcpu.empty()) {
    InitializeNativeTarget();
    Triple host(sys::getProcessTriple());
    std::string terr;
    const Target *t = TargetRegistry::lookupTarget(host, terr);
    std::unique_ptr<MCSubtargetInfo> sti(
        t ? t->createMCSubtargetInfo(host, "generic", "") : nullptr);
    if (!sti || !sti->isCPUStringValid(o.mcpu)) {
      error = "--mcpu=" + o.mcpu + ": not a CPU that LLVM knows for " +
              host.str() + " (e.g. x86-64, x86-64-v3, znver4)";
      return false;
    }
  }
  // An output that cannot be written fails now, not after the compile.
  SmallString<256> dir(o.output);
  sys::path::remove_filename(dir);
  if (dir.empty())
    dir = ".";
  if (!sys::fs::is_directory(dir)) {
    error = (o.output + ": cannot write: '" + dir + "' " +
             (sys::fs::exists(dir) ? "is not a directory" : "does not exist"))
                .str();
    return false;
  }
  if (sys::fs::is_directory(o.output)) {
    error = o.output + ": cannot write: it is a directory";
    return false;
  }
  // The library and its sidecar are renamed into place: a device or a pipe
  // (-o /dev/null) would be replaced, not written.
  for (const std::string &path : {o.output, o.output + ".weights"}) {
    sys::fs::file_status st;
    if (!sys::fs::status(path, st) && sys::fs::exists(st) &&
        !sys::fs::is_regular_file(st)) {
      error = path + ": cannot write: not a regular file";
      return false;
    }
  }
  return true;
}

bool compileModel(const CompileOptions &o, std::string &error) {
  if (!checkCompileOptions(o, error))
    return false;
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<sq::SQDialect>();
  // Upstream passes too: the NVPTX lowering's kernel pipeline is textual.
  mlir::registerAllPasses();
  registerSQPasses();
  registerSQPassAliases();
  registerSQConversionPasses();
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  FirstError diag(ctx);

  // 1. Import.
  mlir::OwningOpRef<mlir::ModuleOp> module;
  {
    Stage s("import", o.verbose);
    module = importModel(o.input, ctx, diag, error);
    if (!module)
      return false;
  }

  // 2. Rotate and quantize (unless the input already is).
  std::string summary;
  if (isQuantized(*module)) {
    if (o.recipeGiven)
      errs() << "sq-compile: " << o.input
             << " is already quantized; --quantize/--rotate are ignored\n";
    summary = "input already quantized";
  } else {
    mlir::PassManager pm(&ctx);
    // A Hugging Face folder brings its tokenizer (calibration text).
    RecipeOptions recipe = o.recipe;
    if (recipe.tokenizer.empty())
      recipe.tokenizer = defaultTokenizerSpec(o.input);
    if (!addSpinQuantRecipe(pm, recipe, error))
      return false;
    summary = recipe.summary();
    Stage s("rotate and quantize", o.verbose);
    if (o.verbose)
      errs() << "sq-compile: pipeline sq-spinquant{" << recipe.str() << "}\n";
    if (failed(pm.run(*module))) {
      error = diag.orElse("the rotate/quantize passes failed");
      return false;
    }
  }
  // Under mpirun (a data-parallel calibration, sq/Support/Distributed.h) the
  // processes took part in the rotate/quantize passes together and now hold
  // the same module: rank 0 lowers and writes it, the others are done.
  if (distributed::rank() != 0)
    return true;
  Temporaries temps{o.output, {}};
  if (o.emit == Emit::SQ)
    return writeAtomically(
        o.output,
        [&](raw_ostream &os) {
          if (!StringRef(o.output).ends_with(".mlirbc")) {
            module->print(os);
            return true;
          }
          return succeeded(mlir::writeBytecodeToFile(*module, os));
        },
        error);

  // 3. Lower to the LLVM dialect; the weights go to the sidecar.
  bool withWeights = o.emit == Emit::SharedLibrary || o.emit == Emit::Object;
  std::string weightsTmp = withWeights ? temps.make(".weights") : "";
  std::string cpu = o.mcpu.empty() ? sys::getHostCPUName().str() : o.mcpu;
  std::string ptx;
  if (o.gpu) {
    // gpu-module-to-binary needs the NVPTX backend.
    InitializeAllTargets();
    InitializeAllTargetMCs();
    InitializeAllAsmPrinters();
  }
  {
    Stage s(o.gpu ? "lower to NVPTX (kernels to PTX)" : "lower to CPU",
            o.verbose);
    std::string description =
        "sq-compile " + sys::path::filename(o.input).str() + ": " + summary +
        (o.gpu
             ? " target=nvptx sm=" + std::to_string(o.sm) + " host mcpu=" + cpu
             : " target=cpu mcpu=" + cpu);
    if (o.gpu ? failed(lowerToNVPTX(*module, weightsTmp, description, o.sm, "",
                                    &ptx))
              : failed(lowerToCPU(*module, weightsTmp, description))) {
      error = diag.orElse("the lowering failed");
      return false;
    }
    mlir::PassManager pm(&ctx);
    buildCPUToLLVMPipeline(pm);
    if (failed(pm.run(*module))) {
      error = diag.orElse("lowering to the LLVM dialect failed");
      return false;
    }
  }
  if (o.emit == Emit::LoweredMLIR || o.emit == Emit::PTX)
    return writeAtomically(
        o.output,
        [&](raw_ostream &os) {
          if (o.emit == Emit::PTX)
            os << ptx;
          else
            module->print(os);
          return true;
        },
        error);

  // 4. LLVM IR, optimized for the target CPU.
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  LLVMContext llvmCtx;
  Triple triple(sys::getProcessTriple());
  std::string terr;
  const Target *tgt = TargetRegistry::lookupTarget(triple, terr);
  if (!tgt) {
    error = "no LLVM target for " + triple.str() + ": " + terr;
    return false;
  }
  TargetOptions topts;
  std::unique_ptr<TargetMachine> tm(
      tgt->createTargetMachine(triple, cpu, "", topts, Reloc::PIC_,
                               std::nullopt, CodeGenOptLevel::Aggressive));
  if (!tm) {
    error = "cannot create a target machine for --mcpu=" + cpu;
    return false;
  }
  std::unique_ptr<llvm::Module> llvmModule;
  {
    Stage s("LLVM IR", o.verbose);
    llvmModule = mlir::translateModuleToLLVMIR(*module, llvmCtx, "sq_model");
    if (!llvmModule) {
      error = diag.orElse("translation to LLVM IR failed");
      return false;
    }
    llvmModule->setTargetTriple(triple);
    llvmModule->setDataLayout(tm->createDataLayout());
    auto opt = mlir::makeOptimizingTransformer(3, 0, tm.get());
    if (Error e = opt(llvmModule.get())) {
      error = "LLVM optimization failed: " + toString(std::move(e));
      return false;
    }
  }
  if (o.emit == Emit::LLVMIR)
    return writeAtomically(
        o.output,
        [&](raw_ostream &os) {
          llvmModule->print(os, nullptr);
          return true;
        },
        error);

  // 5. Object file.
  std::string objPath = temps.make(".o");
  {
    Stage s("object code", o.verbose);
    std::error_code ec;
    raw_fd_ostream os(objPath, ec, sys::fs::OF_None);
    if (ec) {
      error = "cannot write '" + o.output + "': " + ec.message();
      return false;
    }
    legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr, CodeGenFileType::ObjectFile)) {
      error = "the target cannot emit object files";
      return false;
    }
    pm.run(*llvmModule);
    os.close();
    if (os.has_error()) {
      error = "cannot write '" + o.output + "': " + os.error().message();
      os.clear_error();
      return false;
    }
  }
  auto publish = [&](const std::string &tmp, const std::string &dst) {
    if (std::error_code rc = sys::fs::rename(tmp, dst)) {
      error = "cannot create '" + dst + "': " + rc.message();
      return false;
    }
    return true;
  };
  // The weights first (a model.so never exists without its weights); if
  // the library cannot follow, its weights do not stay behind either.
  auto publishBoth = [&](const std::string &libTmp) {
    if (!publish(weightsTmp, o.output + ".weights"))
      return false;
    if (!publish(libTmp, o.output)) {
      sys::fs::remove(o.output + ".weights");
      return false;
    }
    return true;
  };
  if (o.emit == Emit::Object)
    return publishBoth(objPath);

  // 6. Link with the runtime.
  std::string soTmp = temps.make(".so");
  {
    Stage s("link", o.verbose);
    if (!link(o, objPath, soTmp, temps, error))
      return false;
  }
  if (!publishBoth(soTmp))
    return false;
  if (o.verbose)
    errs() << "sq-compile: wrote " << o.output << " and " << o.output
           << ".weights\n";
  return true;
}

} // namespace sq
