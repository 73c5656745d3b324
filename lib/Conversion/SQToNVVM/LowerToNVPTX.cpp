//===- LowerToNVPTX.cpp - sq @forward to a GPU program and PTX ------------===//
//
// --sq-lower-nvptx: the program of --sq-lower-cpu calling the CUDA runtime
// (sqcu_*, lib/Runtime/CUDA), plus the kernel library (Kernels.mlir: a
// gpu.module written with gpu/nvvm/arith/scf/llvm ops, tensor-core GEMMs
// through nvvm.mma.sync) compiled to PTX by LLVM's NVPTX backend for the
// chosen sm and kept in the module as the string @sq_model_ptx.
//
//===----------------------------------------------------------------------===//

#include "../Program.h"
#include "sq/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/Parser/Parser.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include <cstdlib>

namespace sq {
#define GEN_PASS_DEF_SQLOWERNVPTX
#include "sq/Conversion/Passes.h.inc"
} // namespace sq

using namespace mlir;

namespace sq {

/// The kernel library compiled into SQ (empty if the build had none).
static const char kKernelLibrary[] = {
#include "SQKernels.inc"
    0};

const char *builtinKernelLibrary() { return kKernelLibrary; }

LogicalResult compileKernelsToPTX(MLIRContext *ctx, StringRef source, int sm,
                                  std::string &ptx, Location loc) {
  if (sm < 80)
    return emitError(loc) << "--sm=" << sm
                          << ": SQ's GPU kernels need sm_80 or newer "
                             "(tensor-core mma.sync on int4/int8)";
  if (source.empty())
    return emitError(loc, "this SQ was built without its GPU kernel library");
  // sm_90 has no int4 tensor-core mma: its GEMMs run on int8 (sq_qgemm_s8).
  // The library marks what only sm_80/86/89 can compile.
  std::string text = source.str();
  if (sm >= 90) {
    size_t begin;
    while ((begin = text.find("// BEGIN sm80-only")) != std::string::npos) {
      size_t end = text.find("// END sm80-only", begin);
      if (end == std::string::npos)
        return emitError(loc, "the kernel library has an unterminated "
                              "'// BEGIN sm80-only' section");
      text.erase(begin, text.find('\n', end) - begin);
    }
  }
  // exp/cos/sin come from libdevice, in the CUDA toolkit.
  const char *home = std::getenv("CUDA_HOME");
  std::string cuda = home && *home ? home : "/usr/local/cuda";
  std::string libdevice = cuda + "/nvvm/libdevice/libdevice.10.bc";
  if (!llvm::sys::fs::exists(libdevice))
    return emitError(loc) << "the GPU kernels need libdevice from the CUDA "
                             "toolkit, not found at '"
                          << libdevice << "' (set CUDA_HOME)";
  ParserConfig config(ctx);
  OwningOpRef<ModuleOp> lib = parseSourceString<ModuleOp>(text, config);
  if (!lib)
    return emitError(loc, "cannot parse the GPU kernel library");
  (*lib)->setAttr("gpu.container_module", UnitAttr::get(ctx));
  std::string pipeline =
      "nvvm-attach-target{chip=sm_" + std::to_string(sm) +
      " features=+ptx80 O=3 l=" + libdevice +
      "},convert-scf-to-cf,gpu.module(convert-gpu-to-nvvm),"
      "convert-math-to-llvm,"
      "convert-arith-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts,"
      "gpu-module-to-binary{format=isa toolkit=" +
      cuda + "}";
  PassManager pm(ctx);
  std::string perr;
  llvm::raw_string_ostream perrs(perr);
  if (failed(parsePassPipeline(pipeline, pm, perrs)))
    return emitError(loc) << "bad GPU pipeline: " << perr;
  if (failed(pm.run(*lib)))
    return emitError(loc, "compiling the GPU kernels to PTX failed");
  ptx.clear();
  lib->walk([&](gpu::BinaryOp bin) {
    for (Attribute a : bin.getObjects())
      if (auto o = dyn_cast<gpu::ObjectAttr>(a))
        ptx += o.getObject().getValue().str();
  });
  if (ptx.empty())
    return emitError(loc, "the GPU kernel library produced no PTX");
  return success();
}

LogicalResult lowerToNVPTX(ModuleOp module, const std::string &weightsFile,
                           const std::string &description, int sm,
                           const std::string &kernelsPath,
                           std::string *ptxOut) {
  std::string source = builtinKernelLibrary();
  if (!kernelsPath.empty()) {
    auto buffer = llvm::MemoryBuffer::getFile(kernelsPath);
    if (!buffer)
      return module.emitError()
             << "cannot read the kernel library '" << kernelsPath
             << "': " << buffer.getError().message();
    source = (*buffer)->getBuffer().str();
  }
  std::string ptx;
  if (failed(compileKernelsToPTX(module.getContext(), source, sm, ptx,
                                 module.getLoc())))
    return failure();
  if (failed(lowerToProgram(module, weightsFile, description, /*gpu=*/true)))
    return failure();
  OpBuilder b(module.getContext());
  b.setInsertionPointToStart(module.getBody());
  std::string text = ptx;
  text.push_back('\0');
  auto arrayType = LLVM::LLVMArrayType::get(b.getI8Type(), text.size());
  LLVM::GlobalOp::create(b, module.getLoc(), arrayType, /*isConstant=*/true,
                         LLVM::Linkage::External, "sq_model_ptx",
                         b.getStringAttr(text));
  if (ptxOut)
    *ptxOut = std::move(ptx);
  return success();
}

namespace {
struct SQLowerNVPTXPass : impl::SQLowerNVPTXBase<SQLowerNVPTXPass> {
  using SQLowerNVPTXBase::SQLowerNVPTXBase;
  void runOnOperation() override {
    if (failed(lowerToNVPTX(getOperation(), weightsFile, description, sm,
                            kernels, nullptr)))
      signalPassFailure();
  }
};
} // namespace

} // namespace sq
