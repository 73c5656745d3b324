// Verifier rules of sq.weight: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @weight_inline(%x: tensor<2xf32>) {
  // expected-error@+1 {{value must be a named resource (dense_resource<NAME> : tensor<...>), got an inline constant}}
  %w = sq.weight dense<1.0> : tensor<2xf32>
  return
}

// -----

func.func @weight_packed_size() {
  // expected-error@+1 {{packed weight '!sq.packed<2x3xi4>' needs a 1-D i8 resource of 2 rows x 2 bytes = 4 bytes (tensor<4xi8>), got 'tensor<3xi8>'}}
  %w = sq.weight dense_resource<w> : tensor<3xi8> -> !sq.packed<2x3xi4>
  return
}

// -----

func.func @weight_result_type() {
  // expected-error@+1 {{result type 'tensor<4xf16>' must be the resource's type 'tensor<4xf32>'}}
  %w = sq.weight dense_resource<w> : tensor<4xf32> -> tensor<4xf16>
  return
}

// -----

func.func @weight_blob_size() {
  // expected-error@+1 {{resource 'model.w' holds 12 bytes but 'tensor<2x2xf32>' needs 16 bytes}}
  %w = sq.weight dense_resource<model.w> : tensor<2x2xf32>
  return
}
{-#
  dialect_resources: {
    builtin: {
      model.w: "0x040000000000803F0000803F0000803F"
    }
  }
#-}

// -----

func.func @weight_not_elements() {
  // expected-error@+1 {{expected a weight value dense_resource<NAME> : tensor<...>}}
  %w = sq.weight 1.0 : f32
  return
}
