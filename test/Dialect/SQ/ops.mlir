// Every sq op in its custom form survives a print/parse round trip, through
// the custom form, the generic form and MLIR bytecode.
// RUN: sq-opt %s | sq-opt | FileCheck %s
// RUN: sq-opt %s --mlir-print-op-generic | sq-opt | FileCheck %s
// RUN: sq-opt %s --emit-bytecode | sq-opt | FileCheck %s

// CHECK-LABEL: func.func @weights
func.func @weights() -> (tensor<2x2xf32>, !sq.packed<2x3xi4>, tensor<2x1xf16>) {
  // CHECK: sq.weight dense_resource<model.layers.0.w> : tensor<2x2xf32>
  %w = sq.weight dense_resource<model.layers.0.w> : tensor<2x2xf32>
  // CHECK: sq.weight dense_resource<model.layers.0.qw> : tensor<4xi8> -> !sq.packed<2x3xi4>
  %q = sq.weight dense_resource<model.layers.0.qw> : tensor<4xi8> -> !sq.packed<2x3xi4>
  // CHECK: sq.weight dense_resource<model.layers.0.qs> : tensor<2x1xf16>
  %s = sq.weight dense_resource<model.layers.0.qs> : tensor<2x1xf16>
  return %w, %q, %s : tensor<2x2xf32>, !sq.packed<2x3xi4>, tensor<2x1xf16>
}

