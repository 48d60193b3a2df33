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
    // f32 scalars and vectors only: the pass description's accuracy is f32's,
    // and the polynomials are built for scalars and vectors, not tensors.
    auto isF32 = [](Type type) {
      if (auto vector = dyn_cast<VectorType>(type))
        type = vector.getElementType();
      return type.isF32();
    };
    SmallVector<Operation *> approximated;
    getOperation()->walk([&](Operation *op) {
      if (isa<math::ExpOp, math::ErfOp>(op) &&
          isF32(op->getResult(0).getType()))
        approximated.push_back(op);
    });
    // The erf approximation returns +0 for -0; erf is odd, and libm keeps
    // the sign: copysign(erf(x), x), the same value for every other x.
    for (Operation *op : approximated) {
      auto erf = dyn_cast<math::ErfOp>(op);
      if (!erf)
        continue;
      OpBuilder b(erf->getContext());
      b.setInsertionPointAfter(erf);
      auto signed_ = math::CopySignOp::create(b, erf.getLoc(), erf.getResult(),
                                              erf.getOperand());
      erf.getResult().replaceAllUsesExcept(signed_, signed_);
    }
    RewritePatternSet patterns(&getContext());
    // Only the functions whose approximations keep NaN, the infinities and
    // f32 accuracy within a few ulp (see the pass description); tanh's
    // clamps would turn a NaN into +-1.
    populateMathPolynomialApproximationPatterns(patterns, [](StringRef name) {
      return name == "math.exp" || name == "math.erf";
    });
    GreedyRewriteConfig config;
    config.setStrictness(GreedyRewriteStrictness::ExistingAndNewOps);
    if (failed(
            applyOpPatternsGreedily(approximated, std::move(patterns), config)))
      signalPassFailure();
  }
};

} // namespace
