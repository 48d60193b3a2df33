//===- Dispatch.cpp - Dispatch and combine to linalg ----------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md 3.6 and section 4. Dispatch is a gather: an index table says
// which token fills each buffer row (-1: none, the row is zero), and a
// linalg.generic reads x through it. Combine reads each token's k expert
// rows and sums them with their gates in f32.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"
#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Transforms/DialectConversion.h"

using namespace mlir;
using namespace switchyard;
using namespace switchyard::lowering;

namespace {

Value linalgIndex(OpBuilder &b, Location loc, int64_t dim) {
  return linalg::IndexOp::create(b, loc, dim);
}

/// Reads row `token` (an i64, -1 for none) of `x [NG, G, D]` at group `g` and
/// channel `d`; zero when there is no token.
Value gatherOrZero(OpBuilder &b, Location loc, Value x, Value token, Value g,
                   Value d) {
  Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, token,
                                      i64Const(b, loc, 0));
  Value t = arith::SelectOp::create(
      b, loc, valid, convertScalar(b, loc, token, b.getIndexType()),
      indexConst(b, loc, 0));
  return selectOrZero(b, loc, valid, extract(b, loc, x, ValueRange{g, t, d}));
}

/// Loops over every assignment (g, t, j) of `[NG, G, k]` routing tensors.
SmallVector<Value>
forEachAssignment(OpBuilder &b, Location loc, Value routing, ValueRange inits,
                  function_ref<SmallVector<Value>(OpBuilder &, Location, Value,
                                                  Value, Value, ValueRange)>
                      body) {
  Value c0 = indexConst(b, loc, 0);
  return buildLoop(
      b, loc, c0, dimOf(b, loc, routing, 0), inits,
      [&](OpBuilder &b, Location loc, Value g, ValueRange acc) {
        return buildLoop(
            b, loc, c0, dimOf(b, loc, routing, 1), acc,
            [&](OpBuilder &b, Location loc, Value t, ValueRange acc) {
              return buildLoop(
                  b, loc, c0, dimOf(b, loc, routing, 2), acc,
                  [&](OpBuilder &b, Location loc, Value j, ValueRange acc) {
                    return body(b, loc, g, t, j, acc);
                  });
            });
      });
}

/// Writes `value` into `tensor` at `indices` only when `cond` holds.
Value insertIf(OpBuilder &b, Location loc, Value cond, Value value,
               Value tensor, ValueRange indices) {
  return buildIf(
      b, loc, cond,
      [&](OpBuilder &b, Location loc) {
        return SmallVector<Value>{insert(b, loc, value, tensor, indices)};
      },
      [&](OpBuilder &, Location) { return SmallVector<Value>{tensor}; })[0];
}

/// The gate-weighted sum over the k assignments of token (g, t) at channel d,
/// in f32. `readRow(j)` gives (kept, expert output value) of assignment j.
/// Unkept assignments add gate * 0, which is 0 for a finite gate and NaN for
/// the NaN gate of a token with non-finite router logits (SEMANTICS.md 8).
Value combineAssignments(
    OpBuilder &b, Location loc, Value gates, Value g, Value t, int64_t k,
    function_ref<std::pair<Value, Value>(Value)> readRow) {
  Type f32 = b.getF32Type();
  Value acc = floatConst(b, loc, f32, 0.0);
  Value zero = floatConst(b, loc, f32, 0.0);
  for (int64_t j = 0; j < k; ++j) {
    Value jIdx = indexConst(b, loc, j);
    Value gate = extract(b, loc, gates, ValueRange{g, t, jIdx});
    auto [kept, value] = readRow(jIdx);
    Value v = arith::SelectOp::create(
        b, loc, kept, convertScalar(b, loc, value, f32), zero);
    acc = arith::AddFOp::create(b, loc, acc,
                                arith::MulFOp::create(b, loc, gate, v));
  }
  return acc;
}

