// --sq-weight-summary lists every weight, its storage and its NaN/Inf count,
// and leaves the IR unchanged.
// RUN: sq-opt %s --sq-weight-summary 2>&1 >/dev/null | FileCheck %s
// RUN: sq-opt %s --sq-weight-summary=output=%t.txt | FileCheck %s --check-prefix=IR
// RUN: FileCheck %s < %t.txt
// RUN: not sq-opt %s --sq-weight-summary=output=%t.missing/dir/x.txt 2>&1 | FileCheck %s --check-prefix=BADPATH

// CHECK:      name                       type                   bytes  non-finite
// CHECK-NEXT: model.embed_tokens.weight  tensor<4x2xf32>           32  2
// CHECK-NEXT: model.layers.0.qweight     !sq.packed<2x3xi4>         4  -
// CHECK-NEXT: model.norm.weight          tensor<2xbf16>             4  1
// CHECK-NEXT: model.missing              tensor<2xf16>      (no data)  -
// CHECK-NEXT: total: 4 weights, 40 bytes (some without data), 3 non-finite values

// IR: sq.weight dense_resource<model.embed_tokens.weight> : tensor<4x2xf32>
// IR: sq.weight dense_resource<model.missing> : tensor<2xf16>
// BADPATH: error: sq-weight-summary: {{.*}}missing/dir/x.txt

func.func @forward() {
  %e = sq.weight dense_resource<model.embed_tokens.weight> : tensor<4x2xf32>
  %q = sq.weight dense_resource<model.layers.0.qweight> : tensor<4xi8> -> !sq.packed<2x3xi4>
  %n = sq.weight dense_resource<model.norm.weight> : tensor<2xbf16>
  %m = sq.weight dense_resource<model.missing> : tensor<2xf16>
  return
}

// The embedding holds a NaN (0x7FC00001) and +Inf (0x7F800000); the bf16
// norm holds -Inf (0xFF80).
{-#
  dialect_resources: {
    builtin: {
      model.embed_tokens.weight: "0x040000000000803F000000C00100C07F0000807FFFFF7F7F000000000100000002000000",
      model.layers.0.qweight: "0x0100000087F00F78",
      model.norm.weight: "0x02000000803F80FF"
    }
  }
#-}
