//===- SQOps.td - sq operations -----------------------------*- tablegen -*-===//

#ifndef SQ_DIALECT_SQ_IR_SQOPS_TD
#define SQ_DIALECT_SQ_IR_SQOPS_TD

include "sq/Dialect/SQ/IR/SQDialect.td"
include "sq/Dialect/SQ/IR/SQAttrs.td"
include "sq/Dialect/SQ/IR/SQTypes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

def SQ_FloatTensor : RankedTensorOf<[AnyFloat]>;
def SQ_IntTensor : RankedTensorOf<[AnySignlessInteger]>;
def SQ_WeightValue : AnyTypeOf<[AnyRankedTensor, SQ_PackedType]>;

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def SQ_WeightOp : SQ_Op<"weight", [Pure]> {
  let summary = "a named, resource-backed model weight";
  let description = [{
    A model weight. Its value is a `dense_resource` blob whose key is the
    weight's name (e.g. `model.layers.3.mlp.down_proj.weight`), so the IR of a
    large model prints compactly (`--mlir-elide-resource-strings-if-larger`)
    and round-trips through MLIR bytecode bit for bit.

    A float or integer weight has the resource's own type. A packed quantized
    weight stores its bytes in a 1-D `i8` resource and states its logical
    type after `->`; the resource must hold exactly the packed storage size.

    ```mlir
    %w = sq.weight dense_resource<model.layers.0.self_attn.q_proj.weight> : tensor<64x64xf32>
    %q = sq.weight dense_resource<model.layers.0.self_attn.q_proj.qweight> : tensor<2048xi8> -> !sq.packed<64x64xi4>
    ```
  }];
  let arguments = (ins ElementsAttr:$value);
  let results = (outs SQ_WeightValue:$result);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let builders = [
    OpBuilder<(ins "::mlir::ElementsAttr":$value), [{
      build($_builder, $_state, value.getType(), value);
    }]>
  ];
  let extraClassDeclaration = [{
    /// The weight's name: the key of its resource blob.
    ::llvm::StringRef getName();
  }];
}

//===----------------------------------------------------------------------===//
// Model building blocks
//===----------------------------------------------------------------------===//

def SQ_EmbeddingOp : SQ_Op<"embedding", [Pure]> {
  let summary = "token embedding lookup";
  let description = [{
    Gathers rows of the `[vocab, hidden]` table: the result has the shape of
    `ids` followed by `hidden`.

    ```mlir
    %h = sq.embedding %table[%ids] : tensor<512x64xf32>[tensor<1x8xi64>] -> tensor<1x8x64xf32>
    ```

    The table may be stored in lower precision (f16, bf16) than the
    activations it produces; the result's element type is the compute type.
  }];
  let arguments = (ins SQ_FloatTensor:$table, SQ_IntTensor:$ids);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` type($table) `[` type($ids) `]` `->` type($output)
  }];
  let hasVerifier = 1;
}

def SQ_RMSNormOp : SQ_Op<"rms_norm", [Pure, AllTypesMatch<["input", "output"]>]> {
  let summary = "RMSNorm over the last dimension, optionally scaled by gamma";
  let description = [{
    `y = x / sqrt(mean(x²) + epsilon) · gamma`, over the last dimension.
    Without `scale` the norm is weightless, which is the form left behind
    once `--sq-fuse-norms` has folded gamma into the following linears.

    ```mlir
    %y = sq.rms_norm %x scale %gamma {epsilon = 1.0e-05 : f64} : tensor<1x8x64xf32>, tensor<64xf32>
    %n = sq.rms_norm %x : tensor<1x8x64xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, Optional<SQ_FloatTensor>:$scale,
                       DefaultValuedAttr<F64Attr, "1e-5">:$epsilon);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input (`scale` $scale^)? attr-dict `:` type($input) (`,` type($scale)^)?
  }];
  let hasVerifier = 1;
}