Value indexOr(OpBuilder &b, Location loc, Value cond, Value i64Value,
              Value otherwise) {
  return arith::SelectOp::create(
      b, loc, cond, convertScalar(b, loc, i64Value, b.getIndexType()),
      otherwise);
}

struct DispatchLowering : OpConversionPattern<moe::DispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::DispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Value x = adaptor.getX();
    int64_t numExperts =
        cast<ShapedType>(op.getBuffers().getType()).getDimSize(0);
    // slotToken[e, g, c]: the token that fills row c of expert e.
    Value slotToken = filledTensor(
        b, loc,
        {b.getIndexAttr(numExperts), tensor::getMixedSize(b, loc, x, 0),
         getAsOpFoldResult(adaptor.getCapacity())},
        b.getI64Type(), i64Const(b, loc, -1));
    slotToken = forEachAssignment(
        b, loc, adaptor.getExperts(), slotToken,
        [&](OpBuilder &b, Location loc, Value g, Value t, Value j,
            ValueRange acc) {
          SmallVector<Value> at = {g, t, j};
          Value kept = extract(b, loc, adaptor.getKept(), at);
          Value c0 = indexConst(b, loc, 0);
          Value e = indexOr(b, loc, kept,
                            extract(b, loc, adaptor.getExperts(), at), c0);
          Value pos = indexOr(b, loc, kept,
                              extract(b, loc, adaptor.getPositions(), at), c0);
          return SmallVector<Value>{
              insertIf(b, loc, kept, convertScalar(b, loc, t, b.getI64Type()),
                       acc[0], ValueRange{e, g, pos})};
        })[0];
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    Value init = tensor::EmptyOp::create(
        b, loc,
        {b.getIndexAttr(numExperts), tensor::getMixedSize(b, loc, x, 0),
         getAsOpFoldResult(adaptor.getCapacity()), tensor::getMixedSize(b, loc, x, 2)},
        elementType(x));
    Value buffers = buildGeneric(
        b, loc, slotToken, init,
        {AffineMap::get(4, 0, {d(0), d(1), d(2)}, ctx),
         AffineMap::getMultiDimIdentityMap(4, ctx)},
        parallelIterators(4),
        [&](OpBuilder &b, Location loc, ValueRange args) {
          linalg::YieldOp::create(
              b, loc,
              gatherOrZero(b, loc, x, args[0], linalgIndex(b, loc, 1),
                           linalgIndex(b, loc, 3)));
        });
    b.replaceOp(op, buffers);
    return success();
  }
};

/// A generic over the output `[NG, G, D]` whose body computes each element
/// from the token's routing; the output has the dtype of `like`.
Value buildTokenOutput(
    OpBuilder &b, Location loc, Value sizesFrom, Value dFrom, unsigned dDim,
    Type elementType,
    function_ref<Value(OpBuilder &, Location, Value, Value, Value)> body) {
  MLIRContext *ctx = b.getContext();
  Value init = tensor::EmptyOp::create(
      b, loc,
      {tensor::getMixedSize(b, loc, sizesFrom, 0),
       tensor::getMixedSize(b, loc, sizesFrom, 1),
       tensor::getMixedSize(b, loc, dFrom, dDim)},
      elementType);
  return buildGeneric(b, loc, ValueRange{}, init,
                      {AffineMap::getMultiDimIdentityMap(3, ctx)},
                      parallelIterators(3),
                      [&](OpBuilder &b, Location loc, ValueRange) {
                        Value v = body(b, loc, linalgIndex(b, loc, 0),
                                       linalgIndex(b, loc, 1),
                                       linalgIndex(b, loc, 2));
                        linalg::YieldOp::create(
                            b, loc, convertScalar(b, loc, v, elementType));
                      });
}

