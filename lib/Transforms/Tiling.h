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

// Markers switchyard-tile-matmuls leaves for switchyard-lower-vectors.

/// The register tiles of products on AMX tiles, left as linalg.generic ops
/// and lowered to AMX tile operations after bufferization.
constexpr llvm::StringLiteral kAmxTile = "switchyard.amx_tile";
/// The row-tile loops of compute-bound packed products, whose register tiles
/// prefetch the next weight panel.
constexpr llvm::StringLiteral kPrefetchNextPanel =
    "switchyard.prefetch_next_panel";
/// The loops over reduction panels around those row-tile loops.
constexpr llvm::StringLiteral kReductionPanels = "switchyard.reduction_panels";
/// The loops of packed products bound by reading their weights (blocks of
/// few rows), whose register tiles prefetch their weights further ahead.
constexpr llvm::StringLiteral kStreamedWeights = "switchyard.streamed_weights";

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