def SQ_LinearOp : SQ_Op<"linear", [Pure]> {
  let summary = "linear layer y = x · Wᵀ (+ bias)";
  let description = [{
    `weight` is `[out_features, in_features]`; the input's last dimension is
    `in_features` and the result's is `out_features`. The optional bias has
    shape `[out_features]` (Qwen2's q/k/v projections have one; the
    importer stores biases in fp32). The rotation passes treat it as part
    of the output: R1 rotates the bias of a linear that writes the residual
    stream, R2 v_proj's; quantization keeps it in float.

    ```mlir
    %y = sq.linear %x, %w : (tensor<1x8x64xf32>, tensor<172x64xf32>) -> tensor<1x8x172xf32>
    %q = sq.linear %x, %wq, %bq : (tensor<1x8x64xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<1x8x64xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_FloatTensor:$weight,
                       Optional<SQ_FloatTensor>:$bias);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let builders = [
    // Infers the result type: the input's shape with the last dimension
    // replaced by out_features, in the input's element type.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight,
                   CArg<"::mlir::Value", "{}">:$bias)>
  ];
}

def SQ_RopeOp : SQ_Op<"rope", [Pure, AllTypesMatch<["input", "output"]>]> {
  let summary = "rotary position embedding on every head";
  let description = [{
    Applies RoPE with base `theta` to each of the `num_heads` heads packed in
    the last dimension of `input` (`[..., seq, num_heads * head_dim]`), at
    the positions given by `positions` (shape `[..., seq]`, matching the
    input's leading dimensions). The frequency of pair `i` is
    `theta^(-2i/head_dim)`.

    * `rotate_half` (Hugging Face): element `i` pairs with `i + head_dim/2`.
    * `interleaved` (Meta's original LLaMA, llama2.c): `2i` pairs with `2i+1`.

    With `scaling` (LLaMA-3.1/3.2, `#sq.llama3_scaling`), the frequencies are
    then scaled as Hugging Face's `rope_type = "llama3"` does.

    ```mlir
    %q = sq.rope %x, %pos heads 8 theta 1.000000e+04 rotate_half : tensor<1x8x64xf32>, tensor<1x8xi64>
    %k = sq.rope %x, %pos heads 8 theta 5.000000e+05 rotate_half scaling <factor = 8.000000e+00,
           low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00,
           original_max_position_embeddings = 8192> : tensor<1x8x64xf32>, tensor<1x8xi64>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_IntTensor:$positions,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       F64Attr:$theta, SQ_RopeLayout:$layout,
                       OptionalAttr<SQ_RopeScalingAttr>:$scaling);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input `,` $positions `heads` $num_heads `theta` $theta $layout
    (`scaling` $scaling^)? attr-dict `:` type($input) `,` type($positions)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// head_dim, or ShapedType::kDynamic when the last dimension is dynamic.
    int64_t getHeadDim();
  }];
}

def SQ_AttentionOp : SQ_Op<"attention", [Pure, AttrSizedOperandSegments,
    AllTypesMatch<["query", "output"]>]> {
  let summary = "multi-head attention with grouped-query heads, causal mask and KV cache";
  let description = [{
    Scaled dot-product attention over heads flattened in the last dimension:
    `query` is `[batch, seq, num_heads * head_dim]`, `key` and `value` are
    `[batch, kv_seq, num_kv_heads * head_dim]`. Query head `h` reads
    key/value head `h / (num_heads / num_kv_heads)` (grouped-query attention;
    `num_kv_heads == num_heads` is plain multi-head attention). `scale`
    defaults to `1/sqrt(head_dim)`. The softmax subtracts the row maximum.

    With `cache %past_key, %past_value` (each `[batch, past_seq,
    num_kv_heads * head_dim]`), the keys and values attended to are the
    concatenations `past ++ new` along the sequence, and the op also returns
    them as `present_key` and `present_value` (`[batch, past_seq + kv_seq,
    ...]`): the KV cache of the next step.

    With `causal`, query `i` sees the keys `j <= i + (total_kv - seq)`,
    where `total_kv` counts the cached keys too: the queries are the last
    `seq` positions of the key sequence.

    `window W` (with `causal`) is a sliding window: query `i`, at key
    position `p = i + (total_kv - seq)`, sees the keys `p - W < j <= p`,
    the last `W` positions up to its own (Mistral's `sliding_window`).

    ```mlir
    %o = sq.attention %q, %k, %v heads 8 kv_heads 4 causal
           : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>
    %o2, %pk, %pv = sq.attention %q, %k, %v cache %past_k, %past_v heads 8 kv_heads 4 causal
           : tensor<1x8x64xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>,
             tensor<1x?x32xf32>, tensor<1x?x32xf32> -> tensor<1x?x32xf32>, tensor<1x?x32xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$query, SQ_FloatTensor:$key,
                       SQ_FloatTensor:$value,
                       Optional<SQ_FloatTensor>:$past_key,
                       Optional<SQ_FloatTensor>:$past_value,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       OptionalAttr<F64Attr>:$scale, UnitAttr:$causal,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$window);
  let results = (outs SQ_FloatTensor:$output, Variadic<SQ_FloatTensor>:$present);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`cache` $past_key^ `,` $past_value)?
    `heads` $num_heads `kv_heads` $num_kv_heads
    (`scale` $scale^)? (`causal` $causal^)? (`window` $window^)? attr-dict
    `:` type($query) `,` type($key) `,` type($value)
    (`,` type($past_key)^ `,` type($past_value))? (`->` type($present)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// head_dim, or ShapedType::kDynamic when the last dimension is dynamic.
    int64_t getHeadDim();
    /// True when the op reads and extends a KV cache.
    bool hasCache() { return static_cast<bool>(getPastKey()); }
  }];
}

