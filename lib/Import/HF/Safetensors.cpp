//===- Safetensors.cpp - safetensors files and Hugging Face shards --------===//

#include "sq/Import/Safetensors.h"

#include "sq/Numerics/Float16.h"
#include "sq/Support/BoundedJSON.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace llvm;

namespace sq {
namespace safetensors {

namespace {
struct DTypeInfo {
  DType dtype;
  const char *name;
  unsigned size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::Bool, "BOOL", 1},       {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},           {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I16, "I16", 2},         {DType::U16, "U16", 2},
    {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::I32, "I32", 4},         {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},         {DType::F64, "F64", 8},
    {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
};

/// The safetensors library's own limit on the header (100 MB).
constexpr uint64_t kMaxHeader = 100000000;
} // namespace

unsigned dtypeSize(DType dtype) {
  for (const DTypeInfo &d : kDTypes)
    if (d.dtype == dtype)
      return d.size;
  return 1;
}

StringRef dtypeName(DType dtype) {
  for (const DTypeInfo &d : kDTypes)
    if (d.dtype == dtype)
      return d.name;
  return "?";
}

int64_t Tensor::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d; // validated not to overflow when the header was read
  return n;
}

std::string Tensor::shapeStr() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

//===----------------------------------------------------------------------===//
// Mapping
//===----------------------------------------------------------------------===//

std::shared_ptr<const Mapping> Mapping::map(StringRef path,
                                            std::string &error) {
  std::string p = path.str();
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = p + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    error = p + ": not a regular file";
    return nullptr;
  }
  std::shared_ptr<Mapping> m(new Mapping());
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    void *addr = mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      ::close(fd);
      error = p + ": cannot map: " + std::strerror(errno);
      return nullptr;
    }
    m->data = static_cast<const char *>(addr);
    m->owned = true;
  }
  ::close(fd);
  return m;
}

std::shared_ptr<const Mapping> Mapping::view(StringRef bytes) {
  std::shared_ptr<Mapping> m(new Mapping());
  m->data = bytes.data();
  m->size = bytes.size();
  return m;
}

Mapping::~Mapping() {
  if (owned && data)
    munmap(const_cast<char *>(data), size);
}

static void adviseRange(const char *base, size_t size, StringRef range,
                        int advice) {
  if (range.empty() || range.data() < base ||
      range.data() + range.size() > base + size)
    return;
  uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t b = reinterpret_cast<uintptr_t>(range.data());
  uintptr_t e = b + range.size();
  if (advice == MADV_DONTNEED) { // whole pages of this range only
    b = (b + page - 1) & ~(page - 1);
    e &= ~(page - 1);
  } else {
    b &= ~(page - 1);
  }
  if (e > b)
    madvise(reinterpret_cast<void *>(b), e - b, advice);
}

void Mapping::willNeed(StringRef range) const {
  if (owned)
    adviseRange(data, size, range, MADV_WILLNEED);
}

void Mapping::release(StringRef range) const {
  if (owned)
    adviseRange(data, size, range, MADV_DONTNEED);
}

//===----------------------------------------------------------------------===//
// File
//===----------------------------------------------------------------------===//

std::unique_ptr<File> File::open(StringRef path, std::string &error) {
  std::shared_ptr<const Mapping> map = Mapping::map(path, error);
  if (!map)
    return nullptr;
  std::unique_ptr<File> f(new File());
  f->name = path.str();
  f->map = std::move(map);
  if (!f->parseHeader(error))
    return nullptr;
  return f;
}

std::unique_ptr<File> File::parse(StringRef bytes, StringRef name,
                                  std::string &error) {
  std::unique_ptr<File> f(new File());
  f->name = name.str();
  f->map = Mapping::view(bytes);
  if (!f->parseHeader(error))
    return nullptr;
  return f;
}

const Tensor *File::find(StringRef tensorName) const {
  auto it = byName.find(tensorName);
  return it == byName.end() ? nullptr : &entries[it->second];
}

