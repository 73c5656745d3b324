//===- sq-compile.cpp - model.onnx to model.so, in process ----------------===//
//
//   sq-compile model.onnx -o model.so [--quantize=SPEC] [--rotate=MODE]
//              [--calib-data FILE] [--tokenizer T] [--target=cpu]
//              [--emit=so|obj|llvm|mlir|sq] [--mcpu=CPU]
//
// A driver over the passes sq-opt runs: import, --spinquant-rotate,
// --quantize (mode=real), --sq-lower-cpu, the upstream lowering to the LLVM
// dialect, LLVM IR, an object for the target CPU (LLVM TargetMachine), and
// a link with the CPU runtime into a shared library. Everything is written
// to temporaries renamed at the end: a failed compile leaves nothing.
//
//===----------------------------------------------------------------------===//

#include "sq/Conversion/Passes.h"
#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"
#include "sq/Support/FileSizeSignal.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"
#include "sq/Transforms/Passes.h"
#include "sq/Transforms/QuantSpec.h"

#include "mlir/Bytecode/BytecodeWriter.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <chrono>
#include <unistd.h>

using namespace llvm;

static cl::OptionCategory category("sq-compile options");
static cl::opt<std::string> input(cl::Positional,
                                  cl::desc("<model.onnx|.mlir|.mlirbc>"),
                                  cl::Required, cl::cat(category));
static cl::opt<std::string> output("o", cl::desc("Output file"),
                                   cl::value_desc("FILE"), cl::Required,
                                   cl::cat(category));
static cl::opt<std::string> quantize(
    "quantize",
    cl::desc("Quantization spec, as sq-opt's --quantize (default w4a4kv4: "
             "int4 weights, activations and KV cache, RTN; 'none' keeps the "
             "float model). mode=real is implied"),
    cl::init("w4a4kv4"), cl::cat(category));
static cl::opt<std::string> rotate(
    "rotate",
    cl::desc("Rotations: learned (SpinQuant's Cayley calibration of R1/R2 "
             "and SQ's search of R3, the default; sq-opt "
             "--spinquant-rotate=r3=hadamard for the paper's fixed R3), "
             "hadamard (QuaRot-style, no training), random, file:PATH (a "
             "rotation file saved by spinquant-rotate), none"),
    cl::init("learned"), cl::cat(category));
static cl::opt<std::string> calibData(
    "calib-data",
    cl::desc("Calibration text (or .bin token ids) for --rotate=learned "
             "(default: the WikiText-2 excerpt compiled into SQ)"),
    cl::value_desc("FILE"), cl::cat(category));
static cl::opt<std::string> tokenizer(
    "tokenizer",
    cl::desc("How --calib-data becomes tokens: byte or sp:PATH (needed for "
             "non-byte models with --rotate=learned)"),
    cl::cat(category));
static cl::opt<int64_t> calibSteps("calib-steps",
                                   cl::desc("Cayley SGD steps (default 100)"),
                                   cl::init(0), cl::cat(category));
static cl::opt<uint64_t> seed("seed", cl::desc("Rotation seed"), cl::init(0),
                              cl::cat(category));
static cl::opt<std::string>
    target("target",
           cl::desc("cpu (default) or nvptx (NVIDIA GPUs: the kernels are "
                    "compiled to PTX for --sm and JIT-loaded by the driver)"),
           cl::init("cpu"), cl::cat(category));
static cl::opt<int> sm("sm",
                       cl::desc("With --target=nvptx: the GPU architecture, "
                                "80 (A100), 86, 89 or 90 (H100); default 80"),
                       cl::init(80), cl::cat(category));
static cl::opt<std::string>
    emit("emit",
         cl::desc("What to write: so (a shared library + FILE.weights, the "
                  "default), obj (an object to link with the runtime + "
                  "FILE.weights), llvm (LLVM IR), mlir (the lowered LLVM "
                  "dialect), sq (the rotated, quantized sq IR, e.g. for "
                  "sq-run's executor), ptx (--target=nvptx: the kernels' "
                  "PTX)"),
         cl::init("so"), cl::cat(category));
static cl::opt<std::string>
    mcpu("mcpu",
         cl::desc("CPU to generate code for (default: this machine's; e.g. "
                  "x86-64-v3 for a portable library). The runtime's kernels "
                  "pick AVX-512 VNNI / AVX2 / scalar at load time anyway"),
         cl::cat(category));
