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

/// The body of an epilogue over (acc, extra?, bias?): adds the bias to acc,
/// applies `fn` (with extra), rounds to `roundTo` (the model dtype the
/// semantics stores the value in) and yields the result as `resultType`.
void epilogueBody(OpBuilder &b, Location loc, ValueRange args, bool extra,
                  bool bias, Type roundTo, Type resultType,
                  function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  Value v = args[0];
  Value other = extra ? args[1] : Value();
  if (bias)
    v = arith::AddFOp::create(
        b, loc, v, convertScalar(b, loc, args[extra ? 2 : 1], b.getF32Type()));
  Value rounded = convertScalar(b, loc, fn(b, loc, v, other), roundTo);
  linalg::YieldOp::create(b, loc, convertScalar(b, loc, rounded, resultType));
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
        epilogueBody(b, loc, args, extra != nullptr, bias != nullptr,
                     resultType, resultType, fn);
      });
}

/// The packed product `acc += a * w` (the operands widened to f32) as a
/// linalg.generic with `maps` and `iterators`; `streamWeights` marks it as
/// bound by reading the weights, so that switchyard-tile-matmuls orders its
/// loops to read them in memory order.
Value productGeneric(OpBuilder &b, Location loc, Value a, Value w, Value acc,
                     ArrayRef<AffineMap> maps,
                     ArrayRef<utils::IteratorType> iterators,
                     bool streamWeights) {
  Type f32 = b.getF32Type();
  Value product = buildGeneric(
      b, loc, ValueRange{a, w}, acc, maps, iterators,
      [&](OpBuilder &b, Location loc, ValueRange args) {
        Value prod =
            arith::MulFOp::create(b, loc, convertScalar(b, loc, args[0], f32),
                                  convertScalar(b, loc, args[1], f32));
        linalg::YieldOp::create(
            b, loc, arith::AddFOp::create(b, loc, args[2], prod).getResult());
      });
  if (streamWeights)
    product.getDefiningOp()->setAttr("switchyard.stream_weights",
                                     b.getUnitAttr());
  return product;
}

/// `ap [MT, K, 8]` times `bp [NT, K, 32]` into a fresh f32 accumulator
/// `[MT, NT, 8, 32]`: the packed product switchyard-tile-matmuls gives full
/// register tiles with contiguous operands. With `pairs`, the operands are
/// `ap [MT, K/2, 8, 2]` and `bp [NT, K/2, 32, 2]` (packsPairs).
Value packedMatmulF32(OpBuilder &b, Location loc, Value ap, Value bp,
                      bool streamWeights, bool pairs) {
  MLIRContext *ctx = b.getContext();
  Type f32 = b.getF32Type();
  Value acc = zeroTensor(b, loc,
                         {tensor::getMixedSize(b, loc, ap, 0),
                          tensor::getMixedSize(b, loc, bp, 0),
                          b.getIndexAttr(kPackRows), b.getIndexAttr(kPackCols)},
                         f32);
  // Loops (mt, nt, k, i, j), and p (the pair's element) with pairs.
  unsigned numLoops = pairs ? 6 : 5;
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  auto map = [&](ArrayRef<AffineExpr> exprs) {
    return AffineMap::get(numLoops, 0, exprs, ctx);
  };
  SmallVector<AffineMap> maps = {map({d(0), d(2), d(3)}),
                                 map({d(1), d(2), d(4)}),
                                 map({d(0), d(1), d(3), d(4)})};
  using utils::IteratorType;
  SmallVector<IteratorType> iterators = {
      IteratorType::parallel, IteratorType::parallel, IteratorType::reduction,
      IteratorType::parallel, IteratorType::parallel};
  if (pairs) {
    maps = {map({d(0), d(2), d(3), d(5)}), map({d(1), d(2), d(4), d(5)}),
            maps.back()};
    iterators.push_back(IteratorType::reduction);
  }
  return productGeneric(b, loc, ap, bp, acc, maps, iterators, streamWeights);
}

