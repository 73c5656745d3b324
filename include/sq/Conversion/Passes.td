//===- Passes.td - sq lowering passes -----------------------*- tablegen -*-===//
//
// The lowerings of quantized sq IR to code; the C++ declarations,
// registration and docs/reference/SQConversionPasses.md come from here.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_CONVERSION_PASSES_TD
#define SQ_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def SQLowerCPU : Pass<"sq-lower-cpu", "::mlir::ModuleOp"> {
  let summary = "lower @forward to a CPU program: upstream loops for elementwise work, runtime micro-kernels for the rest";
  let description = [{
    Turns the `@forward` function of a (quantized or float) sq module into
    `func.func @sq_model_program(%ctx: !llvm.ptr)`, the body of a compiled
    model, plus the global string `@sq_model_manifest` (configuration,
    weight slots, quantized linears, attention layers: the contract with
    the runtime, `include/sq/Runtime/ModelFormat.h`).

    Every tensor value gets a buffer slot (slots are reused after a value's
    last use). Elementwise ops (`sq.add`, `sq.mul`, `sq.silu`) become
    `scf.for` loops over the slots' buffers in the program itself; the
    heavy ops become calls into the runtime (`lib/Runtime/CPU`):
    `sq.qlinear` runs the int4/int8 integer GEMM/GEMV on quantized
    activations (AVX-512 VNNI, AVX2 or scalar, picked at load time), with
    an `sq.hadamard` that feeds it fused into its activation quantization;
    an `sq.fake_quant` that feeds an attention's key or value becomes that
    attention's KV-cache quantizer (the cache stores the integer codes).
    The runtime owns the KV cache, so `past_key`/`past_value` arguments of
    `@forward` are not needed at run time.

    With `weights-file=PATH`, the weights are written to PATH in the
    sidecar format (to a temporary renamed at the end). The sq ops and
    `@forward` are gone afterwards; `--convert-scf-to-cf --convert-to-llvm
    --reconcile-unrealized-casts` finish the lowering to the LLVM dialect
    (what `sq-compile` runs).
  }];
  let options = [
    Option<"weightsFile", "weights-file", "std::string", /*default=*/"\"\"",
           "write the weights to this sidecar file">,
    Option<"description", "description", "std::string", /*default=*/"\"\"",
           "a line describing the compilation, kept in the manifest">,
  ];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

#endif // SQ_CONVERSION_PASSES_TD
