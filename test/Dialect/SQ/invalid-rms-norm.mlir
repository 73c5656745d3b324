// Verifier rules of sq.rms_norm: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @rms_norm_rank0(%x: tensor<f32>) {
  // expected-error@+1 {{input must have at least one dimension}}
  %y = sq.rms_norm %x : tensor<f32>
  return
}

// -----

func.func @rms_norm_epsilon(%x: tensor<1x8x64xf32>) {
  // expected-error@+1 {{epsilon must be positive, got 0.0}}
  %y = sq.rms_norm %x {epsilon = 0.0 : f64} : tensor<1x8x64xf32>
  return
}

// -----

func.func @rms_norm_scale(%x: tensor<1x8x64xf32>, %g: tensor<32xf32>) {
  // expected-error@+1 {{scale must be 1-D with one entry per feature of the normalized (last) dimension ([64]), got 'tensor<32xf32>'}}
  %y = sq.rms_norm %x scale %g : tensor<1x8x64xf32>, tensor<32xf32>
  return
}
