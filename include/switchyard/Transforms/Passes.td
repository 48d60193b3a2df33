//===- Passes.td - Switchyard's dialect-independent passes -*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_TRANSFORMS_PASSES_TD
#define SWITCHYARD_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def SwitchyardBufferize : Pass<"switchyard-bufferize", "::mlir::ModuleOp"> {
  let summary = "One-Shot Bufferize the whole module, copying with linalg.copy";
  let description = [{
    One-Shot Module Bufferization with function boundaries bufferized to
    identity-layout memrefs (what the C interface and the runtime pass), and
    every buffer copy emitted as `linalg.copy` instead of `memref.copy`: a copy
    into a dynamically sized slice (the dropless grouped form writes one per
    expert) then lowers to loops like every other linalg op, instead of a call
    into MLIR's C runner library, which Switchyard's artifacts do not link.
    Function arguments are marked read-only: they belong to the caller.
  }];
  let dependentDialects = [
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::memref::MemRefDialect"
  ];
}

#endif // SWITCHYARD_TRANSFORMS_PASSES_TD
