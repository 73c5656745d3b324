// Folders and canonicalizations of the sq ops (sq-opt --canonicalize).
// RUN: sq-opt %s --canonicalize --split-input-file | FileCheck %s

// A rotation by an identity weight folds away (f32 and bf16 storage, with
// a -0.0 off the diagonal); a rotation by anything else stays.
// CHECK-LABEL: func.func @rotate_by_identity
// CHECK-SAME: (%[[X:.*]]: tensor<1x2x4xf32>)
// CHECK-NOT: sq.rotate
// CHECK: return %[[X]], %[[X]]
func.func @rotate_by_identity(%x: tensor<1x2x4xf32>) -> (tensor<1x2x4xf32>, tensor<1x2x4xf32>) {
  %i = sq.weight dense_resource<eye2> : tensor<2x2xf32>
  %y = sq.rotate %x by %i : tensor<1x2x4xf32>, tensor<2x2xf32>
  %b = sq.weight dense_resource<eye2_bf16> : tensor<2x2xbf16>
  %z = sq.rotate %y by %b transposed : tensor<1x2x4xf32>, tensor<2x2xbf16>
  return %y, %z : tensor<1x2x4xf32>, tensor<1x2x4xf32>
}
{-#
  dialect_resources: {
    builtin: {
      eye2: "0x040000000000803F00000080000000000000803F",
      eye2_bf16: "0x02000000803F00000000803F"
    }
  }
#-}

// -----

// CHECK-LABEL: func.func @rotate_by_swap
// CHECK: sq.rotate
func.func @rotate_by_swap(%x: tensor<1x2x4xf32>) -> tensor<1x2x4xf32> {
  %p = sq.weight dense_resource<swap2> : tensor<2x2xf32>
  %y = sq.rotate %x by %p : tensor<1x2x4xf32>, tensor<2x2xf32>
  return %y : tensor<1x2x4xf32>
}
{-#
  dialect_resources: {
    builtin: {
      swap2: "0x04000000000000000000803F0000803F00000000"
    }
  }
#-}

// -----

// dequantize(quantize(x)) on the same grid is fake_quant(x); the quantize
// goes with it when nothing else reads it.
// CHECK-LABEL: func.func @dequantize_of_quantize
// CHECK-SAME: (%[[X:.*]]: tensor<1x8x64xf32>)
// CHECK-NEXT: %[[F:.*]] = sq.fake_quant %[[X]] {quant = #sq.quant<bits = 4, asym, per_token>} : tensor<1x8x64xf32>
// CHECK-NEXT: return %[[F]]
func.func @dequantize_of_quantize(%x: tensor<1x8x64xf32>) -> tensor<1x8x64xf32> {
  %v, %s, %z = sq.quantize %x {quant = #sq.quant<bits = 4, asym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>
  %d = sq.dequantize %v, %s, %z {quant = #sq.quant<bits = 4, asym, per_token>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  return %d : tensor<1x8x64xf32>
}

// -----

// Another grid is not the same function: both ops stay.
// CHECK-LABEL: func.func @dequantize_other_grid
// CHECK: sq.quantize
// CHECK: sq.dequantize
// CHECK-NOT: sq.fake_quant
func.func @dequantize_other_grid(%x: tensor<1x8x64xf32>) -> tensor<1x8x64xf32> {
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 8, sym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>
  %d = sq.dequantize %v, %s {quant = #sq.quant<bits = 4, sym, per_token>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  return %d : tensor<1x8x64xf32>
}
