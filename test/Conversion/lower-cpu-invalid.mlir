// RUN: sq-opt %s --sq-lower-cpu -split-input-file -verify-diagnostics

func.func @forward(%ids: tensor<?x?xi64>, %pos: tensor<?x?xi64>) -> tensor<?x?x4xf32> {
  %t = sq.weight dense_resource<table> : tensor<4x4xf32>
  %e = sq.embedding %t[%ids] : tensor<4x4xf32>[tensor<?x?xi64>] -> tensor<?x?x4xf32>
  // expected-error @+1 {{the CPU lowering cannot compile this op}}
  %q, %s = sq.quantize %e {quant = #sq.quant<bits = 4, sym, per_token>} : tensor<?x?x4xf32> -> tensor<?x?x4xi8>, tensor<?x?x1xf32>
  return %e : tensor<?x?x4xf32>
}

// -----

func.func @forward(%ids: tensor<?x?xi64>, %pos: tensor<?x?xi64>, %table: tensor<4x4xf32>) -> tensor<?x?x4xf32> {
  // expected-error @+1 {{the CPU lowering needs the embedding table to be an sq.weight}}
  %e = sq.embedding %table[%ids] : tensor<4x4xf32>[tensor<?x?xi64>] -> tensor<?x?x4xf32>
  return %e : tensor<?x?x4xf32>
}

// -----

func.func @forward(%ids: tensor<?x?xi64>, %pos: tensor<?x?xi64>) -> tensor<?x?x4xf32> {
  %t = sq.weight dense_resource<table> : tensor<4x4xf32>
  %e = sq.embedding %t[%ids] : tensor<4x4xf32>[tensor<?x?xi64>] -> tensor<?x?x4xf32>
  // expected-error @+1 {{the CPU lowering needs the positions to be @forward's second argument}}
  %r = sq.rope %e, %ids heads 1 theta 1.000000e+04 rotate_half : tensor<?x?x4xf32>, tensor<?x?xi64>
  return %r : tensor<?x?x4xf32>
}
