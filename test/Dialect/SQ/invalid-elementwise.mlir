// Verifier rules of sq.add, sq.mul and sq.silu: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @add_types(%a: tensor<1x8x64xf32>, %b: tensor<1x8x32xf32>) {
  // expected-error@+1 {{requires the same type for all operands and results}}
  %y = "sq.add"(%a, %b) : (tensor<1x8x64xf32>, tensor<1x8x32xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @mul_types(%a: tensor<1x8x64xf32>, %b: tensor<1x8x64xf16>) {
  // expected-error@+1 {{requires the same type for all operands and results}}
  %y = "sq.mul"(%a, %b) : (tensor<1x8x64xf32>, tensor<1x8x64xf16>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @silu_types(%a: tensor<1x8x64xf32>) {
  // expected-error@+1 {{requires the same type for all operands and results}}
  %y = "sq.silu"(%a) : (tensor<1x8x64xf32>) -> tensor<1x8x32xf32>
  return
}

// -----

func.func @elementwise_integer(%a: tensor<4xi32>) {
  // expected-error@+1 {{operand #0 must be ranked tensor of floating-point values}}
  %y = sq.silu %a : tensor<4xi32>
  return
}
