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

def SQLowerNVPTX : Pass<"sq-lower-nvptx", "::mlir::ModuleOp"> {
  let summary = "lower @forward to a GPU program over the CUDA runtime, with the kernels compiled to PTX";
  let description = [{
    The program of `--sq-lower-cpu` (same slots, fusions, manifest and
    weights sidecar), calling the CUDA runtime (`sqcu_*`,
    `lib/Runtime/CUDA`) instead of the CPU one; elementwise ops are kernel
    launches too. The kernel library (`lib/Conversion/SQToNVVM/Kernels.mlir`,
    a `gpu.module` written with gpu/nvvm/arith/scf/llvm ops: int4 and int8
    tensor-core GEMMs through `nvvm.mma.sync`, the activation quantizer with
    the online Hadamard fused, attention over the int4 KV cache, norms,
    RoPE, elementwise ops) is compiled for `sm` by LLVM's NVPTX backend
    (`nvvm-attach-target`, `convert-gpu-to-nvvm`, `gpu-module-to-binary`)
    and kept as the string `@sq_model_ptx`, which the runtime JIT-loads.
    On sm_90, which has no int4 `mma`, the int4 GEMM kernel is left out and
    int4 weights run on the int8 kernel.
  }];
  let options = [
    Option<"sm", "sm", "int", /*default=*/"80",
           "the GPU architecture (80, 86, 89, 90)">,
    Option<"weightsFile", "weights-file", "std::string", /*default=*/"\"\"",
           "write the weights to this sidecar file">,
    Option<"description", "description", "std::string", /*default=*/"\"\"",
           "a line describing the compilation, kept in the manifest">,
    Option<"kernels", "kernels", "std::string", /*default=*/"\"\"",
           "read the kernel library from this .mlir file instead of the built-in one">,
  ];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::gpu::GPUDialect",
                           "::mlir::NVVM::NVVMDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

#endif // SQ_CONVERSION_PASSES_TD
