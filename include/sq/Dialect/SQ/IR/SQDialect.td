//===- SQDialect.td - the sq dialect -----------------------*- tablegen -*-===//
//
// The `sq` dialect: coarse, LLaMA-level operations on which the SpinQuant
// passes (norm fusion, rotations, online Hadamards, quantization) are short
// and the IR of a whole model stays readable.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_DIALECT_SQ_IR_SQDIALECT_TD
#define SQ_DIALECT_SQ_IR_SQDIALECT_TD

include "mlir/IR/OpBase.td"

def SQ_Dialect : Dialect {
  let name = "sq";
  let cppNamespace = "::sq";
  let summary = "LLaMA-level operations for SpinQuant rotation and 4-bit quantization";
  let description = [{
    The `sq` dialect describes a decoder-only transformer (LLaMA family) at the
    level of its building blocks: embedding lookup, RMSNorm, linear layers,
    rotary position embedding, grouped-query attention and the SwiGLU MLP,
    plus the operations SpinQuant adds: rotations (`sq.rotate`), online
    Hadamard transforms (`sq.hadamard`) and quantization (`sq.fake_quant`,
    `sq.quantize`, `sq.dequantize`, `sq.qlinear`).

    Conventions shared by all ops:

    * Activations are tensors whose last dimension is the feature dimension.
      Multi-head tensors keep the heads flattened into the last dimension
      (`[batch, seq, num_heads * head_dim]`); ops that need heads take
      `num_heads` as an attribute. This keeps reshapes out of the IR.
    * Linear weights are `[out_features, in_features]` and `sq.linear`
      computes `y = x · Wᵀ`, as PyTorch and Hugging Face store them.
    * Weights are named, resource-backed constants (`sq.weight`) so that the
      IR of a multi-gigabyte model prints in a page and round-trips through
      bytecode exactly.
    * Quantization parameters are one attribute, `#sq.quant<...>`; quantized
      weights use the packed storage type `!sq.packed<...>`.
  }];
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
}

class SQ_Op<string mnemonic, list<Trait> traits = []>
    : Op<SQ_Dialect, mnemonic, traits>;

#endif // SQ_DIALECT_SQ_IR_SQDIALECT_TD
