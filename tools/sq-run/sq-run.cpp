//===- sq-run.cpp - perplexity and generation with the reference executor ===//
//
//   sq-run MODEL --ppl FILE --seqlen N [--max-windows K] [--stride S] [--json]
//   sq-run MODEL --generate "PROMPT" -n N [--temperature T --top-p P --seed S]
//
// MODEL is .onnx (imported on the fly), .mlir or .mlirbc, run by the
// reference executor, or a model.so compiled by sq-compile, run through its
// C API (include/sq/Runtime/sq_runtime.h).
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Exec/Executor.h"
#include "sq/Exec/Tokenizer.h"
#include "sq/Import/ONNX.h"
#include "sq/Runtime/sq_runtime.h"
#include "sq/Support/NestingDepth.h"
#include "sq/Support/ResourceBlobs.h"
#include "sq/Support/ToolSupport.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <random>

using namespace llvm;

static cl::OptionCategory category("sq-run options");
static cl::opt<std::string>
    modelPath(cl::Positional, cl::desc("<model.onnx|.mlir|.mlirbc|.so>"),
              cl::Required, cl::cat(category));
static cl::opt<std::string> tokenizerSpec(
    "tokenizer",
    cl::desc("How text becomes token ids: 'byte' (raw UTF-8 bytes) or "
             "'sp:PATH' (a SentencePiece .model)"),
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

/// A bound on --prompt-len and -n when the model's context is unknown, so
/// that a typo cannot ask for terabytes before anything runs.
constexpr int64_t kMaxTokens = int64_t(1) << 24;

/// An input that is a device or a pipe (/dev/zero) would be read without
/// end: true with `error` set for one (a missing file is left to the reader).
static bool notRegularFile(const std::string &path, std::string &error) {
  sys::fs::file_status status;
  if (sys::fs::status(path, status) || !sys::fs::exists(status) ||
      sys::fs::is_regular_file(status) || sys::fs::is_directory(status))
    return false;
  error = path + ": not a regular file";
  return true;
}

static int fail(const Twine &message) { return sq::fail("sq-run", message); }

/// NaN/Inf logits come from NaN/Inf weights (or an overflow): a perplexity
/// or a generation from them would be garbage, so they are an error.
static bool checkFinite(const std::vector<float> &logits, int64_t vocab,
                        std::string &error) {
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isfinite(logits[i])) {
      error = modelPath + ": the model computed a non-finite logit (" +
              (std::isnan(logits[i]) ? "NaN" : "Inf") + ") at position " +
              std::to_string(i / vocab) +
              (StringRef(modelPath).ends_with(".so")
                   ? ": its weights file may be damaged (sq-compile refuses "
                     "NaN/Inf weights; compile it again)"
                   : ": its weights may hold NaN/Inf (see sq-opt "
                     "--sq-weight-summary)");
      return false;
    }
  return true;
}

/// dlopen of a truncated shared library dies of SIGBUS (the loader maps
/// segments past the end of the file): check that the file holds what its
/// ELF headers declare first. Anything else dlopen reports itself.
static bool checkElfComplete(const std::string &path, std::string &error) {
  auto buffer = MemoryBuffer::getFile(path, /*IsText=*/false,
                                      /*RequiresNullTerminator=*/false);
  if (!buffer) {
    error = path + ": " + buffer.getError().message();
    return false;
  }
  StringRef data = (*buffer)->getBuffer();
  Elf64_Ehdr eh;
  if (data.size() < sizeof(eh) || !data.starts_with(ELFMAG) ||
      data[EI_CLASS] != ELFCLASS64)
    return true; // not a 64-bit ELF file: dlopen says so
  std::memcpy(&eh, data.data(), sizeof(eh));
  // Offsets first (their sums below cannot wrap then: counts are 16-bit).
  uint64_t need = std::max<uint64_t>(eh.e_phoff, eh.e_shoff);
  if (need <= data.size())
    need = std::max<uint64_t>(
        uint64_t(eh.e_phoff) + uint64_t(eh.e_phnum) * eh.e_phentsize,
        uint64_t(eh.e_shoff) + uint64_t(eh.e_shnum) * eh.e_shentsize);
  if (need <= data.size() && eh.e_phentsize == sizeof(Elf64_Phdr))
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
      Elf64_Phdr ph;
      std::memcpy(&ph, data.data() + eh.e_phoff + i * sizeof(ph), sizeof(ph));
      if (ph.p_type == PT_LOAD)
        need = std::max<uint64_t>(need, ph.p_offset + ph.p_filesz);
    }
  if (need > data.size()) {
    error = path + ": truncated: " + std::to_string(data.size()) +
            " bytes, but its ELF headers need " + std::to_string(need) +
            " (an incomplete copy?)";
    return false;
  }
  return true;
}

