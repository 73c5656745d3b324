// Weights are resource blobs: they round-trip bit for bit through text and
// bytecode, and large ones can be elided when printing.
// RUN: sq-opt %s | FileCheck %s
// RUN: sq-opt %s --emit-bytecode -o %t.mlirbc
// RUN: sq-opt %t.mlirbc | FileCheck %s
// RUN: sq-opt %t.mlirbc --emit-bytecode | cmp - %t.mlirbc
// RUN: sq-opt %s --mlir-elide-resource-strings-if-larger=40 | FileCheck %s --check-prefix=ELIDE

// CHECK: sq.weight dense_resource<model.embed_tokens.weight> : tensor<4x2xf32>
// CHECK: sq.weight dense_resource<model.layers.0.mlp.down_proj.qweight> : tensor<4xi8> -> !sq.packed<2x3xi4>
// CHECK: sq.weight dense_resource<model.norm.weight> : tensor<2xbf16>
// ELIDE: sq.weight dense_resource<model.embed_tokens.weight> : tensor<4x2xf32>
func.func @forward() -> (tensor<4x2xf32>, !sq.packed<2x3xi4>, tensor<2xbf16>) {
  %e = sq.weight dense_resource<model.embed_tokens.weight> : tensor<4x2xf32>
  %q = sq.weight dense_resource<model.layers.0.mlp.down_proj.qweight> : tensor<4xi8> -> !sq.packed<2x3xi4>
  %n = sq.weight dense_resource<model.norm.weight> : tensor<2xbf16>
  return %e, %q, %n : tensor<4x2xf32>, !sq.packed<2x3xi4>, tensor<2xbf16>
}

// Every byte survives, including NaN payloads and -0.0:
// CHECK:      model.embed_tokens.weight: "0x040000000000803F000000C00100C07F00000080FFFF7F7F000000000100000002000000"
// CHECK-NEXT: model.layers.0.mlp.down_proj.qweight: "0x0100000087F00F78"
// CHECK-NEXT: model.norm.weight: "0x02000000803F0040"
// The long embedding blob is elided, the short ones are kept:
// ELIDE-NOT:  0x040000000000803F
// ELIDE:      model.layers.0.mlp.down_proj.qweight: "0x0100000087F00F78"
{-#
  dialect_resources: {
    builtin: {
      model.embed_tokens.weight: "0x040000000000803F000000C00100C07F00000080FFFF7F7F000000000100000002000000",
      model.layers.0.mlp.down_proj.qweight: "0x0100000087F00F78",
      model.norm.weight: "0x02000000803F0040"
    }
  }
#-}
