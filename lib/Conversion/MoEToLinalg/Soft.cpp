//===- Soft.cpp - Soft MoE to linalg --------------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md section 5. Logits in f32; the softmax over tokens (dispatch)
// and over slots (combine) subtract their maximum. Both mixes are batched
// matrix products over materialized [NG, m, S] weights (the dispatch mixes
// exp(L - max) and divides by the sum afterwards); slot s = e * p + q, and
// slot tensors are transposed to and from the [n, NG, p, D] layout the
// experts consume. moe.soft_experts (the fused form) takes both softmaxes a
// tile of tokens at a time, as parallel tasks (dispatch: a group and a block
// of slots; combine: a group and a tile of tokens), and reads the slots
// where they are.
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

/// Slots by group, `[NG, n * p, D]` with slot s = e * p + q, laid out by
/// expert as the experts consume them: `[n, NG, p, D]`.
Value slotsByExpert(OpBuilder &b, Location loc, Value byGroup, int64_t n,
                    int64_t p) {
  auto type = cast<ShapedType>(byGroup.getType());
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, byGroup);
  Value expanded = tensor::ExpandShapeOp::create(
      b, loc,
      RankedTensorType::get({type.getDimSize(0), n, p, type.getDimSize(2)},
                            type.getElementType()),
      byGroup, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}},
      SmallVector<OpFoldResult>{sizes[0], b.getIndexAttr(n), b.getIndexAttr(p),
                                sizes[2]});
  Value init = tensor::EmptyOp::create(
      b, loc, {b.getIndexAttr(n), sizes[0], b.getIndexAttr(p), sizes[2]},
      type.getElementType());
  return linalg::TransposeOp::create(b, loc, expanded, init,
                                     ArrayRef<int64_t>{1, 0, 2, 3})
      ->getResult(0);
}

/// The inverse of slotsByExpert: `[n, NG, p, D]` -> `[NG, n * p, D]`.
Value slotsByGroup(OpBuilder &b, Location loc, Value byExpert) {
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, byExpert);
  Value init = tensor::EmptyOp::create(
      b, loc, {sizes[1], sizes[0], sizes[2], sizes[3]}, elementType(byExpert));
  Value transposed = linalg::TransposeOp::create(b, loc, byExpert, init,
                                                 ArrayRef<int64_t>{1, 0, 2, 3})
                         ->getResult(0);
  return tensor::CollapseShapeOp::create(
      b, loc, transposed, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}});
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
    // The mix of exp(L - max) is divided by the sum afterwards, as
    // moe.soft_experts' online softmax does it: with one tile of tokens the
    // two forms give the same bits.
    MLIRContext *ctx = b.getContext();
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    auto [max, sum] = softmaxStats(b, loc, logits, /*reducedDim=*/1);
    AffineMap id = AffineMap::getMultiDimIdentityMap(3, ctx);
    AffineMap perSlot = AffineMap::get(3, 0, {d(0), d(2)}, ctx);
    Value exps = buildGeneric(
        b, loc, ValueRange{logits, max},
        tensor::EmptyOp::create(b, loc, sizesOf(b, loc, logits),
                                b.getF32Type()),
        {id, perSlot, id}, parallelIterators(3),
        [](OpBuilder &b, Location loc, ValueRange v) {
          linalg::YieldOp::create(
              b, loc,
              math::ExpOp::create(b, loc,
                                  arith::SubFOp::create(b, loc, v[0], v[1]))
                  .getResult());
        });
    Value unnormalized = batchedProduct(b, loc, exps, x, /*lhsTransposed=*/true,
                                        b.getIndexAttr(n * p));
    Value mixed = buildGeneric(
        b, loc, ValueRange{unnormalized, sum},
        tensor::EmptyOp::create(b, loc, sizesOf(b, loc, unnormalized),
                                b.getF32Type()),
        {id, AffineMap::get(3, 0, {d(0), d(1)}, ctx), id}, parallelIterators(3),
        [](OpBuilder &b, Location loc, ValueRange v) {
          linalg::YieldOp::create(
              b, loc, arith::DivFOp::create(b, loc, v[0], v[1]).getResult());
        });
    Value slots = slotsByExpert(b, loc, mixed, n, p);
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
    Value collapsed = slotsByGroup(b, loc, slots);
    Value weights = softmaxWeights(b, loc, logits, /*reducedDim=*/2);
    Value mixed = batchedProduct(b, loc, weights, collapsed,
                                 /*lhsTransposed=*/false,
                                 tensor::getMixedSize(b, loc, logits, 1));
    b.replaceOp(op, truncateTo(b, loc, mixed, slotsType.getElementType()));
    return success();
  }
};

