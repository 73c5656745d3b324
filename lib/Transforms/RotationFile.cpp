//===- RotationFile.cpp - SpinQuant rotation files (safetensors) ----------===//

#include "sq/Transforms/RotationFile.h"
#include "sq/Support/BoundedJSON.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

using namespace llvm;

namespace sq {

bool isScaleTensorName(StringRef name) { return name.ends_with(".scale"); }

bool writeRotationFile(
    StringRef path,
    const std::vector<std::pair<std::string, RotationMatrix>> &ts,
    std::string &error) {
  json::Object header;
  header["__metadata__"] =
      json::Object{{"format", "sq-rotations"}, {"version", "1"}};
  uint64_t offset = 0;
  for (const auto &[name, m] : ts) {
    int64_t n = static_cast<int64_t>(std::lround(std::sqrt(double(m.size()))));
    uint64_t bytes = m.size() * sizeof(double);
    json::Array shape{n, n};
    if (isScaleTensorName(name))
      shape = json::Array{int64_t(m.size())};
    header[name] =
        json::Object{{"dtype", "F64"},
                     {"shape", std::move(shape)},
                     {"data_offsets", json::Array{offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json;
  raw_string_ostream(json) << json::Value(std::move(header));
  while (json.size() % 8)
    json.push_back(' ');
  std::string tmp = (path + ".tmp").str();
  {
    std::error_code ec;
    raw_fd_ostream os(tmp, ec);
    if (ec) {
      error = "cannot write '" + path.str() + "': " + ec.message();
      return false;
    }
    uint64_t len = json.size();
    char lenBytes[8];
    for (int i = 0; i < 8; ++i)
      lenBytes[i] = static_cast<char>((len >> (8 * i)) & 0xFF);
    os.write(lenBytes, 8);
    os << json;
    for (const auto &t : ts)
      os.write(reinterpret_cast<const char *>(t.second.data()),
               t.second.size() * sizeof(double));
    if (os.has_error()) {
      error = "cannot write '" + path.str() + "'";
      os.clear_error();
      sys::fs::remove(tmp);
      return false;
    }
  }
  if (std::error_code ec = sys::fs::rename(tmp, path)) {
    sys::fs::remove(tmp);
    error = "cannot write '" + path.str() + "': " + ec.message();
    return false;
  }
  return true;
}

bool parseRotationFile(StringRef data, StringRef name,
                       std::map<std::string, RotationMatrix> &out,
                       std::string &error) {
  std::string file = "rotation file '" + name.str() + "'";
  uint64_t len = 0;
  if (data.size() >= 8)
    for (int i = 0; i < 8; ++i)
      len |= uint64_t(uint8_t(data[i])) << (8 * i);
  if (data.size() < 8 || len > data.size() - 8) {
    error = file + " is not safetensors (bad header)";
    return false;
  }
  auto json = parseBoundedJSON(data.substr(8, len));
  if (!json || !json->getAsObject()) {
    std::string why = "not a JSON object";
    if (!json)
      why = toString(json.takeError());
    error = file + " has an invalid JSON header (" + why + ")";
    return false;
  }
  StringRef body = data.substr(8 + len);
  for (const auto &[key, value] : *json->getAsObject()) {
    if (key == "__metadata__")
      continue;
    std::string tensor = file + ": tensor '" + key.str() + "'";
    const json::Object *t = value.getAsObject();
    const json::Array *shape = t ? t->getArray("shape") : nullptr;
    const json::Array *offs = t ? t->getArray("data_offsets") : nullptr;
    std::optional<StringRef> dtype = t ? t->getString("dtype") : std::nullopt;
    // A learned scale (name ending in .scale) is a vector: [n] read as
    // rows = cols = n with n values.
    bool vector = isScaleTensorName(key);
    if (!shape || !offs || !dtype || shape->size() != (vector ? 1 : 2) ||
        offs->size() != 2 || (*dtype != "F64" && *dtype != "F32")) {
      error = tensor + (vector ? " is not a 1-D float32/float64 tensor"
                               : " is not a 2-D float32/float64 tensor");
      return false;
    }
    int64_t rows = (*shape)[0].getAsInteger().value_or(-1),
            cols = vector ? rows : (*shape)[1].getAsInteger().value_or(-1);
    uint64_t count = vector ? uint64_t(std::max<int64_t>(rows, 0))
                            : uint64_t(std::max<int64_t>(rows, 0)) *
                                  uint64_t(std::max<int64_t>(cols, 0));
    int64_t begin = (*offs)[0].getAsInteger().value_or(-1),
            end = (*offs)[1].getAsInteger().value_or(-1);
    uint64_t elem = *dtype == "F64" ? 8 : 4;
    // rows <= 2^30 keeps rows * cols * elem within uint64_t; the size check
    // then bounds the allocation by the file's size.
    if (rows <= 0 || rows != cols || rows > (int64_t(1) << 30) || begin < 0 ||
        end < begin || uint64_t(end) > body.size() ||
        uint64_t(end - begin) != count * elem) {
      error = tensor + " has a bad shape or data range (rotations are square)";
      return false;
    }
    RotationMatrix m(count);
    for (uint64_t i = 0; i < count; ++i) {
      if (elem == 8) {
        std::memcpy(&m[i], body.data() + begin + 8 * i, 8);
      } else {
        float f;
        std::memcpy(&f, body.data() + begin + 4 * i, 4);
        m[i] = f;
      }
      // NaN would slip through the orthogonality check (comparisons with
      // NaN are false) and poison every weight it is folded into.
      if (!std::isfinite(m[i]) || (vector && !(m[i] > 0))) {
        error = tensor +
                (vector ? " has a value that is not a finite positive "
                          "scale (element "
                        : " has a non-finite value (element ") +
                std::to_string(i) + ")";
        return false;
      }
    }
    out[key.str()] = std::move(m);
  }
  return true;
}

bool readRotationFile(StringRef path,
                      std::map<std::string, RotationMatrix> &out,
                      std::string &error) {
  auto buffer = MemoryBuffer::getFile(path);
  if (!buffer) {
    error = "cannot read rotation file '" + path.str() +
            "': " + buffer.getError().message();
    return false;
  }
  return parseRotationFile((*buffer)->getBuffer(), path, out, error);
}

} // namespace sq
