//===- SQOps.cpp - sq operations: verifiers, builders, formats ------------===//

#include "sq/Dialect/SQ/IR/SQ.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"

#include <cstring>

using namespace mlir;
using namespace sq;

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

static bool dimsMatch(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static bool shapesMatch(ArrayRef<int64_t> a, ArrayRef<int64_t> b) {
  if (a.size() != b.size())
    return false;
  for (auto [x, y] : llvm::zip_equal(a, b))
    if (!dimsMatch(x, y))
      return false;
  return true;
}

/// Prints a shape as [1, ?, 64].
static std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "[";
  llvm::interleaveComma(shape, os, [&](int64_t d) {
    if (ShapedType::isDynamic(d))
      os << "?";
    else
      os << d;
  });
  os << "]";
  return s;
}

static RankedTensorType rankedType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// The result type of a linear layer: the input's shape with the last
/// dimension replaced by `outFeatures`.
static RankedTensorType linearResultType(Value input, int64_t outFeatures) {
  RankedTensorType inputType = rankedType(input);
  SmallVector<int64_t> shape(inputType.getShape());
  shape.back() = outFeatures;
  return RankedTensorType::get(shape, inputType.getElementType());
}

/// The expected shape of scales/zero points for a tensor of `shape`
/// quantized with `quant`.
static SmallVector<int64_t> scaleShape(ArrayRef<int64_t> shape,
                                       QuantAttr quant) {
  if (quant.getGranularity() == Granularity::PerTensor)
    return SmallVector<int64_t>(shape.size(), 1);
  SmallVector<int64_t> result(shape);
  result.back() = quant.getNumGroups(shape.back());
  return result;
}

/// Checks that `quant`'s groups tile the last dimension of `shape`.
static LogicalResult verifyGroupsFit(Operation *op, QuantAttr quant,
                                     ArrayRef<int64_t> shape, StringRef what) {
  if (!quant.isGrouped() || shape.empty() ||
      ShapedType::isDynamic(shape.back()))
    return success();
  if (shape.back() % quant.getGroupSize() != 0)
    return op->emitOpError()
           << "group size " << quant.getGroupSize()
           << " does not divide the last dimension " << shape.back() << " of "
           << what << "; choose a group size that divides it";
  return success();
}

