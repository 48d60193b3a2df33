//===- Soft.cpp - Soft MoE to linalg --------------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md section 5. Logits in f32; the softmax over tokens (dispatch)
// and over slots (combine) subtract their maximum. Slot s = e * p + q is
// addressed by the affine expression e * p + q, so slot tensors keep the
// [n, NG, p, D] layout the experts consume without a transpose.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"
#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Transforms/DialectConversion.h"

using namespace mlir;
using namespace switchyard;
using namespace switchyard::lowering;

namespace {

using utils::IteratorType;
constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

Value sumOfSquares(OpBuilder &b, Location loc, ValueRange args, Value acc) {
  Value v = convertScalar(b, loc, args[0], b.getF32Type());
  return arith::AddFOp::create(b, loc, acc, arith::MulFOp::create(b, loc, v, v));
}

Value truncateTo(OpBuilder &b, Location loc, Value tensorF32, Type type) {
  if (type.isF32())
    return tensorF32;
  unsigned rank = cast<ShapedType>(tensorF32.getType()).getRank();
  AffineMap id = AffineMap::getMultiDimIdentityMap(rank, b.getContext());
  Value init =
      tensor::EmptyOp::create(b, loc, sizesOf(b, loc, tensorF32), type);
  return buildGeneric(b, loc, tensorF32, init, {id, id},
                      parallelIterators(rank),
                      [&](OpBuilder &b, Location loc, ValueRange args) {
                        linalg::YieldOp::create(
                            b, loc, convertScalar(b, loc, args[0], type));
                      });
}

struct SoftLogitsLowering : OpConversionPattern<moe::SoftLogitsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::SoftLogitsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // L = (X Phi) * rowScale[i] * colScale[s] with rowScale = 1/||x_i|| and
    // colScale = scale/||phi_s|| when normalizing (the normalizations are
    // per row and per column, so they factor out of the product).
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Type f32 = b.getF32Type();
    Value x = adaptor.getX(), phi = adaptor.getPhi();
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    Value eps = floatConst(b, loc, f32, 1e-6);
    Value scale = extract(b, loc, adaptor.getScale(), ValueRange{});
    SmallVector<OpFoldResult> xSizes = sizesOf(b, loc, x);
    OpFoldResult numSlots = tensor::getMixedSize(b, loc, phi, 1);

    // raw[g, i, s] = sum_d x[g, i, d] phi[d, s], iteration (g, i, s, d).
    Value raw = reduce(
        b, loc, ValueRange{x, phi}, {xSizes[0], xSizes[1], numSlots}, 0.0,
        {AffineMap::get(4, 0, {d(0), d(1), d(3)}, ctx),
         AffineMap::get(4, 0, {d(3), d(2)}, ctx),
         AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx)},
        {kPar, kPar, kPar, kRed},
        [&](OpBuilder &b, Location loc, ValueRange in, Value acc) {
          Value prod = arith::MulFOp::create(
              b, loc, convertScalar(b, loc, in[0], f32),
              convertScalar(b, loc, in[1], f32));
          return arith::AddFOp::create(b, loc, acc, prod).getResult();
        });

    SmallVector<Value> inputs = {raw};
    SmallVector<AffineMap> maps = {AffineMap::getMultiDimIdentityMap(3, ctx)};
    if (op.getNormalize()) {
      Value rowSq = reduce(b, loc, x, {xSizes[0], xSizes[1]}, 0.0,
                           {AffineMap::getMultiDimIdentityMap(3, ctx),
                            AffineMap::get(3, 0, {d(0), d(1)}, ctx)},
                           {kPar, kPar, kRed}, sumOfSquares);
      // Column norms of phi over D: iteration (s, d).
      Value colSq = reduce(b, loc, phi, {numSlots}, 0.0,
                           {AffineMap::get(2, 0, {d(1), d(0)}, ctx),
                            AffineMap::get(2, 0, {d(0)}, ctx)},
                           {kPar, kRed}, sumOfSquares);
      inputs.append({rowSq, colSq});
      maps.append({AffineMap::get(3, 0, {d(0), d(1)}, ctx),
                   AffineMap::get(3, 0, {d(2)}, ctx)});
    }
    maps.push_back(AffineMap::getMultiDimIdentityMap(3, ctx));
    Value init = tensor::EmptyOp::create(
        b, loc, {xSizes[0], xSizes[1], numSlots}, f32);
    bool normalize = op.getNormalize();
    Value logits = buildGeneric(
        b, loc, inputs, init, maps, parallelIterators(3),
        [&](OpBuilder &b, Location loc, ValueRange args) {
          Value v = arith::MulFOp::create(b, loc, args[0], scale);
          if (normalize) {
            auto invNorm = [&](Value sq) {
              return math::RsqrtOp::create(
                  b, loc, arith::AddFOp::create(b, loc, sq, eps));
            };
            v = arith::MulFOp::create(
                b, loc, v,
                arith::MulFOp::create(b, loc, invNorm(args[1]),
                                      invNorm(args[2])));
          }
          linalg::YieldOp::create(b, loc, v);
        });
    b.replaceOp(op, logits);
    return success();
  }
};