namespace {
/// What runs the model: the reference executor or a compiled model.so.
class Backend {
public:
  virtual ~Backend() = default;
  /// Logits of every position, [batch, seq, vocab], after the cached ones.
  virtual bool forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
                       std::vector<float> &logits, std::string &error) = 0;
  virtual void reset() = 0;
  const sq::ModelInfo &info() const { return modelInfo; }

protected:
  sq::ModelInfo modelInfo;
};

class ExecutorBackend : public Backend {
public:
  explicit ExecutorBackend(std::unique_ptr<sq::Executor> ex)
      : ex(std::move(ex)) {
    modelInfo = this->ex->info();
  }
  bool forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error) override {
    return ex->forward(tokens, batch, seq, logits, error) &&
           checkFinite(logits, modelInfo.vocabSize, error);
  }
  void reset() override { ex->reset(); }

private:
  std::unique_ptr<sq::Executor> ex;
};

/// A model.so through its C API, loaded with dlopen (RTLD_LOCAL: several
/// models can live in one process).
class CompiledBackend : public Backend {
public:
  static std::unique_ptr<CompiledBackend> open(const std::string &path,
                                               std::string &error) {
    std::unique_ptr<CompiledBackend> b(new CompiledBackend());
    std::string abs = path;
    if (abs.find('/') == std::string::npos)
      abs = "./" + abs; // dlopen searches the library path otherwise
    if (!checkElfComplete(path, error))
      return nullptr;
    b->lib = dlopen(abs.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) {
      const char *e = dlerror();
      error = path +
              ": cannot load the compiled model: " + (e ? e : "unknown error");
      return nullptr;
    }
#define SQ_BIND(name)                                                          \
  if (!(b->name =                                                              \
            reinterpret_cast<decltype(&::name)>(dlsym(b->lib, #name)))) {      \
    error = path + ": not a model compiled by sq-compile (no " #name ")";      \
    return nullptr;                                                            \
  }
    SQ_BIND(sq_model_open)
    SQ_BIND(sq_model_free)
    SQ_BIND(sq_model_get_config)
    SQ_BIND(sq_model_description)
    SQ_BIND(sq_context_create)
    SQ_BIND(sq_context_free)
    SQ_BIND(sq_context_reset)
    SQ_BIND(sq_forward)
    SQ_BIND(sq_error_message)
    SQ_BIND(sq_error_free)
#undef SQ_BIND
    sq_error *err = nullptr;
    b->model = b->sq_model_open(abs.c_str(), &err);
    if (!b->model)
      return error = b->take(err), nullptr;
    sq_model_config config;
    b->sq_model_get_config(b->model, &config);
    b->modelInfo.vocabSize = config.vocab_size;
    b->modelInfo.numLayers = config.num_layers;
    b->modelInfo.maxPositions = config.max_positions;
    return b;
  }
  ~CompiledBackend() override {
    if (ctx)
      sq_context_free(ctx);
    if (model)
      sq_model_free(model);
    if (lib)
      dlclose(lib);
  }
  const char *description() const { return sq_model_description(model); }
  /// The context's size: --context, else the model's, else 2048 tokens.
  void setContext(int64_t tokens) { contextTokens = tokens; }
  bool forward(ArrayRef<int64_t> tokens, int64_t batch, int64_t seq,
               std::vector<float> &logits, std::string &error) override {
    if (!ctx || batch > ctxBatch) {
      if (ctx)
        sq_context_free(ctx);
      sq_error *err = nullptr;
      int64_t n = contextTokens            ? contextTokens
                  : modelInfo.maxPositions ? modelInfo.maxPositions
                                           : 2048;
      ctx = sq_context_create(model, std::max(n, seq), batch, &err);
      if (!ctx)
        return error = take(err), false;
      ctxBatch = batch;
    }
    std::vector<int32_t> ids(tokens.begin(), tokens.end());
    logits.resize(size_t(batch) * seq * modelInfo.vocabSize);
    sq_error *err = nullptr;
    if (sq_forward(ctx, ids.data(), batch, seq, logits.data(), &err) != SQ_OK)
      return error = take(err), false;
    return checkFinite(logits, modelInfo.vocabSize, error);
  }
  void reset() override {
    if (ctx)
      sq_context_reset(ctx);
  }

private:
  CompiledBackend() = default;
  std::string take(sq_error *err) {
    std::string m = err ? sq_error_message(err) : "unknown error";
    if (err)
      sq_error_free(err);
    return m;
  }
  void *lib = nullptr;
  sq_model *model = nullptr;
  sq_context *ctx = nullptr;
  int64_t ctxBatch = 0, contextTokens = 0;
#define SQ_FN(name) decltype(&::name) name = nullptr;
  SQ_FN(sq_model_open)
  SQ_FN(sq_model_free)
  SQ_FN(sq_model_get_config)
  SQ_FN(sq_model_description)
  SQ_FN(sq_context_create)
  SQ_FN(sq_context_free)
  SQ_FN(sq_context_reset)
  SQ_FN(sq_forward)
  SQ_FN(sq_error_message)
  SQ_FN(sq_error_free)
#undef SQ_FN
};
} // namespace

static mlir::OwningOpRef<mlir::ModuleOp> loadModel(mlir::MLIRContext &ctx,
                                                   std::string &error) {
  StringRef path = modelPath;
  ctx.loadDialect<sq::SQDialect, mlir::func::FuncDialect>();
  if (path.ends_with(".onnx"))
    return sq::importOnnxModel(path, &ctx, error);
  if (!path.ends_with(".mlir") && !path.ends_with(".mlirbc")) {
    error = "unknown model type '" + path.str() +
            "': expected .onnx, .mlir, .mlirbc or .so";
    return nullptr;
  }
  std::string diag;
  mlir::ScopedDiagnosticHandler handler(&ctx, [&](mlir::Diagnostic &d) {
    if (diag.empty()) {
      llvm::raw_string_ostream os(diag);
      if (auto loc = dyn_cast<mlir::FileLineColLoc>(d.getLocation()))
        os << loc.getFilename().getValue() << ":" << loc.getLine() << ":"
           << loc.getColumn() << ": ";
      os << d.str();
    }
    return mlir::success();
  });
  if (notRegularFile(path.str(), error))
    return nullptr;
  if (auto text = MemoryBuffer::getFile(path)) {
    error = sq::checkNestingDepth((*text)->getBuffer(), path,
                                  /*mlirLayout=*/false);
    if (!error.empty())
      return nullptr;
  }
  auto module = sq::parseModuleFile(path, &ctx);
  if (!module)
    error = diag.empty() ? "cannot read '" + path.str() + "'" : diag;
  return module;
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
struct Progress {
  bool enabled = sys::Process::StandardErrIsDisplayed();
  std::chrono::steady_clock::time_point start =
      std::chrono::steady_clock::now();
  void update(int64_t done, int64_t total, int64_t tokens) {
    if (!enabled)
      return;
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    double eta = done ? s / done * (total - done) : 0;
    errs() << format("\r[%lld/%lld windows] %.0f tok/s, ETA %dm%02ds   ",
                     (long long)done, (long long)total,
                     s > 0 ? tokens / s : 0.0, int(eta) / 60, int(eta) % 60);
  }
  void finish() {
    if (enabled)
      errs() << "\n";
  }
};

static double logSoftmaxAt(const float *logits, int64_t vocab, int64_t target) {
  float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i)
    sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

static int runPerplexity(Backend &ex, const sq::Tokenizer *tok) {
  std::vector<int64_t> ids;
  std::string source;
  std::string badInput;
  if (notRegularFile(tokensFile.empty() ? pplFile : tokensFile, badInput))
    return fail(badInput);
  if (!tokensFile.empty()) {
    auto buffer = MemoryBuffer::getFile(tokensFile);
    if (!buffer)
      return fail(tokensFile + ": " + buffer.getError().message());
    size_t n = (*buffer)->getBufferSize();
    if (n % 4)
      return fail(tokensFile + ": size " + Twine(n) +
                  " is not a multiple of 4 (expected int32 token ids)");
    ids.resize(n / 4);
    for (size_t i = 0; i < n / 4; ++i) {
      int32_t v;
      std::memcpy(&v, (*buffer)->getBufferStart() + 4 * i, 4);
      ids[i] = v;
    }
    source = tokensFile;
  } else {
    if (!tok)
      return fail("--ppl needs --tokenizer (byte or sp:PATH) to turn '" +
                  pplFile + "' into tokens");
    auto buffer = MemoryBuffer::getFile(pplFile, /*IsText=*/false);
    if (!buffer)
      return fail(pplFile + ": " + buffer.getError().message());
    ids = tok->encode((*buffer)->getBuffer());
    source = pplFile;
  }
  if (ids.empty())
    return fail(source + ": no tokens (empty text)");
  if (seqlen < 2)
    return fail("--seqlen must be at least 2 (got " + Twine(seqlen) + ")");
  int64_t ctx = context ? context : ex.info().maxPositions;
  if (ctx && seqlen > ctx)
    return fail("--seqlen " + Twine(seqlen) + " is larger than the model's " +
                "context of " + Twine(ctx) + " tokens");
  int64_t step = stride ? stride : seqlen;
  if (step <= 0 || step > seqlen)
    return fail("--stride must be in [1, seqlen]");
  if (static_cast<int64_t>(ids.size()) < seqlen)
    return fail(source + " has " + Twine(ids.size()) +
                " tokens, fewer than one window of --seqlen " + Twine(seqlen));
  int64_t windows = (static_cast<int64_t>(ids.size()) - seqlen) / step + 1;
  if (maxWindows > 0)
    windows = std::min<int64_t>(windows, maxWindows);
  int64_t vocab = ex.info().vocabSize;

  Progress progress;
  auto start = std::chrono::steady_clock::now();
  double nll = 0;
  int64_t predicted = 0;
  std::vector<float> logits;
  std::string error;
  int64_t batch = std::max<int64_t>(1, batchSize);
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    int64_t nb = std::min(batch, windows - w0);
    std::vector<int64_t> tokens;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t *begin = ids.data() + (w0 + b) * step;
      tokens.insert(tokens.end(), begin, begin + seqlen);
    }
    ex.reset();
    if (!ex.forward(tokens, nb, seqlen, logits, error))
      return fail(error);
    if (w0 == 0 && !logitsOut.empty() &&
        sq::writeFileAtomically(
            logitsOut,
            [&](raw_ostream &os, std::string &) {
              os.write(reinterpret_cast<const char *>(logits.data()),
                       seqlen * vocab * sizeof(float));
              return true;
            },
            error) != sq::WriteStatus::Written)
      return fail(logitsOut + ": cannot write: " + error);
    for (int64_t b = 0; b < nb; ++b) {
      // Later overlapping windows only score their last `step` tokens.
      int64_t first = (w0 + b == 0) ? 0 : seqlen - 1 - step;
      for (int64_t i = std::max<int64_t>(first, 0); i + 1 < seqlen; ++i) {
        nll -= logSoftmaxAt(logits.data() + (b * seqlen + i) * vocab, vocab,
                            tokens[b * seqlen + i + 1]);
        ++predicted;
      }
    }
    progress.update(w0 + nb, windows, (w0 + nb) * seqlen);
  }
  progress.finish();
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  double mean = nll / predicted, ppl = std::exp(mean);
  if (json)
    outs() << format(
        "{\"ppl\": %.6f, \"nll\": %.6f, \"tokens\": %lld, "
        "\"windows\": %lld, \"seqlen\": %lld, \"seconds\": %.3f}\n",
        ppl, mean, (long long)predicted, (long long)windows,
        (long long)seqlen.getValue(), seconds);
  else
    outs() << format("perplexity %.4f (mean NLL %.6f over %lld predicted "
                     "tokens, %lld windows of %lld, %.1f s)\n",
                     ppl, mean, (long long)predicted, (long long)windows,
                     (long long)seqlen.getValue(), seconds);
  return 0;
}

static int64_t pick(const float *logits, int64_t vocab, std::mt19937 &rng) {
  if (temperature <= 0)
    return std::max_element(logits, logits + vocab) - logits;
  std::vector<std::pair<double, int64_t>> probs(vocab);
  float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    double p = std::exp((logits[i] - mx) / temperature);
    probs[i] = {p, i};
    sum += p;
  }
  std::sort(probs.begin(), probs.end(),
            [](auto &a, auto &b) { return a.first > b.first; });
  double keep = 0;
  size_t n = 0;
  while (n < probs.size() && keep < topP * sum)
    keep += probs[n++].first;
  std::uniform_real_distribution<double> u(0.0, keep);
  double r = u(rng);
  for (size_t i = 0; i < n; ++i) {
    r -= probs[i].first;
    if (r <= 0)
      return probs[i].second;
  }
  return probs[n - 1].second;
}

