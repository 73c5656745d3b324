// Verifier rules of sq.linear: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @linear_weight_rank(%x: tensor<1x8x64xf32>, %w: tensor<64xf32>) {
  // expected-error@+1 {{weight must be 2-D [out_features, in_features], got 'tensor<64xf32>'}}
  %y = sq.linear %x, %w : (tensor<1x8x64xf32>, tensor<64xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @linear_in_features(%x: tensor<1x8x64xf32>, %w: tensor<172x32xf32>) {
  // expected-error@+1 {{input's last dimension (64) must equal the weight's in_features (32); the weight is [out_features, in_features] and y = x * W^T}}
  %y = sq.linear %x, %w : (tensor<1x8x64xf32>, tensor<172x32xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @linear_bias(%x: tensor<1x8x64xf32>, %w: tensor<172x64xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{bias must be 1-D with out_features (172) entries, got 'tensor<64xf32>'}}
  %y = sq.linear %x, %w, %b : (tensor<1x8x64xf32>, tensor<172x64xf32>, tensor<64xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @linear_result(%x: tensor<1x8x64xf32>, %w: tensor<172x64xf32>) {
  // expected-error@+1 {{result must have the input's shape with the last dimension replaced by out_features, [1, 8, 172], got 'tensor<1x8x64xf32>'}}
  %y = sq.linear %x, %w : (tensor<1x8x64xf32>, tensor<172x64xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @linear_rank0(%x: tensor<f32>, %w: tensor<4x4xf32>) {
  // expected-error@+1 {{input must have at least one dimension}}
  %y = sq.linear %x, %w : (tensor<f32>, tensor<4x4xf32>) -> tensor<4xf32>
  return
}