/// `ap [MT, K/32, 8, 32]` (bf16 rows, 8 rows by 32 reduction steps a
/// block) times `bp [NT, K/2, 32, 2]` (bf16 weights in pairs) into a fresh
/// f32 accumulator `[MT, NT, 8, 32]`, for AMX tiles (packsAmx). The loops
/// are (mt, nt, kb, i, j, q, p), reduction step k = 32 * kb + 2 * q + p:
/// the rows read as [MT, K/32, 8, 16, 2] and the weights as
/// [NT, K/32, 16, 32, 2].
Value amxMatmulF32(OpBuilder &b, Location loc, Value ap, Value bp,
                   bool streamWeights) {
  MLIRContext *ctx = b.getContext();
  auto bpType = cast<RankedTensorType>(bp.getType());
  Type bf16 = bpType.getElementType();
  // The weights' reduction is static; the rows' may not be.
  int64_t kBlocks = bpType.getDimSize(1) / (kPackCols / 2);
  auto apType = RankedTensorType::get(
      {ShapedType::kDynamic, kBlocks, kPackRows, kPackCols}, bf16);
  if (ap.getType() != apType)
    ap = tensor::CastOp::create(b, loc, apType, ap);
  Value a = tensor::ExpandShapeOp::create(
      b, loc,
      RankedTensorType::get(
          {apType.getDimSize(0), kBlocks, kPackRows, kPackCols / 2, 2}, bf16),
      ap, SmallVector<ReassociationIndices>{{0}, {1}, {2}, {3, 4}});
  Value w = tensor::ExpandShapeOp::create(
      b, loc,
      RankedTensorType::get(
          {bpType.getDimSize(0), kBlocks, kPackCols / 2, kPackCols, 2}, bf16),
      bp, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}});
  Value acc = zeroTensor(b, loc,
                         {tensor::getMixedSize(b, loc, ap, 0),
                          b.getIndexAttr(bpType.getDimSize(0)),
                          b.getIndexAttr(kPackRows), b.getIndexAttr(kPackCols)},
                         b.getF32Type());
  auto d = [&](unsigned i) { return getAffineDimExpr(i, ctx); };
  auto map = [&](ArrayRef<AffineExpr> exprs) {
    return AffineMap::get(7, 0, exprs, ctx);
  };
  SmallVector<AffineMap> maps = {map({d(0), d(2), d(3), d(5), d(6)}),
                                 map({d(1), d(2), d(5), d(4), d(6)}),
                                 map({d(0), d(1), d(3), d(4)})};
  using utils::IteratorType;
  SmallVector<IteratorType> iterators = {
      IteratorType::parallel, IteratorType::parallel, IteratorType::reduction,
      IteratorType::parallel, IteratorType::parallel, IteratorType::reduction,
      IteratorType::reduction};
  return productGeneric(b, loc, a, w, acc, maps, iterators, streamWeights);
}

