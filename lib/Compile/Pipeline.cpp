//===- Pipeline.cpp - the SpinQuant recipe as passes and a named pipeline -===//
//
// One place builds the recipe: addSpinQuantRecipe. sq-compile calls it with
// the options of its command line, and `sq-opt --sq-spinquant=...` with the
// typed options of the registered pipeline; both get the same passes.
//
//===----------------------------------------------------------------------===//

#include "sq/Compile/Compile.h"
#include "sq/Transforms/Passes.h"

#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <string>

#include <unistd.h>

using namespace mlir;

namespace {

/// Runs fn() with file descriptor 2 redirected to a temporary file and
/// returns fn()'s result; what was written to stderr meanwhile goes to
/// `printed` (nothing is captured if the redirection cannot be set up).
template <typename F> bool capturingStderr(std::string &printed, F &&fn) {
  std::FILE *tmp = std::tmpfile();
  int saved = tmp ? ::dup(2) : -1;
  if (saved < 0 || ::dup2(fileno(tmp), 2) < 0) {
    if (saved >= 0)
      ::close(saved);
    if (tmp)
      std::fclose(tmp);
    return fn();
  }
  bool result = fn();
  llvm::errs().flush();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(tmp);
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), tmp)) > 0)
    printed.append(buf, n);
  std::fclose(tmp);
  return result;
}

} // namespace

