// Verifier rules of sq.fake_quant, sq.quantize and sq.dequantize: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @fake_quant_group(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{group size 128 does not divide the last dimension 64 of the input; choose a group size that divides it}}
  %y = sq.fake_quant %x {quant = #sq.quant<bits = 4, asym, group = 128>} : tensor<1x8x64xf32>
  return
}

// -----

func.func @quantize_values_shape(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{values must have the input's shape [1, 8, 64], got 'tensor<1x8x32xi8>'}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, sym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x32xi8>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_narrow(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{values' element type 'i2' cannot hold 4-bit integers; use i8}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, sym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi2>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_scales(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{scales of the input must have shape [1, 8, 4] (one per group of the last dimension), got 'tensor<1x8x1xf32>'}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, sym, group = 16>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_per_tensor_scales(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{scales of the input must have shape [1, 1, 1] (one per per_tensor), got 'tensor<1x8x1xf32>'}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, sym, per_tensor>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_sym_zero_points(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{symmetric quantization of the input has no zero points; drop them or use 'asym'}}
  %v, %s, %z = sq.quantize %x {quant = #sq.quant<bits = 4, sym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_asym_no_zero_points(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{asymmetric quantization of the input needs zero points; add them or use 'sym'}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, asym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>
  return
}

// -----

func.func @quantize_zero_point_type(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{zero points of the input must have the scales' type 'tensor<1x8x1xf32>', got 'tensor<1x8x1xf16>'}}
  %v, %s, %z = sq.quantize %x {quant = #sq.quant<bits = 4, asym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf16>
  return
}

// -----

func.func @quantize_group(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{group size 48 does not divide the last dimension 64 of the input}}
  %v, %s = sq.quantize %x {quant = #sq.quant<bits = 4, sym, group = 48>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>
  return
}

// -----

func.func @dequantize_result(%v: tensor<1x8x64xi8>, %s: tensor<1x8x1xf32>) {
  // expected-error@+1 {{result must have the values' shape [1, 8, 64], got 'tensor<1x8x32xf32>'}}
  %y = sq.dequantize %v, %s {quant = #sq.quant<bits = 4, sym, per_token>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>) -> tensor<1x8x32xf32>
  return
}

// -----

func.func @dequantize_narrow(%v: tensor<1x8x64xi2>, %s: tensor<1x8x1xf32>) {
  // expected-error@+1 {{values' element type 'i2' cannot hold 4-bit integers}}
  %y = sq.dequantize %v, %s {quant = #sq.quant<bits = 4, sym, per_token>}
      : (tensor<1x8x64xi2>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @dequantize_group(%v: tensor<1x8x64xi8>, %s: tensor<1x8x1xf32>) {
  // expected-error@+1 {{group size 24 does not divide the last dimension 64 of the values}}
  %y = sq.dequantize %v, %s {quant = #sq.quant<bits = 4, sym, group = 24>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @dequantize_scales(%v: tensor<1x8x64xi8>, %s: tensor<1x8x1xf32>, %z: tensor<1x8x1xf32>) {
  // expected-error@+1 {{symmetric quantization of the values has no zero points; drop them or use 'asym'}}
  %y = sq.dequantize %v, %s, %z {quant = #sq.quant<bits = 4, sym, per_token>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  return
}