/// The epilogue of a packed product: reads `acc [MT, NT, 8, 32]` (and
/// `extra`, the same shape), adds `bias [N]`, applies `fn`, rounds to
/// `roundTo` (the model dtype) and writes `init` through `outDims` (a
/// permutation of the loops (mt, nt, i, j)), which gives the next product
/// its packed operand or the caller its rows. With `pairs`, the columns are
/// read as [NT, 16, 2], the loops are (mt, nt, i, j2, p) with j = 2 * j2 + p,
/// and `outDims` a permutation of those.
Value packedEpilogue(
    OpBuilder &b, Location loc, Value acc, Value extra, Value bias, Value init,
    ArrayRef<unsigned> outDims, Type roundTo, bool pairs,
    function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  MLIRContext *ctx = b.getContext();
  Type resultType = elementType(init);
  unsigned numLoops = pairs ? 5 : 4;
  auto map = [&](ArrayRef<unsigned> dims) {
    SmallVector<AffineExpr> exprs;
    for (unsigned d : dims)
      exprs.push_back(getAffineDimExpr(d, ctx));
    return AffineMap::get(numLoops, 0, exprs, ctx);
  };
  // [MT, NT, 8, 32] as [MT, NT, 8, 16, 2].
  auto splitColumns = [&](Value v) -> Value {
    if (!pairs || !v)
      return v;
    auto type = cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> shape(type.getShape());
    shape.back() = kPackCols / 2;
    shape.push_back(2);
    return tensor::ExpandShapeOp::create(
        b, loc, RankedTensorType::get(shape, type.getElementType()), v,
        SmallVector<ReassociationIndices>{{0}, {1}, {2}, {3, 4}});
  };
  acc = splitColumns(acc);
  extra = splitColumns(extra);
  SmallVector<unsigned> identity =
      llvm::to_vector(llvm::seq<unsigned>(0, numLoops));
  SmallVector<Value> inputs = {acc};
  SmallVector<AffineMap> maps = {map(identity)};
  if (extra) {
    inputs.push_back(extra);
    maps.push_back(maps.front());
  }
  if (bias) {
    // [N] as [N/32, 32] read at (nt, j), or [N/32, 16, 2] at (nt, j2, p).
    auto type = cast<ShapedType>(bias.getType());
    SmallVector<int64_t> shape = {type.getDimSize(0) / kPackCols, kPackCols};
    ReassociationIndices all = {0, 1};
    SmallVector<unsigned> dims = {1, 3};
    if (pairs) {
      shape = {shape[0], kPackCols / 2, 2};
      all.push_back(2);
      dims.push_back(4);
    }
    inputs.push_back(tensor::ExpandShapeOp::create(
        b, loc, RankedTensorType::get(shape, type.getElementType()), bias,
        SmallVector<ReassociationIndices>{all}));
    maps.push_back(map(dims));
  }
  maps.push_back(map(outDims));
  return buildGeneric(b, loc, inputs, init, maps, parallelIterators(numLoops),
                      [&](OpBuilder &b, Location loc, ValueRange args) {
                        epilogueBody(b, loc, args, extra != nullptr,
                                     bias != nullptr, roundTo, resultType, fn);
                      });
}

} // namespace

bool switchyard::lowering::packsPairs(const MLPWeights &weights) {
  return (weights.bf16.dot || weights.bf16.amx) &&
         elementType(weights.w1).isBF16();
}

bool switchyard::lowering::packsAmx(const MLPWeights &weights) {
  return weights.bf16.amx && elementType(weights.w1).isBF16();
}

Value switchyard::lowering::packWeight(OpBuilder &b, Location loc, Value weight,
                                       bool pairs) {
  if (!weight)
    return weight;
  // [E, K, N] -> [E, K, N/32, 32] -> [E, N/32, K, 32], or in pairs
  // [E, K/2, 2, N/32, 32] -> [E, N/32, K/2, 32, 2].
  auto type = cast<RankedTensorType>(weight.getType());
  ArrayRef<int64_t> shape = type.getShape();
  int64_t e = shape[0], k = shape[1], n = shape[2];
  SmallVector<int64_t> split = {e, k, n / kPackCols, kPackCols};
  SmallVector<ReassociationIndices> reassociation = {{0}, {1}, {2, 3}};
  SmallVector<int64_t> packed = {e, n / kPackCols, k, kPackCols};
  SmallVector<int64_t> permutation = {0, 2, 1, 3};
  if (pairs) {
    split = {e, k / 2, 2, n / kPackCols, kPackCols};
    reassociation = {{0}, {1, 2}, {3, 4}};
    packed = {e, n / kPackCols, k / 2, kPackCols, 2};
    permutation = {0, 3, 1, 4, 2};
  }
  Value expanded = tensor::ExpandShapeOp::create(
      b, loc, RankedTensorType::get(split, type.getElementType()), weight,
      reassociation);
  Value init = tensor::EmptyOp::create(b, loc, packed, type.getElementType());
  auto transpose =
      linalg::TransposeOp::create(b, loc, expanded, init, permutation);
  // switchyard-hoist-weight-packing moves this to load time.
  transpose->setAttr("switchyard.pack_weight", b.getUnitAttr());
  return transpose.getResult()[0];
}

