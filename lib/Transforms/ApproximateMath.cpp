//===- ApproximateMath.cpp - exp and erf as vectorizable polynomials ------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDAPPROXIMATEMATH
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

struct ApproximateMathPass
    : switchyard::impl::SwitchyardApproximateMathBase<ApproximateMathPass> {
  void runOnOperation() override {
    // The erf approximation returns +0 for -0; erf is odd, and libm keeps
    // the sign: copysign(erf(x), x), the same value for every other x.
    getOperation()->walk([](math::ErfOp erf) {
      OpBuilder b(erf->getContext());
      b.setInsertionPointAfter(erf);
      auto signed_ = math::CopySignOp::create(b, erf.getLoc(), erf.getResult(),
                                              erf.getOperand());
      erf.getResult().replaceAllUsesExcept(signed_, signed_);
    });
    RewritePatternSet patterns(&getContext());
    // Only the functions whose approximations keep NaN, the infinities and
    // f32 accuracy within a few ulp (see the pass description); tanh's
    // clamps would turn a NaN into +-1.
    populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
      return name == "math.exp" || name == "math.erf";
    });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
