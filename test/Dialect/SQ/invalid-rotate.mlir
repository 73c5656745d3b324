// Verifier rules of sq.rotate: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @rotate_square(%x: tensor<1x8x64xf32>, %r: tensor<64x32xf32>) {
  // expected-error@+1 {{rotation must be a square matrix, got 'tensor<64x32xf32>'}}
  %y = sq.rotate %x by %r : tensor<1x8x64xf32>, tensor<64x32xf32>
  return
}

// -----

func.func @rotate_blocks(%x: tensor<1x8x64xf32>, %r: tensor<12x12xf32>) {
  // expected-error@+1 {{the last dimension 64 is not a multiple of the rotation size 12; a rotation acts on the whole last dimension or on equal blocks of it (e.g. per head)}}
  %y = sq.rotate %x by %r : tensor<1x8x64xf32>, tensor<12x12xf32>
  return
}

// -----

func.func @rotate_result(%x: tensor<1x8x64xf32>, %r: tensor<64x64xf32>) {
  // expected-error@+1 {{all of {input, output} have same type}}
  %y = "sq.rotate"(%x, %r) : (tensor<1x8x64xf32>, tensor<64x64xf32>) -> tensor<1x8x32xf32>
  return
}