bool switchyard::lowering::canPack(const MLPWeights &w) {
  auto cols = [](Value v) {
    return cast<ShapedType>(v.getType()).getShape().back();
  };
  auto ok = [](int64_t n) {
    return !ShapedType::isDynamic(n) && n % kPackCols == 0;
  };
  auto rank3Static = [](Value v) {
    return !v || (cast<ShapedType>(v.getType()).getRank() == 3 &&
                  cast<ShapedType>(v.getType()).hasStaticShape());
  };
  return rank3Static(w.w1) && rank3Static(w.wg) && rank3Static(w.w2) &&
         ok(cols(w.w1)) && ok(cols(w.w2));
}

Value switchyard::lowering::buildPackedMLP(OpBuilder &b, Location loc,
                                           Value input, const MLPWeights &w,
                                           bool streamWeights) {
  Type modelType = elementType(w.w1);
  bool pairs = packsPairs(w);
  // w2 is [D/32, F, 32], or [D/32, F/2, 32, 2] in pairs.
  auto w2Type = cast<ShapedType>(w.w2.getType());
  int64_t f = w2Type.getDimSize(1) * (pairs ? 2 : 1);
  int64_t dModel = w2Type.getDimSize(0) * kPackCols;
  OpFoldResult tiles = tensor::getMixedSize(b, loc, input, 0); // MT

  bool amx = packsAmx(w);
  auto product = [&](Value rows, Value weight) {
    return amx ? amxMatmulF32(b, loc, rows, weight, streamWeights)
               : packedMatmulF32(b, loc, rows, weight, streamWeights, pairs);
  };
  Value h1 = product(input, w.w1);
  Value gate = w.wg ? product(input, w.wg) : Value();
  // The hidden activations, packed as the second product's left operand:
  // [MT, F/32, 32, 8] is [MT, F, 8].
  // They are stored in the model dtype (SEMANTICS.md section 1), and packed
  // in f32, so that the product does not widen every element it
  // broadcasts. In pairs, [MT, F/32, 16, 8, 2] is [MT, F/2, 8, 2] in bf16.
  // For AMX, [MT, F/32, 8, 32] in bf16: the accumulator's own layout.
  Value hidden;
  auto activation = [&](OpBuilder &b, Location loc, Value v, Value g) {
    return applyActivation(b, loc, w.activation, v, g);
  };
  if (amx) {
    Value hiddenInit = tensor::EmptyOp::create(
        b, loc,
        {tiles, b.getIndexAttr(f / kPackCols), b.getIndexAttr(kPackRows),
         b.getIndexAttr(kPackCols)},
        modelType);
    hidden = packedEpilogue(b, loc, h1, gate, w.b1, hiddenInit, {0, 1, 2, 3},
                            modelType, /*pairs=*/false, activation);
  } else if (pairs) {
    Value hiddenInit = tensor::EmptyOp::create(
        b, loc,
        {tiles, b.getIndexAttr(f / kPackCols), b.getIndexAttr(kPackCols / 2),
         b.getIndexAttr(kPackRows), b.getIndexAttr(2)},
        modelType);
    hidden = packedEpilogue(b, loc, h1, gate, w.b1, hiddenInit, {0, 1, 3, 2, 4},
                            modelType, /*pairs=*/true, activation);
    hidden = tensor::CollapseShapeOp::create(
        b, loc, hidden,
        SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}, {4}});
  } else {
    Value hiddenInit = tensor::EmptyOp::create(
        b, loc,
        {tiles, b.getIndexAttr(f / kPackCols), b.getIndexAttr(kPackCols),
         b.getIndexAttr(kPackRows)},
        b.getF32Type());
    hidden = packedEpilogue(b, loc, h1, gate, w.b1, hiddenInit, {0, 1, 3, 2},
                            modelType, /*pairs=*/false, activation);
    hidden = tensor::CollapseShapeOp::create(
        b, loc, hidden, SmallVector<ReassociationIndices>{{0}, {1, 2}, {3}});
  }
  Value out = product(hidden, w.w2);
  // Rows again: [MT, 8, D/32, 32] is [MT * 8, D].
  Value outInit = tensor::EmptyOp::create(
      b, loc,
      {tiles, b.getIndexAttr(kPackRows), b.getIndexAttr(dModel / kPackCols),
       b.getIndexAttr(kPackCols)},
      modelType);
  Value rows = packedEpilogue(
      b, loc, out, Value(), w.b2, outInit, {0, 2, 1, 3}, modelType,
      /*pairs=*/false, [](OpBuilder &, Location, Value v, Value) { return v; });
  return tensor::CollapseShapeOp::create(
      b, loc, rows, SmallVector<ReassociationIndices>{{0, 1}, {2, 3}});
}

