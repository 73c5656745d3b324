//===- sq-run.cpp - perplexity and generation with the reference executor ===//
//
//   sq-run MODEL --ppl FILE --seqlen N [--max-windows K] [--stride S] [--json]
//   sq-run MODEL --generate "PROMPT" -n N [--temperature T --top-p P --seed S]
//   sq-run --tokenizer SPEC --encode FILE -o ids.bin [--add-special-tokens]
//          [--lines]
//   sq-run --tokenizer SPEC --decode ids.bin -o text.txt
//
// MODEL is .onnx or a Hugging Face checkpoint folder (imported on the
// fly), .mlir or .mlirbc, run by the
// reference executor, or a model.so compiled by sq-compile, run through its
// C API (include/sq/Runtime/sq_runtime.h): see sq/Exec/ModelLoader.h. The
// perplexity protocol and the benchmark live in sq/Exec/Evaluate.h,
// generation and sampling in sq/Exec/Generate.h; this file only parses
// options and prints.
//
//===----------------------------------------------------------------------===//

#include "sq/Exec/Evaluate.h"
#include "sq/Exec/Generate.h"
#include "sq/Exec/ModelLoader.h"
#include "sq/Exec/TokenLoader.h"
#include "sq/Import/HF.h"
#include "sq/Support/ToolSupport.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>

using namespace llvm;

static cl::OptionCategory category("sq-run options");
static cl::opt<std::string>
    modelPath(cl::Positional, cl::desc("<model.onnx|DIR|.mlir|.mlirbc|.so>"),
              cl::cat(category));
static cl::opt<std::string> tokenizerSpec(
    "tokenizer",
    cl::desc("How text becomes token ids: 'byte' (raw UTF-8 bytes), "
             "'sp:PATH' (a SentencePiece .model) or 'hf:DIR' (a Hugging Face "
             "tokenizer.json in DIR, or the file itself; the default when "
             "MODEL is a folder with a tokenizer.json, else its "
             "tokenizer.model)"),
    cl::cat(category));
static cl::opt<std::string> encodeFile(
    "encode",
    cl::desc("Write the token ids of the text in FILE to -o as int32 "
             "little-endian (the format --tokens reads); needs --tokenizer, "
             "no model. BOS/EOS are added only with --add-special-tokens. "
             "With --bench: also print JSON with the median encoding time "
             "of --repeats runs (MB/s, tokens/s)"),
    cl::value_desc("FILE"), cl::cat(category));
static cl::opt<std::string>
    outputFile("o", cl::desc("--encode: the ids file; --decode: the text file"),
               cl::value_desc("FILE"), cl::cat(category));
static cl::opt<bool> addSpecialTokens(
    "add-special-tokens",
    cl::desc("--encode: add the BOS/EOS the tokenizer adds for a model input "
             "(Hugging Face's add_special_tokens=True)"),
    cl::cat(category));
static cl::opt<std::string>
    pplFile("ppl",
            cl::desc("Perplexity of the text in FILE: the whole file is "
                     "tokenized, cut into windows of --seqlen tokens, and "
                     "the next-token NLL is averaged over every prediction"),
            cl::value_desc("FILE"), cl::cat(category));
static cl::opt<std::string>
    tokensFile("tokens",
               cl::desc("Perplexity of pre-tokenized input: FILE of int32 ids "
                        "(instead of --ppl text)"),
               cl::value_desc("FILE"), cl::cat(category));
static cl::opt<int64_t> seqlen("seqlen", cl::desc("Window length in tokens"),
                               cl::init(0), cl::cat(category));
static cl::opt<int64_t>
    maxWindows("max-windows", cl::desc("Evaluate at most K windows (0: all)"),
               cl::init(0), cl::cat(category));
static cl::opt<int64_t> stride(
    "stride",
    cl::desc("Start a window every S tokens (default: --seqlen, i.e. "
             "non-overlapping); with S < seqlen only the last S predictions "
             "of each later window are scored"),
    cl::init(0), cl::cat(category));
