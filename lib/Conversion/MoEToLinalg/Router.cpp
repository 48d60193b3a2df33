//===- Router.cpp - Router, z-loss, capacity and norms to linalg ----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md sections 2, 3.2, 6 (z-loss) and 7 (norms). Everything is
// computed in f32; softmaxes and logsumexps subtract the row maximum.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"
#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Transforms/DialectConversion.h"

using namespace mlir;
using namespace switchyard;
using namespace switchyard::lowering;

Value switchyard::lowering::routerLogits(OpBuilder &b, Location loc, Value x,
                                         Value w, Value bias) {
  // z[g, t, e] = sum_d f32(x[g, t, d]) * Wr[d, e] (+ br[e]). Jitter is
  // training-only and not applied (SEMANTICS.md section 2).
  MLIRContext *ctx = b.getContext();
  Type f32 = b.getF32Type();
  SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, x, 0),
                                     tensor::getMixedSize(b, loc, x, 1),
                                     tensor::getMixedSize(b, loc, w, 1)};
  Value acc = zeroTensor(b, loc, sizes, f32);
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  // Iteration space (g, t, e, d).
  AffineMap xMap = AffineMap::get(4, 0, {d(0), d(1), d(3)}, ctx);
  AffineMap wMap = AffineMap::get(4, 0, {d(3), d(2)}, ctx);
  AffineMap zMap = AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx);
  Value z = buildGeneric(
      b, loc, ValueRange{x, w}, acc, {xMap, wMap, zMap},
      {utils::IteratorType::parallel, utils::IteratorType::parallel,
       utils::IteratorType::parallel, utils::IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value xv = convertScalar(nb, nloc, args[0], f32);
        Value prod = arith::MulFOp::create(nb, nloc, xv, args[1]);
        linalg::YieldOp::create(
            nb, nloc,
            ValueRange{arith::AddFOp::create(nb, nloc, prod, args[2])});
      });
  if (bias) {
    AffineMap id = AffineMap::getMultiDimIdentityMap(3, ctx);
    AffineMap biasMap = AffineMap::get(3, 0, {d(2)}, ctx);
    z = buildGeneric(
        b, loc, ValueRange{bias}, z, {biasMap, id}, parallelIterators(3),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(
              nb, nloc,
              ValueRange{arith::AddFOp::create(nb, nloc, args[0], args[1])});
        });
  }
  return z;
}

Value switchyard::lowering::routerProbs(OpBuilder &b, Location loc, Value z) {
  MLIRContext *ctx = b.getContext();
  auto [max, sum] = softmaxStats(b, loc, z, /*reducedDim=*/2);
  AffineMap id = AffineMap::getMultiDimIdentityMap(3, ctx);
  AffineMap row = AffineMap::get(
      3, 0, {getAffineDimExpr(0, ctx), getAffineDimExpr(1, ctx)}, ctx);
  Value init =
      tensor::EmptyOp::create(b, loc, sizesOf(b, loc, z), b.getF32Type());
  Value p = buildGeneric(
      b, loc, ValueRange{z, max, sum}, init, {id, row, row, id},
      parallelIterators(3), [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(
            nb, nloc, softmaxWeight(nb, nloc, args[0], args[1], args[2]));
      });
  return p;
}

namespace {

using utils::IteratorType;
constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

struct RouterLogitsLowering : OpConversionPattern<moe::RouterLogitsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult matchAndRewrite(moe::RouterLogitsOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &b) const override {
    b.replaceOp(op, routerLogits(b, op.getLoc(), adaptor.getX(),
                                 adaptor.getWeight(), adaptor.getBias()));
    return success();
  }
};

struct RouterProbsLowering : OpConversionPattern<moe::RouterProbsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult matchAndRewrite(moe::RouterProbsOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &b) const override {
    b.replaceOp(op, routerProbs(b, op.getLoc(), adaptor.getLogits()));
    return success();
  }
};

