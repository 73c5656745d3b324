//===- ONNXModel.h - reading ONNX protobufs and tensor data ------*- C++
//-*-===//
//
// Internal to lib/Import/ONNX: parses a ModelProto and gives access to tensor
// bytes, inline or in external-data files (memory-mapped, bounds-checked,
// confined to the model's directory).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_LIB_IMPORT_ONNX_ONNXMODEL_H
#define SQ_LIB_IMPORT_ONNX_ONNXMODEL_H

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/MemoryBuffer.h"

#include <onnx/onnx_pb.h>

#include <memory>
#include <string>
#include <vector>

namespace sq {
namespace onnx_import {

/// Element types the importer understands.
enum class DType { F32, F16, BF16, F64, I64, I32, I8, U8, Bool, I4, U4 };

/// ONNX's 4-bit integer types (onnx 1.16; the TensorProto enum of the
/// installed onnx may predate them): two per byte, low nibble first.
constexpr int kOnnxUInt4 = 21, kOnnxInt4 = 22;

/// Maps an ONNX TensorProto data type; false if unsupported.
bool toDType(int onnxType, DType &dtype);
/// Bytes per element (1 for the packed 4-bit types: see tensorBytes).
size_t dtypeSize(DType dtype);
/// Bytes that `count` elements take (4-bit types: two per byte).
size_t tensorBytes(DType dtype, int64_t count);
/// True for the 4-bit types, stored two per byte.
inline bool isPacked4(DType dtype) {
  return dtype == DType::I4 || dtype == DType::U4;
}
const char *dtypeName(DType dtype);
/// The ONNX name of a data type number, for messages.
std::string onnxTypeName(int onnxType);

/// A tensor's bytes, wherever they live. `keepAlive` owns mapped files.
struct TensorBytes {
  DType dtype;
  std::vector<int64_t> dims;
  llvm::ArrayRef<char> bytes;
  std::shared_ptr<llvm::MemoryBuffer> keepAlive; // for mapped external data
  std::vector<char> owned;                       // for typed fields
  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : dims)
      n *= d;
    return n;
  }
};

/// Reorders the nodes of `graph` so that each follows the producers of its
/// inputs, keeping the file's order where it is already right; `fileIndex`
/// gets each node's position in the file. False with `error` naming a node on
/// a cycle (GraphOrder.cpp).
bool sortGraphNodes(onnx::GraphProto &graph, std::vector<size_t> &fileIndex,
                    std::string &error);

/// Replaces the calls of model-local functions (the dynamo exporter's
/// onnxscript functions) in the main graph by their bodies (Functions.cpp).
bool inlineLocalFunctions(onnx::ModelProto &model, std::string &error);

class OnnxModel {
public:
  /// Parses the file. On failure returns null and sets `error`.
  static std::unique_ptr<OnnxModel> load(llvm::StringRef path,
                                         std::string &error);

  const onnx::ModelProto &proto() const { return model; }
  const onnx::GraphProto &graph() const { return model.graph(); }
  /// The position in the file of the node at `index` of graph(), whose
  /// nodes are in dependency order (GraphOrder.cpp).
  size_t fileIndex(size_t index) const {
    return index < nodeFileIndex.size() ? nodeFileIndex[index] : index;
  }
  llvm::StringRef path() const { return filePath; }

  /// Reads the bytes of a tensor (inline, typed fields or external data).
  /// `what` names it in error messages.
  bool readTensor(const onnx::TensorProto &tensor, TensorBytes &out,
                  std::string &error);

private:
  bool mapExternal(llvm::StringRef location,
                   std::shared_ptr<llvm::MemoryBuffer> &buffer,
                   std::string &error);

  onnx::ModelProto model;
  std::vector<size_t> nodeFileIndex;
  std::string filePath, directory;
  std::unique_ptr<llvm::MemoryBuffer> fileBuffer;
  llvm::StringMap<std::shared_ptr<llvm::MemoryBuffer>> externalFiles;
};

} // namespace onnx_import
} // namespace sq

#endif // SQ_LIB_IMPORT_ONNX_ONNXMODEL_H
