//===- Passes.h - sq transformation passes -----------------------*- C++
//-*-===//

#ifndef SQ_TRANSFORMS_PASSES_H
#define SQ_TRANSFORMS_PASSES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace sq {

#define GEN_PASS_DECL
#include "sq/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "sq/Transforms/Passes.h.inc"

} // namespace sq

#endif // SQ_TRANSFORMS_PASSES_H