/// acc + softmax weight (from logit, max, sum) * f32(value): the body of
/// both soft mixes, whose inputs are (logits, max, sum, values).
Value accumulateWeighted(OpBuilder &b, Location loc, ValueRange in, Value acc) {
  Value w = softmaxWeight(b, loc, in[0], in[1], in[2]);
  Value v = convertScalar(b, loc, in[3], b.getF32Type());
  return arith::AddFOp::create(b, loc, acc, arith::MulFOp::create(b, loc, w, v));
}

struct SoftDispatchLowering : OpConversionPattern<moe::SoftDispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::SoftDispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Xs[e, g, q, :] = sum_i softmax_i(L[g, :, e*p+q]) x[g, i, :].
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Value x = adaptor.getX(), logits = adaptor.getLogits();
    int64_t p = op.getSlotsPerExpert();
    auto [max, sum] = softmaxStats(b, loc, logits, /*reducedDim=*/1);
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    // Iteration (e, g, q, d, i).
    AffineExpr slot = d(0) * p + d(2);
    auto slotsType = cast<ShapedType>(op.getSlots().getType());
    SmallVector<OpFoldResult> sizes = {
        b.getIndexAttr(slotsType.getDimSize(0)),
        tensor::getMixedSize(b, loc, x, 0), b.getIndexAttr(p),
        tensor::getMixedSize(b, loc, x, 2)};
    Value mixed = reduce(
        b, loc, ValueRange{logits, max, sum, x}, sizes, 0.0,
        {AffineMap::get(5, 0, {d(1), d(4), slot}, ctx),
         AffineMap::get(5, 0, {d(1), slot}, ctx),
         AffineMap::get(5, 0, {d(1), slot}, ctx),
         AffineMap::get(5, 0, {d(1), d(4), d(3)}, ctx),
         AffineMap::get(5, 0, {d(0), d(1), d(2), d(3)}, ctx)},
        {kPar, kPar, kPar, kPar, kRed},
        accumulateWeighted);
    b.replaceOp(op, truncateTo(b, loc, mixed, elementType(x)));
    return success();
  }
};

struct SoftCombineLowering : OpConversionPattern<moe::SoftCombineOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::SoftCombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Y[g, i, :] = sum_s softmax_s(L[g, i, :]) Ys[s], s = e*p+q.
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Value logits = adaptor.getLogits(), slots = adaptor.getSlotOutputs();
    int64_t p = cast<ShapedType>(slots.getType()).getDimSize(2);
    auto [max, sum] = softmaxStats(b, loc, logits, /*reducedDim=*/2);
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    // Iteration (g, i, d, e, q).
    AffineExpr slot = d(3) * p + d(4);
    SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, logits, 0),
                                       tensor::getMixedSize(b, loc, logits, 1),
                                       tensor::getMixedSize(b, loc, slots, 3)};
    Value mixed = reduce(
        b, loc, ValueRange{logits, max, sum, slots}, sizes, 0.0,
        {AffineMap::get(5, 0, {d(0), d(1), slot}, ctx),
         AffineMap::get(5, 0, {d(0), d(1)}, ctx),
         AffineMap::get(5, 0, {d(0), d(1)}, ctx),
         AffineMap::get(5, 0, {d(3), d(0), d(4), d(2)}, ctx),
         AffineMap::get(5, 0, {d(0), d(1), d(2)}, ctx)},
        {kPar, kPar, kPar, kRed, kRed},
        accumulateWeighted);
    b.replaceOp(op, truncateTo(b, loc, mixed, elementType(slots)));
    return success();
  }
};

} // namespace

void switchyard::populateMoESoftToLinalgPatterns(RewritePatternSet &patterns) {
  patterns.add<SoftLogitsLowering, SoftDispatchLowering, SoftCombineLowering>(
      patterns.getContext());
}