Value switchyard::lowering::roundUpToPackRows(OpBuilder &b, Location loc,
                                              Value rows) {
  Value multiple = indexConst(b, loc, kPackRows);
  return arith::MulIOp::create(
      b, loc, arith::CeilDivUIOp::create(b, loc, rows, multiple), multiple);
}

Value switchyard::lowering::buildRowBlockMLPs(
    OpBuilder &b, Location loc, Value maxRows, Value width,
    const MLPWeights &unpacked,
    function_ref<Value(OpBuilder &, Location, Value)> count,
    function_ref<Value(OpBuilder &, Location, Value, Value, Value)> element) {
  MLIRContext *ctx = b.getContext();
  Type dtype = elementType(unpacked.w1);
  Value numExperts = dimOf(b, loc, unpacked.w1, 0);
  Value block = indexConst(b, loc, kRowBlock);
  Value numBlocks = arith::CeilDivUIOp::create(b, loc, maxRows, block);
  // Rows are only ever written up to count(e) rounded up to the register
  // tile, so the output is no taller than that: Soft MoE's 8 slots an
  // expert take 8 rows, not a whole block of 256.
  Value paddedRows = roundUpToPackRows(b, loc, maxRows);
  Value outInit = tensor::EmptyOp::create(
      b, loc,
      {getAsOpFoldResult(numExperts), getAsOpFoldResult(paddedRows),
       getAsOpFoldResult(width)},
      dtype);
  // Packed products when the widths allow: the weights are packed here
  // (switchyard-hoist-weight-packing moves that to load time) and each
  // block reads its rows straight into the packed layout.
  MLPWeights weights = unpacked;
  bool packed = canPack(weights);
  bool pairs = packed && packsPairs(weights);
  if (packed) {
    weights.w1 = packWeight(b, loc, weights.w1, pairs);
    weights.wg = packWeight(b, loc, weights.wg, pairs);
    weights.w2 = packWeight(b, loc, weights.w2, pairs);
  }
  auto forall = scf::ForallOp::create(
      b, loc,
      ArrayRef<OpFoldResult>{getAsOpFoldResult(numExperts),
                             getAsOpFoldResult(numBlocks)},
      ValueRange{outInit}, std::nullopt);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(forall.getTerminator());
  Value e = forall.getInductionVar(0);
  // An expert's rows are split into as few blocks of kRowBlock rows as
  // hold them, except that up to kRowBlockSlack rows more join the blocks
  // rather than make one of their own, and the blocks have as many register
  // tiles as each other give or take one: 290 rows are one block, not 256
  // and 40; 400 rows are two of 200. A block streams all of its expert's
  // weights, so a block of few rows pays that for little work. Blocks are
  // whole register tiles (row counts rounded up to 8), so that no block
  // ends in a scalar edge tile; blocks past the expert's last are empty and
  // start at its rounded-up row count, inside the output.
  Value multiple = indexConst(b, loc, kPackRows);
  Value zero = indexConst(b, loc, 0);
  Value one = indexConst(b, loc, 1);
  Value tiles = arith::CeilDivUIOp::create(
      b, loc,
      arith::MaxSIOp::create(b, loc, count(b, loc, e), zero).getResult(),
      multiple);
  // parts = max(1, ceil((max(tiles, slack) - slack) / blockTiles)).
  Value slackTiles = indexConst(b, loc, kRowBlockSlack / kPackRows);
  Value beyondSlack = arith::SubIOp::create(
      b, loc, arith::MaxUIOp::create(b, loc, tiles, slackTiles), slackTiles);
  Value parts = arith::MaxUIOp::create(
      b, loc,
      arith::CeilDivUIOp::create(b, loc, beyondSlack,
                                 indexConst(b, loc, kRowBlock / kPackRows))
          .getResult(),
      one);
  // The first row of block j of `parts`: 8 * floor(min(j, parts) * tiles /
  // parts).
  auto blockStart = [&](Value j) -> Value {
    Value clamped = arith::MinUIOp::create(b, loc, j, parts);
    Value tile = arith::DivUIOp::create(
        b, loc, arith::MulIOp::create(b, loc, clamped, tiles), parts);
    return arith::MulIOp::create(b, loc, tile, multiple);
  };
  Value j = forall.getInductionVar(1);
  Value start = blockStart(j);
  Value rows = arith::SubIOp::create(
      b, loc, blockStart(arith::AddIOp::create(b, loc, j, one)), start);

  // The block's rows: [rows, D], or packed [rows / 8, D, 8] in f32 (the
  // model dtype's values, widened exactly; loops (mt, d, i), row mt * 8 + i),
  // or in pairs [rows / 8, D / 2, 8, 2] in bf16 (loops (mt, d2, i, p),
  // column 2 * d2 + p), or for AMX [rows / 8, D / 32, 8, 32] in bf16
  // (column 32 * d32 + c).
  SmallVector<OpFoldResult> sizes = {getAsOpFoldResult(rows),
                                     getAsOpFoldResult(width)};
  bool amx = packed && packsAmx(weights);
  // Columns a block of the packed layout: 2 in pairs, 32 for AMX.
  int64_t columnBlock = amx ? kPackCols : 2;
  if (packed) {
    OpFoldResult tileRows = getAsOpFoldResult(
        arith::DivUIOp::create(b, loc, rows, multiple).getResult());
    sizes = {tileRows, getAsOpFoldResult(width), b.getIndexAttr(kPackRows)};
    if (pairs)
      sizes = {
          tileRows,
          getAsOpFoldResult(arith::DivUIOp::create(
                                b, loc, width, indexConst(b, loc, columnBlock))
                                .getResult()),
          b.getIndexAttr(kPackRows), b.getIndexAttr(columnBlock)};
  }
  unsigned rank = sizes.size();
  Type rowType = packed && !pairs ? b.getF32Type() : dtype;
  Value rowsInit = tensor::EmptyOp::create(b, loc, sizes, rowType);
  Value input = buildGeneric(
      b, loc, ValueRange{}, rowsInit,
      {AffineMap::getMultiDimIdentityMap(rank, ctx)}, parallelIterators(rank),
      [&](OpBuilder &b, Location loc, ValueRange) {
        Value row = linalg::IndexOp::create(b, loc, 0);
        if (packed)
          row = arith::AddIOp::create(
              b, loc, arith::MulIOp::create(b, loc, row, multiple),
              linalg::IndexOp::create(b, loc, 2));
        Value r = arith::AddIOp::create(b, loc, start, row);
        Value column = linalg::IndexOp::create(b, loc, 1);
        if (pairs)
          column = arith::AddIOp::create(
              b, loc,
              arith::MulIOp::create(b, loc, column,
                                    indexConst(b, loc, columnBlock)),
              linalg::IndexOp::create(b, loc, 3));
        Value v = element(b, loc, e, r, column);
        linalg::YieldOp::create(b, loc, convertScalar(b, loc, v, rowType));
      });
  MLPWeights expert = expertWeights(b, loc, weights, e);
  Value y;
  if (packed) {
    // Two versions: a block of at most kStreamRows rows (Soft MoE's slots,
    // small batches) is bound by reading the weights and reads them in
    // memory order; a larger one keeps its rows' panels in cache.
    Value few = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ule, rows,
                                      indexConst(b, loc, kStreamRows));
    auto version = [&](bool stream) {
      return [&, stream](OpBuilder &b, Location loc) {
        return SmallVector<Value>{
            buildPackedMLP(b, loc, input, expert, stream)};
      };
    };
    y = buildIf(b, loc, few, version(true), version(false))[0];
  } else {
    y = buildMLP(b, loc, input, expert);
  }

  b.setInsertionPointToEnd(forall.getTerminator().getBody());
  SmallVector<OpFoldResult> offsets = {e, start, b.getIndexAttr(0)};
  SmallVector<OpFoldResult> sliceSizes = {b.getIndexAttr(1), rows,
                                          getAsOpFoldResult(width)};
  SmallVector<OpFoldResult> strides(3, b.getIndexAttr(1));
  tensor::ParallelInsertSliceOp::create(b, loc, y,
                                        forall.getRegionIterArgs()[0], offsets,
                                        sliceSizes, strides);
  return forall.getResult(0);
}

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
  return {expertSlice(b, loc, weights.w1, e),
          expertSlice(b, loc, weights.wg, e),
          expertSlice(b, loc, weights.w2, e),
          expertSlice(b, loc, weights.b1, e),
          expertSlice(b, loc, weights.b2, e),
          weights.activation,
          weights.bf16};
}

