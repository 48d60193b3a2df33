//===- Inline.cpp - Inline a model's calls, up to a budget ----------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Analysis/CallGraph.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Transforms/Inliner.h"

namespace switchyard::moe {
#define GEN_PASS_DEF_MOEINLINE
#include "switchyard/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace switchyard::moe

using namespace mlir;
using namespace switchyard::moe;

namespace {

int64_t countLayers(Region *region) {
  int64_t layers = 0;
  region->walk([&](Operation *op) { layers += isLayerOp(op) ? 1 : 0; });
  return layers;
}

struct MoEInlinePass : switchyard::moe::impl::MoEInlineBase<MoEInlinePass> {
  using MoEInlineBase::MoEInlineBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    int64_t layers = countLayers(&module.getBodyRegion());
    bool warned = false;
    auto profitable = [&](const Inliner::ResolvedCall &resolved) {
      int64_t added = countLayers(resolved.targetNode->getCallableRegion());
      if (layers + added <= maxLayers) {
        layers += added;
        return true;
      }
      if (!warned) {
        resolved.call->emitWarning("not inlined: the module would hold more "
                                  "than ")
            << int64_t(maxLayers)
            << " layer ops (moe-inline's max-layers); this call and any "
               "further ones pack their layers' weights on every call";
        warned = true;
      }
      return false;
    };
    // No clean-up pipeline between inlining steps: moe-decompose's
    // canonicalization follows.
    InlinerConfig config;
    config.setDefaultPipeline([](OpPassManager &) {});
    auto runPipeline = [](Pass &pass, OpPassManager &pipeline, Operation *op) {
      return static_cast<MoEInlinePass &>(pass).runPipeline(pipeline, op);
    };
    CallGraph &callGraph = getAnalysis<CallGraph>();
    Inliner inliner(module, callGraph, *this, getAnalysisManager(),
                    runPipeline, config, profitable);
    if (failed(inliner.doInlining()))
      signalPassFailure();
  }
};

} // namespace