/// Checks the scales / zero-point operands or results of a quantized tensor.
static LogicalResult verifyScales(Operation *op, QuantAttr quant,
                                  ArrayRef<int64_t> dataShape, Value scales,
                                  Value zeroPoints, StringRef what) {
  SmallVector<int64_t> expected = scaleShape(dataShape, quant);
  if (!shapesMatch(rankedType(scales).getShape(), expected))
    return op->emitOpError()
           << "scales of " << what << " must have shape " << shapeStr(expected)
           << " (one per " << stringifyGranularity(quant.getGranularity())
           << (quant.isGrouped() ? " of the last dimension" : "") << "), got "
           << scales.getType();
  if (quant.getSymmetric() && zeroPoints)
    return op->emitOpError() << "symmetric quantization of " << what
                             << " has no zero points; drop them or use 'asym'";
  if (!quant.getSymmetric() && !zeroPoints)
    return op->emitOpError() << "asymmetric quantization of " << what
                             << " needs zero points; add them or use 'sym'";
  if (zeroPoints && zeroPoints.getType() != scales.getType())
    return op->emitOpError()
           << "zero points of " << what << " must have the scales' type "
           << scales.getType() << ", got " << zeroPoints.getType();
  return success();
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

// sq.weight attr-dict? dense_resource<NAME> : tensor<...> (-> !sq.packed<...>)?
ParseResult WeightOp::parse(OpAsmParser &parser, OperationState &result) {
  if (parser.parseOptionalAttrDict(result.attributes))
    return failure();
  SMLoc loc = parser.getCurrentLocation();
  Attribute attr;
  if (parser.parseAttribute(attr))
    return failure();
  auto value = dyn_cast<ElementsAttr>(attr);
  if (!value)
    return parser.emitError(loc, "expected a weight value "
                                 "dense_resource<NAME> : tensor<...>");
  Type type = value.getType();
  if (succeeded(parser.parseOptionalArrow()) && parser.parseType(type))
    return failure();
  result.getOrAddProperties<Properties>().value = value;
  result.addTypes(type);
  return success();
}

void WeightOp::print(OpAsmPrinter &printer) {
  printer.printOptionalAttrDict((*this)->getAttrs(), {"value"});
  printer << " ";
  printer.printAttribute(getValue());
  if (getType() != getValue().getType())
    printer << " -> " << getType();
}

StringRef WeightOp::getName() {
  if (auto resource = dyn_cast<DenseResourceElementsAttr>(getValue()))
    return resource.getRawHandle().getKey();
  return {};
}

LogicalResult WeightOp::verify() {
  auto resource = dyn_cast<DenseResourceElementsAttr>(getValue());
  if (!resource)
    return emitOpError() << "value must be a named resource "
                            "(dense_resource<NAME> : tensor<...>), got an "
                            "inline constant; weights are stored as resources";
  if (resource.getRawHandle().getKey().empty())
    return emitOpError() << "weight resource needs a non-empty name";
  ShapedType valueType = resource.getType();
  // MLIR does not check that a blob matches its type; a truncated one would
  // be read out of bounds later.
  if (AsmResourceBlob *blob = resource.getRawHandle().getBlob()) {
    int64_t elementBytes =
        (valueType.getElementType().getIntOrFloatBitWidth() + 7) / 8;
    int64_t expected = valueType.getNumElements() * elementBytes;
    int64_t actual = static_cast<int64_t>(blob->getData().size());
    if (actual != expected)
      return emitOpError() << "resource '" << getName() << "' holds " << actual
                           << " bytes but " << valueType << " needs "
                           << expected << " bytes";
  }
  if (auto packed = dyn_cast<PackedType>(getType())) {
    auto i8 = IntegerType::get(getContext(), 8);
    if (valueType.getRank() != 1 || valueType.getElementType() != i8 ||
        valueType.getDimSize(0) != packed.getStorageBytes())
      return emitOpError() << "packed weight " << packed
                           << " needs a 1-D i8 resource of "
                           << packed.getNumRows() << " rows x "
                           << packed.getRowBytes()
                           << " bytes = " << packed.getStorageBytes()
                           << " bytes (tensor<" << packed.getStorageBytes()
                           << "xi8>), got " << valueType;
    return success();
  }
  if (getType() != valueType)
    return emitOpError() << "result type " << getType()
                         << " must be the resource's type " << valueType
                         << " (write '-> !sq.packed<...>' for packed weights)";
  return success();
}

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  RankedTensorType table = getTable().getType();
  RankedTensorType ids = getIds().getType();
  RankedTensorType result = getOutput().getType();
  if (table.getRank() != 2)
    return emitOpError() << "table must be 2-D [vocab, hidden], got " << table;
  SmallVector<int64_t> expected(ids.getShape());
  expected.push_back(table.getDimSize(1));
  if (!shapesMatch(result.getShape(), expected))
    return emitOpError() << "result must have the ids' shape followed by the "
                            "table's hidden size, "
                         << shapeStr(expected) << ", got " << result;
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNormOp
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  RankedTensorType input = getInput().getType();
  if (input.getRank() < 1)
    return emitOpError() << "input must have at least one dimension";
  if (!(getEpsilon().convertToDouble() > 0.0))
    return emitOpError() << "epsilon must be positive, got "
                         << formatFloat(getEpsilon().convertToDouble());
  if (Value scale = getScale()) {
    RankedTensorType scaleType = rankedType(scale);
    if (scaleType.getRank() != 1 ||
        !dimsMatch(scaleType.getDimSize(0), input.getShape().back()))
      return emitOpError()
             << "scale must be 1-D with one entry per feature of the "
                "normalized (last) dimension ("
             << shapeStr(input.getShape().take_back()) << "), got "
             << scaleType;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

void LinearOp::build(OpBuilder &builder, OperationState &state, Value input,
                     Value weight, Value bias) {
  build(builder, state,
        linearResultType(input, rankedType(weight).getDimSize(0)), input,
        weight, bias);
}

/// Checks input [..., K] x weight [N, K] (+ bias [N]) -> result [..., N].
static LogicalResult verifyLinearShapes(Operation *op, RankedTensorType input,
                                        ArrayRef<int64_t> weightShape,
                                        Type weightType, Value bias,
                                        RankedTensorType result) {
  if (input.getRank() < 1)
    return op->emitOpError() << "input must have at least one dimension";
  if (weightShape.size() != 2)
    return op->emitOpError()
           << "weight must be 2-D [out_features, in_features], got "
           << weightType;
  int64_t outFeatures = weightShape[0], inFeatures = weightShape[1];
  if (!dimsMatch(input.getShape().back(), inFeatures))
    return op->emitOpError()
           << "input's last dimension (" << input.getShape().back()
           << ") must equal the weight's in_features (" << inFeatures
           << "); the weight is [out_features, in_features] and y = x * W^T";
  if (bias) {
    RankedTensorType biasType = rankedType(bias);
    if (biasType.getRank() != 1 ||
        !dimsMatch(biasType.getDimSize(0), outFeatures))
      return op->emitOpError() << "bias must be 1-D with out_features ("
                               << outFeatures << ") entries, got " << biasType;
  }
  SmallVector<int64_t> expected(input.getShape());
  expected.back() = outFeatures;
  if (!shapesMatch(result.getShape(), expected))
    return op->emitOpError()
           << "result must have the input's shape with the last dimension "
              "replaced by out_features, "
           << shapeStr(expected) << ", got " << result;
  return success();
}

LogicalResult LinearOp::verify() {
  return verifyLinearShapes(
      *this, getInput().getType(), getWeight().getType().getShape(),
      getWeight().getType(), getBias(), getOutput().getType());
}

//===----------------------------------------------------------------------===//
// RopeOp
//===----------------------------------------------------------------------===//

int64_t RopeOp::getHeadDim() {
  int64_t last = getInput().getType().getShape().back();
  return ShapedType::isDynamic(last) ? ShapedType::kDynamic
                                     : last / getNumHeads();
}

LogicalResult RopeOp::verify() {
  RankedTensorType input = getInput().getType();
  RankedTensorType positions = getPositions().getType();
  if (input.getRank() < 2)
    return emitOpError() << "input must be [..., seq, num_heads * head_dim], "
                            "got "
                         << input;
  ArrayRef<int64_t> leading = input.getShape().drop_back();
  if (!shapesMatch(positions.getShape(), leading))
    return emitOpError() << "positions must have the input's leading shape "
                         << shapeStr(leading)
                         << " (one position per token), got " << positions;
  int64_t last = input.getShape().back();
  if (!ShapedType::isDynamic(last)) {
    if (last % getNumHeads() != 0)
      return emitOpError() << "the last dimension " << last
                           << " is not divisible by num_heads "
                           << getNumHeads();
    if (getHeadDim() % 2 != 0)
      return emitOpError() << "head_dim " << getHeadDim()
                           << " must be even: RoPE rotates pairs of elements";
  }
  if (!(getTheta().convertToDouble() > 0.0))
    return emitOpError() << "theta must be positive (typically 10000 or "
                            "500000), got "
                         << formatFloat(getTheta().convertToDouble());
  return success();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

int64_t AttentionOp::getHeadDim() {
  int64_t last = getQuery().getType().getShape().back();
  return ShapedType::isDynamic(last) ? ShapedType::kDynamic
                                     : last / getNumHeads();
}

LogicalResult AttentionOp::verify() {
  RankedTensorType q = getQuery().getType();
  RankedTensorType k = getKey().getType();
  RankedTensorType v = getValue().getType();
  for (auto [name, type] : {std::pair<StringRef, RankedTensorType>{"query", q},
                            {"key", k},
                            {"value", v}})
    if (type.getRank() != 3)
      return emitOpError() << name
                           << " must be 3-D [batch, seq, heads * head_dim], "
                              "got "
                           << type;
  if (!shapesMatch(k.getShape(), v.getShape()))
    return emitOpError() << "key and value must have the same shape, got " << k
                         << " and " << v;
  if (!dimsMatch(q.getDimSize(0), k.getDimSize(0)))
    return emitOpError() << "query batch " << q.getDimSize(0)
                         << " differs from key/value batch " << k.getDimSize(0);
  int64_t heads = getNumHeads(), kvHeads = getNumKvHeads();
  if (heads % kvHeads != 0)
    return emitOpError() << "num_heads " << heads
                         << " must be a multiple of num_kv_heads " << kvHeads
                         << " (grouped-query attention shares each key/value "
                            "head among num_heads / num_kv_heads query heads)";
  int64_t qLast = q.getDimSize(2);
  if (!ShapedType::isDynamic(qLast)) {
    if (qLast % heads != 0)
      return emitOpError() << "query's last dimension " << qLast
                           << " is not divisible by num_heads " << heads;
    int64_t headDim = qLast / heads;
    if (!dimsMatch(k.getDimSize(2), kvHeads * headDim))
      return emitOpError() << "key/value last dimension must be num_kv_heads x "
                              "head_dim = "
                           << kvHeads << " x " << headDim << " = "
                           << kvHeads * headDim << ", got " << k.getDimSize(2);
  }
  Value pastKey = getPastKey(), pastValue = getPastValue();
  if (static_cast<bool>(pastKey) != static_cast<bool>(pastValue))
    return emitOpError() << "a KV cache needs both past_key and past_value";
  int64_t totalKv = k.getDimSize(1);
  if (pastKey) {
    RankedTensorType pk = rankedType(pastKey), pv = rankedType(pastValue);
    if (pk.getRank() != 3 || !shapesMatch(pk.getShape(), pv.getShape()) ||
        !dimsMatch(pk.getDimSize(0), k.getDimSize(0)) ||
        !dimsMatch(pk.getDimSize(2), k.getDimSize(2)))
      return emitOpError()
             << "past_key and past_value must both be [batch, past_seq, "
                "num_kv_heads * head_dim] like the key "
             << k << ", got " << pk << " and " << pv;
    totalKv = ShapedType::isDynamic(pk.getDimSize(1)) ||
                      ShapedType::isDynamic(totalKv)
                  ? ShapedType::kDynamic
                  : pk.getDimSize(1) + totalKv;
    if (getPresent().size() != 2)
      return emitOpError() << "with a KV cache the op returns present_key "
                              "and present_value after the output, got "
                           << getPresent().size() << " extra results";
    SmallVector<int64_t> expected = {k.getDimSize(0), totalKv, k.getDimSize(2)};
    for (Value present : getPresent())
      if (!shapesMatch(rankedType(present).getShape(), expected))
        return emitOpError()
               << "present key/value must be [batch, past_seq + kv_seq, "
                  "num_kv_heads * head_dim] = "
               << shapeStr(expected) << ", got " << present.getType();
  } else if (!getPresent().empty()) {
    return emitOpError() << "present key/value results need a KV cache "
                            "('cache %past_key, %past_value')";
  }
  if (std::optional<APFloat> scale = getScale())
    if (!(scale->convertToDouble() > 0.0))
      return emitOpError() << "scale must be positive, got "
                           << formatFloat(scale->convertToDouble());
  if (getWindow() && !getCausal())
    return emitOpError() << "a sliding window (window " << *getWindow()
                         << ") needs causal attention: it limits how far "
                            "back a query looks";
  if (getCausal() && !ShapedType::isDynamic(q.getDimSize(1)) &&
      !ShapedType::isDynamic(totalKv) && totalKv < q.getDimSize(1))
    return emitOpError() << "causal attention needs at least as many keys ("
                         << totalKv << ") as queries (" << q.getDimSize(1)
                         << "): the queries are the last positions of the "
                            "key/value sequence";
  return success();
}

//===----------------------------------------------------------------------===//
// RotateOp, HadamardOp
//===----------------------------------------------------------------------===//

LogicalResult RotateOp::verify() {
  RankedTensorType input = getInput().getType();
  RankedTensorType rotation = getRotation().getType();
  if (rotation.getRank() != 2 ||
      !dimsMatch(rotation.getDimSize(0), rotation.getDimSize(1)))
    return emitOpError() << "rotation must be a square matrix, got "
                         << rotation;
  if (input.getRank() < 1)
    return emitOpError() << "input must have at least one dimension";
  int64_t n = rotation.getDimSize(0), last = input.getShape().back();
  if (!ShapedType::isDynamic(n) && !ShapedType::isDynamic(last) &&
      last % n != 0)
    return emitOpError() << "the last dimension " << last
                         << " is not a multiple of the rotation size " << n
                         << "; a rotation acts on the whole last dimension or "
                            "on equal blocks of it (e.g. per head)";
  return success();
}

int64_t HadamardOp::getBlockSize() {
  if (std::optional<uint64_t> size = getSize())
    return static_cast<int64_t>(*size);
  return getInput().getType().getShape().back();
}

LogicalResult HadamardOp::verify() {
  RankedTensorType input = getInput().getType();
  if (input.getRank() < 1)
    return emitOpError() << "input must have at least one dimension";
  int64_t last = input.getShape().back();
  if (std::optional<uint64_t> size = getSize())
    if (!ShapedType::isDynamic(last) && last % static_cast<int64_t>(*size))
      return emitOpError() << "block size " << *size
                           << " does not divide the last dimension " << last
                           << "; omit 'size' to transform the whole dimension";
  return success();
}

//===----------------------------------------------------------------------===//
// Quantization ops
//===----------------------------------------------------------------------===//

LogicalResult FakeQuantOp::verify() {
  return verifyGroupsFit(*this, getQuant(), getInput().getType().getShape(),
                         "the input");
}

LogicalResult QuantizeOp::verify() {
  RankedTensorType input = getInput().getType();
  RankedTensorType values = getValues().getType();
  QuantAttr quant = getQuant();
  if (failed(verifyGroupsFit(*this, quant, input.getShape(), "the input")))
    return failure();
  if (!shapesMatch(values.getShape(), input.getShape()))
    return emitOpError() << "values must have the input's shape "
                         << shapeStr(input.getShape()) << ", got " << values;
  unsigned width = values.getElementType().getIntOrFloatBitWidth();
  if (width < quant.getBits())
    return emitOpError() << "values' element type " << values.getElementType()
                         << " cannot hold " << quant.getBits()
                         << "-bit integers; use i8";
  return verifyScales(*this, quant, input.getShape(), getScales(),
                      getZeroPoints(), "the input");
}

LogicalResult DequantizeOp::verify() {
  RankedTensorType values = getValues().getType();
  QuantAttr quant = getQuant();
  if (failed(verifyGroupsFit(*this, quant, values.getShape(), "the values")))
    return failure();
  unsigned width = values.getElementType().getIntOrFloatBitWidth();
  if (width < quant.getBits())
    return emitOpError() << "values' element type " << values.getElementType()
                         << " cannot hold " << quant.getBits()
                         << "-bit integers";
  if (!shapesMatch(getOutput().getType().getShape(), values.getShape()))
    return emitOpError() << "result must have the values' shape "
                         << shapeStr(values.getShape()) << ", got "
                         << getOutput().getType();
  return verifyScales(*this, quant, values.getShape(), getScales(),
                      getZeroPoints(), "the values");
}

void QLinearOp::build(OpBuilder &builder, OperationState &state, Value input,
                      Value weight, Value scales, Value zeroPoints, Value bias,
                      QuantAttr weightQuant, QuantAttr actQuant) {
  auto packed = cast<PackedType>(weight.getType());
  build(builder, state, linearResultType(input, packed.getShape().front()),
        input, weight, scales, zeroPoints, bias, weightQuant, actQuant);
}

LogicalResult QLinearOp::verify() {
  PackedType weight = getWeight().getType();
  QuantAttr weightQuant = getWeightQuant();
  if (failed(verifyLinearShapes(*this, getInput().getType(), weight.getShape(),
                                weight, getBias(), getOutput().getType())))
    return failure();
  if (weight.getBits() < weightQuant.getBits())
    return emitOpError() << "weight_quant has " << weightQuant.getBits()
                         << " bits but the packed weight holds i"
                         << weight.getBits() << " elements";
  Granularity wg = weightQuant.getGranularity();
  if (wg != Granularity::PerChannel && wg != Granularity::Group)
    return emitOpError() << "weights are quantized per_channel or in groups "
                            "('group = N'), not "
                         << stringifyGranularity(wg);
  if (failed(verifyGroupsFit(*this, weightQuant, weight.getShape(),
                             "the weight")) ||
      failed(verifyScales(*this, weightQuant, weight.getShape(), getScales(),
                          getZeroPoints(), "the weight")))
    return failure();
  if (std::optional<QuantAttr> actQuant = getActQuant()) {
    if (actQuant->getGranularity() == Granularity::PerChannel)
      return emitOpError() << "activations are quantized per_token, "
                              "per_tensor or in groups, not per_channel";
    if (failed(verifyGroupsFit(*this, *actQuant,
                               getInput().getType().getShape(), "the input")))
      return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Folders and canonicalizations
//===----------------------------------------------------------------------===//

/// Whether `value` is an sq.weight holding an n x n identity matrix (f32,
/// f64, f16 or bf16 storage; the bits of 1 and +-0 are compared exactly).
static bool isIdentityWeight(Value value) {
  auto weight = value.getDefiningOp<WeightOp>();
  if (!weight)
    return false;
  auto resource = dyn_cast<DenseResourceElementsAttr>(weight.getValue());
  AsmResourceBlob *blob =
      resource ? resource.getRawHandle().getBlob() : nullptr;
  if (!blob)
    return false;
  ShapedType type = resource.getType();
  if (type.getRank() != 2 || type.getDimSize(0) != type.getDimSize(1))
    return false;
  Type et = type.getElementType();
  uint64_t one;
  unsigned bytes;
  if (et.isF32()) {
    one = 0x3F800000u, bytes = 4;
  } else if (et.isF64()) {
    one = 0x3FF0000000000000ull, bytes = 8;
  } else if (et.isF16()) {
    one = 0x3C00u, bytes = 2;
  } else if (et.isBF16()) {
    one = 0x3F80u, bytes = 2;
  } else {
    return false;
  }
  ArrayRef<char> data = blob->getData();
  int64_t n = type.getDimSize(0);
  if (static_cast<int64_t>(data.size()) != n * n * bytes)
    return false;
  uint64_t signBit = uint64_t(1) << (8 * bytes - 1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      uint64_t bits = 0;
      std::memcpy(&bits, data.data() + (i * n + j) * bytes, bytes);
      if (i == j ? bits != one : (bits & ~signBit) != 0)
        return false;
    }
  return true;
}

OpFoldResult RotateOp::fold(FoldAdaptor) {
  if (isIdentityWeight(getRotation()))
    return getInput();
  return {};
}

namespace {
/// dequantize(quantize(x)) with the same grid is fake_quant(x).
struct DequantizeOfQuantize : public OpRewritePattern<DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(DequantizeOp op,
                                PatternRewriter &rewriter) const override {
    auto q = op.getValues().getDefiningOp<QuantizeOp>();
    if (!q || q.getQuant() != op.getQuant() ||
        op.getScales() != q.getScales() ||
        op.getZeroPoints() != q.getZeroPoints() ||
        q.getInput().getType() != op.getOutput().getType())
      return failure();
    rewriter.replaceOpWithNewOp<FakeQuantOp>(op, op.getOutput().getType(),
                                             q.getInput(), op.getQuant());
    return success();
  }
};
} // namespace

void DequantizeOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                               MLIRContext *context) {
  results.add<DequantizeOfQuantize>(context);
}

#define GET_OP_CLASSES
#include "sq/Dialect/SQ/IR/SQOps.cpp.inc"