/// Tokens per tile of moe.soft_experts' softmaxes: a dispatch task's weight
/// tile is [1, 64, 32] f32 and a combine task's [1, 64, S], and rescaling
/// the slot accumulators once a tile costs 1/128 of the tile's mixing
/// product.
constexpr int64_t kSoftTokenTile = 64;

/// Slots a dispatch task mixes: Soft MoE B/16's 128 slots and 8 groups make
/// 32 tasks, and each task reads its group's tokens 4 times in all.
constexpr int64_t kSoftSlotBlock = 32;

/// Rows [start, start + size) of dimension 1 of a rank-3 tensor.
Value tokenTile(OpBuilder &b, Location loc, Value t, Value start, Value size) {
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, t);
  sizes[1] = size;
  SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), start,
                                       b.getIndexAttr(0)};
  return tensor::ExtractSliceOp::create(b, loc, t, offsets, sizes,
                                        SmallVector<OpFoldResult>(3, b.getIndexAttr(1)));
}

/// `scf.for` over the token tiles of `m` tokens carrying `inits`; `body`
/// gets the tile's first token and its size (kSoftTokenTile, less for the
/// last one).
SmallVector<Value> forEachTokenTile(
    OpBuilder &b, Location loc, Value m, ValueRange inits,
    function_ref<SmallVector<Value>(OpBuilder &, Location, Value, Value,
                                    ValueRange)>
        body) {
  Value tile = indexConst(b, loc, kSoftTokenTile);
  auto loop = scf::ForOp::create(
      b, loc, indexConst(b, loc, 0), m, tile, inits,
      [&](OpBuilder &b, Location loc, Value start, ValueRange iterArgs) {
        Value size = arith::MinUIOp::create(
            b, loc, tile, arith::SubIOp::create(b, loc, m, start));
        scf::YieldOp::create(b, loc, body(b, loc, start, size, iterArgs));
      });
  return loop.getResults();
}

/// `t[g : g + 1, offset : offset + size (along dim), ...]`, every other
/// dimension whole.
Value groupSlice(OpBuilder &b, Location loc, Value t, Value g, unsigned dim,
                 OpFoldResult offset, OpFoldResult size) {
  SmallVector<OpFoldResult> offsets(3, b.getIndexAttr(0));
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, t);
  offsets[0] = g;
  sizes[0] = b.getIndexAttr(1);
  offsets[dim] = offset;
  sizes[dim] = size;
  return tensor::ExtractSliceOp::create(
      b, loc, t, offsets, sizes,
      SmallVector<OpFoldResult>(3, b.getIndexAttr(1)));
}

/// The [NG, extent, W] tensor `init` filled by one parallel task per
/// (group g, block of `block` rows along dimension 1): `body(g, start,
/// size)` returns the block's [1, size, W] part. `size` is static when the
/// blocks divide a static extent.
Value forEachGroupBlock(
    OpBuilder &b, Location loc, Value init, int64_t block,
    function_ref<Value(OpBuilder &, Location, Value, Value, OpFoldResult)>
        body) {
  Value extent = dimOf(b, loc, init, 1);
  Value blockSize = indexConst(b, loc, block);
  Value numBlocks = arith::CeilDivUIOp::create(b, loc, extent, blockSize);
  auto forall = scf::ForallOp::create(
      b, loc,
      ArrayRef<OpFoldResult>{tensor::getMixedSize(b, loc, init, 0),
                             getAsOpFoldResult(numBlocks)},
      ValueRange{init}, std::nullopt);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(forall.getTerminator());
  Value g = forall.getInductionVar(0);
  Value start =
      arith::MulIOp::create(b, loc, forall.getInductionVar(1), blockSize);
  int64_t staticExtent = cast<ShapedType>(init.getType()).getDimSize(1);
  OpFoldResult size =
      !ShapedType::isDynamic(staticExtent) && staticExtent % block == 0
          ? OpFoldResult(b.getIndexAttr(block))
          : OpFoldResult(arith::MinUIOp::create(
                             b, loc, blockSize,
                             arith::SubIOp::create(b, loc, extent, start))
                             .getResult());
  Value part = body(b, loc, g, start, size);
  b.setInsertionPointToEnd(forall.getTerminator().getBody());
  tensor::ParallelInsertSliceOp::create(
      b, loc, part, forall.getRegionIterArgs()[0],
      SmallVector<OpFoldResult>{g, start, b.getIndexAttr(0)},
      SmallVector<OpFoldResult>{b.getIndexAttr(1), size,
                                tensor::getMixedSize(b, loc, init, 2)},
      SmallVector<OpFoldResult>(3, b.getIndexAttr(1)));
  return forall.getResult(0);
}