/// Sums a rank-2 f32 tensor to a scalar f64 value. In f64: a sequential f32
/// sum over a group of 2800 tokens was 1e-5 off (64 sequences of 700: 6e-5).
Value sumAll(OpBuilder &b, Location loc, Value input) {
  MLIRContext *ctx = b.getContext();
  Type f64 = b.getF64Type();
  Value acc = zeroTensor(b, loc, {}, f64);
  AffineMap in = AffineMap::getMultiDimIdentityMap(2, ctx);
  AffineMap out = AffineMap::get(2, 0, {}, ctx);
  Value sum = buildGeneric(
      b, loc, input, acc, {in, out}, {kRed, kRed},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value wide = arith::ExtFOp::create(nb, nloc, f64, args[0]);
        linalg::YieldOp::create(
            nb, nloc,
            ValueRange{arith::AddFOp::create(nb, nloc, wide, args[1])});
      });
  return tensor::ExtractOp::create(b, loc, sum, ValueRange{});
}

struct ZLossLowering : OpConversionPattern<moe::ZLossOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ZLossOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // weight * mean over groups of mean over tokens of logsumexp(z_t)^2;
    // with equal group sizes that is the mean over all tokens.
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Type f32 = b.getF32Type();
    Value z = adaptor.getLogits();
    auto [max, sum] = softmaxStats(b, loc, z, /*reducedDim=*/2);
    AffineMap id = AffineMap::getMultiDimIdentityMap(2, ctx);
    Value init = tensor::EmptyOp::create(
        b, loc, ArrayRef<OpFoldResult>(sizesOf(b, loc, z)).drop_back(), f32);
    Value squares = buildGeneric(
        b, loc, ValueRange{max, sum}, init, {id, id, id}, parallelIterators(2),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value lse = arith::AddFOp::create(
              nb, nloc, args[0], math::LogOp::create(nb, nloc, args[1]));
          linalg::YieldOp::create(
              nb, nloc, ValueRange{arith::MulFOp::create(nb, nloc, lse, lse)});
        });
    Value total = sumAll(b, loc, squares);
    Value tokens = arith::MulIOp::create(b, loc, dimOf(b, loc, z, 0),
                                         dimOf(b, loc, z, 1));
    Type f64 = b.getF64Type();
    Value count = convertScalar(
        b, loc, convertScalar(b, loc, tokens, b.getI64Type()), f64);
    Value mean = arith::DivFOp::create(b, loc, total, count);
    Value loss = arith::TruncFOp::create(
        b, loc, f32,
        arith::MulFOp::create(
            b, loc, mean,
            floatConst(b, loc, f64, op.getWeight().convertToDouble())));
    b.replaceOpWithNewOp<tensor::FromElementsOp>(
        op, RankedTensorType::get({}, f32), ValueRange{loss});
    return success();
  }
};

struct ExpertCapacityLowering : OpConversionPattern<moe::ExpertCapacityOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertCapacityOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // The dynamic-G case of ExpertCapacityOp::computeCapacity, in the same
    // f64 arithmetic so static and dynamic capacities agree.
    Location loc = op.getLoc();
    Value g = dimOf(b, loc, adaptor.getProbs(), 1);
    int64_t e = cast<ShapedType>(op.getProbs().getType()).getDimSize(2);
    Value capacity = g;
    if (std::optional<int64_t> explicitCap = op.getExpertCapacity()) {
      capacity = indexConst(b, loc, *explicitCap);
    } else if (std::optional<APFloat> factor = op.getCapacityFactor()) {
      Type f64 = b.getF64Type();
      Value gf = convertScalar(b, loc, convertScalar(b, loc, g, b.getI64Type()),
                               f64);
      Value rows = arith::MulFOp::create(
          b, loc, floatConst(b, loc, f64, static_cast<double>(op.getTopK())),
          gf);
      rows = arith::MulFOp::create(b, loc, rows,
                                   floatConst(b, loc, f64,
                                              factor->convertToDouble()));
      rows = arith::DivFOp::create(b, loc, rows,
                                   floatConst(b, loc, f64,
                                              static_cast<double>(e)));
      // Capped at G before the conversion, which a huge factor would
      // overflow (to a capacity of 0).
      rows = arith::MinimumFOp::create(b, loc, rows, gf);
      Value ceil = math::CeilOp::create(b, loc, rows);
      Value asInt = arith::FPToSIOp::create(b, loc, b.getI64Type(), ceil);
      capacity = arith::MaxSIOp::create(
          b, loc, convertScalar(b, loc, asInt, b.getIndexType()),
          indexConst(b, loc, op.getCapacityFloor()));
    }
    b.replaceOpWithNewOp<arith::MinSIOp>(op, capacity, g);
    return success();
  }
};

