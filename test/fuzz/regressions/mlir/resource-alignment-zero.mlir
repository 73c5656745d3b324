// --spinquant-rotate refuses what it cannot rotate exactly, saying why.
// RUN: not sq-opt %s --spinquant-rotate=fuse-norms=false 2>&1 | FileCheck %s --check-prefix=SCALE
// SCALE: error: 'sq.rms_norm' op has a scale, which does not commute with R1: run --sq-fuse-norms first (or drop fuse-norms=false)
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=learned 2>&1 | FileCheck sor<6x6xf32>

func.func @forward(%ids: tensor<1x2xi64>) -> tensor<1x2x6xf32> {
  %e = sq.weight dense_resource<emb> : tensor<2x6xf32>
  %h = sq.embedding %e[%ids] : tensor<2x6xf32>[tensor<1x2xi64>] -> tensor<1x2x6xf32>
  %g = sq.weight dense_resource<gamma> : tensor<6xf32>
  %n = sq.rms_norm %h scale %g : tensor<1x2x6xf32>, tensor<6xf32>
  %wq = sq.weight dense_resource<q> : tensor<6x6xf32>
  %q = sq.linear %n, %wq : (tensor<1x2x6xf32>, tensor<6x6xf32>) -> tensor<1x2x6xf32>
  return %q : tensor<1x2x6xf32>
}
{-#
  dialect_resources: {
    builtin: {
      emb: "0x040000000000803F0000004000004040000080400000A0400000C0400000E0400000004100001041000020410000304100004041",
      gamma: "0x0000000000000000000080BF"
    }
  }
#-}
