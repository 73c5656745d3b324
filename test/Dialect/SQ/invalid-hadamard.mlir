// Verifier rules of sq.hadamard: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @hadamard_size(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{block size 12 does not divide the last dimension 64; omit 'size' to transform the whole dimension}}
  %y = sq.hadamard %x size 12 : tensor<1x8x64xf32>
  return
}

// -----

func.func @hadamard_zero(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{attribute 'size' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %y = sq.hadamard %x size 0 : tensor<1x8x64xf32>
  return
}

// -----

func.func @hadamard_rank0(%x: tensor<f32>) {
  // expected-error@+1 {{input must have at least one dimension}}
  %y = sq.hadamard %x : tensor<f32>
  return
}
