//===- Routing.cpp - Routing decisions, losses and statistics to scf ------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// SEMANTICS.md sections 3, 4 and 6. Routing is a sequential scan over the
// tokens of a group in priority order, so it is written as scf.for loops over
// tensors (which bufferize in place). Every loop is linear in the tokens:
// top-k is k successive maxima over E, capacity positions are running
// per-expert counts, and batch priority / expert choice order tokens with a
// stable LSD radix sort on the probabilities' bits (four passes of
// histogram, prefix sum and scatter), never a quadratic search.
//
//===----------------------------------------------------------------------===//

#include "Utils.h"
#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Transforms/DialectConversion.h"

using namespace mlir;
using namespace switchyard;
using namespace switchyard::lowering;

namespace {

/// A 32-bit key that orders probabilities descending when sorted ascending
/// as unsigned integers: p >= 0, so its bits grow with p; `~(bits + 1)`
/// reverses that and leaves 0xFFFFFFFF, the largest key, for NaN.
Value descendingKey(OpBuilder &b, Location loc, Value p) {
  Type i32 = b.getI32Type();
  Value bits = arith::BitcastOp::create(b, loc, i32, p);
  Value one = arith::ConstantIntOp::create(b, loc, i32, 1);
  Value allOnes = arith::ConstantIntOp::create(b, loc, i32, -1);
  Value key = arith::XOrIOp::create(
      b, loc, arith::AddIOp::create(b, loc, bits, one), allOnes);
  return arith::SelectOp::create(b, loc, isNaN(b, loc, p), allOnes, key);
}

/// A permutation (tensor<N x index>) that sorts the unsigned i32 `keys`
/// ascending, stable: equal keys keep their index order (SEMANTICS.md breaks
/// every tie towards the smaller token index).
Value stableRadixSort(OpBuilder &b, Location loc, Value keys, Value n) {
  Type indexType = b.getIndexType();
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value radix = indexConst(b, loc, 256);
  Value perm = tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{n},
                                       indexType);
  perm = buildLoop(b, loc, c0, n, perm,
                   [&](OpBuilder &nb, Location nloc, Value i, ValueRange args) {
                     return SmallVector<Value>{
                         insert(nb, nloc, i, args[0], i)};
                   })[0];
  Value scratch = tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{n},
                                          indexType);
  auto digitOf = [&](OpBuilder &nb, Location nloc, Value index,
                     unsigned shift) {
    Type i32 = nb.getI32Type();
    Value key = extract(nb, nloc, keys, index);
    Value shifted = arith::ShRUIOp::create(
        nb, nloc, key, arith::ConstantIntOp::create(nb, nloc, i32, shift));
    Value digit = arith::AndIOp::create(
        nb, nloc, shifted, arith::ConstantIntOp::create(nb, nloc, i32, 255));
    return arith::IndexCastUIOp::create(nb, nloc, indexType, digit)
        .getResult();
  };
  for (unsigned shift = 0; shift < 32; shift += 8) {
    Value hist = zeroTensor(b, loc, {b.getIndexAttr(256)}, indexType);
    hist = buildLoop(b, loc, c0, n, hist,
                     [&](OpBuilder &nb, Location nloc, Value i,
                         ValueRange args) {
                       Value d = digitOf(nb, nloc, extract(nb, nloc, perm, i),
                                         shift);
                       Value count = extract(nb, nloc, args[0], d);
                       Value next = arith::AddIOp::create(nb, nloc, count,
                                                          indexConst(nb, nloc, 1));
                       return SmallVector<Value>{
                           insert(nb, nloc, next, args[0], d)};
                     })[0];
    // Exclusive prefix sum: where each digit's run starts.
    Value starts = buildLoop(
        b, loc, c0, radix, ValueRange{hist, c0},
        [&](OpBuilder &nb, Location nloc, Value d, ValueRange args) {
          Value count = extract(nb, nloc, args[0], d);
          Value updated = insert(nb, nloc, args[1], args[0], d);
          return SmallVector<Value>{
              updated, arith::AddIOp::create(nb, nloc, args[1], count)};
        })[0];
    SmallVector<Value> scattered = buildLoop(
        b, loc, c0, n, ValueRange{scratch, starts},
        [&](OpBuilder &nb, Location nloc, Value i, ValueRange args) {
          Value index = extract(nb, nloc, perm, i);
          Value d = digitOf(nb, nloc, index, shift);
          Value slot = extract(nb, nloc, args[1], d);
          Value out = insert(nb, nloc, index, args[0], slot);
          Value next = arith::AddIOp::create(nb, nloc, slot, c1);
          return SmallVector<Value>{out, insert(nb, nloc, next, args[1], d)};
        });
    scratch = perm;
    perm = scattered[0];
  }
  return perm;
}

