//===- SerializeNestedParallel.cpp - Only outermost loops go parallel -----===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
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
      bool inLoop = false, inParallel = false;
      for (Operation *parent = op->getParentOp();
           parent && !isa<func::FuncOp>(parent);
           parent = parent->getParentOp()) {
        inLoop |= isa<scf::ForOp, scf::WhileOp>(parent);
        inParallel |= isa<scf::ParallelOp, scf::ForallOp>(parent);
      }
      if (!inLoop && !inParallel)
        return;
      // The blocks of a matrix product inside a sequential loop (the
      // per-expert products of the dropless form) are worth a team each.
      bool product =
          op->walk([](vector::FMAOp) { return WalkResult::interrupt(); })
              .wasInterrupted();
      if (inParallel || !product)
        nested.push_back(op);
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
