// --sq-online-hadamard: R4 before down_proj (folded into its columns), R3 on
// the queries and keys after RoPE; a size without a Hadamard matrix gets
// the seeded random orthogonal fallback, with one remark.
// RUN: sq-translate --import-onnx %S/../Import/Inputs/gqa-opset17.onnx -o %t.mlir
// RUN: sq-opt %t.mlir --sq-fuse-norms --spinquant-rotate=mode=hadamard --sq-online-hadamard | FileCheck %s
// RUN: sq-opt %t.mlir --sq-fuse-norms --sq-online-hadamard=r3=false | FileCheck %s --check-prefix=NOR3
// RUN: sq-opt %s --sq-online-hadamard=seed=5 2>&1 | FileCheck %s --check-prefix=SIZE
// MLP widths 224 = 28 * 8 and 192 = 12 * 16 get true Hadamard matrices (no
// seed, no remark):
// RUN: sq-translate --import-onnx %S/../Import/Inputs/ffn224-opset17.onnx | sq-opt --sq-online-hadamard 2>&1 | FileCheck %s --check-prefix=P28
// RUN: sq-translate --import-onnx %S/../Import/Inputs/ffn192-tied-opset17.onnx | sq-opt --sq-online-hadamard 2>&1 | FileCheck %s --check-prefix=P12
// P28-NOT: remark
// P28:     sq.hadamard %{{.*}} size 224 : tensor<?x?x224xf32>
// P28-NOT: remark
// P12-NOT: remark
// P12:     sq.hadamard %{{.*}} size 192 : tensor<?x?x192xf32>
// P12-NOT: remark

// CHECK:      %[[QR:.*]] = sq.rope
// CHECK:      %[[KR:.*]] = sq.rope
// CHECK:      %[[HQ:.*]] = sq.hadamard %[[QR]] size 4 : tensor<?x?x16xf32>
// CHECK-NEXT: %[[HK:.*]] = sq.hadamard %[[KR]] size 4 : tensor<?x?x8xf32>
// CHECK-NEXT: sq.attention %[[HQ]], %[[HK]], %{{.*}} heads 4 kv_heads 2 causal
// CHECK:      %[[M:.*]] = sq.mul
// CHECK:      %[[W:.*]] = sq.weight dense_resource<model.layers.0.mlp.down_proj.weight> : tensor<16x24xf32>
// CHECK-NEXT: %[[H4:.*]] = sq.hadamard %[[M]] size 24 : tensor<?x?x24xf32>
// CHECK-NEXT: sq.linear %[[H4]], %[[W]]
// NOR3-NOT:   sq.hadamard {{.*}} size 4
// NOR3:       sq.hadamard {{.*}} size 24

// SIZE: remark: no Hadamard matrix of size 100 for R4 (down_proj's input): using a seeded random orthogonal 25x25 block (seed 5) with the 2^k butterflies
// SIZE: sq.hadamard %{{.*}} size 100 seed 5 : tensor<1x2x100xf32>
func.func @mlp(%g: tensor<1x2x100xf32>, %u: tensor<1x2x100xf32>) -> tensor<1x2x1xf32> {
  %w = sq.weight dense_resource<down> : tensor<1x100xf32>
  %m = sq.mul %g, %u : tensor<1x2x100xf32>
  %d = sq.linear %m, %w : (tensor<1x2x100xf32>, tensor<1x100xf32>) -> tensor<1x2x1xf32>
  return %d : tensor<1x2x1xf32>
}
{-#
  dialect_resources: {
    builtin: {
      down: "0x040000000000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F"
    }
  }
#-}