/// The next expert of token (g, t) in the order (p descending, index
/// ascending) after (prevP, prevE): the maximum over experts that come
/// strictly later. Scanning e upwards with a strict `>` keeps the smaller
/// index on ties. Returns (p, e) with e an index.
std::pair<Value, Value> nextChoice(OpBuilder &b, Location loc, Value probs,
                                   Value g, Value t, Value numExperts,
                                   Value prevP, Value prevE) {
  Type f32 = b.getF32Type();
  Value c0 = indexConst(b, loc, 0);
  SmallVector<Value> best = buildLoop(
      b, loc, c0, numExperts,
      ValueRange{floatConst(b, loc, f32, -1.0), c0},
      [&](OpBuilder &nb, Location nloc, Value e, ValueRange args) {
        Value v = extract(nb, nloc, probs, ValueRange{g, t, e});
        Value lower = arith::CmpFOp::create(nb, nloc, arith::CmpFPredicate::OLT,
                                            v, prevP);
        Value equal = arith::CmpFOp::create(nb, nloc, arith::CmpFPredicate::OEQ,
                                            v, prevP);
        Value laterIndex = arith::CmpIOp::create(
            nb, nloc, arith::CmpIPredicate::sgt, e, prevE);
        Value after = arith::OrIOp::create(
            nb, nloc, lower, arith::AndIOp::create(nb, nloc, equal, laterIndex));
        Value better = arith::CmpFOp::create(
            nb, nloc, arith::CmpFPredicate::OGT, v, args[0]);
        Value take = arith::AndIOp::create(nb, nloc, after, better);
        return SmallVector<Value>{
            arith::SelectOp::create(nb, nloc, take, v, args[0]),
            arith::SelectOp::create(nb, nloc, take, e, args[1])};
      });
  return {best[0], best[1]};
}

/// True if any probability of token (g, t) is NaN: its router logits were not
/// finite, so it is routed nowhere (SEMANTICS.md section 8).
Value tokenIsInvalid(OpBuilder &b, Location loc, Value probs, Value g, Value t,
                     Value numExperts) {
  Value c0 = indexConst(b, loc, 0);
  Value no = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 0);
  return buildLoop(b, loc, c0, numExperts, no,
                   [&](OpBuilder &nb, Location nloc, Value e, ValueRange args) {
                     Value v = extract(nb, nloc, probs, ValueRange{g, t, e});
                     return SmallVector<Value>{arith::OrIOp::create(
                         nb, nloc, args[0], isNaN(nb, nloc, v))};
                   })[0];
}

Value addIndex(OpBuilder &b, Location loc, Value a, int64_t c) {
  return arith::AddIOp::create(b, loc, a, indexConst(b, loc, c));
}

/// What moe.token_choice_route and moe.token_choice_router decide.
struct TokenChoiceOptions {
  int64_t topK;
  bool normalizeGates, batchPriority, rerouteDropped;
};

/// The options of moe.token_choice_route or moe.token_choice_router.
template <typename OpTy>
TokenChoiceOptions tokenChoiceOptions(OpTy op) {
  return {static_cast<int64_t>(op.getTopK()), op.getNormalizeGates(),
          op.getPriority() == moe::Priority::batch, op.getRerouteDropped()};
}

/// Step 1 of token-choice routing (SEMANTICS.md 3.1) for tokens [0, count)
/// of group g of `probs`: the top-k experts and gates into `experts` and
/// `gates` at (g, t, j), and each token's rank-1 probability as its
/// batch-priority key into `keys` at t. Returns the three updated tensors.
SmallVector<Value> chooseExperts(OpBuilder &b, Location loc, Value probs,
                                 Value g, Value count, Value experts,
                                 Value gates, Value keys,
                                 const TokenChoiceOptions &options) {
  Type f32 = b.getF32Type(), i64 = b.getI64Type();
  Type indexType = b.getIndexType();
  Value c0 = indexConst(b, loc, 0);
  Value numExperts = dimOf(b, loc, probs, 2);
  Value k = indexConst(b, loc, options.topK);
  Value minusOne = i64Const(b, loc, -1);
  Value nan = floatConst(b, loc, f32, NAN);
  SmallVector<Value>
      chosen =
          buildLoop(
              b, loc, c0, count, ValueRange{experts, gates, keys},
              [&](OpBuilder &b, Location loc, Value t, ValueRange args) {
                Value invalid =
                    tokenIsInvalid(b, loc, probs, g, t, numExperts);
                SmallVector<Value> picked = buildLoop(
                    b, loc, c0, k,
                    ValueRange{floatConst(b, loc, f32, INFINITY),
                               indexConst(b, loc, -1),
                               floatConst(b, loc, f32, 0.0), args[0], args[1]},
                    [&](OpBuilder &b, Location loc, Value j, ValueRange acc) {
                      auto [p, e] = nextChoice(b, loc, probs, g, t, numExperts,
                                               acc[0], acc[1]);
                      Value eOut = arith::SelectOp::create(
                          b, loc, invalid, minusOne,
                          convertScalar(b, loc, e, i64));
                      Value gOut =
                          arith::SelectOp::create(b, loc, invalid, nan, p);
                      return SmallVector<Value>{
                          p, e, arith::AddFOp::create(b, loc, acc[2], p),
                          insert(b, loc, eOut, acc[3], ValueRange{g, t, j}),
                          insert(b, loc, gOut, acc[4], ValueRange{g, t, j})};
                    });
                Value newGates = picked[4];
                if (options.normalizeGates)
                  newGates = buildLoop(
                      b, loc, c0, k, newGates,
                      [&](OpBuilder &b, Location loc, Value j,
                          ValueRange acc) {
                        Value gate = extract(b, loc, acc[0], ValueRange{g, t, j});
                        Value scaled =
                            arith::DivFOp::create(b, loc, gate, picked[2]);
                        return SmallVector<Value>{
                            insert(b, loc, scaled, acc[0], ValueRange{g, t, j})};
                      })[0];
                // The rank-1 probability; an invalid token's expert is -1
                // and its key is NaN (sorted last).
                Value rank1 = arith::SelectOp::create(
                    b, loc, invalid, nan,
                    extract(b, loc, probs,
                            ValueRange{g, t,
                                       arith::SelectOp::create(
                                           b, loc, invalid, c0,
                                           convertScalar(
                                               b, loc,
                                               extract(b, loc, picked[3],
                                                       ValueRange{g, t, c0}),
                                               indexType))}));
                return SmallVector<Value>{
                    picked[3], newGates,
                    insert(b, loc, descendingKey(b, loc, rank1), args[2], t)};
              });
  return chosen;
}