static int runGenerate(Backend &ex, const sq::Tokenizer *tok) {
  if (!tok)
    return fail("--generate needs --tokenizer (byte or sp:PATH)");
  if (numTokens < 0 || numTokens > kMaxTokens)
    return fail("-n must be in [0, " + Twine(kMaxTokens) + "]");
  std::vector<int64_t> ids;
  if (tok->bos() >= 0)
    ids.push_back(tok->bos());
  std::vector<int64_t> promptIds = tok->encode(prompt);
  ids.insert(ids.end(), promptIds.begin(), promptIds.end());
  if (ids.empty())
    return fail("the prompt is empty and the tokenizer has no BOS token");
  int64_t ctx = context ? context : ex.info().maxPositions;
  if (ctx && static_cast<int64_t>(ids.size()) + numTokens > ctx)
    return fail("prompt and -n need " + Twine(ids.size() + numTokens) +
                " positions, more than the model's context of " + Twine(ctx));
  int64_t vocab = ex.info().vocabSize;
  std::mt19937 rng(seed);
  std::vector<float> logits;
  std::string error;
  ex.reset();
  if (!ex.forward(ids, 1, ids.size(), logits, error))
    return fail(error);
  size_t textStart = tok->bos() >= 0 ? 1 : 0;
  std::string shown = tok->decode(ArrayRef<int64_t>(ids).drop_front(textStart));
  outs() << shown;
  outs().flush();
  const float *last = logits.data() + (ids.size() - 1) * vocab;
  for (int64_t i = 0; i < numTokens; ++i) {
    int64_t next = pick(last, vocab, rng);
    if (next == tok->eos())
      break;
    ids.push_back(next);
    std::string text =
        tok->decode(ArrayRef<int64_t>(ids).drop_front(textStart));
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0)
      outs() << text.substr(shown.size());
    shown = text;
    outs().flush();
    if (i + 1 == numTokens)
      break;
    if (!ex.forward({next}, 1, 1, logits, error))
      return fail(error);
    last = logits.data();
  }
  outs() << "\n";
  return 0;
}

