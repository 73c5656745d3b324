// Verifier rules of sq.rope: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @rope_rank(%x: tensor<64xf32>, %p: tensor<i64>) {
  // expected-error@+1 {{input must be [..., seq, num_heads * head_dim], got 'tensor<64xf32>'}}
  %y = sq.rope %x, %p heads 8 theta 1.0e4 rotate_half : tensor<64xf32>, tensor<i64>
  return
}

// -----

func.func @rope_positions(%x: tensor<1x8x64xf32>, %p: tensor<8xi64>) {
  // expected-error@+1 {{positions must have the input's leading shape [1, 8] (one position per token), got 'tensor<8xi64>'}}
  %y = sq.rope %x, %p heads 8 theta 1.0e4 rotate_half : tensor<1x8x64xf32>, tensor<8xi64>
  return
}

// -----

func.func @rope_heads(%x: tensor<1x8x64xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{the last dimension 64 is not divisible by num_heads 6}}
  %y = sq.rope %x, %p heads 6 theta 1.0e4 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
  return
}

// -----

func.func @rope_odd_head_dim(%x: tensor<1x8x56xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{head_dim 7 must be even: RoPE rotates pairs of elements}}
  %y = sq.rope %x, %p heads 8 theta 1.0e4 interleaved : tensor<1x8x56xf32>, tensor<1x8xi64>
  return
}

// -----

func.func @rope_theta(%x: tensor<1x8x64xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{theta must be positive (typically 10000 or 500000), got -1.0}}
  %y = sq.rope %x, %p heads 8 theta -1.0 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
  return
}

// -----

func.func @rope_zero_heads(%x: tensor<1x8x64xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{attribute 'num_heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %y = sq.rope %x, %p heads 0 theta 1.0e4 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
  return
}

// -----

func.func @rope_scaling_factor(%x: tensor<1x8x64xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{llama3 RoPE scaling factor must be positive, got 0.0}}
  %y = sq.rope %x, %p heads 8 theta 5.0e5 rotate_half scaling <factor = 0.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192> : tensor<1x8x64xf32>, tensor<1x8xi64>
  return
}

// -----

func.func @rope_scaling_band(%x: tensor<1x8x64xf32>, %p: tensor<1x8xi64>) {
  // expected-error@+1 {{llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor, got 4.0 and 1.0}}
  %y = sq.rope %x, %p heads 8 theta 5.0e5 rotate_half scaling <factor = 8.0, low_freq_factor = 4.0, high_freq_factor = 1.0, original_max_position_embeddings = 8192> : tensor<1x8x64xf32>, tensor<1x8xi64>
  return
}
