//===- Compile.h - the SpinQuant recipe and the compile, as a library -*- C++
//-*-===//
//
// The whole flow of `sq-compile` as library calls, for the tools and for
// Python:
//
//   RecipeOptions        the rotate-and-quantize recipe (typed: a QuantSpec,
//                        a rotation choice, the calibration knobs)
//   addSpinQuantRecipe   appends it to a pass manager: spinquant-rotate with
//                        the training spec derived from the deployed one,
//                        then quantize (mode=real unless the spec says)
//   sq-spinquant         the same recipe registered as a named pipeline:
//                        sq-opt --sq-spinquant='quant=w4a4kv4 rotate=learned'
//   compileModel         import, recipe, lowering (CPU or NVPTX), LLVM IR,
//                        object code, link with the runtime; every output
//                        written to a temporary and renamed at the end
//
// Errors come back as one-line messages; nothing here exits.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_COMPILE_COMPILE_H
#define SQ_COMPILE_COMPILE_H

#include "sq/Transforms/QuantSpecOption.h"

#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace sq {

/// Which rotations the recipe applies (`--rotate`, `rotate=`).
struct RotateChoice {
  enum Kind { Learned, Hadamard, Random, File, None };
  Kind kind = Learned;
  /// The rotation file of `file:PATH`.
  std::string path;
  /// learned | hadamard | random | file:PATH | none.
  std::string str() const;
};

/// Parses `learned`, `hadamard`, `random`, `file:PATH` or `none`.
bool parseRotateChoice(llvm::StringRef text, RotateChoice &choice,
                       std::string &error);

/// A named calibration recipe of rotate=learned (`--recipe`): the
/// sq-spinquant-rotate options it sets, on top of the pass defaults.
struct CalibrationRecipe {
  const char *name;
  const char *options;
  const char *description;
  /// Trains under the deployed weights' round-to-nearest also when GPTQ
  /// quantizes them at the end (the weights in the loop, which learned
  /// scales and weight clips need); false: 16-bit weights before GPTQ, as
  /// the paper.
  bool rtnWeightsBeforeGPTQ = false;
};
/// The recipes: sq (SQ's default) first, spinquant (the paper's exactly).
llvm::ArrayRef<CalibrationRecipe> calibrationRecipes();
/// The recipe called `name`, or null.
const CalibrationRecipe *findCalibrationRecipe(llvm::StringRef name);
/// "sq (...), spinquant (...)": the recipes and their options, for --help.
std::string describeCalibrationRecipes();

/// The rotate-and-quantize recipe before lowering.
struct RecipeOptions {
  /// The quantization deployed (none: keep the float model).
  QuantSpec quant = QuantSpec::bits(4, 4, 4, 4);
  RotateChoice rotate;
  /// Seed of the rotations (and of the calibration windows).
  uint64_t seed = 0;
  /// rotate=learned: calibration text or .bin ids (empty: the embedded
  /// WikiText-2 excerpt), its tokenizer, Cayley steps (0: the pass default)
  /// and tokens per calibration window (0: the pass default, the model's
  /// context up to 2048).
  std::string calibData, tokenizer;
  int64_t calibSteps = 0;
  int64_t calibSeqlen = 0;
  /// rotate=learned: the calibration recipe (calibrationRecipes(); empty:
  /// sq, the default) and further sq-spinquant-rotate options applied after
  /// the recipe's (e.g. "loss=kl-top r3-windows=32").
  std::string recipe;
  std::string calibOptions;

  /// The recipe as sq-spinquant's options (`quant=... rotate=... seed=...`,
  /// the rest when set): `sq-opt --sq-spinquant='<str()>'` reproduces it.
  std::string str() const;
  /// "quantize=SPEC rotate=CHOICE", for the model's description.
  std::string summary() const;
};

/// Appends the recipe's passes to `pm` (anchored on the module). Fails, with
/// `error`, for options that do not go together.
bool addSpinQuantRecipe(mlir::OpPassManager &pm, const RecipeOptions &options,
                        std::string &error);

/// Registers the `sq-spinquant` pipeline (sq-opt calls it).
void registerSpinQuantPipeline();

/// What compileModel writes.
enum class Emit { SharedLibrary, Object, LLVMIR, LoweredMLIR, SQ, PTX };

/// Parses so | obj | llvm | mlir | sq | ptx.
bool parseEmit(llvm::StringRef text, Emit &emit, std::string &error);

struct CompileOptions {
  /// model.onnx, a Hugging Face folder, .mlir or .mlirbc; the output file
  /// (`.weights` goes next to it for so/obj).
  std::string input, output;
  RecipeOptions recipe;
  /// The user asked for a recipe (a note is printed when the input is
  /// already quantized and the recipe is skipped).
  bool recipeGiven = false;
  /// NVPTX instead of the host CPU, for GPU architecture `sm`.
  bool gpu = false;
  int sm = 80;
  Emit emit = Emit::SharedLibrary;
  /// The CPU to generate code for (empty: this machine's).
  std::string mcpu;
  /// Print each stage, its time and the pipeline.
  bool verbose = false;
  /// Where libSQRuntimeCPU.a, libSQRuntimeCUDA.a and libSQNumerics.a are.
  std::string runtimeDir;
};

/// Reads sq-compile's spellings of --emit, --quantize and --rotate into
/// `options` (for the tool and for sq_compile()); `error` names the flag.
bool parseCompileFlags(llvm::StringRef emit, llvm::StringRef quantize,
                       llvm::StringRef rotate, CompileOptions &options,
                       std::string &error);

/// Checks the options that need no input (targets, CPUs, the output
/// path), so that a tool can fail before any work.
bool checkCompileOptions(const CompileOptions &options, std::string &error);

/// The whole compile. On failure `error` is a one-line message and no
/// output (nor any temporary) is left behind.
bool compileModel(const CompileOptions &options, std::string &error);

} // namespace sq

#endif // SQ_COMPILE_COMPILE_H