// CHECK-LABEL: func.func @blocks
func.func @blocks(%ids: tensor<1x8xi64>, %pos: tensor<1x8xi64>, %table: tensor<512x64xf16>,
                  %gamma: tensor<64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>,
                  %b: tensor<32xf32>, %past: tensor<1x?x32xf32>) -> tensor<1x8x64xf32> {
  // CHECK: %[[H:.*]] = sq.embedding %{{.*}}[%{{.*}}] : tensor<512x64xf16>[tensor<1x8xi64>] -> tensor<1x8x64xf32>
  %h = sq.embedding %table[%ids] : tensor<512x64xf16>[tensor<1x8xi64>] -> tensor<1x8x64xf32>
  // CHECK: %[[N:.*]] = sq.rms_norm %[[H]] scale %{{.*}} {epsilon = 9.9999999999999995E-7 : f64} : tensor<1x8x64xf32>, tensor<64xf32>
  %n = sq.rms_norm %h scale %gamma {epsilon = 1.0e-06 : f64} : tensor<1x8x64xf32>, tensor<64xf32>
  // CHECK: sq.rms_norm %[[H]] : tensor<1x8x64xf32>
  %n2 = sq.rms_norm %h : tensor<1x8x64xf32>
  // CHECK: %[[Q:.*]] = sq.linear %[[N]], %{{.*}} : (tensor<1x8x64xf32>, tensor<64x64xf32>) -> tensor<1x8x64xf32>
  %q = sq.linear %n, %wq : (tensor<1x8x64xf32>, tensor<64x64xf32>) -> tensor<1x8x64xf32>
  // CHECK: %[[K:.*]] = sq.linear %[[N]], %{{.*}}, %{{.*}} : (tensor<1x8x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<1x8x32xf32>
  %k = sq.linear %n, %wk, %b : (tensor<1x8x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<1x8x32xf32>
  // CHECK: %[[QR:.*]] = sq.rope %[[Q]], %{{.*}} heads 8 theta 1.000000e+04 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
  %qr = sq.rope %q, %pos heads 8 theta 1.000000e+04 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
  // CHECK: %[[KR:.*]] = sq.rope %[[K]], %{{.*}} heads 4 theta 5.000000e+05 interleaved : tensor<1x8x32xf32>, tensor<1x8xi64>
  %kr = sq.rope %k, %pos heads 4 theta 5.000000e+05 interleaved : tensor<1x8x32xf32>, tensor<1x8xi64>
  // CHECK: sq.rope %[[K]], %{{.*}} heads 4 theta 5.000000e+05 rotate_half scaling <factor = 8.000000e+00, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00, original_max_position_embeddings = 8192> : tensor<1x8x32xf32>, tensor<1x8xi64>
  %ks = sq.rope %k, %pos heads 4 theta 5.000000e+05 rotate_half scaling <factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192> : tensor<1x8x32xf32>, tensor<1x8xi64>
  // CHECK: %[[A:.*]] = sq.attention %[[QR]], %[[KR]], %[[K]] heads 8 kv_heads 4 causal : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  %a = sq.attention %qr, %kr, %k heads 8 kv_heads 4 causal : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  // CHECK: sq.attention %[[QR]], %[[KR]], %[[K]] heads 8 kv_heads 4 causal window 4 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  %aw = sq.attention %qr, %kr, %k heads 8 kv_heads 4 causal window 4 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  // CHECK: sq.attention %[[QR]], %[[KR]], %[[K]] heads 8 kv_heads 4 scale 2.500000e-01 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  %a2 = sq.attention %qr, %kr, %k heads 8 kv_heads 4 scale 0.25 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  // CHECK: sq.attention %[[QR]], %[[KR]], %[[K]] cache %{{.*}}, %{{.*}} heads 8 kv_heads 4 causal : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32> -> tensor<1x?x32xf32>, tensor<1x?x32xf32>
  %a3, %pk, %pv = sq.attention %qr, %kr, %k cache %past, %past heads 8 kv_heads 4 causal
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>, tensor<1x?x32xf32>, tensor<1x?x32xf32>
      -> tensor<1x?x32xf32>, tensor<1x?x32xf32>
  // CHECK: %[[S:.*]] = sq.silu %[[A]] : tensor<1x8x64xf32>
  %s = sq.silu %a : tensor<1x8x64xf32>
  // CHECK: %[[M:.*]] = sq.mul %[[S]], %[[Q]] : tensor<1x8x64xf32>
  %m = sq.mul %s, %q : tensor<1x8x64xf32>
  // CHECK: sq.add %[[H]], %[[M]] : tensor<1x8x64xf32>
  %r = sq.add %h, %m : tensor<1x8x64xf32>
  return %r : tensor<1x8x64xf32>
}

// CHECK-LABEL: func.func @dynamic
func.func @dynamic(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>, %w: tensor<128x64xf32>) -> tensor<?x?x128xf32> {
  // CHECK: sq.rope %{{.*}}, %{{.*}} heads 8 theta 1.000000e+04 rotate_half : tensor<?x?x64xf32>, tensor<?x?xi64>
  %r = sq.rope %x, %pos heads 8 theta 1.000000e+04 rotate_half : tensor<?x?x64xf32>, tensor<?x?xi64>
  // CHECK: sq.linear %{{.*}}, %{{.*}} : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
  %y = sq.linear %r, %w : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
  return %y : tensor<?x?x128xf32>
}

// CHECK-LABEL: func.func @rotations
func.func @rotations(%x: tensor<1x8x64xf32>, %r1: tensor<64x64xf32>, %r2: tensor<8x8xf32>) -> tensor<1x8x64xf32> {
  // CHECK: %[[A:.*]] = sq.rotate %{{.*}} by %{{.*}} : tensor<1x8x64xf32>, tensor<64x64xf32>
  %a = sq.rotate %x by %r1 : tensor<1x8x64xf32>, tensor<64x64xf32>
  // CHECK: %[[B:.*]] = sq.rotate %[[A]] by %{{.*}} transposed : tensor<1x8x64xf32>, tensor<8x8xf32>
  %b = sq.rotate %a by %r2 transposed : tensor<1x8x64xf32>, tensor<8x8xf32>
  // CHECK: %[[C:.*]] = sq.hadamard %[[B]] : tensor<1x8x64xf32>
  %c = sq.hadamard %b : tensor<1x8x64xf32>
  // CHECK: sq.hadamard %[[C]] size 8 : tensor<1x8x64xf32>
  %d = sq.hadamard %c size 8 : tensor<1x8x64xf32>
  // CHECK: sq.hadamard %{{.*}} size 24 seed 7 : tensor<1x8x48xf32>
  %x48 = tensor.empty() : tensor<1x8x48xf32>
  %e = sq.hadamard %x48 size 24 seed 7 : tensor<1x8x48xf32>
  return %d : tensor<1x8x64xf32>
}

// CHECK-LABEL: func.func @quantization
func.func @quantization(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf16>,
                        %gs: tensor<172x2xf32>, %gz: tensor<172x2xf32>, %b: tensor<172xf32>) {
  // CHECK: sq.fake_quant %{{.*}} {quant = #sq.quant<bits = 4, asym, per_token, clip = 0.9>} : tensor<1x8x64xf32>
  %f = sq.fake_quant %x {quant = #sq.quant<bits = 4, asym, per_token, clip = 0.9>} : tensor<1x8x64xf32>
  // CHECK: sq.fake_quant %{{.*}} {quant = #sq.quant<bits = 4, asym, group = 8, clip = 0.95>} : tensor<1x8x64xf32>
  %k = sq.fake_quant %x {quant = #sq.quant<bits = 4, asym, group = 8, clip = 0.95>} : tensor<1x8x64xf32>
  // CHECK: sq.fake_quant %{{.*}} {quant = #sq.quant<bits = 8, sym, per_tensor>} : tensor<1x8x64xf32>
  %t = sq.fake_quant %x {quant = #sq.quant<bits = 8, sym, per_tensor>} : tensor<1x8x64xf32>
  // CHECK: %[[V:.*]], %[[S:.*]], %[[Z:.*]] = sq.quantize %{{.*}} {quant = #sq.quant<bits = 4, asym, per_token>} : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>
  %v, %vs, %vz = sq.quantize %x {quant = #sq.quant<bits = 4, asym, per_token>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>
  // CHECK: sq.dequantize %[[V]], %[[S]], %[[Z]] {quant = #sq.quant<bits = 4, asym, per_token>} : (tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  %d = sq.dequantize %v, %vs, %vz {quant = #sq.quant<bits = 4, asym, per_token>}
      : (tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
  // CHECK: %[[SV:.*]], %[[SS:.*]] = sq.quantize %{{.*}} {quant = #sq.quant<bits = 8, sym, group = 16>} : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x4xf32>
  %sv, %ss = sq.quantize %x {quant = #sq.quant<bits = 8, sym, group = 16>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x4xf32>
  // CHECK: sq.dequantize %[[SV]], %[[SS]] {quant = #sq.quant<bits = 8, sym, group = 16>} : (tensor<1x8x64xi8>, tensor<1x8x4xf32>) -> tensor<1x8x64xf32>
  %sd = sq.dequantize %sv, %ss {quant = #sq.quant<bits = 8, sym, group = 16>}
      : (tensor<1x8x64xi8>, tensor<1x8x4xf32>) -> tensor<1x8x64xf32>
  // CHECK: sq.quantize %{{.*}} {quant = #sq.quant<bits = 4, sym, per_tensor>} : tensor<1x8x64xf32> -> tensor<1x8x64xi4>, tensor<1x1x1xf32>
  %tv, %ts = sq.quantize %x {quant = #sq.quant<bits = 4, sym, per_tensor>}
      : tensor<1x8x64xf32> -> tensor<1x8x64xi4>, tensor<1x1x1xf32>
  // CHECK: sq.qlinear %{{.*}}, %{{.*}}, %{{.*}} {act_quant = #sq.quant<bits = 4, asym, per_token>, weight_quant = #sq.quant<bits = 4, sym, per_channel>} : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf16>) -> tensor<1x8x172xf32>
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>,
                              act_quant = #sq.quant<bits = 4, asym, per_token>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf16>) -> tensor<1x8x172xf32>
  // CHECK: sq.qlinear %{{.*}}, %{{.*}}, %{{.*}} zero_points %{{.*}} bias %{{.*}} {weight_quant = #sq.quant<bits = 4, asym, group = 32>} : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x2xf32>, tensor<172x2xf32>, tensor<172xf32>) -> tensor<1x8x172xf32>
  %y2 = sq.qlinear %x, %w, %gs zero_points %gz bias %b {weight_quant = #sq.quant<bits = 4, asym, group = 32>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x2xf32>, tensor<172x2xf32>, tensor<172xf32>) -> tensor<1x8x172xf32>
  return
}

{-#
  dialect_resources: {
    builtin: {
      model.layers.0.w: "0x040000000000803F000000000000000000008040",
      model.layers.0.qw: "0x0100000012F4E807",
      model.layers.0.qs: "0x02000000003C0038"
    }
  }
#-}