Value switchyard::lowering::buildUniformRowBlockMLPs(
    OpBuilder &b, Location loc, Value rows, Value width,
    const MLPWeights &weights,
    function_ref<Value(OpBuilder &, Location, Value, Value, Value)> element) {
  return buildRowBlockMLPs(
      b, loc, rows, width, weights,
      [&](OpBuilder &, Location, Value) { return rows; },
      [&](OpBuilder &b, Location loc, Value e, Value r, Value d) {
        Value valid =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, r, rows);
        Value safe =
            arith::SelectOp::create(b, loc, valid, r, indexConst(b, loc, 0));
        return selectOrZero(b, loc, valid, element(b, loc, e, safe, d));
      });
}

namespace {

struct ExpertsLowering : ExpertMLPLowering<moe::ExpertsOp> {
  using ExpertMLPLowering::ExpertMLPLowering;

  LogicalResult
  matchAndRewrite(moe::ExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    Location loc = op.getLoc();
    MLPWeights weights = weightsOf(adaptor, op.getActivation());
    Value input = adaptor.getInput();
    if (!canPack(weights)) {
      b.replaceOp(op, buildMLP(b, loc, input, weights));
      return success();
    }
    // Packed products by row blocks, each block's rows packed as it starts.
    Value out = buildUniformRowBlockMLPs(
        b, loc, dimOf(b, loc, input, 1), dimOf(b, loc, input, 2), weights,
        [&](OpBuilder &b, Location loc, Value e, Value r, Value d) {
          return extract(b, loc, input, ValueRange{e, r, d});
        });
    SmallVector<OpFoldResult> offsets(3, b.getIndexAttr(0)),
        strides(3, b.getIndexAttr(1));
    b.replaceOp(op, tensor::ExtractSliceOp::create(
                        b, loc, out, offsets, sizesOf(b, loc, input), strides));
    return success();
  }
};

struct GroupedExpertsLowering : ExpertMLPLowering<moe::GroupedExpertsOp> {
  using ExpertMLPLowering::ExpertMLPLowering;

