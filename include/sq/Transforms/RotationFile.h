//===- RotationFile.h - SpinQuant rotation files (safetensors) --*- C++ -*-===//
//
// The rotation files of --spinquant-rotate (save=FILE writes one, mode=file
// reads one): safetensors (an 8-byte little-endian header length, a JSON
// header, the raw data) holding square float32/float64 matrices, by name
// ("R1", "layers.N.R2", or SpinQuant's "model.R1.weight", ...).
//
// Plain C++ over LLVM Support (the fuzz target links RotationFile.cpp alone).
//
//===----------------------------------------------------------------------===//

#ifndef SQ_TRANSFORMS_ROTATIONFILE_H
#define SQ_TRANSFORMS_ROTATIONFILE_H

#include "llvm/ADT/StringRef.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace sq {

/// A rotation: an n x n matrix, row-major (or a learned scale's values).
using RotationMatrix = std::vector<double>;

/// Tensors whose names end in ".scale" (layers.L.qk.scale, ...) are learned
/// diagonal scalings: 1-D, positive, read and written as vectors.
bool isScaleTensorName(llvm::StringRef name);

/// Reads the tensors of the rotation file at `path` into `out` (name ->
/// matrix; every tensor must be a square 2-D F32/F64 tensor whose data lies
/// inside the file, with finite values; a ".scale" tensor a 1-D one with
/// positive values). On failure returns false with a
/// one-line `error` naming the file.
bool readRotationFile(llvm::StringRef path,
                      std::map<std::string, RotationMatrix> &out,
                      std::string &error);

/// The same on a file's bytes; `name` only appears in errors.
bool parseRotationFile(llvm::StringRef data, llvm::StringRef name,
                       std::map<std::string, RotationMatrix> &out,
                       std::string &error);

/// Writes `tensors` (name -> square matrix) as float64 safetensors through a
/// temporary file renamed at the end.
bool writeRotationFile(
    llvm::StringRef path,
    const std::vector<std::pair<std::string, RotationMatrix>> &tensors,
    std::string &error);

} // namespace sq

#endif // SQ_TRANSFORMS_ROTATIONFILE_H
