//===- HF.h - import of Hugging Face checkpoint folders ---------*- C++ -*-===//
//
// importHFModel reads a Hugging Face checkpoint folder (config.json and
// model.safetensors, or shards listed by model.safetensors.index.json) and
// builds the same sq IR as the ONNX route (sq/Import/ONNX.h) builds for the
// same model: one func.func @forward(input_ids, positions) -> logits with,
// per decoder layer, two sq.rms_norm, seven sq.linear, two sq.rope and one
// sq.attention; weights as sq.weight resources with their Hugging Face
// names; the configuration as the module attribute sq.config (written by
// sq/Import/ModelConfig.h, as the ONNX route writes it).
//
// Weights are not copied: each sq.weight's resource blob is a view into the
// memory-mapped safetensors file (F32, F16 and BF16 stay in their type, as
// the ONNX route keeps them), kept mapped while the module holds it; only
// biases are converted (to fp32, as the ONNX route stores them).
//
// Errors are one line, "FILE: where: what" (the library never exits);
// fields of config.json SQ does not know are reported as one warning
// diagnostic on the context.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_IMPORT_HF_H
#define SQ_IMPORT_HF_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace sq {

/// True when `path` is a directory: SQ's tools take a directory for a
/// Hugging Face checkpoint folder wherever they take model.onnx.
bool isHFModelDir(llvm::StringRef path);

/// Imports the checkpoint folder `dir` into a new module in `context`. On
/// failure returns null and sets `error` to a one-line message.
mlir::OwningOpRef<mlir::ModuleOp> importHFModel(llvm::StringRef dir,
                                                mlir::MLIRContext *context,
                                                std::string &error);

/// The tokenizer spec of a model path when none is given: "hf:DIR" for a
/// Hugging Face folder with a tokenizer.json, "sp:DIR/tokenizer.model" for
/// one with only a SentencePiece model, "" otherwise (no folder, or a
/// folder without tokenizer files).
std::string defaultTokenizerSpec(llvm::StringRef modelPath);

} // namespace sq

#endif // SQ_IMPORT_HF_H
