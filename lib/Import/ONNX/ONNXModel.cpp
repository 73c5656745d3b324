//===- ONNXModel.cpp - reading ONNX protobufs and tensor data -------------===//

#include "ONNXModel.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <cstring>

using namespace sq::onnx_import;

bool sq::onnx_import::toDType(int onnxType, DType &dtype) {
  switch (onnxType) {
  case onnx::TensorProto::FLOAT:
    dtype = DType::F32;
    return true;
  case onnx::TensorProto::FLOAT16:
    dtype = DType::F16;
    return true;
  case onnx::TensorProto::BFLOAT16:
    dtype = DType::BF16;
    return true;
  case onnx::TensorProto::DOUBLE:
    dtype = DType::F64;
    return true;
  case onnx::TensorProto::INT64:
    dtype = DType::I64;
    return true;
  case onnx::TensorProto::INT32:
    dtype = DType::I32;
    return true;
  case onnx::TensorProto::INT8:
    dtype = DType::I8;
    return true;
  case onnx::TensorProto::UINT8:
    dtype = DType::U8;
    return true;
  case onnx::TensorProto::BOOL:
    dtype = DType::Bool;
    return true;
  case kOnnxInt4:
    dtype = DType::I4;
    return true;
  case kOnnxUInt4:
    dtype = DType::U4;
    return true;
  default:
    return false;
  }
}

size_t sq::onnx_import::dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::I8:
  case DType::U8:
  case DType::Bool:
  case DType::I4:
  case DType::U4:
    return 1;
  }
  return 1;
}

size_t sq::onnx_import::tensorBytes(DType dtype, int64_t count) {
  if (isPacked4(dtype))
    return static_cast<size_t>(count + 1) / 2;
  return static_cast<size_t>(count) * dtypeSize(dtype);
}

const char *sq::onnx_import::dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "float32";
  case DType::F16:
    return "float16";
  case DType::BF16:
    return "bfloat16";
  case DType::F64:
    return "float64";
  case DType::I64:
    return "int64";
  case DType::I32:
    return "int32";
  case DType::I8:
    return "int8";
  case DType::U8:
    return "uint8";
  case DType::Bool:
    return "bool";
  case DType::I4:
    return "int4";
  case DType::U4:
    return "uint4";
  }
  return "?";
}

std::string sq::onnx_import::onnxTypeName(int onnxType) {
  if (onnxType == kOnnxInt4)
    return "INT4";
  if (onnxType == kOnnxUInt4)
    return "UINT4";
  if (onnx::TensorProto_DataType_IsValid(onnxType))
    return onnx::TensorProto_DataType_Name(
        static_cast<onnx::TensorProto_DataType>(onnxType));
  return "type #" + std::to_string(onnxType);
}

std::unique_ptr<OnnxModel> OnnxModel::load(llvm::StringRef path,
                                           std::string &error) {
  auto model = std::unique_ptr<OnnxModel>(new OnnxModel());
  model->filePath = path.str();
  llvm::SmallString<256> dir(path);
  llvm::sys::path::remove_filename(dir);
  model->directory = dir.empty() ? "." : std::string(dir);

  // A device or a pipe (/dev/zero) would be read without end.
  llvm::sys::fs::file_status status;
  if (!llvm::sys::fs::status(path, status) && llvm::sys::fs::exists(status) &&
      !llvm::sys::fs::is_regular_file(status) &&
      !llvm::sys::fs::is_directory(status)) {
    error = path.str() + ": not a regular file";
    return nullptr;
  }
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer) {
    error = path.str() + ": cannot open: " + buffer.getError().message();
    return nullptr;
  }
  model->fileBuffer = std::move(*buffer);
  size_t size = model->fileBuffer->getBufferSize();
  if (size == 0) {
    error = path.str() + ": empty file, not an ONNX model";
    return nullptr;
  }
  if (size > static_cast<size_t>(INT32_MAX)) {
    error = path.str() +
            ": the protobuf is larger than 2 GiB, which protobuf cannot "
            "parse; save the model with external data";
    return nullptr;
  }
  if (!model->model.ParseFromArray(model->fileBuffer->getBufferStart(),
                                   static_cast<int>(size))) {
    error = path.str() +
            ": not a valid ONNX model (protobuf parse failed; truncated or "
            "not ONNX?)";
    return nullptr;
  }
  if (!model->model.has_graph() || model->model.graph().node_size() == 0) {
    error = path.str() + ": not an ONNX model with a graph (no nodes found)";
    return nullptr;
  }
  std::string what;
  if (!inlineLocalFunctions(model->model, what) ||
      !sortGraphNodes(*model->model.mutable_graph(), model->nodeFileIndex,
                      what)) {
    error = path.str() + ": " + what;
    return nullptr;
  }
  return model;
}

