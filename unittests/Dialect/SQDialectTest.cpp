//===- SQDialectTest.cpp - the sq dialect's C++ API -----------------------===//

#include "sq/Dialect/SQ/IR/SQ.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Bytecode/BytecodeWriter.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

#include <gtest/gtest.h>

using namespace mlir;
using namespace sq;

namespace {

class SQDialectTest : public ::testing::Test {
protected:
  SQDialectTest() {
    context.loadDialect<SQDialect, func::FuncDialect>();
    // Keep diagnostics of expected failures off the test log.
    context.getDiagEngine().registerHandler([](Diagnostic &) {});
  }
  MLIRContext context;
  OpBuilder builder{&context};
  Location loc = UnknownLoc::get(&context);

  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, builder.getF32Type());
  }
  /// A block argument of `type` to build ops on.
  Value arg(Type type) { return block.addArgument(type, loc); }
  Block block;
};

TEST_F(SQDialectTest, QuantAttrGroups) {
  auto perToken = QuantAttr::get(&context, 4, false, Granularity::PerToken, 0,
                                 llvm::APFloat(0.9));
  EXPECT_EQ(perToken.getNumGroups(4096), 1);
  EXPECT_DOUBLE_EQ(perToken.getClipRatio(), 0.9);
  auto grouped = QuantAttr::get(&context, 4, true, Granularity::Group, 128,
                                llvm::APFloat(1.0));
  EXPECT_TRUE(grouped.isGrouped());
  EXPECT_EQ(grouped.getNumGroups(4096), 32);
  EXPECT_EQ(grouped.getNumGroups(ShapedType::kDynamic), ShapedType::kDynamic);
}

TEST_F(SQDialectTest, QuantAttrGetCheckedRejects) {
  auto checked = [&](unsigned bits, Granularity granularity, int64_t group,
                     double clip) {
    return QuantAttr::getChecked([&]() { return emitError(loc); }, &context,
                                 bits, /*symmetric=*/true, granularity, group,
                                 llvm::APFloat(clip));
  };
  EXPECT_FALSE(checked(9, Granularity::PerChannel, 0, 1.0));
  EXPECT_FALSE(checked(1, Granularity::PerChannel, 0, 1.0));
  EXPECT_FALSE(checked(4, Granularity::Group, 0, 1.0));
  EXPECT_FALSE(checked(4, Granularity::PerToken, 16, 1.0));
  EXPECT_FALSE(checked(4, Granularity::PerToken, 0, 1.5));
  EXPECT_FALSE(checked(4, Granularity::PerToken, 0, 0.0));
  EXPECT_TRUE(checked(2, Granularity::PerTensor, 0, 0.5));
  EXPECT_TRUE(checked(8, Granularity::Group, 64, 1.0));
}

TEST_F(SQDialectTest, PackedTypeStorage) {
  auto packed = PackedType::get(&context, {11008, 4096}, 4);
  EXPECT_EQ(packed.getNumRows(), 11008);
  EXPECT_EQ(packed.getRowBytes(), 2048);
  EXPECT_EQ(packed.getStorageBytes(), 11008 * 2048);
  auto odd = PackedType::get(&context, {2, 3, 5}, 4);
  EXPECT_EQ(odd.getNumRows(), 6);
  EXPECT_EQ(odd.getRowBytes(), 3);
  EXPECT_EQ(PackedType::get(&context, {4, 5}, 8).getRowBytes(), 5);
}

TEST_F(SQDialectTest, FormatFloatRoundTrips) {
  EXPECT_EQ(formatFloat(0.95), "0.95");
  EXPECT_EQ(formatFloat(1.0), "1.0");
  EXPECT_EQ(formatFloat(1e-5), "1.0e-05");
  EXPECT_EQ(formatFloat(10000.0), "1.0e+04");
  for (double v : {0.1, 1.0 / 3.0, 123456.789, 2.5e-12})
    EXPECT_EQ(std::strtod(formatFloat(v).c_str(), nullptr), v) << v;
}

// The builders infer result shapes (cheap shape inference).
TEST_F(SQDialectTest, LinearBuilderInfersResult) {
  Value x = arg(f32({2, ShapedType::kDynamic, 64}));
  Value w = arg(f32({172, 64}));
  auto linear = LinearOp::create(builder, loc, x, w);
  EXPECT_EQ(linear.getType(), f32({2, ShapedType::kDynamic, 172}));
  EXPECT_TRUE(succeeded(verify(linear)));
  linear->erase();
}

TEST_F(SQDialectTest, QLinearBuilderInfersResult) {
  Value x = arg(f32({1, 8, 64}));
  Value w = arg(PackedType::get(&context, {172, 64}, 4));
  Value s = arg(f32({172, 2}));
  auto wq = QuantAttr::get(&context, 4, true, Granularity::Group, 32,
                           llvm::APFloat(1.0));
  auto aq = QuantAttr::get(&context, 4, false, Granularity::PerToken, 0,
                           llvm::APFloat(1.0));
  auto op = QLinearOp::create(builder, loc, x, w, s, Value(), Value(), wq, aq);
  EXPECT_EQ(op.getType(), f32({1, 8, 172}));
  EXPECT_TRUE(succeeded(verify(op)));
  op->erase();
}

TEST_F(SQDialectTest, VerifierRejectsBadLinear) {
  Value x = arg(f32({1, 8, 64}));
  Value w = arg(f32({172, 32}));
  auto linear = LinearOp::create(builder, loc, x, w);
  EXPECT_TRUE(failed(verify(linear)));
  linear->erase();
}

