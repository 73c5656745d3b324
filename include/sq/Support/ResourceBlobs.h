//===- ResourceBlobs.h - check textual IR's resource blobs ------*- C++ -*-===//
//
// MLIR 22's text parser aborts the process on some `dialect_resources` /
// `external_resources` hex blobs in the `{-# ... #-}` file metadata: the
// first 4 bytes of a blob are its alignment, and an alignment of 0 (with
// data after it) goes straight to llvm::allocate_buffer ("LLVM ERROR: out of
// memory / Buffer allocation failed"). A huge alignment (up to 2^31) is
// accepted and allocated: gigabytes per blob, so a small file exhausts
// memory or the address space. (A non-power-of-two alignment is a clean
// MLIR error.)
//
// SQ's readers of textual IR (sq-opt, sq-run, sq-compile, the fuzz target)
// therefore scan the text first, in linear time, following MLIR's lexer
// (comments, strings, dialect symbol bodies `#dialect<...>`, the metadata
// section's structure), and refuse such a blob with a one-line error before
// MLIR parses it. Alignments up to kMaxResourceAlignment are accepted.
//
//===----------------------------------------------------------------------===//

#ifndef SQ_SUPPORT_RESOURCEBLOBS_H
#define SQ_SUPPORT_RESOURCEBLOBS_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mlir {
class MLIRContext;
} // namespace mlir

namespace sq {

/// The largest resource blob alignment SQ accepts (a page).
constexpr uint32_t kMaxResourceAlignment = 4096;

/// A resource blob of textual IR that MLIR's parser cannot take safely.
struct ResourceBlobProblem {
  unsigned line = 0, column = 0; ///< 1-based position of the blob's string
  std::string message;           ///< "resource blob 'NAME' has alignment 0 ..."
};

/// Scans textual IR for the first resource blob with alignment 0 or above
/// kMaxResourceAlignment (and non-empty data). Linear in the text's size.
std::optional<ResourceBlobProblem> findBadResourceBlob(llvm::StringRef text);

/// "NAME:LINE:COL: error: MESSAGE" (MLIR's diagnostic layout) for the first
/// bad blob of `text`, or "" when there is none. With a non-empty
/// `splitMarker` (sq-opt --split-input-file) each chunk is checked as MLIR
/// splits it, named and numbered as MLIR names the chunk.
std::string checkResourceBlobs(llvm::StringRef text, llvm::StringRef name,
                               llvm::StringRef splitMarker = "");

/// mlir::parseSourceFile<ModuleOp>(path, context), but textual IR is checked
/// first; a bad blob is emitted as an error diagnostic at PATH:LINE:COL
/// (seen by the caller's diagnostic handler like any parse error).
mlir::OwningOpRef<mlir::ModuleOp> parseModuleFile(llvm::StringRef path,
                                                  mlir::MLIRContext *context);

} // namespace sq

#endif // SQ_SUPPORT_RESOURCEBLOBS_H
