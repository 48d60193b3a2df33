//===- Bufferize.cpp - One-Shot Bufferize with linalg.copy ----------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/Transforms/OneShotAnalysis.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Bufferization/Transforms/OneShotModuleBufferize.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDBUFFERIZE
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

struct SwitchyardBufferizePass
    : switchyard::impl::SwitchyardBufferizeBase<SwitchyardBufferizePass> {
  void runOnOperation() override {
    // Arguments belong to the caller (inputs and weights, possibly
    // memory-mapped read-only): never write into them.
    getOperation().walk([](func::FuncOp func) {
      if (func.isExternal())
        return;
      for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i)
        if (isa<TensorType>(func.getArgument(i).getType()))
          func.setArgAttr(i, bufferization::BufferizationDialect::kWritableAttrName,
                          BoolAttr::get(func.getContext(), false));
    });
    bufferization::OneShotBufferizationOptions options;
    options.bufferizeFunctionBoundaries = true;
    // A layer inside a loop (a stack of identical blocks written as
    // scf.for) yields a fresh buffer each iteration; the ownership-based
    // deallocation pipeline that follows frees the previous one.
    options.allowReturnAllocsFromLoops = true;
    options.setFunctionBoundaryTypeConversion(
        bufferization::LayoutMapOption::IdentityLayoutMap);
    options.memCpyFn = [](OpBuilder &b, Location loc, Value from,
                          Value to) -> LogicalResult {
      linalg::CopyOp::create(b, loc, from, to);
      return success();
    };
    bufferization::BufferizationState state;
    if (failed(bufferization::runOneShotModuleBufferize(getOperation(), options,
                                                        state)))
      signalPassFailure();
  }
};

} // namespace