/// Steps 2-4 of token-choice routing (SEMANTICS.md 3.3-3.5) for group g:
/// priority order (from the batch-priority `keys` of its tokens), capacity
/// positions and the kept mask, and rerouting. Returns the updated experts,
/// gates, positions and kept.
SmallVector<Value> placeAssignments(OpBuilder &b, Location loc, Value probs,
                                    Value capacity, Value g, Value experts,
                                    Value gates, Value positions, Value kept,
                                    Value keys,
                                    const TokenChoiceOptions &options) {
  Type i1 = b.getI1Type(), i64 = b.getI64Type();
  Type indexType = b.getIndexType();
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value groupSize = dimOf(b, loc, probs, 1);
  Value numExperts = dimOf(b, loc, probs, 2);
  Value k = indexConst(b, loc, options.topK);
  Value minusOne = i64Const(b, loc, -1);
  // 2. Priority order (SEMANTICS.md 3.3).
  Value order = options.batchPriority ? stableRadixSort(b, loc, keys, groupSize)
                                      : Value();
  auto tokenAt = [&](OpBuilder &b, Location loc, Value r) {
    return order ? extract(b, loc, order, r) : r;
  };

  // 3. Positions: assignments to the same expert earlier in
  //    priority order, rank by rank (SEMANTICS.md 3.4).
  Value counts =
      zeroTensor(b, loc, {tensor::getMixedSize(b, loc, probs, 2)}, indexType);
  SmallVector<Value>
      placed =
          buildLoop(
              b, loc, c0, k, ValueRange{positions, kept, counts},
              [&](OpBuilder &b, Location loc, Value j, ValueRange acc) {
                return buildLoop(
                    b, loc, c0, groupSize, acc,
                    [&](OpBuilder &b, Location loc, Value r, ValueRange acc) {
                      Value t = tokenAt(b, loc, r);
                      Value e = extract(b, loc, experts, ValueRange{g, t, j});
                      Value valid = arith::CmpIOp::create(
                          b, loc, arith::CmpIPredicate::sge, e,
                          i64Const(b, loc, 0));
                      Value eIdx = arith::SelectOp::create(
                          b, loc, valid, convertScalar(b, loc, e, indexType),
                          c0);
                      Value pos = extract(b, loc, acc[2], eIdx);
                      Value count = arith::SelectOp::create(
                          b, loc, valid, addIndex(b, loc, pos, 1), pos);
                      Value isKept = arith::AndIOp::create(
                          b, loc, valid,
                          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                                pos, capacity));
                      Value posOut = arith::SelectOp::create(
                          b, loc, valid, convertScalar(b, loc, pos, i64),
                          minusOne);
                      return SmallVector<Value>{
                          insert(b, loc, posOut, acc[0], ValueRange{g, t, j}),
                          insert(b, loc, isKept, acc[1], ValueRange{g, t, j}),
                          insert(b, loc, count, acc[2], eIdx)};
                    });
              });
  positions = placed[0];
  kept = placed[1];
  if (!options.rerouteDropped)
    return SmallVector<Value>{experts, gates, positions, kept};

  // 4. Reroute dropped tokens, in priority order, to their next most
  //    probable expert with a free row (SEMANTICS.md 3.5, top-1).
  Value used =
      buildLoop(b, loc, c0, numExperts, placed[2],
                [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
                  Value filled = arith::MinSIOp::create(
                      b, loc, extract(b, loc, acc[0], e), capacity);
                  return SmallVector<Value>{insert(b, loc, filled, acc[0], e)};
                })[0];
  SmallVector<Value>
      rerouted =
          buildLoop(
              b, loc, c0, groupSize,
              ValueRange{experts, gates, positions, kept, used},
              [&](OpBuilder &b, Location loc, Value r, ValueRange acc) {
                Value t = tokenAt(b, loc, r);
                Value e = extract(b, loc, acc[0], ValueRange{g, t, c0});
                Value wasKept = extract(b, loc, acc[3], ValueRange{g, t, c0});
                Value dropped = arith::AndIOp::create(
                    b, loc,
                    arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, e,
                                          i64Const(b, loc, 0)),
                    arith::XOrIOp::create(
                        b, loc, wasKept,
                        arith::ConstantIntOp::create(b, loc, i1, 1)));
                return buildIf(
                    b, loc, dropped,
                    [&](OpBuilder &b, Location loc) {
                      Value eIdx = convertScalar(b, loc, e, indexType);
                      Value pFirst = extract(b, loc, probs,
                                             ValueRange{g, t, eIdx});
                      Value no = arith::ConstantIntOp::create(b, loc, i1, 0);
                      SmallVector<Value> search = buildLoop(
                          b, loc, c1, numExperts,
                          ValueRange{pFirst, eIdx, no, eIdx},
                          [&](OpBuilder &b, Location loc, Value,
                              ValueRange s) {
                            auto [p, next] = nextChoice(b, loc, probs, g, t,
                                                        numExperts, s[0], s[1]);
                            Value free = arith::CmpIOp::create(
                                b, loc, arith::CmpIPredicate::slt,
                                extract(b, loc, acc[4], next), capacity);
                            Value take = arith::AndIOp::create(
                                b, loc, free,
                                arith::XOrIOp::create(
                                    b, loc, s[2],
                                    arith::ConstantIntOp::create(b, loc, i1, 1)));
                            return SmallVector<Value>{
                                p, next, arith::OrIOp::create(b, loc, s[2], free),
                                arith::SelectOp::create(b, loc, take, next,
                                                        s[3])};
                          });
                      Value found = search[2], target = search[3];
                      Value row = extract(b, loc, acc[4], target);
                      auto pick = [&](Value ifFound, Value otherwise) {
                        return arith::SelectOp::create(b, loc, found, ifFound,
                                                       otherwise)
                            .getResult();
                      };
                      SmallVector<Value> at = {g, t, c0};
                      return SmallVector<Value>{
                          insert(b, loc,
                                 pick(convertScalar(b, loc, target, i64), e),
                                 acc[0], at),
                          insert(b, loc,
                                 pick(extract(b, loc, probs,
                                              ValueRange{g, t, target}),
                                      extract(b, loc, acc[1], at)),
                                 acc[1], at),
                          insert(b, loc,
                                 pick(convertScalar(b, loc, row, i64),
                                      extract(b, loc, acc[2], at)),
                                 acc[2], at),
                          insert(b, loc, found, acc[3], at),
                          insert(b, loc, pick(addIndex(b, loc, row, 1), row),
                                 acc[4], target)};
                    },
                    [&](OpBuilder &, Location) {
                      return SmallVector<Value>(acc.begin(), acc.end());
                    });
              });
  return SmallVector<Value>{rerouted[0], rerouted[1], rerouted[2], rerouted[3]};
}