struct NormLowering : OpConversionPattern<moe::NormOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::NormOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // SEMANTICS.md section 7, statistics in f32 over the last dimension.
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Type f32 = b.getF32Type();
    Value x = adaptor.getX();
    Type modelType = elementType(x);
    bool isLayer = op.getKind() == moe::NormKind::layer;
    Value widthF = floatConst(
        b, loc, f32, cast<ShapedType>(x.getType()).getDimSize(2));
    AffineMap id = AffineMap::getMultiDimIdentityMap(3, ctx);
    AffineMap row = AffineMap::get(
        3, 0, {getAffineDimExpr(0, ctx), getAffineDimExpr(1, ctx)}, ctx);
    AffineMap chan = AffineMap::get(3, 0, {getAffineDimExpr(2, ctx)}, ctx);
    SmallVector<OpFoldResult> rowSizes = sizesOf(b, loc, x);
    rowSizes.pop_back();

    // Per-row sum of f(v) over the channel dimension.
    auto rowSum = [&](Value mean, bool square) {
      Value acc = zeroTensor(b, loc, rowSizes, f32);
      SmallVector<Value> inputs = {x};
      SmallVector<AffineMap> maps = {id};
      if (mean) {
        inputs.push_back(mean);
        maps.push_back(row);
      }
      maps.push_back(row);
      return buildGeneric(
          b, loc, inputs, acc, maps, {kPar, kPar, kRed},
          [&](OpBuilder &nb, Location nloc, ValueRange args) {
            Value v = convertScalar(nb, nloc, args[0], f32);
            if (mean)
              v = arith::SubFOp::create(nb, nloc, v, args[1]);
            if (square)
              v = arith::MulFOp::create(nb, nloc, v, v);
            linalg::YieldOp::create(
                nb, nloc, ValueRange{arith::AddFOp::create(nb, nloc, v,
                                                           args.back())});
          });
    };
    Value mean;
    if (isLayer) {
      Value sum = rowSum(Value(), /*square=*/false);
      mean = buildGeneric(
          b, loc, ValueRange{}, sum, {AffineMap::getMultiDimIdentityMap(2, ctx)},
          parallelIterators(2),
          [&](OpBuilder &nb, Location nloc, ValueRange args) {
            linalg::YieldOp::create(
                nb, nloc,
                ValueRange{arith::DivFOp::create(nb, nloc, args[0], widthF)});
          });
    }
    // rms: mean(v^2); layer: var(v) = mean((v - mean)^2).
    Value squares = rowSum(mean, /*square=*/true);
    double eps = isLayer ? 1e-5 : 1e-6;
    SmallVector<Value> inputs = {x, squares, adaptor.getWeight()};
    SmallVector<AffineMap> maps = {id, row, chan};
    if (mean) {
      inputs.push_back(mean);
      maps.push_back(row);
    }
    if (Value bias = adaptor.getBias()) {
      inputs.push_back(bias);
      maps.push_back(chan);
    }
    maps.push_back(id);
    Value init = tensor::EmptyOp::create(b, loc, sizesOf(b, loc, x), modelType);
    Value y = buildGeneric(
        b, loc, inputs, init, maps, parallelIterators(3),
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value v = convertScalar(nb, nloc, args[0], f32);
          Value meanSq = arith::DivFOp::create(nb, nloc, args[1], widthF);
          Value inv = math::RsqrtOp::create(
              nb, nloc,
              arith::AddFOp::create(nb, nloc, meanSq,
                                    floatConst(nb, nloc, f32, eps)));
          unsigned next = 3;
          if (isLayer)
            v = arith::SubFOp::create(nb, nloc, v, args[next++]);
          Value w = convertScalar(nb, nloc, args[2], f32);
          Value out = arith::MulFOp::create(
              nb, nloc, arith::MulFOp::create(nb, nloc, v, inv), w);
          if (isLayer)
            out = arith::AddFOp::create(
                nb, nloc, out, convertScalar(nb, nloc, args[next], f32));
          linalg::YieldOp::create(nb, nloc,
                                  convertScalar(nb, nloc, out, modelType));
        });
    b.replaceOp(op, y);
    return success();
  }
};

} // namespace

void switchyard::populateMoERouterToLinalgPatterns(
    RewritePatternSet &patterns) {
  patterns.add<RouterLogitsLowering, RouterProbsLowering, ZLossLowering,
               ExpertCapacityLowering, NormLowering>(patterns.getContext());
}
