//===- Soft.cpp - Soft MoE to linalg --------------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md section 5. Logits in f32; the softmax over tokens (dispatch)
// and over slots (combine) subtract their maximum. Both mixes are batched
// matrix products over the materialized softmax weights; slot s = e * p + q,
// and slot tensors are transposed to and from the [n, NG, p, D] layout the
// experts consume.
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

/// The softmax of rank-3 f32 `logits` over `reducedDim` (1: over tokens, 2:
/// over slots), materialized: [NG, m, n*p] f32, a few hundred kilobytes
/// even for Soft MoE B/16, so that each weight's exp is computed once.
Value softmaxWeights(OpBuilder &b, Location loc, Value logits,
                     unsigned reducedDim) {
  MLIRContext *ctx = b.getContext();
  auto [max, sum] = softmaxStats(b, loc, logits, reducedDim);
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  AffineMap id = AffineMap::getMultiDimIdentityMap(3, ctx);
  AffineMap stats = AffineMap::get(
      3, 0, {d(0), reducedDim == 1 ? d(2) : d(1)}, ctx);
  Value init = tensor::EmptyOp::create(b, loc, sizesOf(b, loc, logits),
                                       b.getF32Type());
  return buildGeneric(b, loc, ValueRange{logits, max, sum}, init,
                      {id, stats, stats, id}, parallelIterators(3),
                      [&](OpBuilder &b, Location loc, ValueRange args) {
                        linalg::YieldOp::create(
                            b, loc,
                            softmaxWeight(b, loc, args[0], args[1], args[2]));
                      });
}

/// out[g, r, c] = sum_t lhs(g, r, t) * f32(rhs[g, t, c]): a batched matrix
/// product in the form switchyard-tile-matmuls tiles and vectorizes.
/// `lhsTransposed` reads lhs as [g, t, r].
Value batchedProduct(OpBuilder &b, Location loc, Value lhs, Value rhs,
                     bool lhsTransposed, OpFoldResult rows) {
  MLIRContext *ctx = b.getContext();
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  Type f32 = b.getF32Type();
  // Iteration (g, r, c, t).
  AffineMap lhsMap = lhsTransposed ? AffineMap::get(4, 0, {d(0), d(3), d(1)}, ctx)
                                   : AffineMap::get(4, 0, {d(0), d(1), d(3)}, ctx);
  return reduce(
      b, loc, ValueRange{lhs, rhs},
      {tensor::getMixedSize(b, loc, rhs, 0), rows,
       tensor::getMixedSize(b, loc, rhs, 2)},
      0.0,
      {lhsMap, AffineMap::get(4, 0, {d(0), d(3), d(2)}, ctx),
       AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx)},
      {kPar, kPar, kPar, kRed},
      [&](OpBuilder &b, Location loc, ValueRange in, Value acc) {
        Value prod = arith::MulFOp::create(b, loc, convertScalar(b, loc, in[0], f32),
                                           convertScalar(b, loc, in[1], f32));
        return arith::AddFOp::create(b, loc, acc, prod).getResult();
      });
}

struct SoftDispatchLowering : OpConversionPattern<moe::SoftDispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::SoftDispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Xs[g, s, :] = sum_i softmax_i(L[g, :, s]) x[g, i, :], then the slots
    // s = e*p+q laid out as [n, NG, p, D] for the experts.
    Location loc = op.getLoc();
    Value x = adaptor.getX(), logits = adaptor.getLogits();
    int64_t p = op.getSlotsPerExpert();
    auto slotsType = cast<ShapedType>(op.getSlots().getType());
    int64_t n = slotsType.getDimSize(0);
    Value weights = softmaxWeights(b, loc, logits, /*reducedDim=*/1);
    Value mixed = batchedProduct(b, loc, weights, x, /*lhsTransposed=*/true,
                                 b.getIndexAttr(n * p));
    // [NG, n*p, D] -> [NG, n, p, D] -> [n, NG, p, D].
    SmallVector<OpFoldResult> sizes = sizesOf(b, loc, mixed);
    Value expanded = tensor::ExpandShapeOp::create(
        b, loc,
        RankedTensorType::get({cast<ShapedType>(mixed.getType()).getDimSize(0),
                               n, p, slotsType.getDimSize(3)},
                              b.getF32Type()),
        mixed, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}},
        SmallVector<OpFoldResult>{sizes[0], b.getIndexAttr(n),
                                  b.getIndexAttr(p), sizes[2]});
    Value init = tensor::EmptyOp::create(
        b, loc, {b.getIndexAttr(n), sizes[0], b.getIndexAttr(p), sizes[2]},
        b.getF32Type());
    Value slots = linalg::TransposeOp::create(b, loc, expanded, init,
                                              ArrayRef<int64_t>{1, 0, 2, 3})
                      ->getResult(0);
    b.replaceOp(op, truncateTo(b, loc, slots, elementType(x)));
    return success();
  }
};

struct SoftCombineLowering : OpConversionPattern<moe::SoftCombineOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::SoftCombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Ys [n, NG, p, D] -> [NG, n*p, D], then
    // Y[g, i, :] = sum_s softmax_s(L[g, i, :]) Ys[g, s, :].
    Location loc = op.getLoc();
    Value logits = adaptor.getLogits(), slots = adaptor.getSlotOutputs();
    auto slotsType = cast<ShapedType>(slots.getType());
    SmallVector<OpFoldResult> sizes = sizesOf(b, loc, slots);
    Value init = tensor::EmptyOp::create(b, loc,
                                         {sizes[1], sizes[0], sizes[2], sizes[3]},
                                         slotsType.getElementType());
    Value byGroup = linalg::TransposeOp::create(b, loc, slots, init,
                                                ArrayRef<int64_t>{1, 0, 2, 3})
                        ->getResult(0);
    Value collapsed = tensor::CollapseShapeOp::create(
        b, loc, byGroup, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}});
    Value weights = softmaxWeights(b, loc, logits, /*reducedDim=*/2);
    Value mixed = batchedProduct(b, loc, weights, collapsed,
                                 /*lhsTransposed=*/false,
                                 tensor::getMixedSize(b, loc, logits, 1));
    b.replaceOp(op, truncateTo(b, loc, mixed, slotsType.getElementType()));
    return success();
  }
};

} // namespace

void switchyard::populateMoESoftToLinalgPatterns(RewritePatternSet &patterns) {
  patterns.add<SoftLogitsLowering, SoftDispatchLowering, SoftCombineLowering>(
      patterns.getContext());
}
