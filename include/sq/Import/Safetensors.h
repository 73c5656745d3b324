//===- Safetensors.h - safetensors files and Hugging Face shards -*- C++
//-*-===//
//
// A reader of the safetensors format (an 8-byte little-endian header length,
// a JSON header, then the raw tensor bytes) and of Hugging Face checkpoint
// folders (one model.safetensors, or shards listed by the weight_map of
// model.safetensors.index.json). Plain C++ over LLVM Support (no MLIR), so
// that the fuzz target and CPU-side tools stay light.
//
// Files are memory-mapped, never copied: a tensor's bytes are a view into the
// mapping, kept alive by a shared Mapping. Every header is validated fully
// before any tensor is used: the header length lies within the file, the
// JSON is well formed (and nested at most a few levels), every entry has a
// known dtype, a shape of non-negative dims and data_offsets [begin, end]
// with begin <= end within the data section, end - begin equals
// product(shape) * dtype size (without overflow), and no two tensors'
// ranges overlap; `__metadata__` (a string map) is allowed. Errors are one
// line, "FILE: where: what", and no input makes the reader crash (the fuzz
// target test/fuzz/FuzzSafetensors.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_SAFETENSORS_H
#define SQ_IMPORT_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sq {
namespace safetensors {

/// The element types of the safetensors format.
enum class DType : uint8_t {
  Bool,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

/// Bytes per element.
unsigned dtypeSize(DType dtype);
/// The format's spelling ("F32", "BF16", ...).
llvm::StringRef dtypeName(DType dtype);
/// F32, F16 or BF16: the types SQ imports as weights.
inline bool isImportedFloat(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  /// Byte range within the data section (after the header).
  uint64_t begin = 0, end = 0;

  int64_t numElements() const;
  /// "[64, 128]"
  std::string shapeStr() const;
};

/// A read-only mapping of a whole file (or, for parse(), a view of bytes
/// owned elsewhere). Shared by the tensors' views: whoever keeps a view
/// beyond the File keeps a shared_ptr<const Mapping>.
class Mapping {
public:
  /// Maps `path` read-only; null with `error` ("PATH: why").
  static std::shared_ptr<const Mapping> map(llvm::StringRef path,
                                            std::string &error);
  /// Does not own `bytes`.
  static std::shared_ptr<const Mapping> view(llvm::StringRef bytes);
  ~Mapping();
  Mapping(const Mapping &) = delete;
  Mapping &operator=(const Mapping &) = delete;

  llvm::StringRef bytes() const { return {data, size}; }
  /// Hints that the range will be read soon (madvise WILLNEED) / is no
  /// longer needed (its pages are dropped from this process; the file's
  /// page cache keeps them). No-ops for views.
  void willNeed(llvm::StringRef range) const;
  void release(llvm::StringRef range) const;

private:
  Mapping() = default;
  const char *data = nullptr;
  size_t size = 0;
  bool owned = false;
};

/// One safetensors file.
class File {
public:
  /// Maps and validates the file at `path`. Null with a one-line `error`.
  static std::unique_ptr<File> open(llvm::StringRef path, std::string &error);
  /// Validates `bytes` (a whole file, not copied; it must outlive the
  /// result) named `name` in errors.
  static std::unique_ptr<File> parse(llvm::StringRef bytes,
                                     llvm::StringRef name, std::string &error);

  llvm::StringRef path() const { return name; }
  const std::vector<Tensor> &tensors() const { return entries; }
  const Tensor *find(llvm::StringRef tensorName) const;
  /// The tensor's bytes (a view into the mapping).
  llvm::StringRef data(const Tensor &t) const;
  const std::shared_ptr<const Mapping> &mapping() const { return map; }
  /// The `__metadata__` entries.
  const std::vector<std::pair<std::string, std::string>> &metadata() const {
    return meta;
  }

private:
  File() = default;
  bool parseHeader(std::string &error);

  std::string name;
  std::shared_ptr<const Mapping> map;
  uint64_t dataStart = 0;
  std::vector<Tensor> entries;
  llvm::StringMap<size_t> byName;
  std::vector<std::pair<std::string, std::string>> meta;
};

/// A Hugging Face checkpoint folder's tensors: `model.safetensors`, or the
/// shards that `model.safetensors.index.json` lists.
class Checkpoint {
public:
  /// Opens the tensors of the folder `dir`. With an index, every shard it
  /// names must exist (plain file names inside `dir`), and every tensor it
  /// lists must be in its shard; a tensor in two shards is an error.
  static std::unique_ptr<Checkpoint> open(llvm::StringRef dir,
                                          std::string &error);

  struct Entry {
    const File *file = nullptr;
    const Tensor *tensor = nullptr;
  };
  /// Null when the checkpoint has no such tensor.
  const Entry *find(llvm::StringRef name) const;
  /// Every tensor, sorted by name.
  std::vector<llvm::StringRef> names() const;
  /// The file that lists the tensors (the index, or model.safetensors):
  /// where a missing tensor is reported.
  llvm::StringRef listing() const { return listingPath; }
  const std::vector<std::unique_ptr<File>> &files() const { return shards; }
  /// Bytes of all tensors.
  uint64_t totalBytes() const;

private:
  std::string listingPath;
  std::vector<std::unique_ptr<File>> shards;
  llvm::StringMap<Entry> byName;
};

/// Converts `count` elements of F32/F16/BF16 data (any alignment) to float.
void toFloat(llvm::StringRef bytes, DType dtype, float *out);

/// The index of the first NaN/Inf of F32/F16/BF16 data, or -1.
int64_t firstNonFinite(llvm::StringRef bytes, DType dtype);

} // namespace safetensors
} // namespace sq

#endif // SQ_IMPORT_SAFETENSORS_H
