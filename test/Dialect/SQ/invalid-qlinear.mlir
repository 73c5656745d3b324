// Verifier rules of sq.qlinear: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @qlinear_bits(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{weight_quant has 8 bits but the packed weight holds i4 elements}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 8, sym, per_channel>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_weight_granularity(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{weights are quantized per_channel or in groups ('group = N'), not per_token}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_token>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_weight_group(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{group size 128 does not divide the last dimension 64 of the weight}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, group = 128>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_scales(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{scales of the weight must have shape [172, 2] (one per group of the last dimension), got 'tensor<172x1xf32>'}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, group = 32>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_zero_points(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{asymmetric quantization of the weight needs zero points; add them or use 'sym'}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, asym, per_channel>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_in_features(%x: tensor<1x8x32xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{input's last dimension (32) must equal the weight's in_features (64)}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>}
      : (tensor<1x8x32xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_weight_rank(%x: tensor<1x8x64xf32>, %w: !sq.packed<64xi4>, %s: tensor<1xf32>) {
  // expected-error@+1 {{weight must be 2-D [out_features, in_features], got '!sq.packed<64xi4>'}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>}
      : (tensor<1x8x64xf32>, !sq.packed<64xi4>, tensor<1xf32>) -> tensor<1x8x64xf32>
  return
}

// -----

func.func @qlinear_act_granularity(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{activations are quantized per_token, per_tensor or in groups, not per_channel}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>,
                              act_quant = #sq.quant<bits = 4, asym, per_channel>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}

// -----

func.func @qlinear_act_group(%x: tensor<1x8x64xf32>, %w: !sq.packed<172x64xi4>, %s: tensor<172x1xf32>) {
  // expected-error@+1 {{group size 40 does not divide the last dimension 64 of the input}}
  %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>,
                              act_quant = #sq.quant<bits = 4, asym, group = 40>}
      : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf32>) -> tensor<1x8x172xf32>
  return
}
