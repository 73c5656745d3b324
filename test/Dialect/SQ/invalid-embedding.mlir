// Verifier rules of sq.embedding: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @embedding_table_rank(%t: tensor<512xf32>, %ids: tensor<1x8xi64>) {
  // expected-error@+1 {{table must be 2-D [vocab, hidden]}}
  %h = sq.embedding %t[%ids] : tensor<512xf32>[tensor<1x8xi64>] -> tensor<1x8x64xf32>
  return
}

// -----

func.func @embedding_result(%t: tensor<512x64xf32>, %ids: tensor<1x8xi64>) {
  // expected-error@+1 {{result must have the ids' shape followed by the table's hidden size, [1, 8, 64], got 'tensor<1x8x32xf32>'}}
  %h = sq.embedding %t[%ids] : tensor<512x64xf32>[tensor<1x8xi64>] -> tensor<1x8x32xf32>
  return
}
