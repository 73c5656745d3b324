//===- SQ.h - the sq dialect -------------------------------------*- C++
//-*-===//
//
// Include this header to use the sq dialect: its attributes, types and ops.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_DIALECT_SQ_IR_SQ_H
#define SQ_DIALECT_SQ_IR_SQ_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "sq/Numerics/Float16.h"
#include "sq/Numerics/Layers.h"

#include <optional>
#include <string>

#include "sq/Dialect/SQ/IR/SQEnums.h.inc"

namespace sq {
/// The shortest decimal form of `value` that parses back to exactly `value`
/// as an MLIR float literal (0.95 rather than 0.94999999999999996, 1.0e-05
/// rather than 1e-05). Used by printers and diagnostics.
std::string formatFloat(double value);

/// The storage format of a float weight's element type (f32, f16 or bf16);
/// std::nullopt for any other type.
inline std::optional<numerics::FloatFormat> floatFormatOf(mlir::Type type) {
  if (type.isF32())
    return numerics::FloatFormat::F32;
  if (type.isF16())
    return numerics::FloatFormat::F16;
  if (type.isBF16())
    return numerics::FloatFormat::BF16;
  return std::nullopt;
}
} // namespace sq

#include "sq/Dialect/SQ/IR/SQDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "sq/Dialect/SQ/IR/SQAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "sq/Dialect/SQ/IR/SQTypes.h.inc"

#define GET_OP_CLASSES
#include "sq/Dialect/SQ/IR/SQOps.h.inc"

namespace sq {
/// The frequency scaling of an sq.rope as the shared RoPE arithmetic
/// (sq/Numerics/Layers.h) takes it: factor 0 (none) without the attribute.
inline numerics::RopeScaling ropeScalingOf(RopeOp op) {
  numerics::RopeScaling s;
  if (RopeScalingAttr a = op.getScalingAttr()) {
    s.factor = a.getFactor().convertToDouble();
    s.lowFreqFactor = a.getLowFreqFactor().convertToDouble();
    s.highFreqFactor = a.getHighFreqFactor().convertToDouble();
    s.originalMaxPositions =
        static_cast<double>(a.getOriginalMaxPositionEmbeddings());
  }
  return s;
}
} // namespace sq

#endif // SQ_DIALECT_SQ_IR_SQ_H