struct CombineLowering : OpConversionPattern<moe::CombineOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::CombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value out = adaptor.getExpertOutputs();
    int64_t k = cast<ShapedType>(op.getExperts().getType()).getDimSize(2);
    Value y = buildTokenOutput(
        b, loc, adaptor.getExperts(), out, 3, elementType(out),
        [&](OpBuilder &b, Location loc, Value g, Value t, Value d) {
          return combineAssignments(
              b, loc, adaptor.getGates(), g, t, k, [&](Value j) {
                SmallVector<Value> at = {g, t, j};
                Value kept = extract(b, loc, adaptor.getKept(), at);
                Value c0 = indexConst(b, loc, 0);
                Value e = indexOr(b, loc, kept,
                                  extract(b, loc, adaptor.getExperts(), at), c0);
                Value pos = indexOr(
                    b, loc, kept, extract(b, loc, adaptor.getPositions(), at),
                    c0);
                return std::make_pair(
                    kept, extract(b, loc, out, ValueRange{e, g, pos, d}));
              });
        });
    b.replaceOp(op, y);
    return success();
  }
};

struct RoutedExpertsLowering : ExpertMLPLowering<moe::RoutedExpertsOp> {
  using ExpertMLPLowering::ExpertMLPLowering;

  LogicalResult
  matchAndRewrite(moe::RoutedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getX(), experts = adaptor.getExperts(),
          kept = adaptor.getKept();
    auto routingType = cast<ShapedType>(experts.getType());
    if (routingType.isDynamicDim(2))
      return b.notifyMatchFailure(op, "the number of choices k is dynamic");
    int64_t k = routingType.getDimSize(2);
    Type i64 = b.getI64Type();
    Value c0 = indexConst(b, loc, 0);
    Value numExperts = dimOf(b, loc, adaptor.getW1(), 0);
    Value numGroups = dimOf(b, loc, x, 0), groupSize = dimOf(b, loc, x, 1);

    // Rows an expert can own: a group gives it at most min(C, G) tokens.
    Value perGroup = groupSize;
    if (Value capacity = adaptor.getCapacity())
      perGroup = arith::MinUIOp::create(b, loc, capacity, groupSize);
    Value maxRows = arith::MulIOp::create(b, loc, numGroups, perGroup);
    Value paddedRows = roundUpToPackRows(b, loc, maxRows);

    // Compaction, in (group, token, choice) order: rowToken[e, r] is the
    // flat token of row r of expert e, slotOf[g, t, j] the row of a kept
    // assignment. Rows past an expert's count read token 0 and are not used.
    Value counts = zeroTensor(b, loc, {getAsOpFoldResult(numExperts)}, i64);
    Value rowToken = zeroTensor(
        b, loc,
        {getAsOpFoldResult(numExperts), getAsOpFoldResult(paddedRows)}, i64);
    Value slotOf = zeroTensor(b, loc, sizesOf(b, loc, experts), i64);
    SmallVector<Value> tables = forEachAssignment(
        b, loc, experts, ValueRange{counts, rowToken, slotOf},
        [&](OpBuilder &b, Location loc, Value g, Value t, Value j,
            ValueRange acc) {
          SmallVector<Value> at = {g, t, j};
          Value isKept = extract(b, loc, kept, at);
          return buildIf(
              b, loc, isKept,
              [&](OpBuilder &b, Location loc) {
                Value e = convertScalar(b, loc, extract(b, loc, experts, at),
                                        b.getIndexType());
                Value row = extract(b, loc, acc[0], e);
                Value rowIdx = convertScalar(b, loc, row, b.getIndexType());
                Value token = convertScalar(
                    b, loc,
                    arith::AddIOp::create(
                        b, loc,
                        arith::MulIOp::create(b, loc, g, groupSize), t)
                        .getResult(),
                    i64);
                Value next = arith::AddIOp::create(b, loc, row,
                                                   i64Const(b, loc, 1));
                return SmallVector<Value>{
                    insert(b, loc, next, acc[0], e),
                    insert(b, loc, token, acc[1], ValueRange{e, rowIdx}),
                    insert(b, loc, row, acc[2], at)};
              },
              [&](OpBuilder &, Location) {
                return SmallVector<Value>(acc.begin(), acc.end());
              });
        });
    counts = tables[0];
    rowToken = tables[1];
    slotOf = tables[2];

    // One parallel task per (expert, row block) gathers its rows from x
    // through rowToken and runs the expert's MLP on them.
    Value xFlat = tensor::CollapseShapeOp::create(
        b, loc, x, SmallVector<ReassociationIndices>{{0, 1}, {2}});
    Type dtype = elementType(x);
    Value out = buildRowBlockMLPs(
        b, loc, maxRows, dimOf(b, loc, x, 2),
        weightsOf(adaptor, op.getActivation()),
        [&](OpBuilder &b, Location loc, Value e) {
          return convertScalar(b, loc, extract(b, loc, counts, e),
                               b.getIndexType());
        },
        [&](OpBuilder &b, Location loc, Value e, Value r, Value d) {
          Value token = convertScalar(
              b, loc, extract(b, loc, rowToken, ValueRange{e, r}),
              b.getIndexType());
          return extract(b, loc, xFlat, ValueRange{token, d});
        });

    // The combine reads each kept assignment's row; identical to
    // moe.combine's f32 sum in choice order.
    Value result = buildTokenOutput(
        b, loc, experts, x, 2, dtype,
        [&](OpBuilder &b, Location loc, Value g, Value t, Value d) {
          return combineAssignments(
              b, loc, adaptor.getGates(), g, t, k, [&](Value j) {
                SmallVector<Value> at = {g, t, j};
                Value isKept = extract(b, loc, kept, at);
                Value e = indexOr(b, loc, isKept, extract(b, loc, experts, at),
                                  c0);
                Value row = indexOr(b, loc, isKept,
                                    extract(b, loc, slotOf, at), c0);
                return std::make_pair(
                    isKept, extract(b, loc, out, ValueRange{e, row, d}));
              });
        });
    b.replaceOp(op, result);
    return success();
  }
};

