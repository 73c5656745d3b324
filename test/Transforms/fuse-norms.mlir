// --sq-fuse-norms: gamma moves into the columns of every linear that reads
// the norm, the norm becomes weightless, names are kept.
// RUN: sq-opt %s --sq-fuse-norms | FileCheck %s
// RUN: sq-opt %s --sq-fuse-norms=center-embeddings=true | FileCheck %s --check-prefix=CENTER

// CHECK-LABEL: func.func @layer
// CHECK-NOT:   dense_resource<gamma>
// CHECK:       %[[N:.*]] = sq.rms_norm %{{.*}} : tensor<1x2x2xf32>
// CHECK:       %[[Q:.*]] = sq.weight dense_resource<q> : tensor<2x2xf32>
// CHECK:       sq.linear %[[N]], %[[Q]]
// CHECK:       %[[K:.*]] = sq.weight dense_resource<k> : tensor<1x2xf32>
// CHECK:       sq.linear %[[N]], %[[K]]
// q = [[1, 2], [3, 4]] * diag(gamma = [2, 0.5]) = [[2, 1], [6, 2]];
// k = [[1, 1]] * diag(gamma) = [[2, 0.5]]; the embedding is untouched:
// CHECK:       q: "0x04000000000000400000803F0000C04000000040",
// CHECK-NEXT:  k: "0x04000000000000400000003F"
// CHECK-NOT:   gamma:
// CENTER:      emb: "0x04000000000080BF0000803F"
func.func @layer(%ids: tensor<1x2xi64>) -> (tensor<1x2x2xf32>, tensor<1x2x1xf32>) {
  %e = sq.weight dense_resource<emb> : tensor<1x2xf32>
  %h = sq.embedding %e[%ids] : tensor<1x2xf32>[tensor<1x2xi64>] -> tensor<1x2x2xf32>
  %g = sq.weight dense_resource<gamma> : tensor<2xf32>
  %n = sq.rms_norm %h scale %g : tensor<1x2x2xf32>, tensor<2xf32>
  %wq = sq.weight dense_resource<q> : tensor<2x2xf32>
  %q = sq.linear %n, %wq : (tensor<1x2x2xf32>, tensor<2x2xf32>) -> tensor<1x2x2xf32>
  %wk = sq.weight dense_resource<k> : tensor<1x2xf32>
  %k = sq.linear %n, %wk : (tensor<1x2x2xf32>, tensor<1x2xf32>) -> tensor<1x2x1xf32>
  return %q, %k : tensor<1x2x2xf32>, tensor<1x2x1xf32>
}
{-#
  dialect_resources: {
    builtin: {
      emb: "0x040000000000803F00004040",
      gamma: "0x04000000000000400000003F",
      q: "0x040000000000803F000000400000404000008040",
      k: "0x040000000000803F0000803F"
    }
  }
#-}
