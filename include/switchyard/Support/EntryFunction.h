//===- EntryFunction.h - The function an artifact runs ----------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//
//
// The one rule, shared by the importer (which describes the entry in the
// artifact's manifest) and switchyard-hoist-weight-packing (which packs the
// entry's weights once, when bound).
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_SUPPORT_ENTRYFUNCTION_H
#define SWITCHYARD_SUPPORT_ENTRYFUNCTION_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace switchyard {

/// The function a module's artifact runs: `@forward` (with a body), or else
/// the module's only public function with a body; null when there is none.
/// Its first argument is the input x, every other argument a weight.
inline mlir::func::FuncOp findEntryFunction(mlir::ModuleOp module) {
  mlir::func::FuncOp only;
  unsigned publicCount = 0;
  for (auto fn : module.getOps<mlir::func::FuncOp>()) {
    if (fn.getName() == "forward" && !fn.isExternal())
      return fn;
    if (fn.isPublic() && !fn.isExternal()) {
      only = fn;
      ++publicCount;
    }
  }
  return publicCount == 1 ? only : nullptr;
}

} // namespace switchyard

#endif // SWITCHYARD_SUPPORT_ENTRYFUNCTION_H