struct DispatchGroupedLowering : OpConversionPattern<moe::DispatchGroupedOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::DispatchGroupedOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // A counting sort of the kept assignments by expert: histogram, prefix
    // sum into offsets, then a stable scatter in (g, t, j) order.
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Type i64 = b.getI64Type();
    Value x = adaptor.getX(), experts = adaptor.getExperts(),
          kept = adaptor.getKept();
    int64_t numExperts =
        cast<ShapedType>(op.getOffsets().getType()).getDimSize(0) - 1;
    Value c0 = indexConst(b, loc, 0);
    Value one = i64Const(b, loc, 1), zero = i64Const(b, loc, 0);
    Value counts =
        zeroTensor(b, loc, {b.getIndexAttr(numExperts + 1)}, i64);
    counts = forEachAssignment(
        b, loc, experts, counts,
        [&](OpBuilder &b, Location loc, Value g, Value t, Value j,
            ValueRange acc) {
          SmallVector<Value> at = {g, t, j};
          Value isKept = extract(b, loc, kept, at);
          Value e = indexOr(b, loc, isKept, extract(b, loc, experts, at), c0);
          Value count = arith::AddIOp::create(
              b, loc, extract(b, loc, acc[0], e),
              arith::SelectOp::create(b, loc, isKept, one, zero));
          return SmallVector<Value>{insert(b, loc, count, acc[0], e)};
        })[0];
    // Exclusive prefix sum: offsets[e] = rows of experts before e.
    Value offsets = buildLoop(
        b, loc, c0, indexConst(b, loc, numExperts + 1),
        ValueRange{counts, zero},
        [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
          Value count = extract(b, loc, acc[0], e);
          return SmallVector<Value>{insert(b, loc, acc[1], acc[0], e),
                                    arith::AddIOp::create(b, loc, acc[1],
                                                          count)};
        })[0];

    Value groupSize = dimOf(b, loc, x, 1);
    // A = NG * G * k rows, static when the routing shape is.
    int64_t staticRows = cast<ShapedType>(op.getRows().getType()).getDimSize(0);
    SmallVector<OpFoldResult> rowsSize = {b.getIndexAttr(staticRows)};
    if (ShapedType::isDynamic(staticRows)) {
      Value a = arith::MulIOp::create(b, loc, dimOf(b, loc, experts, 0),
                                      groupSize);
      rowsSize[0] =
          arith::MulIOp::create(b, loc, a, dimOf(b, loc, experts, 2)).getResult();
    }
    Value rowToken =
        filledTensor(b, loc, rowsSize, i64, i64Const(b, loc, -1));
    Value slotsInit =
        tensor::EmptyOp::create(b, loc, sizesOf(b, loc, experts), i64);
    SmallVector<Value> scattered = forEachAssignment(
        b, loc, experts, ValueRange{slotsInit, rowToken, offsets},
        [&](OpBuilder &b, Location loc, Value g, Value t, Value j,
            ValueRange acc) {
          SmallVector<Value> at = {g, t, j};
          Value isKept = extract(b, loc, kept, at);
          Value e = indexOr(b, loc, isKept, extract(b, loc, experts, at), c0);
          Value row = extract(b, loc, acc[2], e);
          Value slot =
              arith::SelectOp::create(b, loc, isKept, row, i64Const(b, loc, -1));
          Value flatToken = convertScalar(
              b, loc,
              arith::AddIOp::create(
                  b, loc, arith::MulIOp::create(b, loc, g, groupSize), t),
              i64);
          Value rowIdx = convertScalar(b, loc, row, b.getIndexType());
          Value next = arith::AddIOp::create(
              b, loc, row, arith::SelectOp::create(b, loc, isKept, one, zero));
          return SmallVector<Value>{
              insert(b, loc, slot, acc[0], at),
              insertIf(b, loc, isKept, flatToken, acc[1], rowIdx),
              insert(b, loc, next, acc[2], e)};
        });

    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    Value rowsInit = tensor::EmptyOp::create(
        b, loc, {rowsSize[0], tensor::getMixedSize(b, loc, x, 2)},
        elementType(x));
    Value rows = buildGeneric(
        b, loc, scattered[1], rowsInit,
        {AffineMap::get(2, 0, {d(0)}, ctx),
         AffineMap::getMultiDimIdentityMap(2, ctx)},
        parallelIterators(2),
        [&](OpBuilder &b, Location loc, ValueRange args) {
          Value token = args[0];
          Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                              token, i64Const(b, loc, 0));
          Value flat = indexOr(b, loc, valid, token, indexConst(b, loc, 0));
          Value g = arith::DivUIOp::create(b, loc, flat, groupSize);
          Value t = arith::RemUIOp::create(b, loc, flat, groupSize);
          Value v = extract(b, loc, x, ValueRange{g, t, linalgIndex(b, loc, 1)});
          linalg::YieldOp::create(
              b, loc,
              ValueRange{arith::SelectOp::create(
                  b, loc, valid, v,
                  arith::ConstantOp::create(b, loc, v.getType(),
                                            b.getZeroAttr(v.getType())))});
        });
    b.replaceOp(op, {rows, offsets, scattered[0]});
    return success();
  }
};