static cl::opt<bool> verbose("v", cl::desc("Print each stage and its time"),
                             cl::cat(category));

static int fail(const Twine &message) {
  WithColor::error(errs(), "sq-compile") << message << "\n";
  return 1;
}

namespace {
/// Temporaries removed unless kept.
struct Temporaries {
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

struct Stage {
  const char *name;
  std::chrono::steady_clock::time_point start =
      std::chrono::steady_clock::now();
  explicit Stage(const char *name) : name(name) {
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
} // namespace

/// Collects the first diagnostic as a one-line message.
struct FirstError {
  std::string text;
  mlir::ScopedDiagnosticHandler handler;
  explicit FirstError(mlir::MLIRContext &ctx)
      : handler(&ctx, [this](mlir::Diagnostic &d) {
          if (d.getSeverity() == mlir::DiagnosticSeverity::Error &&
              text.empty()) {
            llvm::raw_string_ostream os(text);
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
};

static bool isQuantized(mlir::ModuleOp module) {
  bool q = false;
  module.walk([&](mlir::Operation *op) {
    if (isa<sq::QLinearOp, sq::FakeQuantOp>(op))
      q = true;
  });
  return q;
}

/// The pipeline before the lowering, as sq-opt would spell it.
static bool buildPipeline(std::string &pipeline, std::string &summary,
                          std::string &error) {
  std::vector<std::string> passes;
  std::string spec = quantize;
  bool quant = spec != "none" && !spec.empty();
  sq::QuantSpec parsed;
  if (quant && !sq::parseQuantSpec(spec, parsed, error)) {
    error = "--quantize=" + spec + ": " + error;
    return false;
  }
  std::string r = rotate;
  if (r != "none") {
    std::string opts;
    if (r == "learned" || r == "hadamard" || r == "random") {
      opts = "mode=" + r;
    } else if (StringRef(r).starts_with("file:")) {
      opts = "mode=file path=" + r.substr(5);
    } else {
      error = "--rotate=" + r +
              ": expected learned, hadamard, random, file:PATH or none";
      return false;
    }
    opts += " seed=" + std::to_string(seed);
    if (r == "learned") {
      // Train under the quantization deployed: RTN weights as they will
      // be; before GPTQ, float weights (the official recipe).
      if (quant) {
        std::string base = spec.substr(0, spec.find(','));
        if (parsed.gptq)
          base = "w16" + base.substr(base.find('a'));
        opts += " quant=" + base;
      }
      if (!calibData.empty())
        opts += " data=" + calibData;
      if (!tokenizer.empty())
        opts += " tokenizer=" + tokenizer;
      if (calibSteps > 0)
        opts += " steps=" + std::to_string(calibSteps);
    } else if (!calibData.empty()) {
      error = "--calib-data is used by --rotate=learned only";
      return false;
    }
    passes.push_back("spinquant-rotate{" + opts + "}");
  }
  if (quant) {
    if (spec.find("mode=") == std::string::npos)
      spec += ",mode=real";
    passes.push_back("quantize{" + spec + "}");
  }
  // The pass manager is anchored on the module: no builtin.module() wrapper.
  pipeline.clear();
  for (size_t i = 0; i < passes.size(); ++i)
    pipeline += (i ? "," : "") + passes[i];
  summary = "quantize=" + (quant ? parsed.str() : std::string("none")) +
            " rotate=" + r;
  return true;
}

static std::string findRuntimeDir(const char *argv0) {
  if (const char *env = std::getenv("SQ_RUNTIME_DIR"))
    return env;
  std::string exe =
      sys::fs::getMainExecutable(argv0, reinterpret_cast<void *>(&fail));
  SmallString<256> dir(sys::path::parent_path(sys::path::parent_path(exe)));
  sys::path::append(dir, "lib");
  return std::string(dir);
}

static std::string findLinkerDriver() {
  if (const char *env = std::getenv("SQ_LINKER"))
    return env;
  for (const char *name : {"clang++-22", "clang++", "g++", "c++"})
    if (auto p = sys::findProgramByName(name))
      return *p;
  if (auto p = sys::findProgramByName("clang++", {"/usr/lib/llvm-22/bin"}))
    return *p;
  return "";
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  sq::blockFileSizeSignal(); // write errors, not SIGXFSZ (ulimit -f)
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "sq-compile: compile a LLaMA model to a shared library with a C API\n\n"
      "  sq-compile model.onnx -o model.so           # SpinQuant W4A4KV4, "
      "learned rotations\n"
      "  sq-compile model.onnx -o model.so --rotate=hadamard "
      "--quantize=w4a8\n"
      "  sq-compile model.onnx -o model.mlirbc --emit=sq   # the quantized "
      "IR only\n"
      "  sq-compile model.onnx -o g.so --target=nvptx --sm=90  # NVIDIA GPU "
      "(PTX, JIT-loaded)\n\n"
      "The weights go to FILE.weights next to FILE (mapped at load time); "
      "keep the two together. Run the result with sq-run model.so or "
      "through include/sq/Runtime/sq_runtime.h.\n");

  if (target != "cpu" && target != "nvptx")
    return fail("--target=" + target + ": expected cpu or nvptx");
  bool gpu = target == "nvptx";
  if (emit != "so" && emit != "obj" && emit != "llvm" && emit != "mlir" &&
      emit != "sq" && emit != "ptx")
    return fail("--emit=" + emit + ": expected so, obj, llvm, mlir, sq or ptx");
  if (emit == "ptx" && !gpu)
    return fail("--emit=ptx needs --target=nvptx");
  if (gpu && sm != 80 && sm != 86 && sm != 89 && sm != 90)
    return fail("--sm=" + Twine(sm) + ": expected 80, 86, 89 or 90");
  if (!gpu && sm.getNumOccurrences())
    return fail("--sm is for --target=nvptx");
  // An unknown --mcpu would abort LLVM's code generator: check it first.
  if (!mcpu.empty()) {
    InitializeNativeTarget();
    Triple host(sys::getProcessTriple());
    std::string terr;
    const Target *t = TargetRegistry::lookupTarget(host, terr);
    std::unique_ptr<MCSubtargetInfo> sti(
        t ? t->createMCSubtargetInfo(host, "generic", "") : nullptr);
    if (!sti || !sti->isCPUStringValid(mcpu))
      return fail("--mcpu=" + mcpu + ": not a CPU that LLVM knows for " +
                  host.str() + " (e.g. x86-64, x86-64-v3, znver4)");
  }

  // An output that cannot be written fails now, not after the compile.
  {
    SmallString<256> dir(output);
    sys::path::remove_filename(dir);
    if (dir.empty())
      dir = ".";
    if (!sys::fs::is_directory(dir))
      return fail(
          output + ": cannot write: '" + dir + "' " +
          (sys::fs::exists(dir) ? "is not a directory" : "does not exist"));
    if (sys::fs::is_directory(output))
      return fail(output + ": cannot write: it is a directory");
  }

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registry.insert<sq::SQDialect>();
  // Upstream passes too: the NVPTX lowering's kernel pipeline is textual.
  mlir::registerAllPasses();
  sq::registerSQPasses();
  sq::registerSQConversionPasses();
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  FirstError diag(ctx);

  // 1. Import.
  mlir::OwningOpRef<mlir::ModuleOp> module;
  {
    Stage s("import");
    std::string error;
    StringRef path = input;
    if (!sys::fs::exists(path))
      return fail(input + ": no such file");
    if (path.ends_with(".onnx")) {
      module = sq::importOnnxModel(path, &ctx, error);
      if (!module)
        return fail(error);
    } else if (path.ends_with(".mlir") || path.ends_with(".mlirbc")) {
      // A device or a pipe (/dev/zero) would be read without end.
      sys::fs::file_status status;
      if (!sys::fs::status(path, status) && !sys::fs::is_regular_file(status))
        return fail(input + ": not a regular file");
      if (auto text = MemoryBuffer::getFile(path)) {
        error = sq::checkNestingDepth((*text)->getBuffer(), path,
                                      /*mlirLayout=*/false);
        if (!error.empty())
          return fail(error);
      }
      module = sq::parseModuleFile(path, &ctx);
      if (!module)
        return fail(diag.text.empty() ? "cannot read '" + input + "'"
                                      : diag.text);
    } else {
      return fail(input + ": unknown model type (expected .onnx, .mlir or "
                          ".mlirbc)");
    }
  }

  // 2. Rotate and quantize (unless the input already is).
  std::string summary;
  if (isQuantized(*module)) {
    bool asked = quantize.getNumOccurrences() || rotate.getNumOccurrences();
    if (asked)
      errs() << "sq-compile: " << input
             << " is already quantized; --quantize/--rotate are ignored\n";
    summary = "input already quantized";
  } else {
    std::string pipeline, error;
    if (!buildPipeline(pipeline, summary, error))
      return fail(error);
    Stage s("rotate and quantize");
    if (verbose)
      errs() << "sq-compile: pipeline " << pipeline << "\n";
    mlir::PassManager pm(&ctx);
    std::string perr;
    raw_string_ostream perrs(perr);
    if (failed(mlir::parsePassPipeline(pipeline, pm, perrs)))
      return fail("bad pipeline '" + pipeline + "': " + perr);
    if (failed(pm.run(*module)))
      return fail(diag.text.empty() ? "the rotate/quantize passes failed"
                                    : diag.text);
  }
  if (emit == "sq") {
    std::string tmp = output + ".sqtmp" + std::to_string(::getpid());
    std::error_code ec;
    {
      raw_fd_ostream os(tmp, ec);
      if (ec)
        return fail("cannot write '" + output + "': " + ec.message());
      if (StringRef(output).ends_with(".mlirbc")) {
        if (failed(mlir::writeBytecodeToFile(*module, os)))
          return sys::fs::remove(tmp), fail("cannot write bytecode");
      } else {
        module->print(os);
      }
      os.close();
      if (os.has_error()) {
        std::string msg = os.error().message();
        os.clear_error();
        sys::fs::remove(tmp);
        return fail("cannot write '" + output + "': " + msg);
      }
    }
    if (std::error_code rc = sys::fs::rename(tmp, output)) {
      sys::fs::remove(tmp);
      return fail("cannot create '" + output + "': " + rc.message());
    }
    return 0;
  }

  // 3. Lower to the LLVM dialect; the weights go to the sidecar.
  Temporaries temps;
  bool withWeights = emit == "so" || emit == "obj";
  if (emit == "ptx")
    withWeights = false;
  std::string weightsTmp = withWeights ? temps.make(".weights") : "";
  std::string cpu = mcpu.empty() ? sys::getHostCPUName().str() : mcpu;
  std::string ptx;
  if (gpu) {
    // gpu-module-to-binary needs the NVPTX backend.
    InitializeAllTargets();
    InitializeAllTargetMCs();
    InitializeAllAsmPrinters();
  }
  {
    Stage s(gpu ? "lower to NVPTX (kernels to PTX)" : "lower to CPU");
    std::string description =
        "sq-compile " + sys::path::filename(input).str() + ": " + summary +
        (gpu ? " target=nvptx sm=" + std::to_string(sm) + " host mcpu=" + cpu
             : " target=cpu mcpu=" + cpu);
    if (gpu ? failed(sq::lowerToNVPTX(*module, weightsTmp, description, sm, "",
                                      &ptx))
            : failed(sq::lowerToCPU(*module, weightsTmp, description)))
      return fail(diag.text.empty() ? "the lowering failed" : diag.text);
    mlir::PassManager pm(&ctx);
    sq::buildCPUToLLVMPipeline(pm);
    if (failed(pm.run(*module)))
      return fail(diag.text.empty() ? "lowering to the LLVM dialect failed"
                                    : diag.text);
  }
  auto writeText = [&](auto print) -> int {
    std::string tmp = temps.make(".out");
    std::error_code ec;
    raw_fd_ostream os(tmp, ec);
    if (ec)
      return fail("cannot write '" + output + "': " + ec.message());
    print(os);
    os.close();
    if (os.has_error()) {
      std::string msg = os.error().message();
      os.clear_error();
      return fail("cannot write '" + output + "': " + msg);
    }
    if (std::error_code rc = sys::fs::rename(tmp, output))
      return fail("cannot create '" + output + "': " + rc.message());
    return 0;
  };
  if (emit == "mlir")
    return writeText([&](raw_ostream &os) { module->print(os); });
  if (emit == "ptx")
    return writeText([&](raw_ostream &os) { os << ptx; });

  // 4. LLVM IR, optimized for the target CPU.
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  llvm::LLVMContext llvmCtx;
  Triple triple(sys::getProcessTriple());
  std::string terr;
  const Target *tgt = TargetRegistry::lookupTarget(triple, terr);
  if (!tgt)
    return fail("no LLVM target for " + triple.str() + ": " + terr);
  TargetOptions topts;
  std::unique_ptr<TargetMachine> tm(
      tgt->createTargetMachine(triple, cpu, "", topts, Reloc::PIC_,
                               std::nullopt, CodeGenOptLevel::Aggressive));
  if (!tm)
    return fail("cannot create a target machine for --mcpu=" + cpu);
  std::unique_ptr<llvm::Module> llvmModule;
  {
    Stage s("LLVM IR");
    llvmModule = mlir::translateModuleToLLVMIR(*module, llvmCtx, "sq_model");
    if (!llvmModule)
      return fail(diag.text.empty() ? "translation to LLVM IR failed"
                                    : diag.text);
    llvmModule->setTargetTriple(triple);
    llvmModule->setDataLayout(tm->createDataLayout());
    auto opt = mlir::makeOptimizingTransformer(3, 0, tm.get());
    if (Error e = opt(llvmModule.get()))
      return fail("LLVM optimization failed: " + toString(std::move(e)));
  }
  if (emit == "llvm")
    return writeText([&](raw_ostream &os) { llvmModule->print(os, nullptr); });

  // 5. Object file.
  std::string objPath = temps.make(".o");
  {
    Stage s("object code");
    std::error_code ec;
    raw_fd_ostream os(objPath, ec, sys::fs::OF_None);
    if (ec)
      return fail("cannot write '" + output + "': " + ec.message());
    legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr, CodeGenFileType::ObjectFile))
      return fail("the target cannot emit object files");
    pm.run(*llvmModule);
    os.close();
    if (os.has_error()) {
      std::string msg = os.error().message();
      os.clear_error();
      return fail("cannot write '" + output + "': " + msg);
    }
  }
  auto publish = [&](const std::string &tmp, const std::string &dst) -> bool {
    if (std::error_code rc = sys::fs::rename(tmp, dst)) {
      fail("cannot create '" + dst + "': " + rc.message());
      return false;
    }
    return true;
  };
  // The weights first (a model.so never exists without its weights); if
  // the library cannot follow, its weights do not stay behind either.
  auto publishBoth = [&](const std::string &libTmp) -> bool {
    if (!publish(weightsTmp, output + ".weights"))
      return false;
    if (!publish(libTmp, output)) {
      sys::fs::remove(output + ".weights");
      return false;
    }
    return true;
  };
  if (emit == "obj")
    return publishBoth(objPath) ? 0 : 1;

