// Verifier rules of sq.attention: one case per rule; each message says what
// is wrong and what would be right.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

func.func @attention_rank(%q: tensor<8x64xf32>, %k: tensor<8x64xf32>) {
  // expected-error@+1 {{query must be 3-D [batch, seq, heads * head_dim], got 'tensor<8x64xf32>'}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 8 : tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>
  return
}

// -----

func.func @attention_kv_shapes(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>, %v: tensor<1x4x32xf32>) {
  // expected-error@+1 {{key and value must have the same shape, got 'tensor<1x8x32xf32>' and 'tensor<1x4x32xf32>'}}
  %o = sq.attention %q, %k, %v heads 8 kv_heads 4 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x4x32xf32>
  return
}

// -----

func.func @attention_batch(%q: tensor<2x8x64xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{query batch 2 differs from key/value batch 1}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 : tensor<2x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_gqa(%q: tensor<1x8x48xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{num_heads 6 must be a multiple of num_kv_heads 4 (grouped-query attention shares each key/value head among num_heads / num_kv_heads query heads)}}
  %o = sq.attention %q, %k, %k heads 6 kv_heads 4 : tensor<1x8x48xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_query_heads(%q: tensor<1x8x60xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{query's last dimension 60 is not divisible by num_heads 8}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 : tensor<1x8x60xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_kv_dim(%q: tensor<1x8x64xf32>, %k: tensor<1x8x64xf32>) {
  // expected-error@+1 {{key/value last dimension must be num_kv_heads x head_dim = 4 x 8 = 32, got 64}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 : tensor<1x8x64xf32>, tensor<1x8x64xf32>, tensor<1x8x64xf32>
  return
}

// -----

func.func @attention_scale(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{scale must be positive, got 0.0}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 scale 0.0 : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_causal(%q: tensor<1x8x64xf32>, %k: tensor<1x4x32xf32>) {
  // expected-error@+1 {{causal attention needs at least as many keys (4) as queries (8): the queries are the last positions of the key/value sequence}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 causal : tensor<1x8x64xf32>, tensor<1x4x32xf32>, tensor<1x4x32xf32>
  return
}

// -----

func.func @attention_cache_shape(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>, %p: tensor<1x4x64xf32>) {
  // expected-error@+1 {{past_key and past_value must both be [batch, past_seq, num_kv_heads * head_dim] like the key 'tensor<1x8x32xf32>', got 'tensor<1x4x64xf32>' and 'tensor<1x4x64xf32>'}}
  %o, %pk, %pv = sq.attention %q, %k, %k cache %p, %p heads 8 kv_heads 4
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>, tensor<1x4x64xf32>, tensor<1x4x64xf32>
      -> tensor<1x12x64xf32>, tensor<1x12x64xf32>
  return
}

// -----

func.func @attention_cache_results(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>, %p: tensor<1x4x32xf32>) {
  // expected-error@+1 {{with a KV cache the op returns present_key and present_value after the output, got 0 extra results}}
  %o = sq.attention %q, %k, %k cache %p, %p heads 8 kv_heads 4
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>, tensor<1x4x32xf32>, tensor<1x4x32xf32>
  return
}

// -----

func.func @attention_present_shape(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>, %p: tensor<1x4x32xf32>) {
  // expected-error@+1 {{present key/value must be [batch, past_seq + kv_seq, num_kv_heads * head_dim] = [1, 12, 32], got 'tensor<1x8x32xf32>'}}
  %o, %pk, %pv = sq.attention %q, %k, %k cache %p, %p heads 8 kv_heads 4
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>, tensor<1x4x32xf32>, tensor<1x4x32xf32>
      -> tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_present_without_cache(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{present key/value results need a KV cache ('cache %past_key, %past_value')}}
  %o, %pk, %pv = "sq.attention"(%q, %k, %k) <{num_heads = 8 : i64, num_kv_heads = 4 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>}>
      : (tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>) -> (tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>)
  return
}

// -----

func.func @attention_causal_cache(%q: tensor<1x8x64xf32>, %k: tensor<1x2x32xf32>, %p: tensor<1x3x32xf32>) {
  // expected-error@+1 {{causal attention needs at least as many keys (5) as queries (8)}}
  %o, %pk, %pv = sq.attention %q, %k, %k cache %p, %p heads 8 kv_heads 4 causal
      : tensor<1x8x64xf32>, tensor<1x2x32xf32>, tensor<1x2x32xf32>, tensor<1x3x32xf32>, tensor<1x3x32xf32>
      -> tensor<1x5x32xf32>, tensor<1x5x32xf32>
  return
}

// -----

func.func @attention_window_not_causal(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{a sliding window (window 4) needs causal attention: it limits how far back a query looks}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 window 4
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}

// -----

func.func @attention_window_zero(%q: tensor<1x8x64xf32>, %k: tensor<1x8x32xf32>) {
  // expected-error@+1 {{attribute 'window' failed to satisfy constraint}}
  %o = sq.attention %q, %k, %k heads 8 kv_heads 4 causal window 0
      : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
  return
}