struct CombineGroupedLowering : OpConversionPattern<moe::CombineGroupedOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::CombineGroupedOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value out = adaptor.getExpertOutputs();
    int64_t k = cast<ShapedType>(op.getSlots().getType()).getDimSize(2);
    Value y = buildTokenOutput(
        b, loc, adaptor.getSlots(), out, 1, elementType(out),
        [&](OpBuilder &b, Location loc, Value g, Value t, Value d) {
          return combineAssignments(
              b, loc, adaptor.getGates(), g, t, k, [&](Value j) {
                SmallVector<Value> at = {g, t, j};
                Value kept = extract(b, loc, adaptor.getKept(), at);
                Value row = indexOr(b, loc, kept,
                                    extract(b, loc, adaptor.getSlots(), at),
                                    indexConst(b, loc, 0));
                return std::make_pair(kept,
                                      extract(b, loc, out, ValueRange{row, d}));
              });
        });
    b.replaceOp(op, y);
    return success();
  }
};

struct ExpertChoiceDispatchLowering
    : OpConversionPattern<moe::ExpertChoiceDispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertChoiceDispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = getContext();
    Value x = adaptor.getX(), tokens = adaptor.getTokens();
    auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
    Value init = tensor::EmptyOp::create(
        b, loc,
        {tensor::getMixedSize(b, loc, tokens, 1),
         tensor::getMixedSize(b, loc, tokens, 0),
         tensor::getMixedSize(b, loc, tokens, 2),
         tensor::getMixedSize(b, loc, x, 2)},
        elementType(x));
    Value buffers = buildGeneric(
        b, loc, tokens, init,
        {AffineMap::get(4, 0, {d(1), d(0), d(2)}, ctx),
         AffineMap::getMultiDimIdentityMap(4, ctx)},
        parallelIterators(4),
        [&](OpBuilder &b, Location loc, ValueRange args) {
          linalg::YieldOp::create(
              b, loc,
              gatherOrZero(b, loc, x, args[0], linalgIndex(b, loc, 1),
                           linalgIndex(b, loc, 3)));
        });
    b.replaceOp(op, buffers);
    return success();
  }
};