bool OnnxModel::mapExternal(llvm::StringRef location,
                            std::shared_ptr<llvm::MemoryBuffer> &buffer,
                            std::string &error) {
  // The location must stay inside the model's directory: refuse absolute
  // paths and '..' components (a known directory-traversal hole).
  if (location.empty() || llvm::sys::path::is_absolute(location) ||
      location.starts_with("~")) {
    error = "external data location '" + location.str() +
            "' must be a path relative to the model's directory";
    return false;
  }
  for (auto it = llvm::sys::path::begin(location),
            end = llvm::sys::path::end(location);
       it != end; ++it)
    if (*it == "..") {
      error = "external data location '" + location.str() +
              "' leaves the model's directory ('..' is not allowed)";
      return false;
    }
  auto found = externalFiles.find(location);
  if (found != externalFiles.end()) {
    buffer = found->second;
    return true;
  }
  llvm::SmallString<256> full(directory);
  llvm::sys::path::append(full, location);
  // Symbolic links must not lead out of the directory either.
  llvm::SmallString<256> realDir, realFile;
  if (!llvm::sys::fs::real_path(directory, realDir) &&
      !llvm::sys::fs::real_path(full, realFile) &&
      !llvm::StringRef(realFile).starts_with(
          (llvm::Twine(realDir) + "/").str())) {
    error = "external data location '" + location.str() +
            "' resolves outside the model's directory";
    return false;
  }
  llvm::sys::fs::file_status status;
  if (!llvm::sys::fs::status(full, status) && llvm::sys::fs::exists(status) &&
      !llvm::sys::fs::is_regular_file(status)) {
    error =
        "external data file '" + std::string(full) + "' is not a regular file";
    return false;
  }
  auto mapped = llvm::MemoryBuffer::getFile(full, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!mapped) {
    error = "cannot open external data file '" + std::string(full) +
            "': " + mapped.getError().message();
    return false;
  }
  buffer = std::shared_ptr<llvm::MemoryBuffer>(std::move(*mapped));
  externalFiles[location] = buffer;
  return true;
}

/// Multiplies dims with overflow and sign checks.
static bool elementCount(llvm::ArrayRef<int64_t> dims, int64_t &count,
                         std::string &error) {
  count = 1;
  for (int64_t d : dims) {
    if (d < 0) {
      error = "negative dimension " + std::to_string(d);
      return false;
    }
    if (d != 0 && count > (int64_t(1) << 50) / d) {
      error = "declared size is absurdly large";
      return false;
    }
    count *= d;
  }
  return true;
}

template <typename T, typename Field>
static void copyField(const Field &field, std::vector<char> &out) {
  out.resize(field.size() * sizeof(T));
  for (int i = 0; i < field.size(); ++i) {
    T v = static_cast<T>(field.Get(i));
    std::memcpy(out.data() + i * sizeof(T), &v, sizeof(T));
  }
}

bool OnnxModel::readTensor(const onnx::TensorProto &tensor, TensorBytes &out,
                           std::string &error) {
  std::string name = "tensor '" + tensor.name() + "'";
  if (!toDType(tensor.data_type(), out.dtype)) {
    error = name + " has unsupported data type " +
            onnxTypeName(tensor.data_type()) +
            " (supported: float32, float16, bfloat16, float64, int64, int32, "
            "int8, uint8, int4, uint4, bool)";
    return false;
  }
  out.dims.assign(tensor.dims().begin(), tensor.dims().end());
  int64_t count;
  if (!elementCount(out.dims, count, error)) {
    error = name + ": " + error;
    return false;
  }
  size_t expected = tensorBytes(out.dtype, count);

  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto &entry : tensor.external_data()) {
      const std::string &key = entry.key();
      char *end = nullptr;
      if (key == "location") {
        location = entry.value();
      } else if (key == "offset" || key == "length") {
        long long v = std::strtoll(entry.value().c_str(), &end, 10);
        if (entry.value().empty() || *end != '\0' || v < 0) {
          error = name + ": external data " + key + " '" + entry.value() +
                  "' is not a non-negative integer";
          return false;
        }
        (key == "offset" ? offset : length) = v;
      }
    }
    std::shared_ptr<llvm::MemoryBuffer> buffer;
    if (!mapExternal(location, buffer, error)) {
      error = name + ": " + error;
      return false;
    }
    int64_t fileSize = static_cast<int64_t>(buffer->getBufferSize());
    if (length < 0)
      length = static_cast<int64_t>(expected);
    if (static_cast<size_t>(length) != expected) {
      error = name + ": external data length " + std::to_string(length) +
              " does not match its shape (" + std::to_string(expected) +
              " bytes)";
      return false;
    }
    if (offset > fileSize || length > fileSize - offset) {
      // Unsigned: offset + length may not fit an int64.
      error = name + ": external data [" + std::to_string(offset) + ", " +
              std::to_string(uint64_t(offset) + uint64_t(length)) +
              ") lies beyond the end of '" + location + "' (" +
              std::to_string(fileSize) + " bytes)";
      return false;
    }
    out.keepAlive = buffer;
    out.bytes = llvm::ArrayRef<char>(buffer->getBufferStart() + offset,
                                     static_cast<size_t>(length));
    return true;
  }

  if (tensor.has_raw_data()) {
    if (tensor.raw_data().size() != expected) {
      error = name + " holds " + std::to_string(tensor.raw_data().size()) +
              " bytes but its shape needs " + std::to_string(expected);
      return false;
    }
    out.bytes = llvm::ArrayRef<char>(tensor.raw_data().data(), expected);
    return true;
  }

  // Typed fields.
  switch (out.dtype) {
  case DType::F32:
    copyField<float>(tensor.float_data(), out.owned);
    break;
  case DType::F64:
    copyField<double>(tensor.double_data(), out.owned);
    break;
  case DType::I64:
    copyField<int64_t>(tensor.int64_data(), out.owned);
    break;
  case DType::I32:
    copyField<int32_t>(tensor.int32_data(), out.owned);
    break;
  case DType::F16:
  case DType::BF16:
    copyField<uint16_t>(tensor.int32_data(), out.owned);
    break;
  case DType::I8:
    copyField<int8_t>(tensor.int32_data(), out.owned);
    break;
  case DType::U8:
  case DType::Bool:
  case DType::I4: // int32_data holds the packed bytes, one per entry
  case DType::U4:
    copyField<uint8_t>(tensor.int32_data(), out.owned);
    break;
  }
  if (out.owned.size() != expected) {
    error = name + " holds " + std::to_string(out.owned.size()) +
            " bytes of data but its shape needs " + std::to_string(expected);
    return false;
  }
  out.bytes = llvm::ArrayRef<char>(out.owned.data(), out.owned.size());
  return true;
}
