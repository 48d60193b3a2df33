//===- Importer.h - Model descriptions to the moe dialect -------*- C++ -*-===//
//
// Part of Switchyard. Turns a ModelDescription into a module holding one
// layer-level function, `@forward`, and reads the artifact manifest (what the
// runtime needs to know about that function) back off any such function,
// imported or hand-written.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_FRONTEND_IMPORTER_H
#define SWITCHYARD_FRONTEND_IMPORTER_H

#include "switchyard/Frontend/ModelDescription.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir {
class MLIRContext;
namespace func {
class FuncOp;
} // namespace func
} // namespace mlir

namespace switchyard {

/// The argument attribute naming a weight (`blocks.0.router.weight`).
inline constexpr llvm::StringLiteral kWeightAttrName = "switchyard.weight";
/// The result attribute naming a statistic (`blocks.1.aux_loss`).
inline constexpr llvm::StringLiteral kResultAttrName = "switchyard.result";
/// The module attribute holding the model's name.
inline constexpr llvm::StringLiteral kModelNameAttrName = "switchyard.model";

/// Builds `func.func @forward(%x: tensor<?xSxDxT>, weights...) -> (y, stats...)`
/// at the layer level. Locations point at the blocks in `bufferName`.
mlir::OwningOpRef<mlir::ModuleOp>
importModel(const ModelDescription &model, mlir::MLIRContext *context,
            llvm::StringRef bufferName);

/// The function a module's artifact runs: `@forward`, or its only public
/// function. Emits an error on `module` and returns null when there is none.
mlir::func::FuncOp getEntryFunction(mlir::ModuleOp module);

/// Describes the entry function of a layer-level module for the runtime, as
/// JSON (docs/Artifacts.md, "The manifest"): the input, every weight
/// argument's name, shape and dtype, every result, and per block the sizes
/// that FLOP counts and statistics need. Emits an error and fails when the
/// function is not one the runtime can drive.
mlir::FailureOr<std::string> buildManifest(mlir::func::FuncOp entry);

} // namespace switchyard

#endif // SWITCHYARD_FRONTEND_IMPORTER_H