/// The expert-choice combine of SEMANTICS.md over expert outputs
/// `out [E, NG, C, D]`, or `[E, rows, D]` with slot (g, c) at row g * C + c
/// (moe.chosen_experts' row blocks): each token's row is the f32 sum, in expert
/// order, of gate * output over the slots it took; then a NaN row for tokens
/// with non-finite router probabilities.
///
/// It runs token-major: a scatter of the NG * E * C slots' indices into
/// `slotOf [NG, G, E]` (the slot of expert e that token t took, or -1), then
/// one all-parallel generic over the output whose body visits the E experts
/// in order. Each output row is written once, by one thread, a vector at a
/// time; a slot-major scatter-add would read and write it once per slot,
/// serially. The sums are the same: each starts from +0.0 and adds the
/// token's slots in expert order.
Value buildExpertChoiceCombine(OpBuilder &b, Location loc, Value out,
                               Value tokens, Value gates, Value probs) {
  Type f32 = b.getF32Type();
  Type i64 = b.getI64Type();
  Value c0 = indexConst(b, loc, 0);
  int64_t numExperts = cast<ShapedType>(out.getType()).getDimSize(0);
  assert(!ShapedType::isDynamic(numExperts) && "experts are a static count");
  Value slotOf = filledTensor(b, loc,
                              {tensor::getMixedSize(b, loc, probs, 0),
                               tensor::getMixedSize(b, loc, probs, 1),
                               b.getIndexAttr(numExperts)},
                              i64, i64Const(b, loc, -1));
  slotOf = forEachAssignment(
      b, loc, tokens, slotOf,
      [&](OpBuilder &b, Location loc, Value g, Value e, Value c,
          ValueRange acc) {
        Value token = extract(b, loc, tokens, ValueRange{g, e, c});
        Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                            token, i64Const(b, loc, 0));
        Value t = indexOr(b, loc, valid, token, c0);
        return SmallVector<Value>{insertIf(b, loc, valid,
                                           convertScalar(b, loc, c, i64),
                                           acc[0], ValueRange{g, t, e})};
      })[0];
  bool rows = cast<ShapedType>(out.getType()).getRank() == 3;
  Value slots = rows ? dimOf(b, loc, gates, 2) : Value();
  return buildTokenOutput(
      b, loc, probs, out, rows ? 2 : 3, elementType(out),
      [&](OpBuilder &b, Location loc, Value g, Value t, Value d) {
        Value acc = floatConst(b, loc, f32, 0.0);
        for (int64_t i = 0; i < numExperts; ++i) {
          Value e = indexConst(b, loc, i);
          Value slot = extract(b, loc, slotOf, ValueRange{g, t, e});
          Value taken = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                              slot, i64Const(b, loc, 0));
          Value c = indexOr(b, loc, taken, slot, c0);
          Value gate = extract(b, loc, gates, ValueRange{g, e, c});
          Value element =
              rows
                  ? extract(b, loc, out,
                            ValueRange{
                                e,
                                arith::AddIOp::create(
                                    b, loc,
                                    arith::MulIOp::create(b, loc, g, slots), c),
                                d})
                  : extract(b, loc, out, ValueRange{e, g, c, d});
          Value v = convertScalar(b, loc, element, f32);
          Value sum = arith::AddFOp::create(
              b, loc, acc, arith::MulFOp::create(b, loc, gate, v));
          acc = arith::SelectOp::create(b, loc, taken, sum, acc);
        }
        Value p = extract(b, loc, probs, ValueRange{g, t, c0});
        return arith::SelectOp::create(b, loc, isNaN(b, loc, p), p, acc)
            .getResult();
      });
}