/// The [NG, G, k] experts, gates, positions and kept of token-choice
/// routing of `tokens [NG, G, ...]`, uninitialized.
SmallVector<Value> routingResults(OpBuilder &b, Location loc, Value tokens,
                                  int64_t topK) {
  SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, tokens, 0),
                                     tensor::getMixedSize(b, loc, tokens, 1),
                                     b.getIndexAttr(topK)};
  return {tensor::EmptyOp::create(b, loc, sizes, b.getI64Type()),
          tensor::EmptyOp::create(b, loc, sizes, b.getF32Type()),
          tensor::EmptyOp::create(b, loc, sizes, b.getI64Type()),
          tensor::EmptyOp::create(b, loc, sizes, b.getI1Type())};
}

struct TokenChoiceRouteLowering : OpConversionPattern<moe::TokenChoiceRouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult matchAndRewrite(moe::TokenChoiceRouteOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value probs = adaptor.getProbs(), capacity = adaptor.getCapacity();
    TokenChoiceOptions options = tokenChoiceOptions(op);
    Value c0 = indexConst(b, loc, 0);
    Value groupSize = dimOf(b, loc, probs, 1);
    SmallVector<Value> results = buildLoop(
        b, loc, c0, dimOf(b, loc, probs, 0),
        routingResults(b, loc, probs, options.topK),
        [&](OpBuilder &b, Location loc, Value g, ValueRange args) {
          Value keys = tensor::EmptyOp::create(
              b, loc, ArrayRef<OpFoldResult>{groupSize}, b.getI32Type());
          SmallVector<Value> chosen = chooseExperts(
              b, loc, probs, g, groupSize, args[0], args[1], keys, options);
          return placeAssignments(b, loc, probs, capacity, g, chosen[0],
                                  chosen[1], args[2], args[3], chosen[2],
                                  options);
        });
    b.replaceOp(op, results);
    return success();
  }
};

