//===- Passes.h - sq transformation passes -----------------------*- C++
//-*-===//

#ifndef SQ_TRANSFORMS_PASSES_H
#define SQ_TRANSFORMS_PASSES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "sq/Transforms/PassOptionTypes.h"
#include "sq/Transforms/QuantSpecOption.h"

#include <memory>

namespace sq {

#define GEN_PASS_DECL
#include "sq/Transforms/Passes.h.inc"

/// --quantize with a parsed spec (the pass's own option string is the
/// command-line form of the same thing).
std::unique_ptr<mlir::Pass> createQuantizePass(const QuantSpec &spec);

/// The names from before the sq- prefix (spinquant-rotate, quantize), as
/// aliases for one release; call after registerSQPasses().
void registerSQPassAliases();

#define GEN_PASS_REGISTRATION
#include "sq/Transforms/Passes.h.inc"

} // namespace sq

#endif // SQ_TRANSFORMS_PASSES_H
