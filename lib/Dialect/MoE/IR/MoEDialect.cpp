//===- MoEDialect.cpp - The moe dialect -----------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/IR/MoEDialect.h"
#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/DialectImplementation.h"
#include "mlir/Transforms/InliningUtils.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace switchyard::moe;

#include "switchyard/Dialect/MoE/IR/MoEOpsDialect.cpp.inc"

#include "switchyard/Dialect/MoE/IR/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "switchyard/Dialect/MoE/IR/MoEAttrs.cpp.inc"

namespace {
/// moe ops compute their results from their operands alone and have no
/// regions, so any of them may be inlined: the CPU pipeline inlines the
/// functions a model calls, so that their layers' weights are packed once,
/// when bound, like the entry's own.
struct MoEInlinerInterface : DialectInlinerInterface {
  using DialectInlinerInterface::DialectInlinerInterface;
  bool isLegalToInline(Operation *, Region *, bool, IRMapping &) const final {
    return true;
  }
};
} // namespace

void MoEDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "switchyard/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "switchyard/Dialect/MoE/IR/MoEOps.cpp.inc"
      >();
  addInterfaces<MoEInlinerInterface>();
}

Operation *MoEDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                           Type type, Location loc) {
  // The only folder (moe.expert_capacity) folds to an index.
  return arith::ConstantOp::materialize(builder, value, type, loc);
}
