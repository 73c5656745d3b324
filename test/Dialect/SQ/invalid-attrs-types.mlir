// Parse and verification errors of #sq.quant and !sq.packed.
// RUN: sq-opt %s -split-input-file -verify-diagnostics

// expected-error@+1 {{quantization bits must be between 2 and 8, got 9}}
func.func private @bits() attributes {q = #sq.quant<bits = 9, sym, per_channel>}

// -----

// expected-error@+1 {{quantization bits must be between 2 and 8, got 1}}
func.func private @bits_low() attributes {q = #sq.quant<bits = 1, sym, per_channel>}

// -----

// expected-error@+1 {{group size must be positive, got 0 (write e.g. 'group = 128')}}
func.func private @group() attributes {q = #sq.quant<bits = 4, sym, group = 0>}

// -----

// expected-error@+1 {{clip ratio must be in (0, 1], got 1.5 (it shrinks the range before scales are computed)}}
func.func private @clip() attributes {q = #sq.quant<bits = 4, asym, per_token, clip = 1.5>}

// -----

// expected-error@+1 {{clip ratio must be in (0, 1], got 0.0}}
func.func private @clip_zero() attributes {q = #sq.quant<bits = 4, asym, per_token, clip = 0.0>}

// -----

// expected-error@+1 {{expected 'sym' or 'asym', got 'symmetric'}}
func.func private @symmetry() attributes {q = #sq.quant<bits = 4, symmetric, per_token>}

// -----

// expected-error@+1 {{expected a granularity (per_tensor, per_token, per_channel or 'group = N'), got 'per_row'}}
func.func private @granularity() attributes {q = #sq.quant<bits = 4, sym, per_row>}

// -----

// expected-error@+1 {{packed tensors hold i4 or i8 elements, got i3}}
func.func private @packed_bits(!sq.packed<4x4xi3>)

// -----

// expected-error@+1 {{packed element type must be i4 or i8, got 'f32'}}
func.func private @packed_float(!sq.packed<4x4xf32>)

// -----

// expected-error@+1 {{packed tensor dimensions must be static and positive, got 0}}
func.func private @packed_zero(!sq.packed<0x4xi4>)

// -----

// expected-error@+1 {{packed tensor needs at least one dimension}}
func.func private @packed_rank0(!sq.packed<i4>)

// -----

// expected-error@+1 {{expected static shape}}
func.func private @packed_dynamic(!sq.packed<?x4xi4>)