static cl::opt<int64_t> batchSize("batch",
                                  cl::desc("Windows evaluated together"),
                                  cl::init(1), cl::cat(category));
static cl::opt<bool> json("json",
                          cl::desc("Print the perplexity result as one JSON "
                                   "object"),
                          cl::cat(category));
static cl::opt<std::string>
    prompt("generate",
           cl::desc("Generate text after PROMPT (BOS is prepended when "
                    "the tokenizer has one)"),
           cl::value_desc("PROMPT"), cl::cat(category));
static cl::opt<int64_t> numTokens("n", cl::desc("Tokens to generate"),
                                  cl::init(64), cl::cat(category));
static cl::opt<double>
    temperature("temperature",
                cl::desc("Sampling temperature (0: greedy, the default)"),
                cl::init(0.0), cl::cat(category));
static cl::opt<double> topP("top-p",
                            cl::desc("Nucleus sampling: keep the smallest "
                                     "set of tokens with this much "
                                     "probability"),
                            cl::init(1.0), cl::cat(category));
static cl::opt<unsigned> seed("seed", cl::desc("Sampling seed"), cl::init(0),
                              cl::cat(category));
static cl::opt<std::string> logitsOut(
    "logits-out",
    cl::desc("With --ppl/--tokens: also write the logits of the first "
             "window to FILE (float32, [seqlen, vocab]), e.g. to compare "
             "with another runtime"),
    cl::value_desc("FILE"), cl::cat(category));
static cl::opt<int64_t> prefill(
    "prefill",
    cl::desc("With --ppl/--tokens: run each window's first N tokens at once, "
             "then the others one at a time through the KV cache, as "
             "generation does (checks the cached path; the logits match a "
             "single forward up to rounding)"),
    cl::value_desc("N"), cl::init(0), cl::cat(category));
static cl::opt<bool>
    bench("bench",
          cl::desc("Measure speed: prefill --prompt-len seeded random "
                   "tokens, then decode -n tokens one at a time; prints "
                   "JSON with tokens/s"),
          cl::cat(category));
static cl::opt<int64_t> promptLen("prompt-len",
                                  cl::desc("Prompt length for --bench"),
                                  cl::init(128), cl::cat(category));
static cl::opt<int64_t> repeats("repeats",
                                cl::desc("Repetitions for --bench (the "
                                         "median is reported)"),
                                cl::init(3), cl::cat(category));
static cl::opt<int64_t>
    context("context",
            cl::desc("The model's context length in tokens (default: from the "
                     "model's configuration when it has one)"),
            cl::init(0), cl::cat(category));

static int fail(const Twine &message) { return sq::fail("sq-run", message); }

static cl::opt<bool>
    encodeLines("lines",
                cl::desc("--encode: encode every line (split at \\n, "
                         "without it) on its own; the ids are written one "
                         "line after the other"),
                cl::cat(category));

static cl::opt<std::string>
    decodeFile("decode",
               cl::desc("Write the text of the int32 ids in FILE to -o "
                        "(the tokenizer's decoder; needs --tokenizer, no "
                        "model)"),
               cl::value_desc("FILE"), cl::cat(category));

/// --encode and --decode need a tokenizer and -o FILE (for `what`) and take
/// no model: the message when they are not so given, or empty.
static std::string tokenizerOnlyError(StringRef flag, StringRef what) {
  if (tokenizerSpec.empty())
    return (flag + " needs --tokenizer (byte, sp:PATH or hf:DIR)").str();
  if (outputFile.empty())
    return (flag + " needs -o FILE for the " + what).str();
  if (!modelPath.empty())
    return (flag + " takes no model ('" + modelPath + "')").str();
  return "";
}

