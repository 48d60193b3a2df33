//===- MoEOps.h - Operations of the moe dialect -----------------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_IR_MOEOPS_H
#define SWITCHYARD_DIALECT_MOE_IR_MOEOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "switchyard/Dialect/MoE/IR/MoEDialect.h"

#include "switchyard/Dialect/MoE/IR/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "switchyard/Dialect/MoE/IR/MoEAttrs.h.inc"

#define GET_OP_CLASSES
#include "switchyard/Dialect/MoE/IR/MoEOps.h.inc"

namespace switchyard::moe {

/// True for the gated activations (swiglu, geglu), which need a `wg` weight.
bool isGated(Activation activation);

/// True for the layer-level ops (one block of a model: moe.token_choice,
/// moe.expert_choice, moe.soft_moe, moe.ffn), which moe-decompose takes apart.
inline bool isLayerOp(mlir::Operation *op) {
  return mlir::isa<TokenChoiceOp, ExpertChoiceOp, SoftMoEOp, FFNOp>(op);
}

} // namespace switchyard::moe

#endif // SWITCHYARD_DIALECT_MOE_IR_MOEOPS_H
