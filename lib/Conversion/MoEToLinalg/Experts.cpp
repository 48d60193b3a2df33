//===- Experts.cpp - Expert MLPs to linalg --------------------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md section 1: f(v) = act(v W1 + b1) W2 + b2, or the gated form
// (act(v Wg) * (v W1 + b1)) W2 + b2. Matrix products accumulate in f32; the
// hidden activation and the output are stored in the model dtype.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"
#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Transforms/DialectConversion.h"

using namespace mlir;
using namespace switchyard;
using namespace switchyard::lowering;

namespace {

/// in [.., M, K] times w [.., K, N] into a fresh f32 accumulator.
Value matmulF32(OpBuilder &b, Location loc, Value in, Value w, bool batched) {
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, in);
  sizes.back() = tensor::getMixedSize(b, loc, w, batched ? 2 : 1);
  Value acc = zeroTensor(b, loc, sizes, b.getF32Type());
  if (batched)
    return linalg::BatchMatmulOp::create(b, loc, ValueRange{in, w}, acc)
        .getResult(0);
  return linalg::MatmulOp::create(b, loc, ValueRange{in, w}, acc).getResult(0);
}

/// Elementwise epilogue over `acc [.., M, N]` (f32): adds `bias [.., N]` and
/// applies `fn`, storing in `resultType`. `extra` is an optional second f32
/// operand of the same shape as `acc`, passed to `fn`.
Value epilogue(OpBuilder &b, Location loc, Value acc, Value extra, Value bias,
               Type resultType,
               function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  MLIRContext *ctx = b.getContext();
  unsigned rank = cast<ShapedType>(acc.getType()).getRank();
  AffineMap id = AffineMap::getMultiDimIdentityMap(rank, ctx);
  SmallVector<Value> inputs = {acc};
  SmallVector<AffineMap> maps = {id};
  if (extra) {
    inputs.push_back(extra);
    maps.push_back(id);
  }
  if (bias) {
    SmallVector<AffineExpr> biasDims;
    if (rank == 3)
      biasDims.push_back(getAffineDimExpr(0, ctx));
    biasDims.push_back(getAffineDimExpr(rank - 1, ctx));
    inputs.push_back(bias);
    maps.push_back(AffineMap::get(rank, 0, biasDims, ctx));
  }
  maps.push_back(id);
  Value init =
      tensor::EmptyOp::create(b, loc, sizesOf(b, loc, acc), resultType);
  return buildGeneric(
      b, loc, inputs, init, maps, parallelIterators(rank),
      [&](OpBuilder &b, Location loc, ValueRange args) {
        Value v = args[0];
        Value other = extra ? args[1] : Value();
        if (bias)
          v = arith::AddFOp::create(
              b, loc, v,
              convertScalar(b, loc, args[extra ? 2 : 1], b.getF32Type()));
        linalg::YieldOp::create(
            b, loc, convertScalar(b, loc, fn(b, loc, v, other), resultType));
      });
}

} // namespace

Value switchyard::lowering::buildMLP(OpBuilder &b, Location loc, Value input, const MLPWeights &w) {
  bool batched = cast<ShapedType>(input.getType()).getRank() == 3;
  Type modelType = elementType(input);
  Value h1 = matmulF32(b, loc, input, w.w1, batched);
  Value gate = w.wg ? matmulF32(b, loc, input, w.wg, batched) : Value();
  Value hidden = epilogue(b, loc, h1, gate, w.b1, modelType,
                          [&](OpBuilder &b, Location loc, Value v, Value g) {
                            return applyActivation(b, loc, w.activation, v, g);
                          });
  Value out = matmulF32(b, loc, hidden, w.w2, batched);
  return epilogue(b, loc, out, Value(), w.b2, modelType,
                  [](OpBuilder &, Location, Value v, Value) { return v; });
}

/// Expert `e`'s slice of one weight; null stays null.
static Value expertSlice(OpBuilder &b, Location loc, Value weight, Value e) {
  if (!weight)
    return weight;
  auto type = cast<RankedTensorType>(weight.getType());
  SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0));
  offsets[0] = e;
  SmallVector<OpFoldResult> sizes = sizesOf(b, loc, weight);
  sizes[0] = b.getIndexAttr(1);
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  auto sliceType = RankedTensorType::get(type.getShape().drop_front(),
                                         type.getElementType());
  return tensor::ExtractSliceOp::create(b, loc, sliceType, weight, offsets,
                                        sizes, strides);
}

MLPWeights switchyard::lowering::expertWeights(OpBuilder &b, Location loc,
                                              const MLPWeights &weights,
                                              Value e) {
  return {expertSlice(b, loc, weights.w1, e), expertSlice(b, loc, weights.wg, e),
          expertSlice(b, loc, weights.w2, e), expertSlice(b, loc, weights.b1, e),
          expertSlice(b, loc, weights.b2, e), weights.activation};
}

namespace {

struct ExpertsLowering : OpConversionPattern<moe::ExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    b.replaceOp(op, buildMLP(b, op.getLoc(), adaptor.getInput(),
                             mlpWeights(adaptor, op.getActivation())));
    return success();
  }
};

struct GroupedExpertsLowering : OpConversionPattern<moe::GroupedExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::GroupedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // One MLP per expert over its rows [offsets[e], offsets[e + 1]); rows
    // past offsets[E] stay zero.
    Location loc = op.getLoc();
    Value rows = adaptor.getRows(), offsets = adaptor.getOffsets();
    Value c0 = indexConst(b, loc, 0);
    int64_t numExperts =
        cast<ShapedType>(op.getOffsets().getType()).getDimSize(0) - 1;
    Value out = zeroTensor(b, loc, sizesOf(b, loc, rows), elementType(rows));
    Value result = buildLoop(
        b, loc, c0, indexConst(b, loc, numExperts), out,
        [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
          Value start = convertScalar(b, loc, extract(b, loc, offsets, e),
                                      b.getIndexType());
          Value end = convertScalar(
              b, loc,
              extract(b, loc, offsets,
                      arith::AddIOp::create(b, loc, e, indexConst(b, loc, 1))
                          .getResult()),
              b.getIndexType());
          Value count = arith::SubIOp::create(b, loc, end, start);
          SmallVector<OpFoldResult> offs = {start, b.getIndexAttr(0)};
          SmallVector<OpFoldResult> sizes = {
              count, tensor::getMixedSize(b, loc, rows, 1)};
          SmallVector<OpFoldResult> strides = {b.getIndexAttr(1),
                                               b.getIndexAttr(1)};
          Value slice = tensor::ExtractSliceOp::create(b, loc, rows, offs,
                                                       sizes, strides);
          Value y = buildMLP(
              b, loc, slice,
              expertWeights(b, loc, mlpWeights(adaptor, op.getActivation()),
                            e));
          return SmallVector<Value>{tensor::InsertSliceOp::create(
              b, loc, y, acc[0], offs, sizes, strides)};
        })[0];
    b.replaceOp(op, result);
    return success();
  }
};

} // namespace

void switchyard::populateMoEExpertsToLinalgPatterns(
    RewritePatternSet &patterns) {
  patterns.add<ExpertsLowering, GroupedExpertsLowering>(patterns.getContext());
}