class SQ_ElementwiseBinaryOp<string mnemonic, string what>
    : SQ_Op<mnemonic, [Pure, Commutative, SameOperandsAndResultType]> {
  let summary = "elementwise " # what # " (no broadcasting)";
  let description = [{
    Elementwise }] # what # [{ of two tensors of the same type. The residual
    connections (`add`) and the SwiGLU gate (`mul`) use it.
  }];
  let arguments = (ins SQ_FloatTensor:$lhs, SQ_FloatTensor:$rhs);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($output)";
}

def SQ_AddOp : SQ_ElementwiseBinaryOp<"add", "addition">;
def SQ_MulOp : SQ_ElementwiseBinaryOp<"mul", "multiplication">;

def SQ_SiluOp : SQ_Op<"silu", [Pure, SameOperandsAndResultType]> {
  let summary = "SiLU activation x · sigmoid(x)";
  let description = [{
    ```mlir
    %a = sq.silu %g : tensor<1x8x172xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = "$input attr-dict `:` type($output)";
}

//===----------------------------------------------------------------------===//
// Rotations
//===----------------------------------------------------------------------===//

def SQ_RotateOp : SQ_Op<"rotate", [Pure, AllTypesMatch<["input", "output"]>]> {
  let summary = "multiply the last dimension by a known rotation: x · R";
  let description = [{
    Multiplies the last dimension of `input` by the square matrix `rotation`
    (`x · R`, or `x · Rᵀ` with `transposed`). When `R` is `n×n` and the last
    dimension is a multiple `k·n`, `R` is applied to each of the `k`
    consecutive blocks: this is how a per-head rotation (SpinQuant's R2 over
    `head_dim`) acts on heads flattened into the last dimension.

    ```mlir
    %y = sq.rotate %x by %r1 : tensor<1x8x64xf32>, tensor<64x64xf32>
    %z = sq.rotate %v by %r2 transposed : tensor<1x8x32xf32>, tensor<8x8xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_FloatTensor:$rotation,
                       UnitAttr:$transposed);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input `by` $rotation (`transposed` $transposed^)? attr-dict
    `:` type($input) `,` type($rotation)
  }];
  let hasVerifier = 1;
  // A rotation by the identity (an sq.weight holding I) folds away.
  let hasFolder = 1;
}

