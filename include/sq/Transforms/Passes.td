//===- Passes.td - sq transformation passes -----------------*- tablegen -*-===//
//
// Every sq pass and its options are declared here; the C++ declarations,
// registration and the reference in docs/ are generated from this file.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_PASSES_TD
#define SQ_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SQWeightSummary : Pass<"sq-weight-summary", "::mlir::ModuleOp"> {
  let summary = "print a table of the model's weights: name, type, bytes, non-finite values";
  let description = [{
    Lists every `sq.weight` of the module with its logical type, its storage
    size in bytes and the number of NaN/Inf values it holds (float weights),
    then the totals. The table goes to stderr, or to `output=FILE`; the IR is
    left unchanged. Useful to see what an import produced and how much a
    quantization saved.

    ```
    sq-opt --sq-weight-summary model.mlir -o /dev/null
    ```
  }];
  let options = [
    Option<"output", "output", "std::string", /*default=*/"\"-\"",
           "where to write the table ('-' for stderr)">
  ];
}

#endif // SQ_TRANSFORMS_PASSES_TD