namespace sq {

std::string RotateChoice::str() const {
  switch (kind) {
  case Learned:
    return "learned";
  case Hadamard:
    return "hadamard";
  case Random:
    return "random";
  case File:
    return "file:" + path;
  case None:
    return "none";
  }
  return "";
}

bool parseRotateChoice(llvm::StringRef text, RotateChoice &choice,
                       std::string &error) {
  choice = RotateChoice();
  if (text == "learned")
    choice.kind = RotateChoice::Learned;
  else if (text == "hadamard")
    choice.kind = RotateChoice::Hadamard;
  else if (text == "random")
    choice.kind = RotateChoice::Random;
  else if (text == "none")
    choice.kind = RotateChoice::None;
  else if (text.starts_with("file:")) {
    choice.kind = RotateChoice::File;
    choice.path = text.drop_front(5).str();
  } else {
    error = "expected learned, hadamard, random, file:PATH or none";
    return false;
  }
  return true;
}

/// The calibration recipes. A recipe is the sq-spinquant-rotate options it
/// sets (on top of the pass defaults and the calibration knobs of
/// RecipeOptions); a new option of SQ's default goes into the sq line.
static const CalibrationRecipe recipes[] = {
    {"sq", "r3=search loss=ce scales=learned clip=learned",
     "SQ's default: SpinQuant's Cayley R1/R2 with learned equivalence "
     "scales and clipping, a searched R3, trained under round-to-nearest "
     "weights also before GPTQ",
     /*rtnWeightsBeforeGPTQ=*/true},
    {"spinquant", "r3=hadamard loss=ce",
     "the paper's recipe exactly: Cayley R1/R2 on cross-entropy, fixed "
     "Hadamard R3, 16-bit weights before GPTQ"},
};

llvm::ArrayRef<CalibrationRecipe> calibrationRecipes() { return recipes; }

const CalibrationRecipe *findCalibrationRecipe(llvm::StringRef name) {
  for (const CalibrationRecipe &r : recipes)
    if (name == r.name)
      return &r;
  return nullptr;
}

std::string describeCalibrationRecipes() {
  std::string s;
  for (const CalibrationRecipe &r : recipes) {
    if (!s.empty())
      s += "; ";
    s += std::string(r.name) + " (" + r.description + ": " + r.options + ")";
  }
  return s;
}

std::string RecipeOptions::str() const {
  std::string s = "quant=" + quant.str() + " rotate=" + rotate.str() +
                  " seed=" + std::to_string(seed);
  if (!calibData.empty())
    s += " calib-data=" + calibData;
  if (!tokenizer.empty())
    s += " tokenizer=" + tokenizer;
  if (calibSteps > 0)
    s += " calib-steps=" + std::to_string(calibSteps);
  if (calibSeqlen > 0)
    s += " calib-seqlen=" + std::to_string(calibSeqlen);
  if (!recipe.empty())
    s += " recipe=" + recipe;
  if (!calibOptions.empty())
    s += " calib-options={" + calibOptions + "}";
  return s;
}

std::string RecipeOptions::summary() const {
  std::string s = "quantize=" + quant.str() + " rotate=" + rotate.str();
  if (!recipe.empty())
    s += " recipe=" + recipe;
  return s;
}

bool addSpinQuantRecipe(OpPassManager &pm, const RecipeOptions &options,
                        std::string &error) {
  const QuantSpec &deployed = options.quant;
  bool quantize = !deployed.quantizesNothing();
  const RotateChoice &rotate = options.rotate;
  if (rotate.kind != RotateChoice::Learned && !options.calibData.empty()) {
    error = "--calib-data is used by --rotate=learned only";
    return false;
  }
  if (rotate.kind != RotateChoice::Learned &&
      (!options.recipe.empty() || !options.calibOptions.empty())) {
    error = "--recipe and --calib-options are used by --rotate=learned only";
    return false;
  }
  const CalibrationRecipe *recipe =
      findCalibrationRecipe(options.recipe.empty() ? "sq" : options.recipe);
  if (!recipe) {
    error = "--recipe=" + options.recipe + ": expected ";
    for (size_t i = 0; i < calibrationRecipes().size(); ++i)
      error += std::string(i ? " or " : "") + calibrationRecipes()[i].name;
    return false;
  }
  if (rotate.kind == RotateChoice::File && rotate.path.empty()) {
    error = "--rotate=file:PATH needs a path";
    return false;
  }
  // Compiled models pack their weights (mode=real) unless the spec says.
  QuantSpec spec = deployed;
  if (quantize && !spec.modeGiven) {
    spec.real = true;
    if (spec.wBits != 4 && spec.wBits != 8 && spec.wBits != 16) {
      error = "--quantize=" + deployed.str() +
              ": mode=real packs 4- or 8-bit weights, not " +
              std::to_string(spec.wBits);
      return false;
    }
  }
  if (rotate.kind != RotateChoice::None) {
    SQSpinQuantRotateOptions o;
    o.seed = options.seed;
    switch (rotate.kind) {
    case RotateChoice::Learned:
      o.mode = RotationMode::Learned;
      // Train under the quantization deployed: RTN weights as they will
      // be; before GPTQ, float weights (the official recipe) or, in SQ's,
      // RTN weights as GPTQ's proxy.
      if (quantize)
        o.quant = deployed.trainingSpec(recipe->rtnWeightsBeforeGPTQ);
      if (!options.calibData.empty())
        o.data = options.calibData;
      if (!options.tokenizer.empty())
        o.tokenizer = options.tokenizer;
      if (options.calibSteps > 0)
        o.steps = options.calibSteps;
      if (options.calibSeqlen > 0)
        o.seqlen = options.calibSeqlen;
      break;
    case RotateChoice::Hadamard:
      o.mode = RotationMode::Hadamard;
      break;
    case RotateChoice::Random:
      o.mode = RotationMode::Random;
      break;
    case RotateChoice::File:
      o.mode = RotationMode::File;
      o.path = rotate.path;
      break;
    case RotateChoice::None:
      break;
    }
    std::unique_ptr<Pass> pass = createSQSpinQuantRotate(o);
    if (rotate.kind == RotateChoice::Learned) {
      // The recipe's options, then the user's, over the knobs set above.
      std::string text =
                      std::string(recipe->options) + " " + options.calibOptions,
                  why;
      // LLVM's option parsers print a bad value's message to stderr
      // themselves ("<tool>: for the --loss option: ..."): capture it, so
      // that the error is one line.
      std::string printed;
      bool bad = capturingStderr(printed, [&] {
        return failed(pass->initializeOptions(text, [&](const Twine &msg) {
          why = msg.str();
          return failure();
        }));
      });
      if (why.empty() && !printed.empty()) {
        size_t at = printed.find("for the ");
        why = printed.substr(at == std::string::npos ? 0 : at);
        while (!why.empty() && (why.back() == '\n' || why.back() == '\r'))
          why.pop_back();
        for (char &c : why)
          if (c == '\n')
            c = ' ';
      } else if (!printed.empty()) {
        llvm::errs() << printed; // not ours to drop
      }
      if (bad) {
        error = "--calib-options='" + options.calibOptions + "': " +
                (why.empty() ? "not valid sq-spinquant-rotate options" : why);
        return false;
      }
    }
    pm.addPass(std::move(pass));
  }
  if (quantize)
    pm.addPass(createQuantizePass(spec));
  return true;
}

} // namespace sq

