// --spinquant-rotate refuses what it cannot rotate exactly, saying why.
// RUN: not sq-opt %s --spinquant-rotate=fuse-norms=false 2>&1 | FileCheck %s --check-prefix=SCALE
// SCALE: error: 'sq.rms_norm' op has a scale, which does not commute with R1: run --sq-fuse-norms first (or drop fuse-norms=false)
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=learned 2>&1 | FileCheck %s --check-prefix=LEARNED
// LEARNED: error: spinquant calibration: @forward must take (input_ids, positions, ...) and return the logits first
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=qr 2>&1 | FileCheck %s --check-prefix=MODE
// MODE: for the --mode option: unknown spinquant-rotate mode 'qr': expected random, hadamard, learned or file
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=random,seed=1 2>&1 | FileCheck %s --check-prefix=COMMA
// COMMA: for the --mode option: unknown spinquant-rotate mode 'random,seed=1': expected random, hadamard, learned or file (pass options are separated by spaces: --spinquant-rotate="mode=hadamard seed=1")
// COMMA-NOT: see current operation
// RUN: not sq-opt %s --sq-fuse-norms=weight-type=f16 2>&1 | FileCheck %s --check-prefix=WTYPE
// WTYPE: for the --weight-type option: unknown weight-type 'f16': expected f32 or keep
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate="mode=random weight-type=x" 2>&1 | FileCheck %s --check-prefix=WTYPE2
// WTYPE2: for the --weight-type option: unknown weight-type 'x': expected f32 or keep
// RUN: not sq-opt %s --sq-fuse-norms --sq-online-hadamard=weight-type=x 2>&1 | FileCheck %s --check-prefix=WTYPE3
// WTYPE3: for the --weight-type option: unknown weight-type 'x': expected f32 or keep
// RUN: not sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=hadamard 2>&1 | FileCheck %s --check-prefix=SIZE
// SIZE: error: no Hadamard matrix of size 6 is implemented; use mode=random (sq-compile: --rotate=random)
// RUN: sq-opt %s --sq-fuse-norms --spinquant-rotate=mode=random | FileCheck %s --check-prefix=RANDOM
// RANDOM: sq.rms_norm %{{.*}} : tensor<1x2x6xf32>
// RANDOM: sq.weight dense_resource<q> : tensor<6x6xf32>

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
      gamma: "0x040000000000803F0000803F0000803F0000803F0000803F0000803F",
      q: "0x040000000000803F000000000000000000000000000000000000000000000000000080BF000000000000000000000000000000000000000000000000000000400000000000000000000000000000000000000000000000000000803F00000000000000000000000000000000000000000000000000000040000000000000000000000000000000000000000000000000000080BF"
    }
  }
#-}