static int runBench(Backend &ex) {
  int64_t vocab = ex.info().vocabSize;
  if (promptLen < 1 || numTokens < 1 || repeats < 1)
    return fail("--bench needs --prompt-len, -n and --repeats >= 1");
  if (promptLen > kMaxTokens || numTokens > kMaxTokens)
    return fail("--prompt-len and -n must be at most " + Twine(kMaxTokens) +
                " tokens");
  int64_t ctx = context ? context : ex.info().maxPositions;
  if (ctx && promptLen + numTokens > ctx)
    return fail("--prompt-len + -n exceed the model's context of " +
                Twine(ctx));
  std::mt19937 rng(seed);
  std::vector<int64_t> prompt(promptLen);
  for (int64_t &t : prompt)
    t = std::uniform_int_distribution<int64_t>(0, vocab - 1)(rng);
  std::vector<double> prefillTimes, decodeTimes;
  std::vector<float> logits;
  std::string error;
  for (int64_t r = 0; r < repeats; ++r) {
    ex.reset();
    auto t0 = std::chrono::steady_clock::now();
    if (!ex.forward(prompt, 1, promptLen, logits, error))
      return fail(error);
    auto t1 = std::chrono::steady_clock::now();
    int64_t next = std::max_element(logits.end() - vocab, logits.end()) -
                   logits.end() + vocab;
    for (int64_t i = 0; i < numTokens; ++i) {
      if (!ex.forward({next}, 1, 1, logits, error))
        return fail(error);
      next = std::max_element(logits.begin(), logits.end()) - logits.begin();
    }
    auto t2 = std::chrono::steady_clock::now();
    prefillTimes.push_back(std::chrono::duration<double>(t1 - t0).count());
    decodeTimes.push_back(std::chrono::duration<double>(t2 - t1).count());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double p = median(prefillTimes), d = median(decodeTimes);
  outs() << format("{\"prefill_tokens\": %lld, \"prefill_seconds\": %.6f, "
                   "\"prefill_tokens_per_s\": %.1f, \"decode_tokens\": %lld, "
                   "\"decode_seconds\": %.6f, \"decode_tokens_per_s\": %.2f}\n",
                   (long long)promptLen.getValue(), p, promptLen / p,
                   (long long)numTokens.getValue(), d, numTokens / d);
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
      "time\" -n 40\n");
  bool ppl = !pplFile.empty() || !tokensFile.empty();
  bool gen = prompt.getNumOccurrences() > 0;
  if (int(ppl) + int(gen) + int(bench) != 1)
    return fail("choose one of --ppl FILE (or --tokens FILE), --generate "
                "PROMPT and --bench");
  std::unique_ptr<sq::Tokenizer> tok;
  std::string error;
  if (!tokenizerSpec.empty() &&
      !(tok = sq::Tokenizer::create(tokenizerSpec, error)))
    return fail(error);

  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module; // outlives the executor
  std::unique_ptr<Backend> ex;
  if (StringRef(modelPath).ends_with(".so")) {
    if (!sys::fs::exists(modelPath))
      return fail(modelPath + ": no such file");
    auto compiled = CompiledBackend::open(modelPath, error);
    if (!compiled)
      return fail(error);
    compiled->setContext(context);
    ex = std::move(compiled);
  } else {
    module = loadModel(ctx, error);
    if (!module)
      return fail(error);
    auto executor = sq::Executor::create(*module, error);
    if (!executor)
      return fail(modelPath + ": " + error);
    ex = std::make_unique<ExecutorBackend>(std::move(executor));
  }
  if (tok && tok->vocabSize() > ex->info().vocabSize)
    return fail("the tokenizer has " + Twine(tok->vocabSize()) +
                " tokens but the model only " + Twine(ex->info().vocabSize));
  if (bench)
    return runBench(*ex);
  return ppl ? runPerplexity(*ex, tok.get()) : runGenerate(*ex, tok.get());
}