/// The slot inputs `Xs [NG, S, D]` (in the dtype of x) of the softmax over
/// tokens, taken online: per tile of tokens, the running column maximum M
/// and sum Z and the accumulators A = sum_i exp(L[i, s] - M[s]) x_i are
/// rescaled by exp(M_old - M_new) and the tile added; Xs = A / Z at the end.
Value onlineSoftDispatch(OpBuilder &b, Location loc, Value x, Value logits) {
  MLIRContext *ctx = b.getContext();
  Type f32 = b.getF32Type();
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  OpFoldResult groups = tensor::getMixedSize(b, loc, x, 0);
  OpFoldResult slots = tensor::getMixedSize(b, loc, logits, 2);
  OpFoldResult width = tensor::getMixedSize(b, loc, x, 2);
  AffineMap id2 = AffineMap::getMultiDimIdentityMap(2, ctx);
  AffineMap id3 = AffineMap::getMultiDimIdentityMap(3, ctx);
  AffineMap perSlot = AffineMap::get(3, 0, {d(0), d(1)}, ctx);
  auto exp = [](OpBuilder &b, Location loc, Value a, Value c) {
    return math::ExpOp::create(b, loc, arith::SubFOp::create(b, loc, a, c))
        .getResult();
  };

  SmallVector<Value> inits = {
      filledTensor(b, loc, {groups, slots}, f32,
                   floatConst(b, loc, f32, -INFINITY)),
      zeroTensor(b, loc, {groups, slots}, f32),
      zeroTensor(b, loc, {groups, slots, width}, f32)};
  SmallVector<Value> stats = forEachTokenTile(
      b, loc, dimOf(b, loc, x, 1), inits,
      [&](OpBuilder &b, Location loc, Value start, Value size,
          ValueRange state) -> SmallVector<Value> {
        Value max = state[0], sum = state[1], acc = state[2];
        Value lt = tokenTile(b, loc, logits, start, size);
        Value xt = tokenTile(b, loc, x, start, size);
        // Iteration (g, s, i): the tile's column maxima, then the new ones.
        Value tileMax = reduce(
            b, loc, lt, {groups, slots}, -INFINITY,
            {AffineMap::get(3, 0, {d(0), d(2), d(1)}, ctx), perSlot},
            {kPar, kPar, kRed},
            [](OpBuilder &b, Location loc, ValueRange v, Value acc) {
              return arith::MaximumFOp::create(b, loc, v[0], acc).getResult();
            });
        // exp(M_old - M_new), 0 on the first tile where M_old = -inf; then
        // M_new. Every state tensor is updated in place (the loop carries
        // one buffer each).
        Value rescale = buildGeneric(
            b, loc, ValueRange{max, tileMax},
            tensor::EmptyOp::create(b, loc, sizesOf(b, loc, max), f32),
            {id2, id2, id2}, parallelIterators(2),
            [&](OpBuilder &b, Location loc, ValueRange v) {
              linalg::YieldOp::create(
                  b, loc,
                  exp(b, loc, v[0],
                      arith::MaximumFOp::create(b, loc, v[0], v[1])));
            });
        Value newMax = buildGeneric(
            b, loc, tileMax, max, {id2, id2}, parallelIterators(2),
            [](OpBuilder &b, Location loc, ValueRange v) {
              linalg::YieldOp::create(
                  b, loc,
                  arith::MaximumFOp::create(b, loc, v[1], v[0]).getResult());
            });
        // The tile's unnormalized weights exp(L - M_new) [NG, tile, S].
        Value weights = buildGeneric(
            b, loc, ValueRange{lt, newMax},
            tensor::EmptyOp::create(b, loc, sizesOf(b, loc, lt), f32),
            {id3, AffineMap::get(3, 0, {d(0), d(2)}, ctx), id3},
            parallelIterators(3),
            [&](OpBuilder &b, Location loc, ValueRange v) {
              linalg::YieldOp::create(b, loc, exp(b, loc, v[0], v[1]));
            });
        auto rescaled = [&](Value t, AffineMap map) {
          unsigned rank = map.getNumDims();
          return buildGeneric(
              b, loc, rescale, t,
              {map, AffineMap::getMultiDimIdentityMap(rank, ctx)},
              parallelIterators(rank),
              [](OpBuilder &b, Location loc, ValueRange v) {
                linalg::YieldOp::create(
                    b, loc,
                    arith::MulFOp::create(b, loc, v[1], v[0]).getResult());
              });
        };
        // Z = Z * rescale + column sums; iteration (g, s, i).
        Value newSum = buildGeneric(
            b, loc, weights, rescaled(sum, id2),
            {AffineMap::get(3, 0, {d(0), d(2), d(1)}, ctx), perSlot},
            {kPar, kPar, kRed},
            [](OpBuilder &b, Location loc, ValueRange v) {
              linalg::YieldOp::create(
                  b, loc, arith::AddFOp::create(b, loc, v[1], v[0]).getResult());
            });
        // A = A * rescale + weights^T x_tile; iteration (g, s, d, i).
        Value newAcc = buildGeneric(
            b, loc, ValueRange{weights, xt}, rescaled(acc, perSlot),
            {AffineMap::get(4, 0, {d(0), d(3), d(1)}, ctx),
             AffineMap::get(4, 0, {d(0), d(3), d(2)}, ctx),
             AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx)},
            {kPar, kPar, kPar, kRed},
            [&](OpBuilder &b, Location loc, ValueRange v) {
              Value prod = arith::MulFOp::create(
                  b, loc, v[0], convertScalar(b, loc, v[1], f32));
              linalg::YieldOp::create(
                  b, loc, arith::AddFOp::create(b, loc, v[2], prod).getResult());
            });
        return {newMax, newSum, newAcc};
      });
  Type type = elementType(x);
  return buildGeneric(
      b, loc, ValueRange{stats[2], stats[1]},
      tensor::EmptyOp::create(b, loc, sizesOf(b, loc, stats[2]), type),
      {id3, perSlot, id3}, parallelIterators(3),
      [&](OpBuilder &b, Location loc, ValueRange v) {
        linalg::YieldOp::create(
            b, loc,
            convertScalar(b, loc, arith::DivFOp::create(b, loc, v[0], v[1]),
                          type));
      });
}

