//===- SQDialect.cpp - sq dialect, attributes and types -------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstdlib>

using namespace mlir;
using namespace sq;

#include "sq/Dialect/SQ/IR/SQDialect.cpp.inc"
#include "sq/Dialect/SQ/IR/SQEnums.cpp.inc"

// APFloat parameters of declarative attribute formats (#sq.llama3_scaling).
namespace mlir {
template <> struct FieldParser<llvm::APFloat> {
  static FailureOr<llvm::APFloat> parse(AsmParser &parser) {
    double value;
    if (parser.parseFloat(value))
      return failure();
    return llvm::APFloat(value);
  }
};
} // namespace mlir

#define GET_ATTRDEF_CLASSES
#include "sq/Dialect/SQ/IR/SQAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "sq/Dialect/SQ/IR/SQTypes.cpp.inc"

void SQDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "sq/Dialect/SQ/IR/SQAttrs.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "sq/Dialect/SQ/IR/SQTypes.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "sq/Dialect/SQ/IR/SQOps.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// QuantAttr: #sq.quant<bits = 4, sym|asym, granularity[, clip = R]>
//===----------------------------------------------------------------------===//

LogicalResult QuantAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                unsigned bits, bool symmetric,
                                Granularity granularity, int64_t groupSize,
                                llvm::APFloat clipRatio) {
  double clip = clipRatio.convertToDouble();
  if (bits < 2 || bits > 8)
    return emitError() << "quantization bits must be between 2 and 8, got "
                       << bits;
  if (granularity == Granularity::Group && groupSize <= 0)
    return emitError() << "group size must be positive, got " << groupSize
                       << " (write e.g. 'group = 128')";
  if (granularity != Granularity::Group && groupSize != 0)
    return emitError() << "a group size is only meaningful with 'group = N'";
  if (!(clip > 0.0 && clip <= 1.0))
    return emitError() << "clip ratio must be in (0, 1], got "
                       << formatFloat(clip)
                       << " (it shrinks the range before scales are computed)";
  return success();
}

//===----------------------------------------------------------------------===//
// RopeScalingAttr: #sq.llama3_scaling<factor = F, low_freq_factor = L,
//   high_freq_factor = H, original_max_position_embeddings = N>
//===----------------------------------------------------------------------===//

LogicalResult
RopeScalingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                        llvm::APFloat factor, llvm::APFloat lowFreqFactor,
                        llvm::APFloat highFreqFactor,
                        int64_t originalMaxPositionEmbeddings) {
  double f = factor.convertToDouble(), lo = lowFreqFactor.convertToDouble(),
         hi = highFreqFactor.convertToDouble();
  if (!(f > 0.0))
    return emitError() << "llama3 RoPE scaling factor must be positive, got "
                       << formatFloat(f);
  if (!(lo > 0.0 && hi > lo))
    return emitError() << "llama3 RoPE scaling needs 0 < low_freq_factor < "
                          "high_freq_factor, got "
                       << formatFloat(lo) << " and " << formatFloat(hi);
  if (originalMaxPositionEmbeddings <= 0)
    return emitError() << "llama3 RoPE scaling needs a positive "
                          "original_max_position_embeddings, got "
                       << originalMaxPositionEmbeddings;
  return success();
}

int64_t QuantAttr::getNumGroups(int64_t dim) const {
  if (!isGrouped())
    return 1;
  if (ShapedType::isDynamic(dim))
    return ShapedType::kDynamic;
  return dim / getGroupSize();
}