  LogicalResult
  matchAndRewrite(moe::GroupedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &b) const override {
    // One MLP per expert over its rows [offsets[e], offsets[e + 1]); rows
    // past offsets[E] stay zero.
    Location loc = op.getLoc();
    Value rows = adaptor.getRows(), offsets = adaptor.getOffsets();
    Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
    int64_t numExperts =
        cast<ShapedType>(op.getOffsets().getType()).getDimSize(0) - 1;
    MLPWeights weights = weightsOf(adaptor, op.getActivation());
    auto offsetOf = [&](OpBuilder &b, Location loc, Value e) {
      return convertScalar(b, loc, extract(b, loc, offsets, e),
                           b.getIndexType());
    };
    auto countOf = [&](OpBuilder &b, Location loc, Value e) -> Value {
      return arith::SubIOp::create(
          b, loc,
          offsetOf(b, loc, arith::AddIOp::create(b, loc, e, c1).getResult()),
          offsetOf(b, loc, e));
    };
    // With packed products, the row blocks of moe.routed_experts (the same
    // products, so the same bits as the fused pipeline: on AMX tiles too),
    // each expert's rows then copied into place.
    Value blocks;
    if (canPack(weights)) {
      Value maxRows =
          scf::ForOp::create(
              b, loc, c0, indexConst(b, loc, numExperts), c1, ValueRange{c0},
              [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
                scf::YieldOp::create(
                    b, loc,
                    ValueRange{arith::MaxUIOp::create(b, loc, acc[0],
                                                      countOf(b, loc, e))
                                   .getResult()});
              })
              .getResult(0);
      Value numRows = dimOf(b, loc, rows, 0);
      blocks = buildRowBlockMLPs(
          b, loc, maxRows, dimOf(b, loc, rows, 1), weights,
          [&](OpBuilder &b, Location loc, Value e) {
            return countOf(b, loc, e);
          },
          [&](OpBuilder &b, Location loc, Value e, Value r, Value d) {
            // Rows up to the next multiple of 8 are read: past the
            // expert's, they read zero.
            Value row = arith::AddIOp::create(b, loc, offsetOf(b, loc, e), r);
            Value valid = arith::AndIOp::create(
                b, loc,
                arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, r,
                                      countOf(b, loc, e)),
                arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row,
                                      numRows));
            Value safe = arith::SelectOp::create(b, loc, valid, row, c0);
            return selectOrZero(b, loc, valid,
                                extract(b, loc, rows, ValueRange{safe, d}));
          });
    }
    Value out = zeroTensor(b, loc, sizesOf(b, loc, rows), elementType(rows));
    Value result = buildLoop(
        b, loc, c0, indexConst(b, loc, numExperts), out,
        [&](OpBuilder &b, Location loc, Value e, ValueRange acc) {
          Value start = offsetOf(b, loc, e);
          Value count = countOf(b, loc, e);
          SmallVector<OpFoldResult> offs = {start, b.getIndexAttr(0)};
          SmallVector<OpFoldResult> sizes = {
              count, tensor::getMixedSize(b, loc, rows, 1)};
          SmallVector<OpFoldResult> strides = {b.getIndexAttr(1),
                                               b.getIndexAttr(1)};
          Value y;
          if (blocks) {
            y = tensor::ExtractSliceOp::create(
                b, loc,
                RankedTensorType::get(
                    {ShapedType::kDynamic,
                     cast<ShapedType>(rows.getType()).getDimSize(1)},
                    elementType(rows)),
                blocks,
                SmallVector<OpFoldResult>{e, b.getIndexAttr(0),
                                          b.getIndexAttr(0)},
                SmallVector<OpFoldResult>{b.getIndexAttr(1), count, sizes[1]},
                SmallVector<OpFoldResult>(3, b.getIndexAttr(1)));
          } else {
            Value slice = tensor::ExtractSliceOp::create(b, loc, rows, offs,
                                                         sizes, strides);
            y = buildMLP(b, loc, slice, expertWeights(b, loc, weights, e));
          }
          return SmallVector<Value>{tensor::InsertSliceOp::create(
              b, loc, y, acc[0], offs, sizes, strides)};
        })[0];
    b.replaceOp(op, result);
    return success();
  }
};

} // namespace

void switchyard::populateMoEExpertsToLinalgPatterns(RewritePatternSet &patterns,
                                                    const BF16Products &bf16) {
  patterns.add<ExpertsLowering>(patterns.getContext(), bf16);
  patterns.add<GroupedExpertsLowering>(patterns.getContext(), bf16);
}
