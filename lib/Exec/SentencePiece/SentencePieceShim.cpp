//===- SentencePieceShim.cpp - C API over libsentencepiece ----------------===//
//
// Debian's libsentencepiece embeds its own protobuf (3.14) while SQ's ONNX
// reader uses the system's (3.21): both in one symbol scope crash at start.
// This shim is built as its own shared library and loaded by Tokenizer.cpp
// with dlmopen(LM_ID_NEWLM) into a link namespace of its own, so
// sentencepiece binds to its own protobuf and never meets the other one.
//
//===----------------------------------------------------------------------===//

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

__attribute__((visibility("default"))) void *
sq_spm_load(const char *path, char *error, size_t errorSize) {
  auto *sp = new sentencepiece::SentencePieceProcessor();
  auto status = sp->Load(path);
  if (!status.ok()) {
    std::strncpy(error, status.ToString().c_str(), errorSize - 1);
    error[errorSize - 1] = '\0';
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void sq_spm_destroy(void *handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor *>(handle);
}

/// Returns a malloc'ed array of `*count` ids.
__attribute__((visibility("default"))) int *
sq_spm_encode(void *handle, const char *text, size_t length, size_t *count) {
  std::vector<int> ids;
  static_cast<sentencepiece::SentencePieceProcessor *>(handle)
      ->Encode(std::string(text, length), &ids)
      .IgnoreError();
  *count = ids.size();
  int *out = static_cast<int *>(std::malloc((ids.size() + 1) * sizeof(int)));
  std::memcpy(out, ids.data(), ids.size() * sizeof(int));
  return out;
}

/// Returns a malloc'ed NUL-terminated string.
__attribute__((visibility("default"))) char *
sq_spm_decode(void *handle, const int *ids, size_t count) {
  std::string text;
  static_cast<sentencepiece::SentencePieceProcessor *>(handle)
      ->Decode(std::vector<int>(ids, ids + count), &text)
      .IgnoreError();
  char *out = static_cast<char *>(std::malloc(text.size() + 1));
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

__attribute__((visibility("default"))) void sq_spm_free(void *p) {
  std::free(p);
}

__attribute__((visibility("default"))) int sq_spm_info(void *handle, int what) {
  auto *sp = static_cast<sentencepiece::SentencePieceProcessor *>(handle);
  return what == 0   ? sp->bos_id()
         : what == 1 ? sp->eos_id()
                     : sp->GetPieceSize();
}
}
