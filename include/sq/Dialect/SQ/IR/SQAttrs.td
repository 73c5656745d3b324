//===- SQAttrs.td - sq attributes and enums ----------------*- tablegen -*-===//

#ifndef SQ_DIALECT_SQ_IR_SQATTRS_TD
#define SQ_DIALECT_SQ_IR_SQATTRS_TD

include "sq/Dialect/SQ/IR/SQDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def SQ_Granularity : I32EnumAttr<"Granularity",
    "how quantization scales are shared along the last dimension", [
      I32EnumAttrCase<"PerTensor", 0, "per_tensor">,
      I32EnumAttrCase<"PerToken", 1, "per_token">,
      I32EnumAttrCase<"PerChannel", 2, "per_channel">,
      I32EnumAttrCase<"Group", 3, "group">
    ]> {
  let cppNamespace = "::sq";
  let genSpecializedAttr = 0;
}

def SQ_RopeLayout : I32EnumAttr<"RopeLayout",
    "which elements of a head rotary position embedding pairs up", [
      I32EnumAttrCase<"RotateHalf", 0, "rotate_half">,
      I32EnumAttrCase<"Interleaved", 1, "interleaved">
    ]> {
  let cppNamespace = "::sq";
}

def SQ_QuantAttr : AttrDef<SQ_Dialect, "Quant"> {
  let mnemonic = "quant";
  let summary = "quantization parameters: bits, symmetry, granularity, clip ratio";
  let description = [{
    Describes how a tensor is quantized to `bits`-bit integers. Scales are
    computed along the **last dimension** of the tensor:

    * `per_tensor`: one scale for the whole tensor;
    * `per_token`: one scale per row (activations, dynamic);
    * `per_channel`: one scale per row of a `[out, in]` weight, i.e. per
      output channel (same arithmetic as `per_token`, named for weights);
    * `group = N`: one scale per `N` consecutive elements of the last
      dimension (`N` must divide it).

    `sym` maps to signed integers in `[-2^(b-1), 2^(b-1)-1]` with a zero point
    of 0; `asym` maps to unsigned integers in `[0, 2^b-1]` with a zero point.
    `clip` (in `(0, 1]`, default 1) shrinks the range before the scale is
    computed, as SpinQuant's activation and KV-cache clip ratios do.

    Examples:

    ```mlir
    #sq.quant<bits = 4, sym, per_channel>
    #sq.quant<bits = 4, asym, per_token, clip = 0.9>
    #sq.quant<bits = 4, asym, group = 128, clip = 0.95>
    ```
  }];
  let parameters = (ins
    "unsigned":$bits,
    "bool":$symmetric,
    "::sq::Granularity":$granularity,
    "int64_t":$groupSize,
    APFloatParameter<"clip ratio">:$clip
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Number of scale entries along a last dimension of size `dim`
    /// (1 for per-tensor/per-token/per-channel, dim / groupSize for groups).
    int64_t getNumGroups(int64_t dim) const;
    bool isGrouped() const { return getGranularity() == ::sq::Granularity::Group; }
    /// The clip ratio as a double.
    double getClipRatio() const { return getClip().convertToDouble(); }
  }];
}

def SQ_RopeScalingAttr : AttrDef<SQ_Dialect, "RopeScaling"> {
  let mnemonic = "llama3_scaling";
  let summary = "LLaMA-3.1/3.2 RoPE frequency scaling (rope_type llama3)";
  let description = [{
    Hugging Face's `rope_scaling = {rope_type = "llama3", ...}`: with
    `wavelen = 2 pi / inv_freq`, frequencies whose wavelength is below
    `original_max_position_embeddings / high_freq_factor` are kept, those
    above `original_max_position_embeddings / low_freq_factor` are divided
    by `factor`, and those between are interpolated linearly in
    `original_max_position_embeddings / wavelen` (LLaMA-3.1: factor 8,
    LLaMA-3.2: 32; both 1, 4 and 8192).

    ```mlir
    #sq.llama3_scaling<factor = 8.000000e+00, low_freq_factor = 1.000000e+00,
                       high_freq_factor = 4.000000e+00,
                       original_max_position_embeddings = 8192>
    ```
  }];
  let parameters = (ins
    APFloatParameter<"scale of the low frequencies">:$factor,
    APFloatParameter<"low frequency factor">:$low_freq_factor,
    APFloatParameter<"high frequency factor">:$high_freq_factor,
    "int64_t":$original_max_position_embeddings
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // SQ_DIALECT_SQ_IR_SQATTRS_TD