static int runDecode() {
  std::string error = tokenizerOnlyError("--decode", "text");
  if (!error.empty())
    return fail(error);
  std::unique_ptr<sq::Tokenizer> tok =
      sq::Tokenizer::create(tokenizerSpec, error);
  if (!tok)
    return fail(error);
  sq::TokenSource source;
  source.path = decodeFile;
  source.format = sq::TokenSource::Format::Ids;
  source.vocab = tok->vocabSize();
  std::vector<int64_t> ids;
  if (!sq::loadTokens(source, ids, error))
    return fail(error);
  std::string text = tok->decode(ids);
  auto write = [&](raw_ostream &os, std::string &) {
    os << text;
    return true;
  };
  if (sq::writeFileAtomically(outputFile, write, error) !=
      sq::WriteStatus::Written)
    return fail(outputFile + ": cannot write: " + error);
  return 0;
}

static int runEncode() {
  std::string error = tokenizerOnlyError("--encode", "ids");
  if (!error.empty())
    return fail(error);
  sq::TokenSource source;
  source.path = encodeFile;
  source.format = sq::TokenSource::Format::Text;
  source.tokenizerSpec = tokenizerSpec;
  source.addSpecialTokens = addSpecialTokens;
  source.eachLine = encodeLines;
  std::vector<int64_t> ids;
  if (!bench) {
    if (!sq::loadTokens(source, ids, error) ||
        !sq::writeTokens(outputFile, ids, error))
      return fail(error);
    return 0;
  }
  // --bench: the tokenizer is made once; the median of --repeats encodings
  // (each reads the file, from the page cache after the first) is timed.
  if (repeats < 1)
    return fail("--repeats must be at least 1");
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  std::unique_ptr<sq::Tokenizer> tok =
      sq::Tokenizer::create(tokenizerSpec, error);
  if (!tok)
    return fail(error);
  double load = std::chrono::duration<double>(Clock::now() - start).count();
  source.tokenizer = tok.get();
  std::vector<double> times;
  for (int64_t r = 0; r < repeats; ++r) {
    start = Clock::now();
    if (!sq::loadTokens(source, ids, error))
      return fail(error);
    times.push_back(
        std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  if (!sq::writeTokens(outputFile, ids, error))
    return fail(error);
  uint64_t bytes = 0;
  sys::fs::file_size(encodeFile, bytes);
  double seconds = times[times.size() / 2];
  outs() << formatv("{{\"bytes\": {0}, \"tokens\": {1}, \"seconds\": {2:f6}, "
                    "\"load_seconds\": {3:f6}, \"mb_per_s\": {4:f3}, "
                    "\"tokens_per_s\": {5:f0}}\n",
                    bytes, ids.size(), seconds, load, bytes / seconds / 1e6,
                    ids.size() / seconds);
  return 0;
}

static int runPerplexity(sq::ModelBackend &model, const sq::Tokenizer *tok) {
  sq::TokenSource source;
  if (!tokensFile.empty()) {
    source.path = tokensFile;
    source.format = sq::TokenSource::Format::Ids;
  } else {
    source.path = pplFile;
    source.format = sq::TokenSource::Format::Text;
    source.tokenizer = tok;
    source.needsTokenizer = "--ppl needs --tokenizer (byte, sp:PATH or "
                            "hf:DIR) to "
                            "turn '" +
                            pplFile + "' into tokens";
  }
  std::vector<int64_t> ids;
  std::string error;
  if (!sq::loadTokens(source, ids, error))
    return fail(error);
  sq::PerplexityOptions options;
  options.seqlen = seqlen;
  options.stride = stride;
  options.maxWindows = maxWindows;
  options.batch = batchSize;
  options.context = context;
  options.prefill = prefill;
  options.progress = sys::Process::StandardErrIsDisplayed();
  if (!logitsOut.empty())
    options.firstWindowLogits = [](ArrayRef<float> logits, std::string &error) {
      auto write = [&](raw_ostream &os, std::string &) {
        os.write(reinterpret_cast<const char *>(logits.data()),
                 logits.size() * sizeof(float));
        return true;
      };
      if (sq::writeFileAtomically(logitsOut, write, error) ==
          sq::WriteStatus::Written)
        return true;
      error = logitsOut + ": cannot write: " + error;
      return false;
    };
  sq::PerplexityResult result;
  if (!sq::evaluatePerplexity(model, ids, source.path, options, result, error))
    return fail(error);
  sq::printPerplexity(outs(), result, json);
  return 0;
}

int main(int argc, char **argv) {
  sq::InitTool tool(
      argc, argv, category,
      "sq-run: run a model with SQ's reference executor, or a model.so "
      "compiled by sq-compile\n\n"
      "  sq-run model.onnx --ppl test.txt --tokenizer byte --seqlen 256 "
      "--json\n"
      "  sq-run model.onnx --tokenizer sp:tok.model --generate \"Once upon a "
      "time\" -n 40\n"
      "  sq-run llama-folder --generate \"Hello\" -n 8   # a Hugging Face "
      "folder: config.json + safetensors, its own tokenizer (hf:DIR)\n"
      "  sq-run --tokenizer hf:llama-3-folder --encode text.txt -o ids.bin\n");
  if (!encodeFile.empty() && !decodeFile.empty())
    return fail("choose one of --encode and --decode");
  if (!encodeFile.empty())
    return runEncode();
  if (!decodeFile.empty())
    return runDecode();
  if (!outputFile.empty() || addSpecialTokens || encodeLines)
    return fail("-o, --add-special-tokens and --lines go with --encode "
                "(-o also with --decode)");
  if (modelPath.empty())
    return fail("no model given (sq-run MODEL ...; --encode needs none)");
  bool ppl = !pplFile.empty() || !tokensFile.empty();
  bool gen = prompt.getNumOccurrences() > 0;
  if (int(ppl) + int(gen) + int(bench) != 1)
    return fail("choose one of --ppl FILE (or --tokens FILE), --generate "
                "PROMPT and --bench");
  std::unique_ptr<sq::Tokenizer> tok;
  std::string error;
  // A Hugging Face folder brings its tokenizer; it is needed only to turn
  // text into ids (--ppl FILE, --generate).
  std::string spec = tokenizerSpec;
  bool defaulted = false;
  if (spec.empty()) {
    spec = sq::defaultTokenizerSpec(modelPath);
    defaulted = !spec.empty();
  }
  bool needsText = gen || !pplFile.empty();
  if (!spec.empty() && !(tok = sq::Tokenizer::create(spec, error)) &&
      (!defaulted || needsText))
    return fail(defaulted ? error + " (the folder's tokenizer, used by "
                                    "default; pass --tokenizer SPEC)"
                          : error);
  std::unique_ptr<sq::ModelBackend> model =
      sq::openModel(modelPath, context, error);
  if (!model)
    return fail(error);
  if (tok && tok->vocabSize() > model->info().vocabSize)
    return fail("the tokenizer has " + Twine(tok->vocabSize()) +
                " tokens but the model only " + Twine(model->info().vocabSize));

  if (ppl)
    return runPerplexity(*model, tok.get());
  if (bench) {
    sq::BenchmarkOptions options;
    options.promptLength = promptLen;
    options.decodeTokens = numTokens;
    options.repeats = repeats;
    options.context = context;
    options.seed = seed;
    sq::BenchmarkResult result;
    if (!sq::benchmark(*model, options, result, error))
      return fail(error);
    sq::printBenchmark(outs(), result);
    return 0;
  }
  if (!tok)
    return fail("--generate needs --tokenizer (byte, sp:PATH or hf:DIR)");
  sq::GenerateOptions options;
  options.sampling.temperature = temperature;
  options.sampling.topP = topP;
  options.numTokens = numTokens;
  options.context = context;
  options.seed = seed;
  return sq::generate(*model, *tok, prompt, options, outs(), error)
             ? 0
             : fail(error);
}