struct ExpertChoiceCombineLowering
    : OpConversionPattern<moe::ExpertChoiceCombineOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertChoiceCombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    b.replaceOp(op, buildExpertChoiceCombine(
                        b, op.getLoc(), adaptor.getExpertOutputs(),
                        adaptor.getTokens(), adaptor.getGates(),
                        adaptor.getProbs()));
    return success();
  }
};

struct ChosenExpertsLowering : ExpertMLPLowering<moe::ChosenExpertsOp> {
  using ExpertMLPLowering::ExpertMLPLowering;

  LogicalResult
  matchAndRewrite(moe::ChosenExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value x = adaptor.getX(), tokens = adaptor.getTokens();
    // Row r of expert e is slot (g, c) = (r / C, r % C); its token is read
    // from x as its block starts. Rows past NG * C (the rounding of the last
    // block) and slots no token took read zero.
    Value slots = dimOf(b, loc, tokens, 2);
    Value maxRows =
        arith::MulIOp::create(b, loc, dimOf(b, loc, tokens, 0), slots);
    Value out = buildRowBlockMLPs(
        b, loc, maxRows, dimOf(b, loc, x, 2),
        weightsOf(adaptor, op.getActivation()),
        [&](OpBuilder &, Location, Value) { return maxRows; },
        [&](OpBuilder &b, Location loc, Value e, Value r, Value d) {
          Value inRange = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::ult, r, maxRows);
          Value safe =
              arith::SelectOp::create(b, loc, inRange, r, indexConst(b, loc, 0));
          Value g = arith::DivUIOp::create(b, loc, safe, slots);
          Value c = arith::RemUIOp::create(b, loc, safe, slots);
          Value token = extract(b, loc, tokens, ValueRange{g, e, c});
          Value none = i64Const(b, loc, -1);
          token = arith::SelectOp::create(b, loc, inRange, token, none);
          return gatherOrZero(b, loc, x, token, g, d);
        });
    // The combine reads slot (g, c) at row g * C + c of [E, rows, D]. (It
    // read an [E, NG, C, D] view, a slice of the padded rows expanded; with
    // D = 1 and NG * C not a multiple of 8 only expert 0's term reached the
    // output.)
    b.replaceOp(op, buildExpertChoiceCombine(b, loc, out, tokens,
                                             adaptor.getGates(),
                                             adaptor.getProbs()));
    return success();
  }
};

} // namespace

void switchyard::populateMoEDispatchToLinalgPatterns(
    RewritePatternSet &patterns, const BF16Products &bf16) {
  patterns.add<RoutedExpertsLowering, ChosenExpertsLowering>(
      patterns.getContext(), bf16);
  patterns.add<DispatchLowering, CombineLowering, DispatchGroupedLowering,
               CombineGroupedLowering, ExpertChoiceDispatchLowering,
               ExpertChoiceCombineLowering>(patterns.getContext());
}
