//===- Import.cpp - importOnnxModel entry point ---------------------------===//

#include "ONNXModel.h"
#include "Raise.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ImportedModule.h"
#include "sq/Import/ONNX.h"
#include "sq/Support/BoundedJSON.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

using namespace mlir;

OwningOpRef<ModuleOp> sq::importOnnxModel(llvm::StringRef path,
                                          MLIRContext *context,
                                          std::string &error,
                                          const OnnxImportOptions &options) {
  context->loadDialect<SQDialect, func::FuncDialect>();
  std::unique_ptr<onnx_import::OnnxModel> model =
      onnx_import::OnnxModel::load(path, error);
  if (!model)
    return nullptr;

  OpBuilder builder(context);
  OwningOpRef<ModuleOp> module = ModuleOp::create(builder.getUnknownLoc());
  std::string what;
  if (!onnx_import::raiseGraph(*model, *module, options, what) ||
      !onnx_import::checkStructureAndName(*module, what)) {
    error = path.str() + ": " + what;
    return nullptr;
  }

  // The context length is not in the graph; take it from a config.json
  // (Hugging Face: max_position_embeddings), info.json (seq_len) or
  // genai_config.json (ONNX Runtime GenAI: model.context_length) next to the
  // model when there is one.
  for (const char *name : {"config.json", "info.json", "genai_config.json"}) {
    llvm::SmallString<256> sibling(path);
    llvm::sys::path::remove_filename(sibling);
    llvm::sys::path::append(sibling, name);
    auto buffer = llvm::MemoryBuffer::getFile(sibling);
    if (!buffer)
      continue;
    auto json = sq::parseBoundedJSON((*buffer)->getBuffer());
    if (!json) {
      llvm::consumeError(json.takeError());
      continue;
    }
    const llvm::json::Object *obj = json->getAsObject();
    std::optional<int64_t> context;
    if (obj) {
      context = obj->getInteger("max_position_embeddings");
      if (!context)
        context = obj->getInteger("seq_len");
      if (const llvm::json::Object *genai = obj->getObject("model");
          !context && genai)
        context = genai->getInteger("context_length");
    }
    if (context && *context > 0) {
      auto config = (*module)->getAttrOfType<DictionaryAttr>("sq.config");
      NamedAttrList attrs(config);
      attrs.set("max_position_embeddings", builder.getI64IntegerAttr(*context));
      (*module)->setAttr("sq.config",
                         attrs.getDictionary(builder.getContext()));
      break;
    }
  }

  if (!finishImportedModule(*module, path, error))
    return nullptr;
  // Weights that were already quantized (QuantizedOps.cpp) are imported
  // dequantized, exactly; say once that quantizing them again adds a second
  // rounding on top of the first. (sq-compile and sq-translate print
  // warnings on stderr.)
  if (auto q = (*module)->getAttrOfType<StringAttr>("sq.prequantized"))
    emitWarning(UnknownLoc::get(context))
        << path << ": the weights are already quantized, " << q.getValue()
        << "; they are imported dequantized (exactly), and quantizing them "
           "again (sq-compile's default --quantize=w4a4kv4) compounds the "
           "rounding errors: --quantize=w16a4kv4 leaves the weights "
           "unquantized, --quantize=none --rotate=none runs the file's own "
           "weights";
  return module;
}