  // 6. Link with the runtime.
  std::string soTmp = temps.make(".so");
  {
    Stage s("link");
    std::string runtimeDir = findRuntimeDir(argv[0]);
    SmallString<256> rtLib(runtimeDir), numLib(runtimeDir);
    sys::path::append(rtLib, gpu ? "libSQRuntimeCUDA.a" : "libSQRuntimeCPU.a");
    sys::path::append(numLib, "libSQNumerics.a");
    for (StringRef lib : {StringRef(rtLib), StringRef(numLib)})
      if (!sys::fs::exists(lib))
        return fail("the runtime '" + lib +
                    "' is missing (set SQ_RUNTIME_DIR to the directory "
                    "holding libSQRuntimeCPU.a, libSQRuntimeCUDA.a and "
                    "libSQNumerics.a)");
    std::string driver = findLinkerDriver();
    if (driver.empty())
      return fail("no C++ compiler driver to link with (clang++-22, clang++, "
                  "g++ or c++; or set SQ_LINKER)");
    // Only the C API (sq_*) is exported; the library binds its own symbols.
    std::string versionScript = temps.make(".map");
    {
      std::error_code ec;
      raw_fd_ostream vs(versionScript, ec);
      if (ec)
        return fail("cannot write '" + versionScript + "': " + ec.message());
      vs << "{ global: sq_*; local: *; };\n";
    }
    std::string errFile = temps.make(".log");
    std::vector<std::string> args = {
        driver, "-shared", "-o", soTmp, objPath, std::string(rtLib),
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
      return fail("linking with " + driver + " failed: " + first);
    }
  }
  if (!publishBoth(soTmp))
    return 1;
  if (verbose)
    errs() << "sq-compile: wrote " << output << " and " << output
           << ".weights\n";
  return 0;
}
