//===- Tokenizer.cpp - byte, SentencePiece and tokenizer.json tokenizers
//---===//

#include "sq/Exec/Tokenizer.h"
#include "HFTokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <dlfcn.h>
#include <type_traits>

using namespace sq;

Tokenizer::~Tokenizer() = default;

std::vector<int64_t>
Tokenizer::encodeWithSpecialTokens(llvm::StringRef text) const {
  std::vector<int64_t> ids;
  if (bos() >= 0)
    ids.push_back(bos());
  std::vector<int64_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

namespace {

class ByteTokenizer : public Tokenizer {
public:
  std::vector<int64_t> encode(llvm::StringRef text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (unsigned char c : text)
      ids.push_back(c);
    return ids;
  }
  std::string decode(llvm::ArrayRef<int64_t> ids) const override {
    std::string text;
    for (int64_t id : ids)
      if (id >= 0 && id < 256)
        text.push_back(static_cast<char>(id));
    return text;
  }
  int64_t bos() const override { return -1; }
  int64_t eos() const override { return -1; }
  int64_t vocabSize() const override { return 256; }
};

/// libsentencepiece through the shim library (see SentencePieceShim.cpp).
struct SpmApi {
  void *(*load)(const char *, char *, size_t);
  void (*destroy)(void *);
  int *(*encode)(void *, const char *, size_t, size_t *);
  char *(*decode)(void *, const int *, size_t);
  void (*release)(void *);
  int (*info)(void *, int);

  static const SpmApi *get(std::string &error) {
    static SpmApi api;
    static std::string loadError;
    static bool loaded = [] {
      // A link namespace of its own: libsentencepiece and the protobuf 3.14
      // it embeds never meet the system protobuf of the ONNX reader. (Not
      // RTLD_DEEPBIND, which the sanitizer runtimes refuse,
      // github.com/google/sanitizers/issues/611; the shim is built without
      // instrumentation, see SentencePiece/CMakeLists.txt.)
      void *lib =
          dlmopen(LM_ID_NEWLM, SQ_SENTENCEPIECE_SHIM, RTLD_NOW | RTLD_LOCAL);
      if (!lib) {
        loadError =
            std::string("cannot load the SentencePiece library: ") + dlerror();
        return false;
      }
      auto bind = [lib](auto &fn, const char *name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
            dlsym(lib, name));
      };
      bind(api.load, "sq_spm_load");
      bind(api.destroy, "sq_spm_destroy");
      bind(api.encode, "sq_spm_encode");
      bind(api.decode, "sq_spm_decode");
      bind(api.release, "sq_spm_free");
      bind(api.info, "sq_spm_info");
      if (!api.load || !api.destroy || !api.encode || !api.decode ||
          !api.release || !api.info) {
        loadError = "the SentencePiece shim library is incomplete";
        return false;
      }
      return true;
    }();
    if (!loaded) {
      error = loadError;
      return nullptr;
    }
    return &api;
  }
};

class SentencePieceTokenizer : public Tokenizer {
public:
  SentencePieceTokenizer(const SpmApi *api, void *handle)
      : api(api), handle(handle) {}
  ~SentencePieceTokenizer() override { api->destroy(handle); }
  std::vector<int64_t> encode(llvm::StringRef text) const override {
    size_t n = 0;
    int *ids = api->encode(handle, text.data(), text.size(), &n);
    std::vector<int64_t> out(ids, ids + n);
    api->release(ids);
    return out;
  }
  std::string decode(llvm::ArrayRef<int64_t> ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    char *text = api->decode(handle, v.data(), v.size());
    std::string out(text);
    api->release(text);
    return out;
  }
  int64_t bos() const override { return api->info(handle, 0); }
  int64_t eos() const override { return api->info(handle, 1); }
  int64_t vocabSize() const override { return api->info(handle, 2); }

private:
  const SpmApi *api;
  void *handle;
};

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::create(llvm::StringRef spec,
                                             std::string &error) {
  if (spec == "byte")
    return std::make_unique<ByteTokenizer>();
  if (spec.consume_front("sp:")) {
    if (!llvm::sys::fs::exists(spec)) {
      error = "tokenizer model '" + spec.str() + "' does not exist";
      return nullptr;
    }
    const SpmApi *api = SpmApi::get(error);
    if (!api)
      return nullptr;
    char message[512] = {0};
    void *handle =
        api->load(std::string(spec).c_str(), message, sizeof(message));
    if (!handle) {
      // SentencePiece says "Internal: <source file>(<line>) [<C++ expr>]"
      // for a file that is not its protobuf: say that instead.
      llvm::StringRef why = llvm::StringRef(message).trim();
      error = "cannot load SentencePiece model '" + spec.str() + "': " +
              (why.contains("ParseFromArray")
                   ? std::string("not a SentencePiece model (its protobuf "
                                 "does not parse)")
                   : why.str());
      return nullptr;
    }
    return std::make_unique<SentencePieceTokenizer>(api, handle);
  }
  if (spec.consume_front("hf:")) {
    if (spec.empty()) {
      error = "tokenizer 'hf:' needs a directory (hf:DIR, with "
              "DIR/tokenizer.json) or a tokenizer.json file";
      return nullptr;
    }
    return createHFTokenizer(spec, error);
  }
  error = "unknown tokenizer '" + spec.str() +
          "': use 'byte', 'sp:PATH' (a SentencePiece .model) or 'hf:DIR' (a "
          "Hugging Face tokenizer.json)";
  return nullptr;
}