Attribute QuantAttr::parse(AsmParser &parser, Type) {
  unsigned bits = 0;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() || parser.parseKeyword("bits") ||
      parser.parseEqual() || parser.parseInteger(bits) || parser.parseComma())
    return {};

  StringRef symmetry;
  SMLoc symLoc = parser.getCurrentLocation();
  if (parser.parseKeyword(&symmetry))
    return {};
  if (symmetry != "sym" && symmetry != "asym") {
    parser.emitError(symLoc, "expected 'sym' or 'asym', got '")
        << symmetry << "'";
    return {};
  }
  if (parser.parseComma())
    return {};

  StringRef granularityName;
  SMLoc granLoc = parser.getCurrentLocation();
  if (parser.parseKeyword(&granularityName))
    return {};
  std::optional<Granularity> granularity =
      symbolizeGranularity(granularityName);
  if (!granularity) {
    parser.emitError(granLoc, "expected a granularity (per_tensor, per_token, "
                              "per_channel or 'group = N'), got '")
        << granularityName << "'";
    return {};
  }
  int64_t groupSize = 0;
  if (*granularity == Granularity::Group &&
      (parser.parseEqual() || parser.parseInteger(groupSize)))
    return {};

  double clip = 1.0;
  if (succeeded(parser.parseOptionalComma())) {
    if (parser.parseKeyword("clip") || parser.parseEqual() ||
        parser.parseFloat(clip))
      return {};
  }
  if (parser.parseGreater())
    return {};
  return QuantAttr::getChecked([&]() { return parser.emitError(loc); },
                               parser.getContext(), bits, symmetry == "sym",
                               *granularity, groupSize, llvm::APFloat(clip));
}

std::string sq::formatFloat(double value) {
  for (int precision = 1; precision < 17; ++precision) {
    std::string text =
        llvm::formatv("{0}", llvm::format("%.*g", precision, value)).str();
    if (std::strtod(text.c_str(), nullptr) != value)
      continue;
    // MLIR's float literals need a '.': 1e-05 -> 1.0e-05, 1 -> 1.0.
    if (text.find('.') == std::string::npos) {
      size_t exponent = text.find('e');
      text.insert(exponent == std::string::npos ? text.size() : exponent, ".0");
    }
    return text;
  }
  return llvm::formatv("{0}", llvm::format("%.17g", value)).str();
}

void QuantAttr::print(AsmPrinter &printer) const {
  printer << "<bits = " << getBits() << ", "
          << (getSymmetric() ? "sym" : "asym") << ", "
          << stringifyGranularity(getGranularity());
  if (isGrouped())
    printer << " = " << getGroupSize();
  if (getClipRatio() != 1.0)
    printer << ", clip = " << formatFloat(getClipRatio());
  printer << ">";
}

//===----------------------------------------------------------------------===//
// PackedType: !sq.packed<DxDx...xiB>
//===----------------------------------------------------------------------===//

LogicalResult PackedType::verify(function_ref<InFlightDiagnostic()> emitError,
                                 ArrayRef<int64_t> shape, unsigned bits) {
  if (shape.empty())
    return emitError() << "packed tensor needs at least one dimension";
  for (int64_t dim : shape)
    if (dim <= 0)
      return emitError() << "packed tensor dimensions must be static and "
                            "positive, got "
                         << dim;
  if (bits != 4 && bits != 8)
    return emitError() << "packed tensors hold i4 or i8 elements, got i"
                       << bits;
  return success();
}

int64_t PackedType::getNumRows() const {
  int64_t rows = 1;
  for (int64_t dim : getShape().drop_back())
    rows *= dim;
  return rows;
}

int64_t PackedType::getRowBytes() const {
  return (getLastDim() * static_cast<int64_t>(getBits()) + 7) / 8;
}

Type PackedType::parse(AsmParser &parser) {
  SmallVector<int64_t> shape;
  Type elementType;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/true))
    return {};
  SMLoc typeLoc = parser.getCurrentLocation();
  if (parser.parseType(elementType) || parser.parseGreater())
    return {};
  auto intType = dyn_cast<IntegerType>(elementType);
  if (!intType || !intType.isSignless()) {
    parser.emitError(typeLoc, "packed element type must be i4 or i8, got ")
        << elementType;
    return {};
  }
  return PackedType::getChecked([&]() { return parser.emitError(loc); },
                                parser.getContext(), shape, intType.getWidth());
}

void PackedType::print(AsmPrinter &printer) const {
  printer << "<";
  for (int64_t dim : getShape())
    printer << dim << "x";
  printer << "i" << getBits() << ">";
}
