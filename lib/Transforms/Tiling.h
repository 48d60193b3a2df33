//===- Tiling.h - Tiling helpers shared by the CPU passes -------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_LIB_TRANSFORMS_TILING_H
#define SWITCHYARD_LIB_TRANSFORMS_TILING_H

#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/IR/PatternMatch.h"

namespace switchyard {

/// Tiles `target` (a TilingInterface op) with `options` and replaces it;
/// returns the tiled op and its loops, or emits "cannot tile <what>".
inline mlir::FailureOr<mlir::scf::SCFTilingResult>
tileOnce(mlir::RewriterBase &rewriter, mlir::Operation *target,
         const mlir::scf::SCFTilingOptions &options, llvm::StringRef what) {
  rewriter.setInsertionPoint(target);
  mlir::FailureOr<mlir::scf::SCFTilingResult> tiled = mlir::scf::tileUsingSCF(
      rewriter, mlir::cast<mlir::TilingInterface>(target), options);
  if (mlir::failed(tiled))
    return target->emitError("cannot tile ") << what;
  rewriter.replaceOp(target, tiled->replacements);
  return tiled;
}

} // namespace switchyard

#endif // SWITCHYARD_LIB_TRANSFORMS_TILING_H