StringRef File::data(const Tensor &t) const {
  return map->bytes().substr(dataStart + t.begin, t.end - t.begin);
}

bool File::parseHeader(std::string &error) {
  StringRef bytes = map->bytes();
  auto fail = [&](const Twine &what) {
    error = (name + ": " + what).str();
    return false;
  };
  if (bytes.size() < 8)
    return fail("header: the file has " + Twine(bytes.size()) +
                " bytes, fewer than the 8-byte header length (not "
                "safetensors, or truncated)");
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i)
    len |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  if (len > bytes.size() - 8)
    return fail("header: its length " + Twine(len) +
                " runs past the end of the file (" + Twine(bytes.size()) +
                " bytes; not safetensors, or truncated)");
  if (len > kMaxHeader)
    return fail("header: its length " + Twine(len) +
                " is above the format's limit of 100 MB");
  if (len < 2)
    return fail("header: its length " + Twine(len) +
                " is too short for a JSON object");
  dataStart = 8 + len;
  uint64_t dataSize = bytes.size() - dataStart;
  auto json = parseBoundedJSON(bytes.substr(8, len), 8);
  if (!json) {
    std::string why = toString(json.takeError());
    return fail("header: invalid JSON (" + why + ")");
  }
  const json::Object *obj = json->getAsObject();
  if (!obj)
    return fail("header: not a JSON object");
  entries.reserve(obj->size());
  for (const auto &[key, value] : *obj) {
    if (key == "__metadata__") {
      const json::Object *m = value.getAsObject();
      if (!m)
        return fail("header: __metadata__ is not an object");
      for (const auto &[mk, mv] : *m) {
        std::optional<StringRef> s = mv.getAsString();
        if (!s)
          return fail("header: __metadata__ entry '" + StringRef(mk) +
                      "' is not a string");
        meta.emplace_back(mk.str(), s->str());
      }
      continue;
    }
    StringRef keyName = key;
    auto tfail = [&](const Twine &what) {
      return fail("tensor '" + keyName + "': " + what);
    };
    const json::Object *t = value.getAsObject();
    if (!t)
      return tfail("not an object with dtype, shape and data_offsets");
    for (const auto &[field, v] : *t)
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        return tfail("unknown field '" + StringRef(field) +
                     "' (expected dtype, shape, data_offsets)");
    std::optional<StringRef> dtype = t->getString("dtype");
    const json::Array *shape = t->getArray("shape");
    const json::Array *offsets = t->getArray("data_offsets");
    if (!dtype)
      return tfail("no dtype string");
    if (!shape)
      return tfail("no shape array");
    if (!offsets)
      return tfail("no data_offsets array");
    Tensor tensor;
    tensor.name = key.str();
    const DTypeInfo *info = nullptr;
    for (const DTypeInfo &d : kDTypes)
      if (*dtype == d.name)
        info = &d;
    if (!info)
      return tfail("unknown dtype '" + *dtype + "'");
    tensor.dtype = info->dtype;
    uint64_t bytesNeeded = info->size;
    for (const json::Value &d : *shape) {
      std::optional<int64_t> dim = d.getAsInteger();
      if (!dim || *dim < 0)
        return tfail("shape entries must be non-negative integers");
      if (__builtin_mul_overflow(bytesNeeded, uint64_t(*dim), &bytesNeeded) ||
          bytesNeeded > (uint64_t(1) << 62))
        return tfail("shape " + Twine(tensor.shapeStr()) +
                     "... is absurdly large");
      tensor.shape.push_back(*dim);
    }
    if (offsets->size() != 2)
      return tfail("data_offsets must be [begin, end]");
    std::optional<int64_t> b = (*offsets)[0].getAsInteger(),
                           e = (*offsets)[1].getAsInteger();
    if (!b || !e || *b < 0 || *e < 0)
      return tfail("data_offsets must be two non-negative integers");
    tensor.begin = uint64_t(*b);
    tensor.end = uint64_t(*e);
    if (tensor.begin > tensor.end)
      return tfail("data_offsets [" + Twine(tensor.begin) + ", " +
                   Twine(tensor.end) + "] begin after they end");
    if (tensor.end > dataSize)
      return tfail("data_offsets [" + Twine(tensor.begin) + ", " +
                   Twine(tensor.end) + "] run past the end of the data (" +
                   Twine(dataSize) + " bytes after the header)");
    if (tensor.end - tensor.begin != bytesNeeded)
      return tfail(
          "data_offsets [" + Twine(tensor.begin) + ", " + Twine(tensor.end) +
          "] hold " + Twine(tensor.end - tensor.begin) + " bytes but shape " +
          tensor.shapeStr() + " of " + *dtype + " needs " + Twine(bytesNeeded));
    byName[tensor.name] = entries.size();
    entries.push_back(std::move(tensor));
  }
  // No two tensors may share bytes.
  std::vector<size_t> order;
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].end > entries[i].begin)
      order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return entries[a].begin < entries[b].begin;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const Tensor &prev = entries[order[i - 1]], &cur = entries[order[i]];
    if (cur.begin < prev.end)
      return fail("tensor '" + cur.name + "': data_offsets [" +
                  Twine(cur.begin) + ", " + Twine(cur.end) +
                  "] overlap those of '" + prev.name + "' [" +
                  Twine(prev.begin) + ", " + Twine(prev.end) + "]");
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Checkpoint
//===----------------------------------------------------------------------===//