/// `rotate=` of the pipeline: the same spelling as sq-compile's --rotate.
template <> struct sq::OptionText<sq::RotateChoice> {
  static bool parse(StringRef text, RotateChoice &choice, std::string &error) {
    if (parseRotateChoice(text, choice, error))
      return true;
    error = "'" + text.str() + "': " + error;
    return false;
  }
  static std::string str(const RotateChoice &choice) { return choice.str(); }
  static constexpr const char *valueName = "rotations";
};
SQ_TEXT_OPTION_PARSER(sq::RotateChoice)

namespace sq {
namespace {
struct SpinQuantPipelineOptions
    : public PassPipelineOptions<SpinQuantPipelineOptions> {
  Option<QuantSpec> quant{
      *this, "quant",
      llvm::cl::desc("the quantization deployed, in --quantize's language "
                     "(default w4a4kv4; none keeps the float model); "
                     "weights are packed (mode=real) unless mode= is given"),
      llvm::cl::init(QuantSpec::bits(4, 4, 4, 4))};
  Option<RotateChoice> rotate{
      *this, "rotate",
      llvm::cl::desc("learned (the calibration of `recipe`: by default "
                     "Cayley R1/R2 with learned scales and clips and SQ's "
                     "search of R3), hadamard, random, "
                     "file:PATH (a rotation file) or none"),
      llvm::cl::init(RotateChoice())};
  Option<uint64_t> seed{*this, "seed", llvm::cl::desc("rotation seed"),
                        llvm::cl::init(0)};
  Option<std::string> calibData{
      *this, "calib-data",
      llvm::cl::desc("rotate=learned: calibration text or .bin token ids "
                     "(default: the embedded WikiText-2 excerpt)")};
  Option<std::string> tokenizer{
      *this, "tokenizer",
      llvm::cl::desc("rotate=learned: tokenizer of calib-data: byte, "
                     "sp:PATH or hf:DIR")};
  Option<int64_t> calibSteps{
      *this, "calib-steps",
      llvm::cl::desc("rotate=learned: Cayley SGD steps (0: the default, 100)"),
      llvm::cl::init(0)};
  Option<int64_t> calibSeqlen{
      *this, "calib-seqlen",
      llvm::cl::desc("rotate=learned: tokens per calibration window (0: the "
                     "default, the model's context up to 2048)"),
      llvm::cl::init(0)};
  Option<std::string> recipe{
      *this, "recipe",
      llvm::cl::desc("rotate=learned: the calibration recipe, sq (the "
                     "default) or spinquant (the paper's exactly)")};
  Option<std::string> calibOptions{
      *this, "calib-options",
      llvm::cl::desc("rotate=learned: further sq-spinquant-rotate options, "
                     "applied after the recipe's (e.g. {loss=kl-top})")};
};
} // namespace

void registerSpinQuantPipeline() {
  registerPassPipeline(
      "sq-spinquant",
      "SpinQuant's whole recipe before lowering, as sq-compile runs it: "
      "sq-spinquant-rotate (norm fusion, R1/R2, online Hadamards R3/R4; "
      "learned "
      "by default) with the training quantization derived from `quant`, then "
      "sq-quantize (weights packed unless mode= is given)",
      [](OpPassManager &pm, StringRef text,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        SpinQuantPipelineOptions o;
        if (failed(o.parseFromString(text)))
          return failure();
        RecipeOptions recipe;
        recipe.quant = o.quant;
        recipe.rotate = o.rotate;
        recipe.seed = o.seed;
        recipe.calibData = o.calibData;
        recipe.tokenizer = o.tokenizer;
        recipe.calibSteps = o.calibSteps;
        recipe.calibSeqlen = o.calibSeqlen;
        recipe.recipe = o.recipe;
        recipe.calibOptions = o.calibOptions;
        std::string error;
        if (!addSpinQuantRecipe(pm, recipe, error))
          return errorHandler("sq-spinquant: " + error);
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> optHandler) {
        optHandler(SpinQuantPipelineOptions());
      });
}

} // namespace sq