def SQ_HadamardOp : SQ_Op<"hadamard", [Pure, SameOperandsAndResultType]> {
  let summary = "online orthonormal Hadamard transform over the last dimension";
  let description = [{
    Multiplies each block of `size` consecutive elements of the last
    dimension by the orthonormal Hadamard matrix `H/sqrt(size)` (the whole
    last dimension when `size` is omitted). `size = m·2^k` where `m` is an
    order with a known Hadamard matrix (1, 12, 20, 28, 36, 40, 44, 52, 60,
    108, 140, 156, 172); for any other `m` the `m×m` factor is a random
    orthogonal matrix drawn from `seed` (default 0), so the op is still an
    exact rotation. SpinQuant places it on the down_proj input (R4) and on
    Q/K after RoPE with `size = head_dim` (R3).

    ```mlir
    %y = sq.hadamard %x size 8 : tensor<1x8x64xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$size,
                       OptionalAttr<I64Attr>:$seed);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input (`size` $size^)? (`seed` $seed^)? attr-dict `:` type($output)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The block size, or ShapedType::kDynamic if it is the (dynamic) last dim.
    int64_t getBlockSize();
  }];
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def SQ_FakeQuantOp : SQ_Op<"fake_quant", [Pure, SameOperandsAndResultType]> {
  let summary = "quantize then dequantize in float (straight-through in backward)";
  let description = [{
    Rounds `input` to the integer grid described by `quant` and maps it back
    to float. Scales are computed from the tensor itself (dynamic), along the
    last dimension as `quant` says. In the backward pass the
    straight-through estimator passes the gradient unchanged.

    ```mlir
    %y = sq.fake_quant %x {quant = #sq.quant<bits = 4, asym, per_token, clip = 0.9>} : tensor<1x8x64xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_QuantAttr:$quant);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = "$input attr-dict `:` type($output)";
  let hasVerifier = 1;
}

def SQ_QuantizeOp : SQ_Op<"quantize", [Pure]> {
  let summary = "quantize to integers with dynamic scales (and zero points)";
  let description = [{
    Computes scales (and, for `asym`, zero points) along the last dimension
    as `quant` says and rounds `input` to integers. `values` has the input's
    shape and a signless integer element type at least `bits` wide (the
    container; symmetric values are signed, asymmetric ones unsigned).
    `scales` and `zero_points` have the input's shape with the last
    dimension replaced by the number of groups (1 for per-token), and all
    ones for per-tensor. `zero_points` is present exactly when `asym`.

    ```mlir
    %v, %s, %z = sq.quantize %x {quant = #sq.quant<bits = 4, asym, per_token>}
        : tensor<1x8x64xf32> -> tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_QuantAttr:$quant);
  let results = (outs SQ_IntTensor:$values, SQ_FloatTensor:$scales,
                      Optional<SQ_FloatTensor>:$zero_points);
  let assemblyFormat = [{
    $input attr-dict `:` type($input) `->` type($values) `,` type($scales)
    (`,` type($zero_points)^)?
  }];
  let hasVerifier = 1;
}

def SQ_DequantizeOp : SQ_Op<"dequantize", [Pure]> {
  let summary = "map quantized integers back to float";
  let description = [{
    `output = (values - zero_points) · scales`, with `scales`/`zero_points`
    shaped as `sq.quantize` produces them. `zero_points` is present exactly
    when `quant` is `asym`.

    ```mlir
    %y = sq.dequantize %v, %s, %z {quant = #sq.quant<bits = 4, asym, per_token>}
        : (tensor<1x8x64xi8>, tensor<1x8x1xf32>, tensor<1x8x1xf32>) -> tensor<1x8x64xf32>
    ```
  }];
  let arguments = (ins SQ_IntTensor:$values, SQ_FloatTensor:$scales,
                       Optional<SQ_FloatTensor>:$zero_points, SQ_QuantAttr:$quant);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $values `,` $scales (`,` $zero_points^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  // sq.dequantize of an sq.quantize with the same `quant` (its values,
  // scales and zero points) is sq.fake_quant of the quantize's input.
  let hasCanonicalizer = 1;
}

def SQ_QLinearOp : SQ_Op<"qlinear", [Pure, AttrSizedOperandSegments]> {
  let summary = "linear layer on packed quantized weights (and quantized activations)";
  let description = [{
    `y = q(x) · dequant(W)ᵀ (+ bias)` where `W` is a packed integer weight
    `[out_features, in_features]` with `scales` (and `zero_points` when
    `weight_quant` is `asym`) of shape `[out_features, groups]`. When
    `act_quant` is given, the float input is quantized on the fly as it
    says (per token or in groups), so the product is computed in integer
    arithmetic; without it, activations stay in float (e.g. W4A16).

    ```mlir
    %y = sq.qlinear %x, %w, %s {weight_quant = #sq.quant<bits = 4, sym, per_channel>,
                                act_quant = #sq.quant<bits = 4, asym, per_token>}
        : (tensor<1x8x64xf32>, !sq.packed<172x64xi4>, tensor<172x1xf16>) -> tensor<1x8x172xf32>
    ```
  }];
  let arguments = (ins SQ_FloatTensor:$input, SQ_PackedType:$weight,
                       SQ_FloatTensor:$scales,
                       Optional<SQ_FloatTensor>:$zero_points,
                       Optional<SQ_FloatTensor>:$bias,
                       SQ_QuantAttr:$weight_quant,
                       OptionalAttr<SQ_QuantAttr>:$act_quant);
  let results = (outs SQ_FloatTensor:$output);
  let assemblyFormat = [{
    $input `,` $weight `,` $scales (`zero_points` $zero_points^)? (`bias` $bias^)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let builders = [
    // Infers the result type as sq.linear does.
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$weight,
                   "::mlir::Value":$scales, "::mlir::Value":$zero_points,
                   "::mlir::Value":$bias, "QuantAttr":$weight_quant,
                   "QuantAttr":$act_quant)>
  ];
}

#endif // SQ_DIALECT_SQ_IR_SQOPS_TD