/// Tokens per parallel task of moe.token_choice_router's first pass.
constexpr int64_t kRouterTokens = 64;

struct TokenChoiceRouterLowering
    : OpConversionPattern<moe::TokenChoiceRouterOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult matchAndRewrite(moe::TokenChoiceRouterOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &b) const override {
    // 1. One parallel pass over tiles of kRouterTokens tokens: each tile's
    //    logits, softmax and top-k choices, while the tile is in cache.
    // 2. Per group, in sequence: priority order, capacity positions and
    //    rerouting (placeAssignments, as moe.token_choice_route).
    Location loc = op.getLoc();
    Value x = adaptor.getX(), capacity = adaptor.getCapacity();
    TokenChoiceOptions options = tokenChoiceOptions(op);
    Type f32 = b.getF32Type(), i64 = b.getI64Type(), i32 = b.getI32Type();
    OpFoldResult numGroups = tensor::getMixedSize(b, loc, x, 0);
    OpFoldResult groupSizeOfr = tensor::getMixedSize(b, loc, x, 1);
    Value groupSize = dimOf(b, loc, x, 1);
    OpFoldResult numExperts =
        tensor::getMixedSize(b, loc, adaptor.getWeight(), 1);
    OpFoldResult k = b.getIndexAttr(options.topK);
    Value tile = indexConst(b, loc, kRouterTokens);
    // The first pass writes logits, probabilities, experts, gates and the
    // batch-priority keys; the second, positions and kept.
    SmallVector<Value> routing = routingResults(b, loc, x, options.topK);
    SmallVector<Value> outs = {
        tensor::EmptyOp::create(b, loc, {numGroups, groupSizeOfr, numExperts},
                                f32),
        tensor::EmptyOp::create(b, loc, {numGroups, groupSizeOfr, numExperts},
                                f32),
        routing[0], routing[1],
        tensor::EmptyOp::create(b, loc, {numGroups, groupSizeOfr}, i32)};
    auto forall = scf::ForallOp::create(
        b, loc,
        ArrayRef<OpFoldResult>{
            numGroups, getAsOpFoldResult(
                           arith::CeilDivUIOp::create(b, loc, groupSize, tile)
                               .getResult())},
        outs, std::nullopt);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(forall.getTerminator());
      Value g = forall.getInductionVar(0);
      Value start =
          arith::MulIOp::create(b, loc, forall.getInductionVar(1), tile);
      Value size = arith::MinUIOp::create(
          b, loc, tile, arith::SubIOp::create(b, loc, groupSize, start));
      OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
      auto ones = [&](unsigned n) { return SmallVector<OpFoldResult>(n, one); };
      Value xt = tensor::ExtractSliceOp::create(
          b, loc, x, {g, start, zero},
          {one, size, tensor::getMixedSize(b, loc, x, 2)}, ones(3));
      Value logits =
          routerLogits(b, loc, xt, adaptor.getWeight(), adaptor.getBias());
      Value probs = routerProbs(b, loc, logits);
      SmallVector<Value> chosen = chooseExperts(
          b, loc, probs, indexConst(b, loc, 0), size,
          tensor::EmptyOp::create(b, loc, {one, size, k}, i64),
          tensor::EmptyOp::create(b, loc, {one, size, k}, f32),
          tensor::EmptyOp::create(b, loc, ArrayRef<OpFoldResult>{size}, i32),
          options);
      b.setInsertionPointToStart(forall.getTerminator().getBody());
      ValueRange shared = forall.getRegionIterArgs();
      SmallVector<OpFoldResult> at = {g, start, zero};
      tensor::ParallelInsertSliceOp::create(b, loc, logits, shared[0], at,
                                            {one, size, numExperts}, ones(3));
      tensor::ParallelInsertSliceOp::create(b, loc, probs, shared[1], at,
                                            {one, size, numExperts}, ones(3));
      tensor::ParallelInsertSliceOp::create(b, loc, chosen[0], shared[2], at,
                                            {one, size, k}, ones(3));
      tensor::ParallelInsertSliceOp::create(b, loc, chosen[1], shared[3], at,
                                            {one, size, k}, ones(3));
      tensor::ParallelInsertSliceOp::create(b, loc, chosen[2], shared[4],
                                            SmallVector<OpFoldResult>{g, start},
                                            {one, size}, ones(2));
    }
    ValueRange first = forall.getResults();
    Value probs = first[1];
    SmallVector<Value> results = buildLoop(
        b, loc, indexConst(b, loc, 0), dimOf(b, loc, x, 0),
        ValueRange{first[2], first[3], routing[2], routing[3]},
        [&](OpBuilder &b, Location loc, Value g, ValueRange args) {
          OpFoldResult one = b.getIndexAttr(1);
          Value keys = tensor::ExtractSliceOp::create(
              b, loc,
              RankedTensorType::get(
                  {cast<ShapedType>(x.getType()).getDimSize(1)}, i32),
              first[4], SmallVector<OpFoldResult>{g, b.getIndexAttr(0)},
              SmallVector<OpFoldResult>{one, groupSizeOfr},
              SmallVector<OpFoldResult>{one, one});
          return placeAssignments(b, loc, probs, capacity, g, args[0], args[1],
                                  args[2], args[3], keys, options);
        });
    SmallVector<Value> replacements = {first[0], probs};
    replacements.append(results.begin(), results.end());
    b.replaceOp(op, replacements);
    return success();
  }
};