TEST_F(SQDialectTest, HeadDimAccessors) {
  Value q = arg(f32({1, 8, 64}));
  Value k = arg(f32({1, 8, 32}));
  Value pos = arg(RankedTensorType::get({1, 8}, builder.getI64Type()));
  auto rope = RopeOp::create(builder, loc, q, pos, 8, llvm::APFloat(10000.0),
                             RopeLayout::RotateHalf, RopeScalingAttr());
  EXPECT_EQ(rope.getHeadDim(), 8);
  auto attn = AttentionOp::create(builder, loc, q.getType(), TypeRange(), q, k,
                                  k, Value(), Value(), 8, 4, FloatAttr(),
                                  /*causal=*/true, IntegerAttr());
  EXPECT_EQ(attn.getHeadDim(), 8);
  EXPECT_TRUE(succeeded(verify(attn)));
  auto had = HadamardOp::create(builder, loc, q, IntegerAttr(), IntegerAttr());
  EXPECT_EQ(had.getBlockSize(), 64);
  attn->erase();
  rope->erase();
  had->erase();
}

// Weights parsed from text expose their resource name and bytes.
TEST_F(SQDialectTest, WeightNameAndBlob) {
  const char *text = R"mlir(
    func.func @f() -> tensor<2xf32> {
      %w = sq.weight dense_resource<model.layers.7.mlp.up_proj.weight> : tensor<2xf32>
      return %w : tensor<2xf32>
    }
    {-#
      dialect_resources: { builtin: {
        model.layers.7.mlp.up_proj.weight: "0x040000000000803F00000040"
      } }
    #-}
  )mlir";
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &context);
  ASSERT_TRUE(module);
  WeightOp weight;
  module->walk([&](WeightOp op) { weight = op; });
  ASSERT_TRUE(weight);
  EXPECT_EQ(weight.getName(), "model.layers.7.mlp.up_proj.weight");
  auto resource = cast<DenseResourceElementsAttr>(weight.getValue());
  ArrayRef<char> data = resource.getRawHandle().getBlob()->getData();
  ASSERT_EQ(data.size(), 8u);
  float values[2];
  std::memcpy(values, data.data(), 8);
  EXPECT_EQ(values[0], 1.0f);
  EXPECT_EQ(values[1], 2.0f);
}

/// Prints an attribute or type and parses it back.
template <typename T> static T reparse(T value, MLIRContext *context) {
  std::string text;
  llvm::raw_string_ostream(text) << value;
  if constexpr (std::is_same_v<T, Type>)
    return parseType(text, context);
  else
    return parseAttribute(text, context);
}

// Every combination of quantization parameters prints and parses back to the
// same attribute.
TEST_F(SQDialectTest, QuantAttrPrintParseRoundTrip) {
  int count = 0;
  for (unsigned bits = 2; bits <= 8; ++bits)
    for (bool symmetric : {true, false})
      for (Granularity granularity :
           {Granularity::PerTensor, Granularity::PerToken,
            Granularity::PerChannel, Granularity::Group})
        for (double clip : {1.0, 0.9, 0.95, 0.123456789, 1e-3}) {
          int64_t group = granularity == Granularity::Group ? 128 : 0;
          auto attr = QuantAttr::get(&context, bits, symmetric, granularity,
                                     group, llvm::APFloat(clip));
          Attribute parsed = reparse<Attribute>(attr, &context);
          EXPECT_EQ(parsed, attr);
          ++count;
        }
  EXPECT_EQ(count, 7 * 2 * 4 * 5);
}

TEST_F(SQDialectTest, PackedTypePrintParseRoundTrip) {
  for (unsigned bits : {4u, 8u})
    for (std::vector<int64_t> shape :
         {std::vector<int64_t>{1}, {3, 5}, {4096, 11008}, {2, 3, 7}}) {
      Type type = PackedType::get(&context, shape, bits);
      EXPECT_EQ(reparse<Type>(type, &context), type);
    }
}

// The importer's path: weights created from C++ buffers as named resource
// blobs, written to bytecode and read back bit for bit.
TEST_F(SQDialectTest, ResourceWeightsFromBuffersRoundTripBytecode) {
  std::vector<float> values = {1.0f, -0.0f, 3.5f, 1e-30f, -7.25f, 0.1f};
  auto type = RankedTensorType::get({2, 3}, builder.getF32Type());
  auto blob =
      HeapAsmResourceBlob::allocateAndCopyInferAlign(ArrayRef<float>(values));
  auto attr = DenseResourceElementsAttr::get(
      type, "model.layers.0.self_attn.q_proj.weight", std::move(blob));

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  builder.setInsertionPointToEnd(module->getBody());
  auto weight = WeightOp::create(builder, loc, cast<ElementsAttr>(attr));
  EXPECT_EQ(weight.getType(), type);
  EXPECT_EQ(weight.getName(), "model.layers.0.self_attn.q_proj.weight");
  ASSERT_TRUE(succeeded(verify(*module)));

  std::string bytes;
  llvm::raw_string_ostream os(bytes);
  ASSERT_TRUE(succeeded(writeBytecodeToFile(*module, os)));

  MLIRContext other;
  other.loadDialect<SQDialect>();
  ParserConfig config(&other);
  OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(bytes, config);
  ASSERT_TRUE(parsed);
  WeightOp read;
  parsed->walk([&](WeightOp op) { read = op; });
  ASSERT_TRUE(read);
  EXPECT_EQ(read.getName(), "model.layers.0.self_attn.q_proj.weight");
  ArrayRef<char> data = cast<DenseResourceElementsAttr>(read.getValue())
                            .getRawHandle()
                            .getBlob()
                            ->getData();
  ASSERT_EQ(data.size(), values.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(data.data(), values.data(), data.size()), 0);
}

} // namespace