const Checkpoint::Entry *Checkpoint::find(StringRef name) const {
  auto it = byName.find(name);
  return it == byName.end() ? nullptr : &it->second;
}

std::vector<StringRef> Checkpoint::names() const {
  std::vector<StringRef> out;
  for (const auto &e : byName)
    out.push_back(e.getKey());
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t Checkpoint::totalBytes() const {
  uint64_t n = 0;
  for (const auto &e : byName)
    n += e.second.tensor->end - e.second.tensor->begin;
  return n;
}

std::unique_ptr<Checkpoint> Checkpoint::open(StringRef dir,
                                             std::string &error) {
  auto ck = std::make_unique<Checkpoint>();
  SmallString<256> index(dir), single(dir);
  sys::path::append(index, "model.safetensors.index.json");
  sys::path::append(single, "model.safetensors");

  auto addFile = [&](std::unique_ptr<File> f) -> bool {
    for (const Tensor &t : f->tensors()) {
      auto [it, inserted] = ck->byName.try_emplace(t.name, Entry{f.get(), &t});
      if (!inserted) {
        error = f->path().str() + ": tensor '" + t.name + "': also in '" +
                it->second.file->path().str() + "'";
        return false;
      }
    }
    ck->shards.push_back(std::move(f));
    return true;
  };

  if (!sys::fs::exists(index)) {
    if (!sys::fs::exists(single)) {
      error = dir.str() +
              ": no model.safetensors or model.safetensors.index.json (SQ "
              "reads Hugging Face checkpoints in the safetensors format; "
              "convert pytorch_model.bin files first)";
      return nullptr;
    }
    ck->listingPath = std::string(single);
    std::unique_ptr<File> f = File::open(single, error);
    if (!f || !addFile(std::move(f)))
      return nullptr;
    return ck;
  }

  ck->listingPath = std::string(index);
  std::string where = std::string(index);
  auto buffer = MemoryBuffer::getFile(index, /*IsText=*/false,
                                      /*RequiresNullTerminator=*/false);
  if (!buffer) {
    error = where + ": cannot read: " + buffer.getError().message();
    return nullptr;
  }
  if ((*buffer)->getBufferSize() > kMaxHeader) {
    error = where + ": larger than 100 MB; not an index";
    return nullptr;
  }
  auto json = parseBoundedJSON((*buffer)->getBuffer(), 16);
  if (!json) {
    error = where + ": invalid JSON (" + toString(json.takeError()) + ")";
    return nullptr;
  }
  const json::Object *obj = json->getAsObject();
  const json::Object *map = obj ? obj->getObject("weight_map") : nullptr;
  if (!map) {
    error = where + ": weight_map: missing (expected an object mapping "
                    "tensor names to shard files)";
    return nullptr;
  }
  // Shards in the order they first appear, each opened once.
  std::vector<std::pair<std::string, std::string>> listed; // tensor, shard
  std::vector<std::string> shardNames;
  StringMap<size_t> shardIndex;
  for (const auto &[tensor, v] : *map) {
    std::optional<StringRef> shard = v.getAsString();
    if (!shard) {
      error = where + ": weight_map: tensor '" + tensor.str() +
              "': the shard is not a string";
      return nullptr;
    }
    // A plain file name inside the folder (a snapshot's symbolic links
    // into the Hugging Face cache are fine).
    if (shard->empty() || shard->contains('/') || shard->contains('\\') ||
        *shard == "." || *shard == "..") {
      error = where + ": weight_map: tensor '" + tensor.str() + "': shard '" +
              shard->str() + "' is not a file name in the folder";
      return nullptr;
    }
    listed.emplace_back(tensor.str(), shard->str());
    if (shardIndex.try_emplace(*shard, shardNames.size()).second)
      shardNames.push_back(shard->str());
  }
  std::sort(listed.begin(), listed.end());
  for (const std::string &s : shardNames) {
    SmallString<256> path(dir);
    sys::path::append(path, s);
    if (!sys::fs::exists(path)) {
      std::string example;
      for (const auto &[t, sh] : listed)
        if (sh == s) {
          example = t;
          break;
        }
      error = where + ": weight_map: shard '" + s + "' (of tensor '" + example +
              "' and others) does not exist";
      return nullptr;
    }
    std::unique_ptr<File> f = File::open(path, error);
    if (!f || !addFile(std::move(f)))
      return nullptr;
  }
  for (const auto &[tensor, shard] : listed) {
    const File *file = ck->shards[shardIndex[shard]].get();
    if (!file->find(tensor)) {
      error = file->path().str() + ": tensor '" + tensor +
              "': listed in model.safetensors.index.json but not in this "
              "shard";
      return nullptr;
    }
  }
  return ck;
}

//===----------------------------------------------------------------------===//
// Conversion
//===----------------------------------------------------------------------===//

void toFloat(StringRef bytes, DType dtype, float *out) {
  size_t n = bytes.size() / dtypeSize(dtype);
  if (n == 0) // an empty tensor: its view and `out` may both be null
    return;
  const char *p = bytes.data();
  switch (dtype) {
  case DType::F32:
    std::memcpy(out, p, n * 4);
    break;
  case DType::F16:
  case DType::BF16:
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = dtype == DType::F16 ? numerics::halfToFloat(h)
                                   : numerics::bf16ToFloat(h);
    }
    break;
  default:
    std::fill(out, out + n, 0.0f);
  }
}

int64_t firstNonFinite(StringRef bytes, DType dtype) {
  if (dtype == DType::F32) {
    for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
      uint32_t bits;
      std::memcpy(&bits, bytes.data() + i, 4);
      if ((bits & 0x7F800000u) == 0x7F800000u)
        return static_cast<int64_t>(i / 4);
    }
  } else if (dtype == DType::F16 || dtype == DType::BF16) {
    uint16_t mask = dtype == DType::F16 ? 0x7C00u : 0x7F80u;
    for (size_t i = 0; i + 2 <= bytes.size(); i += 2) {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + i, 2);
      if ((bits & mask) == mask)
        return static_cast<int64_t>(i / 2);
    }
  }
  return -1;
}

} // namespace safetensors
} // namespace sq
