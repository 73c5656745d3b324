//===- WeightSummary.cpp - table of a model's weights ---------------------===//
//
// --sq-weight-summary: name, type, storage bytes and non-finite values of
// every sq.weight, then totals. Leaves the IR unchanged.
//
//===----------------------------------------------------------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Numerics/Float16.h"
#include "sq/Support/Distributed.h"
#include "sq/Transforms/Passes.h"

#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/ToolOutputFile.h"

namespace sq {
#define GEN_PASS_DEF_SQWEIGHTSUMMARY
#include "sq/Transforms/Passes.h.inc"
} // namespace sq

using namespace mlir;
using namespace sq;

namespace {

/// Counts NaN/Inf values in a blob of `elementType` values. Returns -1 when
/// the element type is not a float type we know.
int64_t countNonFinite(ArrayRef<char> data, Type elementType) {
  std::optional<numerics::FloatFormat> format = floatFormatOf(elementType);
  if (!format)
    return -1;
  return numerics::countNonFinite(
      data.data(), data.size() / numerics::bytesPerValue(*format), *format);
}

struct WeightSummaryPass
    : public sq::impl::SQWeightSummaryBase<WeightSummaryPass> {
  using Base::Base;

  void runOnOperation() override {
    struct Row {
      std::string name, type;
      int64_t bytes, nonFinite;
    };
    std::vector<Row> rows;
    getOperation().walk([&](WeightOp op) {
      auto resource = cast<DenseResourceElementsAttr>(op.getValue());
      Row row{op.getName().str(), "", -1, -1};
      llvm::raw_string_ostream(row.type) << op.getType();
      if (AsmResourceBlob *blob = resource.getRawHandle().getBlob()) {
        ArrayRef<char> data = blob->getData();
        row.bytes = static_cast<int64_t>(data.size());
        if (!isa<PackedType>(op.getType()))
          row.nonFinite =
              countNonFinite(data, resource.getType().getElementType());
      }
      rows.push_back(std::move(row));
    });
    // Under mpirun the processes hold the same module: rank 0 reports.
    if (distributed::rank() != 0)
      return;

    std::string error;
    std::unique_ptr<llvm::ToolOutputFile> file;
    llvm::raw_ostream *os = &llvm::errs();
    if (output != "-") {
      file = openOutputFile(output, &error);
      if (!file) {
        getOperation().emitError() << "sq-weight-summary: " << error;
        return signalPassFailure();
      }
      os = &file->os();
    }

    size_t nameWidth = 4, typeWidth = 4;
    for (const Row &row : rows) {
      nameWidth = std::max(nameWidth, row.name.size());
      typeWidth = std::max(typeWidth, row.type.size());
    }
    *os << llvm::left_justify("name", nameWidth) << "  "
        << llvm::left_justify("type", typeWidth) << "  "
        << llvm::right_justify("bytes", 12) << "  non-finite\n";
    int64_t totalBytes = 0, totalNonFinite = 0;
    bool missing = false;
    for (const Row &row : rows) {
      *os << llvm::left_justify(row.name, nameWidth) << "  "
          << llvm::left_justify(row.type, typeWidth) << "  ";
      if (row.bytes < 0)
        *os << llvm::right_justify("(no data)", 12);
      else
        *os << llvm::format_decimal(row.bytes, 12);
      *os << "  ";
      if (row.nonFinite < 0)
        *os << "-";
      else
        *os << row.nonFinite;
      *os << "\n";
      missing |= row.bytes < 0;
      totalBytes += std::max<int64_t>(row.bytes, 0);
      totalNonFinite += std::max<int64_t>(row.nonFinite, 0);
    }
    *os << "total: " << rows.size() << " weights, " << totalBytes << " bytes"
        << (missing ? " (some without data)" : "") << ", " << totalNonFinite
        << " non-finite values\n";
    if (file)
      file->keep();
    markAllAnalysesPreserved();
  }
};

} // namespace
