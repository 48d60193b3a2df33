//===- MoEToLinalg.cpp - The convert-moe-to-linalg pass -------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "switchyard/Conversion/Passes.h"
#include "switchyard/Dialect/MoE/IR/MoEDialect.h"
#include "switchyard/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Transforms/DialectConversion.h"

namespace switchyard {
#define GEN_PASS_DEF_CONVERTMOETOLINALG
#include "switchyard/Conversion/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

struct ConvertMoEToLinalgPass
    : switchyard::impl::ConvertMoEToLinalgBase<ConvertMoEToLinalgPass> {
  using Base::Base;

  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    // Layer ops are moe-decompose's to take apart: say so, rather than
    // leave the conversion's "failed to legalize".
    WalkResult layers = getOperation()->walk([](Operation *op) {
      if (!switchyard::moe::isLayerOp(op) &&
          !isa<switchyard::moe::ResidualOp>(op))
        return WalkResult::advance();
      op->emitError("'")
          << op->getName()
          << "' is a layer-level op: run moe-decompose first (or the whole "
             "--switchyard-cpu-pipeline)";
      return WalkResult::interrupt();
    });
    if (layers.wasInterrupted())
      return signalPassFailure();
    ConversionTarget target(*ctx);
    target.addLegalDialect<arith::ArithDialect, linalg::LinalgDialect,
                           math::MathDialect, scf::SCFDialect,
                           tensor::TensorDialect>();
    // Every moe op has a lowering; layer-level ops must have been
    // decomposed, so meeting one is an error, not a silent fallback.
    target.addIllegalDialect<switchyard::moe::MoEDialect>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });

    RewritePatternSet patterns(ctx);
    switchyard::populateMoERouterToLinalgPatterns(patterns);
    switchyard::populateMoERoutingToSCFPatterns(patterns);
    switchyard::BF16Products bf16;
    bf16.dot = bf16DotProducts;
    bf16.amx = bf16Amx;
    switchyard::populateMoEDispatchToLinalgPatterns(patterns, bf16);
    switchyard::populateMoEExpertsToLinalgPatterns(patterns, bf16);
    switchyard::populateMoESoftToLinalgPatterns(patterns, bf16);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
