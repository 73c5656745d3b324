//===- sq-compile.cpp - model.onnx to model.so ----------------------------===//
//
//   sq-compile model.onnx|DIR -o model.so [--quantize=SPEC] [--rotate=MODE]
//              [--calib-data FILE] [--tokenizer T] [--target=cpu]
//              [--emit=so|obj|llvm|mlir|sq] [--mcpu=CPU]
//
// The command line of sq::compileModel (include/sq/Compile/Compile.h): the
// recipe is the sq-spinquant pipeline, the lowering, LLVM and link steps
// live in lib/Compile.
//
//===----------------------------------------------------------------------===//

#include "sq/Compile/Compile.h"
#include "sq/Support/Distributed.h"
#include "sq/Support/ToolSupport.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

static cl::OptionCategory category("sq-compile options");
static cl::opt<std::string> input(cl::Positional,
                                  cl::desc("<model.onnx|DIR|.mlir|.mlirbc>"),
                                  cl::Required, cl::cat(category));
static cl::opt<std::string> output("o", cl::desc("Output file"),
                                   cl::value_desc("FILE"), cl::Required,
                                   cl::cat(category));
static cl::opt<std::string> quantize(
    "quantize",
    cl::desc("Quantization spec, as sq-opt's --quantize (default w4a4kv4: "
             "int4 weights, activations and KV cache, RTN, lm_head in float; "
             "add ,head=8 for an int8 lm_head; 'none' keeps the float "
             "model). mode=real is implied"),
    cl::init("w4a4kv4"), cl::cat(category));
static cl::opt<std::string> rotate(
    "rotate",
    cl::desc("Rotations: learned (SpinQuant's Cayley calibration of R1/R2 "
             "with learned scales and clips, and SQ's search of R3: the "
             "default; --recipe=spinquant for the paper's recipe), "
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
    cl::desc("How --calib-data becomes tokens: byte, sp:PATH or hf:DIR "
             "(needed for non-byte models with --rotate=learned; default "
             "hf:DIR when the model is a Hugging Face folder DIR)"),
    cl::cat(category));
static cl::opt<int64_t> calibSteps("calib-steps",
                                   cl::desc("Cayley SGD steps (default 100)"),
                                   cl::init(0), cl::cat(category));
static cl::opt<int64_t> calibSeqlen(
    "calib-seqlen",
    cl::desc("Tokens per calibration window for --rotate=learned (default: "
             "the model's context, at most 2048; shorter windows calibrate "
             "faster, e.g. a first try on a large model)"),
    cl::init(0), cl::cat(category));
static cl::opt<uint64_t> seed("seed", cl::desc("Rotation seed"), cl::init(0),
                              cl::cat(category));
// (Built from the recipe table, before the option that points to it.)
static const std::string recipeHelp =
    "Calibration recipe of --rotate=learned, a set of sq-opt "
    "--sq-spinquant-rotate options: " +
    sq::describeCalibrationRecipes() + ". Default: sq";
static cl::opt<std::string> recipe("recipe", cl::desc(recipeHelp),
                                   cl::value_desc("NAME"), cl::cat(category));
static cl::opt<std::string>
    calibOptions("calib-options",
                 cl::desc("Further sq-opt --sq-spinquant-rotate options for "
                          "--rotate=learned, applied after the recipe's (e.g. "
                          "'loss=kl-top r3-windows=32')"),
                 cl::value_desc("OPTIONS"), cl::cat(category));
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

/// (Under mpirun a failing process stops the others: sq/Support/Distributed.h.)
static int fail(const Twine &message) {
  return sq::distributed::exitCode(sq::fail("sq-compile", message));
}

/// build/lib next to build/bin/sq-compile, or $SQ_RUNTIME_DIR.
static std::string findRuntimeDir(const char *argv0) {
  if (const char *env = std::getenv("SQ_RUNTIME_DIR"))
    return env;
  std::string exe =
      sys::fs::getMainExecutable(argv0, reinterpret_cast<void *>(&fail));
  SmallString<256> dir(sys::path::parent_path(sys::path::parent_path(exe)));
  sys::path::append(dir, "lib");
  return std::string(dir);
}

int main(int argc, char **argv) {
  sq::InitTool init(
      argc, argv, category,
      "sq-compile: compile a LLaMA model to a shared library with a C API\n\n"
      "  sq-compile model.onnx -o model.so           # SpinQuant W4A4KV4, "
      "learned rotations\n"
      "  sq-compile model.onnx -o model.so --rotate=hadamard "
      "--quantize=w4a8\n"
      "  sq-compile model.onnx -o model.mlirbc --emit=sq   # the quantized "
      "IR only\n"
      "  sq-compile model.onnx -o g.so --target=nvptx --sm=90  # NVIDIA GPU "
      "(PTX, JIT-loaded)\n"
      "  sq-compile llama-folder -o model.so         # a Hugging Face folder "
      "(config.json + safetensors; its tokenizer calibrates)\n\n"
      "The weights go to FILE.weights next to FILE (mapped at load time); "
      "keep the two together. Run the result with sq-run model.so or "
      "through include/sq/Runtime/sq_runtime.h.\n");

  sq::CompileOptions o;
  std::string error;
  if (target != "cpu" && target != "nvptx")
    return fail("--target=" + target + ": expected cpu or nvptx");
  o.gpu = target == "nvptx";
  if (!o.gpu && sm.getNumOccurrences())
    return fail("--sm is for --target=nvptx");
  if (!sq::parseCompileFlags(emit, quantize, rotate, o, error))
    return fail(error);
  o.recipe.seed = seed;
  o.recipe.calibData = calibData;
  o.recipe.tokenizer = tokenizer;
  o.recipe.calibSteps = calibSteps;
  o.recipe.calibSeqlen = calibSeqlen;
  o.recipe.recipe = recipe;
  o.recipe.calibOptions = calibOptions;
  o.recipeGiven = quantize.getNumOccurrences() || rotate.getNumOccurrences() ||
                  recipe.getNumOccurrences();
  o.input = input;
  o.output = output;
  o.sm = sm;
  o.mcpu = mcpu;
  o.verbose = verbose;
  o.runtimeDir = findRuntimeDir(argv[0]);
  if (!sq::compileModel(o, error))
    return fail(error);
  return 0;
}