struct ExpertChoiceRouteLowering
    : OpConversionPattern<moe::ExpertChoiceRouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertChoiceRouteOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Expert e takes the C tokens with the largest p[:, e], ties towards the
    // smaller token (SEMANTICS.md section 4); NaN tokens sort last and are
    // never taken.
    Location loc = op.getLoc();
    Type f32 = b.getF32Type(), i64 = b.getI64Type();
    Value probs = adaptor.getProbs(), capacity = adaptor.getCapacity();
    Value c0 = indexConst(b, loc, 0);
    Value numGroups = dimOf(b, loc, probs, 0);
    Value groupSize = dimOf(b, loc, probs, 1);
    Value numExperts = dimOf(b, loc, probs, 2);
    SmallVector<OpFoldResult> sizes = {tensor::getMixedSize(b, loc, probs, 0),
                                       tensor::getMixedSize(b, loc, probs, 2),
                                       getAsOpFoldResult(capacity)};
    SmallVector<Value> inits = {tensor::EmptyOp::create(b, loc, sizes, i64),
                                tensor::EmptyOp::create(b, loc, sizes, f32)};
    SmallVector<Value> results = buildLoop(
        b, loc, c0, numGroups, inits,
        [&](OpBuilder &b, Location loc, Value g, ValueRange args) {
          return buildLoop(
              b, loc, c0, numExperts, args,
              [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
                Value keys = tensor::EmptyOp::create(
                    b, loc, ArrayRef<OpFoldResult>{groupSize}, b.getI32Type());
                keys = buildLoop(
                    b, loc, c0, groupSize, keys,
                    [&](OpBuilder &b, Location loc, Value t, ValueRange k) {
                      Value p = extract(b, loc, probs, ValueRange{g, t, e});
                      return SmallVector<Value>{
                          insert(b, loc, descendingKey(b, loc, p), k[0], t)};
                    })[0];
                Value order = stableRadixSort(b, loc, keys, groupSize);
                return buildLoop(
                    b, loc, c0, capacity, acc,
                    [&](OpBuilder &b, Location loc, Value c, ValueRange acc) {
                      Value t = extract(b, loc, order, c);
                      Value p = extract(b, loc, probs, ValueRange{g, t, e});
                      Value valid = arith::XOrIOp::create(
                          b, loc, isNaN(b, loc, p),
                          arith::ConstantIntOp::create(b, loc, b.getI1Type(), 1));
                      Value token = arith::SelectOp::create(
                          b, loc, valid, convertScalar(b, loc, t, i64),
                          i64Const(b, loc, -1));
                      Value gate = arith::SelectOp::create(
                          b, loc, valid, p, floatConst(b, loc, f32, 0.0));
                      return SmallVector<Value>{
                          insert(b, loc, token, acc[0], ValueRange{g, e, c}),
                          insert(b, loc, gate, acc[1], ValueRange{g, e, c})};
                    });
              });
        });
    b.replaceOp(op, results);
    return success();
  }
};

