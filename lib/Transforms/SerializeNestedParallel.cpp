//===- SerializeNestedParallel.cpp - Only outermost loops go parallel -----===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/IR/PatternMatch.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDSERIALIZENESTEDPARALLEL
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

struct SerializeNestedParallelPass
    : switchyard::impl::SwitchyardSerializeNestedParallelBase<
          SerializeNestedParallelPass> {
  void runOnOperation() override {
    SmallVector<scf::ParallelOp> nested;
    getOperation().walk([&](scf::ParallelOp op) {
      Operation *parent = op->getParentOp();
      while (parent && !isa<func::FuncOp>(parent)) {
        if (isa<scf::ForOp, scf::WhileOp, scf::ParallelOp, scf::ForallOp>(
                parent)) {
          nested.push_back(op);
          return;
        }
        parent = parent->getParentOp();
      }
    });
    IRRewriter rewriter(&getContext());
    for (scf::ParallelOp op : nested) {
      rewriter.setInsertionPoint(op);
      if (failed(scf::parallelForToNestedFors(rewriter, op))) {
        op.emitError("cannot turn this nested parallel loop into loops");
        return signalPassFailure();
      }
    }
  }
};

} // namespace
