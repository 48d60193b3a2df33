//===- MoEDialect.cpp - The moe dialect -----------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/IR/MoEDialect.h"
#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace switchyard::moe;

#include "switchyard/Dialect/MoE/IR/MoEOpsDialect.cpp.inc"

#include "switchyard/Dialect/MoE/IR/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "switchyard/Dialect/MoE/IR/MoEAttrs.cpp.inc"

void MoEDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "switchyard/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "switchyard/Dialect/MoE/IR/MoEOps.cpp.inc"
      >();
}

Operation *MoEDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                           Type type, Location loc) {
  // The only folder (moe.expert_capacity) folds to an index.
  return arith::ConstantOp::materialize(builder, value, type, loc);
}