struct LoadBalancingLossLowering
    : OpConversionPattern<moe::LoadBalancingLossOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::LoadBalancingLossOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // Per group: alpha * E * sum_e f_e P_e with f_e the fraction of tokens
    // choosing e among their top k (before dropping) and P_e the mean
    // probability; then the mean over groups (SEMANTICS.md section 6).
    // Accumulated in f64.
    Location loc = op.getLoc();
    Type f64 = b.getF64Type(), f32 = b.getF32Type();
    Value probs = adaptor.getProbs();
    Value c0 = indexConst(b, loc, 0);
    Value numGroups = dimOf(b, loc, probs, 0);
    Value groupSize = dimOf(b, loc, probs, 1);
    Value numExperts = dimOf(b, loc, probs, 2);
    Value k = indexConst(b, loc, op.getTopK());
    int64_t e = cast<ShapedType>(op.getProbs().getType()).getDimSize(2);
    auto toF64 = [&](OpBuilder &b, Location loc, Value index) {
      return convertScalar(b, loc, convertScalar(b, loc, index, b.getI64Type()),
                           f64);
    };
    Value one = floatConst(b, loc, f64, 1.0);
    Value total = buildLoop(
        b, loc, c0, numGroups, floatConst(b, loc, f64, 0.0),
        [&](OpBuilder &b, Location loc, Value g, ValueRange args) {
          Value zeros = zeroTensor(b, loc, {b.getIndexAttr(e)}, f64);
          SmallVector<Value> sums = buildLoop(
              b, loc, c0, groupSize, ValueRange{zeros, zeros},
              [&](OpBuilder &b, Location loc, Value t, ValueRange acc) {
                Value probSum = buildLoop(
                    b, loc, c0, numExperts, acc[1],
                    [&](OpBuilder &b, Location loc, Value ex, ValueRange s) {
                      Value p = convertScalar(
                          b, loc, extract(b, loc, probs, ValueRange{g, t, ex}),
                          f64);
                      Value sum = arith::AddFOp::create(
                          b, loc, extract(b, loc, s[0], ex), p);
                      return SmallVector<Value>{insert(b, loc, sum, s[0], ex)};
                    })[0];
                Value choiceCount = buildLoop(
                    b, loc, c0, k,
                    ValueRange{floatConst(b, loc, f32, INFINITY),
                               indexConst(b, loc, -1), acc[0]},
                    [&](OpBuilder &b, Location loc, Value, ValueRange s) {
                      auto [p, ex] = nextChoice(b, loc, probs, g, t,
                                                numExperts, s[0], s[1]);
                      Value count = arith::AddFOp::create(
                          b, loc, extract(b, loc, s[2], ex), one);
                      return SmallVector<Value>{
                          p, ex, insert(b, loc, count, s[2], ex)};
                    })[2];
                return SmallVector<Value>{choiceCount, probSum};
              });
          Value dot = buildLoop(
              b, loc, c0, numExperts, floatConst(b, loc, f64, 0.0),
              [&](OpBuilder &b, Location loc, Value ex, ValueRange s) {
                Value prod = arith::MulFOp::create(
                    b, loc, extract(b, loc, sums[0], ex),
                    extract(b, loc, sums[1], ex));
                return SmallVector<Value>{
                    arith::AddFOp::create(b, loc, s[0], prod)};
              })[0];
          Value gf = toF64(b, loc, groupSize);
          Value groupLoss = arith::DivFOp::create(
              b, loc, dot, arith::MulFOp::create(b, loc, gf, gf));
          return SmallVector<Value>{
              arith::AddFOp::create(b, loc, args[0], groupLoss)};
        })[0];
    Value scale = floatConst(b, loc, f64,
                             op.getWeight().convertToDouble() *
                                 static_cast<double>(e));
    Value mean = arith::DivFOp::create(b, loc, total, toF64(b, loc, numGroups));
    Value loss = convertScalar(b, loc, arith::MulFOp::create(b, loc, mean, scale),
                               f32);
    b.replaceOpWithNewOp<tensor::FromElementsOp>(
        op, RankedTensorType::get({}, f32), ValueRange{loss});
    return success();
  }
};

Value scalarTensor(OpBuilder &b, Location loc, Value v) {
  return tensor::FromElementsOp::create(
      b, loc, RankedTensorType::get({}, v.getType()), ValueRange{v});
}

Value boolToI64(OpBuilder &b, Location loc, Value flag) {
  return arith::ExtUIOp::create(b, loc, b.getI64Type(), flag);
}

