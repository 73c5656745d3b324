//===- SQTypes.td - sq types --------------------------------*- tablegen -*-===//

#ifndef SQ_DIALECT_SQ_IR_SQTYPES_TD
#define SQ_DIALECT_SQ_IR_SQTYPES_TD

include "sq/Dialect/SQ/IR/SQDialect.td"
include "mlir/IR/AttrTypeBase.td"

def SQ_PackedType : TypeDef<SQ_Dialect, "Packed"> {
  let mnemonic = "packed";
  let summary = "bit-packed integer weight tensor (int4: two values per byte)";
  let description = [{
    A tensor of `bits`-bit integers stored bit-packed along its last
    dimension. The logical shape is the one written; the storage is
    row-major, each row of the last dimension padded to a whole byte:
    `ceil(last_dim * bits / 8)` bytes per row. For `i4`, element `2j` of a
    row is the low nibble of byte `j` and element `2j+1` its high nibble.
    Whether a nibble is signed (two's complement, symmetric quantization) or
    unsigned (asymmetric, with zero points) is stated by the `#sq.quant`
    attribute of the op that consumes it. Supported widths: 4 and 8.

    ```mlir
    !sq.packed<4096x11008xi4>
    ```
  }];
  let parameters = (ins ArrayRefParameter<"int64_t">:$shape, "unsigned":$bits);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Size of the packed (last) dimension.
    int64_t getLastDim() const { return getShape().back(); }
    /// Number of rows: the product of all dimensions but the last.
    int64_t getNumRows() const;
    /// Bytes per row of the last dimension, padded to a whole byte.
    int64_t getRowBytes() const;
    /// Total storage size in bytes.
    int64_t getStorageBytes() const { return getNumRows() * getRowBytes(); }
  }];
}

#endif // SQ_DIALECT_SQ_IR_SQTYPES_TD
