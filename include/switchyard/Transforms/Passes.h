//===- Passes.h - Switchyard's dialect-independent passes -------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_TRANSFORMS_PASSES_H
#define SWITCHYARD_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace switchyard {

#define GEN_PASS_DECL
#include "switchyard/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "switchyard/Transforms/Passes.h.inc"

} // namespace switchyard

#endif // SWITCHYARD_TRANSFORMS_PASSES_H