struct RoutingStatsLowering : OpConversionPattern<moe::RoutingStatsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::RoutingStatsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Type i64 = b.getI64Type(), i1 = b.getI1Type();
    Value experts = adaptor.getExperts(), kept = adaptor.getKept();
    Value c0 = indexConst(b, loc, 0);
    int64_t numExperts =
        cast<ShapedType>(op.getExpertCounts().getType()).getDimSize(0);
    Value counts = zeroTensor(b, loc, {b.getIndexAttr(numExperts)}, i64);
    Value zero = i64Const(b, loc, 0);
    Value numGroups = dimOf(b, loc, experts, 0);
    Value groupSize = dimOf(b, loc, experts, 1);
    Value k = dimOf(b, loc, experts, 2);
    SmallVector<Value> stats = buildLoop(
        b, loc, c0, numGroups, ValueRange{counts, zero, zero},
        [&](OpBuilder &b, Location loc, Value g, ValueRange acc) {
          return buildLoop(
              b, loc, c0, groupSize, acc,
              [&](OpBuilder &b, Location loc, Value t, ValueRange acc) {
                Value no = arith::ConstantIntOp::create(b, loc, i1, 0);
                SmallVector<Value> perToken = buildLoop(
                    b, loc, c0, k, ValueRange{acc[0], acc[1], no},
                    [&](OpBuilder &b, Location loc, Value j, ValueRange s) {
                      Value e = extract(b, loc, experts, ValueRange{g, t, j});
                      Value isKept = extract(b, loc, kept, ValueRange{g, t, j});
                      Value routed = arith::CmpIOp::create(
                          b, loc, arith::CmpIPredicate::sge, e, zero);
                      Value eIdx = arith::SelectOp::create(
                          b, loc, routed,
                          convertScalar(b, loc, e, b.getIndexType()),
                          indexConst(b, loc, 0));
                      Value count = arith::AddIOp::create(
                          b, loc, extract(b, loc, s[0], eIdx),
                          boolToI64(b, loc, isKept));
                      Value dropped = arith::AndIOp::create(
                          b, loc, routed,
                          arith::XOrIOp::create(
                              b, loc, isKept,
                              arith::ConstantIntOp::create(b, loc, i1, 1)));
                      return SmallVector<Value>{
                          insert(b, loc, count, s[0], eIdx),
                          arith::AddIOp::create(b, loc, s[1],
                                                boolToI64(b, loc, dropped)),
                          arith::OrIOp::create(b, loc, s[2], isKept)};
                    });
                Value nothingKept = arith::XOrIOp::create(
                    b, loc, perToken[2],
                    arith::ConstantIntOp::create(b, loc, i1, 1));
                return SmallVector<Value>{
                    perToken[0], perToken[1],
                    arith::AddIOp::create(b, loc, acc[2],
                                          boolToI64(b, loc, nothingKept))};
              });
        });
    b.replaceOp(op, {stats[0], scalarTensor(b, loc, stats[1]),
                     scalarTensor(b, loc, stats[2])});
    return success();
  }
};

struct ExpertChoiceStatsLowering
    : OpConversionPattern<moe::ExpertChoiceStatsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(moe::ExpertChoiceStatsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    Type i64 = b.getI64Type(), i1 = b.getI1Type();
    Value tokens = adaptor.getTokens(), probs = adaptor.getProbs();
    Value c0 = indexConst(b, loc, 0);
    Value numGroups = dimOf(b, loc, tokens, 0);
    Value numExperts = dimOf(b, loc, tokens, 1);
    Value capacity = dimOf(b, loc, tokens, 2);
    Value groupSize = dimOf(b, loc, probs, 1);
    int64_t e = cast<ShapedType>(op.getExpertCounts().getType()).getDimSize(0);
    Value counts = zeroTensor(b, loc, {b.getIndexAttr(e)}, i64);
    Value zero = i64Const(b, loc, 0);
    SmallVector<Value> stats = buildLoop(
        b, loc, c0, numGroups, ValueRange{counts, zero},
        [&](OpBuilder &b, Location loc, Value g, ValueRange acc) {
          Value taken = zeroTensor(b, loc, {groupSize}, i1);
          SmallVector<Value> marked = buildLoop(
              b, loc, c0, numExperts, ValueRange{acc[0], taken},
              [&](OpBuilder &b, Location loc, Value ex, ValueRange s) {
                return buildLoop(
                    b, loc, c0, capacity, s,
                    [&](OpBuilder &b, Location loc, Value c, ValueRange s) {
                      Value tok = extract(b, loc, tokens, ValueRange{g, ex, c});
                      Value valid = arith::CmpIOp::create(
                          b, loc, arith::CmpIPredicate::sge, tok, zero);
                      Value tIdx = arith::SelectOp::create(
                          b, loc, valid,
                          convertScalar(b, loc, tok, b.getIndexType()), c0);
                      Value count = arith::AddIOp::create(
                          b, loc, extract(b, loc, s[0], ex),
                          boolToI64(b, loc, valid));
                      Value wasTaken = extract(b, loc, s[1], tIdx);
                      return SmallVector<Value>{
                          insert(b, loc, count, s[0], ex),
                          insert(b, loc,
                                 arith::OrIOp::create(b, loc, wasTaken, valid),
                                 s[1], tIdx)};
                    });
              });
          Value unrouted = buildLoop(
              b, loc, c0, groupSize, acc[1],
              [&](OpBuilder &b, Location loc, Value t, ValueRange s) {
                Value notTaken = arith::XOrIOp::create(
                    b, loc, extract(b, loc, marked[1], t),
                    arith::ConstantIntOp::create(b, loc, i1, 1));
                return SmallVector<Value>{arith::AddIOp::create(
                    b, loc, s[0], boolToI64(b, loc, notTaken))};
              })[0];
          return SmallVector<Value>{marked[0], unrouted};
        });
    b.replaceOp(op, {stats[0], scalarTensor(b, loc, stats[1])});
    return success();
  }
};

} // namespace

void switchyard::populateMoERoutingToSCFPatterns(RewritePatternSet &patterns) {
  patterns.add<TokenChoiceRouteLowering, TokenChoiceRouterLowering,
               ExpertChoiceRouteLowering, LoadBalancingLossLowering,
               RoutingStatsLowering, ExpertChoiceStatsLowering>(
      patterns.getContext());
}