struct SoftExpertsLowering : ExpertMLPLowering<moe::SoftExpertsOp> {
  using ExpertMLPLowering::ExpertMLPLowering;

  LogicalResult
  matchAndRewrite(moe::SoftExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    Value x = adaptor.getX(), logits = adaptor.getLogits();
    Type type = elementType(x);
    int64_t p = op.getSlotsPerExpert();
    int64_t numSlots = cast<ShapedType>(logits.getType()).getDimSize(2);
    int64_t n = numSlots / p;
    // The dispatch, one task per (group, block of slots): a slot's softmax
    // over tokens involves no other slot.
    Value xsInit =
        tensor::EmptyOp::create(b, loc,
                                {tensor::getMixedSize(b, loc, x, 0),
                                 tensor::getMixedSize(b, loc, logits, 2),
                                 tensor::getMixedSize(b, loc, x, 2)},
                                type);
    Value xs =
        forEachGroupBlock(b, loc, xsInit, kSoftSlotBlock,
                          [&](OpBuilder &b, Location loc, Value g, Value start,
                              OpFoldResult size) {
                            return onlineSoftDispatch(
                                b, loc,
                                groupSlice(b, loc, x, g, 1, b.getIndexAttr(0),
                                           tensor::getMixedSize(b, loc, x, 1)),
                                groupSlice(b, loc, logits, g, 2, start, size));
                          });

    // Expert e's rows are its slots (g, q), row g * p + q: the output is
    // [n, >= NG * p, D] with that row order.
    MLPWeights weights = weightsOf(adaptor, op.getActivation());
    Value groups = dimOf(b, loc, x, 0), width = dimOf(b, loc, x, 2);
    Value rows = arith::MulIOp::create(b, loc, groups, indexConst(b, loc, p));
    Value out;
    if (canPack(weights)) {
      // Packed products by row blocks, each block's slots read from Xs as
      // it is packed.
      out = buildUniformRowBlockMLPs(
          b, loc, rows, width, weights,
          [&](OpBuilder &b, Location loc, Value e, Value r, Value col) {
            Value pv = indexConst(b, loc, p);
            Value g = arith::DivUIOp::create(b, loc, r, pv);
            Value slot = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, e, pv),
                arith::RemUIOp::create(b, loc, r, pv));
            return extract(b, loc, xs, ValueRange{g, slot, col});
          });
    } else {
      // [NG, n * p, D] -> [n, NG * p, D] for the unpacked MLP.
      out = buildMLP(b, loc,
                     tensor::CollapseShapeOp::create(
                         b, loc, slotsByExpert(b, loc, xs, n, p),
                         SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}}),
                     weights);
    }

    // The slot outputs as the combine reads them, Ys[g, s, :]: with one
    // slot per expert that is out[s, g, :] in place; otherwise they are
    // gathered into [NG, S, D].
    Value slotOutputs = out;
    AffineMap slotMap = AffineMap::get(4, 0, {d(3), d(0), d(2)}, ctx);
    if (p != 1) {
      // out's rows [0, NG * p) as [n, NG, p, D], then by group.
      auto outType = cast<ShapedType>(out.getType());
      OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
      OpFoldResult numExperts = b.getIndexAttr(n);
      OpFoldResult ngSize = tensor::getMixedSize(b, loc, x, 0);
      // NG * p rows, static when NG is (the expansion needs it to be).
      int64_t staticGroups = cast<ShapedType>(x.getType()).getDimSize(0);
      OpFoldResult usedRows =
          ShapedType::isDynamic(staticGroups)
              ? OpFoldResult(rows)
              : OpFoldResult(b.getIndexAttr(staticGroups * p));
      Value used =
          tensor::ExtractSliceOp::create(b, loc, out, {zero, zero, zero},
                                         {numExperts, usedRows,
                                          tensor::getMixedSize(b, loc, out, 2)},
                                         {one, one, one});
      Value byExpert = tensor::ExpandShapeOp::create(
          b, loc,
          RankedTensorType::get({n, staticGroups, p, outType.getDimSize(2)},
                                type),
          used, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}},
          SmallVector<OpFoldResult>{numExperts, ngSize, b.getIndexAttr(p),
                                    tensor::getMixedSize(b, loc, out, 2)});
      slotOutputs = slotsByGroup(b, loc, byExpert);
      slotMap = AffineMap::get(4, 0, {d(0), d(3), d(2)}, ctx);
    }

    // y = softmax over slots of L, times Ys, one task per (group, tile of
    // tokens); iteration (g, i, d, s).
    Value yInit = tensor::EmptyOp::create(b, loc, sizesOf(b, loc, x), type);
    Value y = forEachGroupBlock(
        b, loc, yInit, kSoftTokenTile,
        [&](OpBuilder &b, Location loc, Value g, Value start,
            OpFoldResult size) {
          Value lt = groupSlice(b, loc, logits, g, 1, start, size);
          // The group's slot outputs: out[:, g, :] with one slot per
          // expert, Ys[g] otherwise.
          Value ys =
              p == 1 ? tensor::ExtractSliceOp::create(
                           b, loc, slotOutputs,
                           {b.getIndexAttr(0), g, b.getIndexAttr(0)},
                           {tensor::getMixedSize(b, loc, slotOutputs, 0),
                            b.getIndexAttr(1),
                            tensor::getMixedSize(b, loc, slotOutputs, 2)},
                           SmallVector<OpFoldResult>(3, b.getIndexAttr(1)))
                           .getResult()
                     : groupSlice(b, loc, slotOutputs, g, 1, b.getIndexAttr(0),
                                  tensor::getMixedSize(b, loc, slotOutputs, 1));
          Value combineWeights = softmaxWeights(b, loc, lt, /*reducedDim=*/2);
          SmallVector<OpFoldResult> tileSizes = {
              b.getIndexAttr(1), size, tensor::getMixedSize(b, loc, x, 2)};
          Value mixed = reduce(
              b, loc, ValueRange{combineWeights, ys}, tileSizes, 0.0,
              {AffineMap::get(4, 0, {d(0), d(1), d(3)}, ctx), slotMap,
               AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx)},
              {kPar, kPar, kPar, kRed},
              [&](OpBuilder &b, Location loc, ValueRange in, Value acc) {
                Value prod = arith::MulFOp::create(
                    b, loc, in[0],
                    convertScalar(b, loc, in[1], b.getF32Type()));
                return arith::AddFOp::create(b, loc, acc, prod).getResult();
              });
          return truncateTo(b, loc, mixed, type);
        });
    b.replaceOp(op, y);
    return success();
  }
};

} // namespace

void switchyard::populateMoESoftToLinalgPatterns(RewritePatternSet &patterns,
                                                 const BF16Products &bf16) {
  patterns.add<SoftLogitsLowering, SoftDispatchLowering, SoftCombineLowering>(
      patterns.getContext());
  patterns.add<SoftExpertsLowering>(patterns.getContext(), bf16);
}
