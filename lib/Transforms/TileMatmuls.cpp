//===- TileMatmuls.cpp - Thread and register tiling of matrix products ----===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "Tiling.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/LoopInvariantCodeMotionUtils.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDTILEMATMULS
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;
using switchyard::kAmxTile;
using switchyard::kPrefetchNextPanel;
using switchyard::kReductionPanels;
using switchyard::kStreamedWeights;

namespace {

/// Marks the register tiles to vectorize once their shapes are static.
constexpr llvm::StringLiteral kRegisterTile = "switchyard.register_tile";
/// Marks the register tiles of products in pairs, vectorized by
/// vectorizePairTile.
constexpr llvm::StringLiteral kPairTile = "switchyard.pair_tile";
/// Marks packed products whose blocks have few rows (set by the lowering).
constexpr llvm::StringLiteral kStreamWeights = "switchyard.stream_weights";

/// The loops of a matrix product: `outer` (batch dimensions, and row
/// dimensions other than the innermost) are taken one at a time; `m`, `n`
/// and `k` are the rows, columns and reduction of its matrix form.
struct ProductDims {
  SmallVector<unsigned> outer;
  unsigned m, n, k;
  /// Packed products (`C[mt, nt, i, j] += A[mt, k, i] * B[nt, k, j]`, the
  /// layouts of linalg.mmt4d with a unit inner reduction): `m` and `n` are
  /// the tile indices mt and nt, and `tileM` x `tileN` (static) the inner
  /// tile i x j, a register tile of its own.
  bool packed = false;
  int64_t tileM = 0, tileN = 0;
  /// Packed products in pairs (`C[mt, nt, i, j] += A[mt, k, i, p] *
  /// B[nt, k, j, p]`, p < 2): the loop p, which stays whole.
  std::optional<unsigned> pair;
  /// Packed products for AMX tiles (`C[mt, nt, i, j] += A[mt, kb, i, q, p]
  /// * B[nt, kb, q, j, p]`, q < 16, p < 2): `k` is kb, and a register tile
  /// takes a whole reduction panel, which switchyard-lower-vectors turns
  /// into tile loads and products.
  bool amx = false;
};

/// Matrix products in any form (named or generic, with broadcast or
/// transposed operands) whose columns are the innermost dimension of the
/// result, so that register tiles load and store whole rows.
std::optional<ProductDims> getProductDims(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInits() != 1 ||
      !linalg::isaContractionOpInterface(op))
    return std::nullopt;
  auto resultType = dyn_cast<RankedTensorType>(op.getDpsInits()[0].getType());
  if (!resultType || !resultType.getElementType().isF32())
    return std::nullopt;
  FailureOr<linalg::ContractionDimensions> dims =
      linalg::inferContractionDims(op);
  if (failed(dims) || dims->m.empty() || dims->k.empty() || dims->k.size() > 3)
    return std::nullopt;
  AffineMap result = op.getIndexingMapMatchingResult(op->getResult(0));
  unsigned numPacked = dims->batch.size() + 4 + dims->k.size();
  if (dims->n.size() == 2 && dims->m.size() == 2 &&
      result.getNumResults() == dims->batch.size() + 4 &&
      op.getNumLoops() == numPacked) {
    // A packed product: the result is [.., mt, nt, i, j].
    auto dim = [&](unsigned i) { return getAffineDimExpr(i, op.getContext()); };
    ArrayRef<AffineExpr> r = result.getResults().take_back(4);
    SmallVector<int64_t> ranges = op.getStaticLoopRanges();
    if (r[0] != dim(dims->m[0]) || r[1] != dim(dims->n[0]) ||
        r[2] != dim(dims->m[1]) || r[3] != dim(dims->n[1]) ||
        ShapedType::isDynamic(ranges[dims->m[1]]) ||
        ShapedType::isDynamic(ranges[dims->n[1]]))
      return std::nullopt;
    ProductDims p;
    p.outer.assign(dims->batch.begin(), dims->batch.end());
    p.m = dims->m[0];
    p.n = dims->n[0];
    p.k = dims->k[0];
    p.packed = true;
    p.tileM = ranges[dims->m[1]];
    p.tileN = ranges[dims->n[1]];
    // In pairs (2 reduction loops) and for AMX (3): the last reduction
    // loop, the pair's element p, has 2 steps and is innermost in both
    // operands.
    if (dims->k.size() > 1) {
      unsigned pair = dims->k.back();
      for (OpOperand *input : op.getDpsInputOperands()) {
        AffineMap map = op.getMatchingIndexingMap(input);
        if (map.getNumResults() == 0 || map.getResults().back() != dim(pair))
          return std::nullopt;
      }
      if (ranges[pair] != 2)
        return std::nullopt;
    }
    if (dims->k.size() == 3) {
      // For AMX, the pair index q has 16 steps.
      if (ranges[dims->k[1]] != 16 || ShapedType::isDynamic(ranges[p.k]))
        return std::nullopt;
      p.amx = true;
    } else if (dims->k.size() == 2) {
      p.pair = dims->k[1];
    }
    return p;
  }
  if (dims->k.size() != 1)
    return std::nullopt;
  if (dims->n.size() != 1)
    return std::nullopt;
  if (result.getNumResults() == 0 ||
      result.getResults().back() != getAffineDimExpr(dims->n[0], op.getContext()))
    return std::nullopt;
  ProductDims p;
  p.outer.assign(dims->batch.begin(), dims->batch.end());
  p.outer.append(dims->m.begin(), dims->m.end() - 1);
  p.m = dims->m.back();
  p.n = dims->n[0];
  p.k = dims->k[0];
  return p;
}

/// Tile sizes by loop: `outer` for the outer dimensions of a product with
/// `numLoops` loops, then `m`, `n` and `k`.
SmallVector<OpFoldResult> tileSizes(MLIRContext *ctx, unsigned numLoops,
                                    const ProductDims &dims, int64_t outer,
                                    int64_t m, int64_t n, int64_t k) {
  SmallVector<int64_t> all(numLoops, 0);
  for (unsigned d : dims.outer)
    all[d] = outer;
  all[dims.m] = m;
  all[dims.n] = n;
  all[dims.k] = k;
  return getAsIndexOpFoldResult(ctx, all);
}

/// Marks the multiply and add of `op`'s body `contract`, so that LLVM fuses
/// them into one FMA; named ops are generalized first to get a body.
LogicalResult allowContraction(IRRewriter &rewriter, linalg::LinalgOp op) {
  auto generic = dyn_cast<linalg::GenericOp>(op.getOperation());
  if (!generic) {
    rewriter.setInsertionPoint(op);
    FailureOr<linalg::GenericOp> generalized =
        linalg::generalizeNamedOp(rewriter, op);
    if (failed(generalized))
      return op->emitError("cannot generalize an edge tile");
    generic = *generalized;
  }
  auto contract = arith::FastMathFlagsAttr::get(op->getContext(),
                                                arith::FastMathFlags::contract);
  generic.getBody()->walk([&](Operation *inner) {
    if (auto math = dyn_cast<arith::ArithFastMathInterface>(inner))
      if (isa<arith::MulFOp, arith::AddFOp>(inner))
        inner->setAttr(math.getFastMathAttrName(), contract);
  });
  return success();
}

/// Vectorizes a register tile of a product in pairs, `C[.., i, j] +=
/// A[.., i, p] * B[.., j, p]` with every leading dimension of one step, as
/// one vector.contract of `vector<Mx2xbf16>` and `vector<Nx2xbf16>` into
/// `vector<MxNxf32>`, which switchyard-lower-vectors turns into dot-product
/// instructions. (linalg::vectorize would broadcast both operands to
/// `MxNx2` and widen them.)
LogicalResult vectorizePairTile(RewriterBase &rewriter, linalg::LinalgOp op) {
  if (op.getNumDpsInputs() != 2 || op.getNumDpsInits() != 1)
    return failure();
  OpOperand *lhs = op.getDpsInputOperand(0), *rhs = op.getDpsInputOperand(1);
  OpOperand *acc = op.getDpsInitOperand(0);
  // The last two dimensions of each operand, as loops.
  auto lastTwo =
      [&](OpOperand *operand) -> std::optional<std::pair<unsigned, unsigned>> {
    auto type = dyn_cast<RankedTensorType>(operand->get().getType());
    AffineMap map = op.getMatchingIndexingMap(operand);
    if (!type || !type.hasStaticShape() || type.getRank() < 2 ||
        map.getNumResults() != type.getRank() ||
        llvm::any_of(type.getShape().drop_back(2),
                     [](int64_t d) { return d != 1; }))
      return std::nullopt;
    auto d0 = dyn_cast<AffineDimExpr>(map.getResult(type.getRank() - 2));
    auto d1 = dyn_cast<AffineDimExpr>(map.getResult(type.getRank() - 1));
    if (!d0 || !d1)
      return std::nullopt;
    return std::make_pair(d0.getPosition(), d1.getPosition());
  };
  auto a = lastTwo(lhs), b = lastTwo(rhs), c = lastTwo(acc);
  if (!a || !b || !c || a->second != b->second || a->first != c->first ||
      b->first != c->second)
    return failure();
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  rewriter.setInsertionPoint(op);
  Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
  auto read = [&](OpOperand *operand) -> Value {
    auto type = cast<RankedTensorType>(operand->get().getType());
    SmallVector<Value> zeros(type.getRank(), zero);
    return vector::TransferReadOp::create(
        rewriter, loc,
        VectorType::get(type.getShape().take_back(2), type.getElementType()),
        operand->get(), zeros, std::nullopt,
        AffineMap::getMinorIdentityMap(type.getRank(), 2, ctx),
        SmallVector<bool>{true, true});
  };
  Value lhsVec = read(lhs), rhsVec = read(rhs), accVec = read(acc);
  // Loops (i, j, p).
  AffineExpr i = getAffineDimExpr(0, ctx), j = getAffineDimExpr(1, ctx),
             p = getAffineDimExpr(2, ctx);
  Value product = vector::ContractionOp::create(
      rewriter, loc, lhsVec, rhsVec, accVec,
      ArrayRef<ArrayRef<AffineExpr>>{{i, p}, {j, p}, {i, j}},
      ArrayRef<vector::IteratorType>{vector::IteratorType::parallel,
                                     vector::IteratorType::parallel,
                                     vector::IteratorType::reduction});
  auto accType = cast<RankedTensorType>(acc->get().getType());
  SmallVector<Value> zeros(accType.getRank(), zero);
  Value written = vector::TransferWriteOp::create(
                      rewriter, loc, product, acc->get(), zeros,
                      AffineMap::getMinorIdentityMap(accType.getRank(), 2, ctx),
                      SmallVector<bool>{true, true})
                      .getResult();
  rewriter.replaceOp(op, written);
  return success();
}

struct TileMatmulsPass
    : switchyard::impl::SwitchyardTileMatmulsBase<TileMatmulsPass> {
  using Base::Base;

  /// Tile sizes the tiling can use: positive (a size of 0 or less made the
  /// upstream tiling drop the product or crash), and thread blocks at least
  /// a register tile.
  LogicalResult checkOptions() {
    for (auto [name, value] :
         {std::pair<StringRef, int64_t>{"thread-tile-m", threadTileM},
          {"thread-tile-n", threadTileN},
          {"reduction-tile-k", reductionTileK},
          {"register-tile-m", registerTileM},
          {"register-tile-n", registerTileN}})
      if (value < 1)
        return getOperation().emitError("switchyard-tile-matmuls: ")
               << name << " must be at least 1, got " << value;
    if (threadTileM < registerTileM || threadTileN < registerTileN)
      return getOperation().emitError(
                 "switchyard-tile-matmuls: a thread block (thread-tile-m x "
                 "thread-tile-n = ")
             << int64_t(threadTileM) << " x " << int64_t(threadTileN)
             << ") must hold a register tile (register-tile-m x "
                "register-tile-n = "
             << int64_t(registerTileM) << " x " << int64_t(registerTileN)
             << ")";
    return success();
  }

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    MLIRContext *ctx = &getContext();
    if (failed(checkOptions()))
      return signalPassFailure();
    SmallVector<std::pair<linalg::LinalgOp, ProductDims>> products;
    func.walk([&](linalg::LinalgOp op) {
      // A product with an empty static dimension has nothing to tile.
      if (llvm::is_contained(op.getStaticLoopRanges(), 0))
        return;
      if (std::optional<ProductDims> dims = getProductDims(op))
        products.push_back({op, *dims});
    });

    IRRewriter rewriter(ctx);
    for (auto [op, dims] : products)
      if (failed(tile(rewriter, op, dims)))
        return signalPassFailure();

    // Fold the tile sizes of full tiles to constants, so that their slices
    // and products get static shapes.
    RewritePatternSet patterns(ctx);
    for (StringRef name :
         {"affine.min", "affine.apply", "tensor.extract_slice",
          "tensor.insert_slice", "tensor.cast", "scf.for", "scf.forall",
          "linalg.matmul", "linalg.batch_matmul"})
      if (auto info = RegisteredOperationName::lookup(name, ctx))
        info->getCanonicalizationPatterns(patterns, ctx);
    // Among them: folding tensor.cast into the products that use it.
    ctx->getLoadedDialect<linalg::LinalgDialect>()->getCanonicalizationPatterns(
        patterns);
    if (failed(applyPatternsGreedily(func, std::move(patterns))))
      return signalPassFailure();

    SmallVector<linalg::LinalgOp> tiles;
    func.walk([&](linalg::LinalgOp op) {
      if (op->hasAttr(kRegisterTile))
        tiles.push_back(op);
    });
    for (linalg::LinalgOp op : tiles) {
      op->removeAttr(kRegisterTile);
      if (!op.hasPureTensorSemantics())
        continue;
      if (op->hasAttr(kAmxTile)) {
        // Whole reduction panels that divide the reduction: static.
        if (op.hasDynamicShape()) {
          op->emitError("an AMX register tile with a dynamic shape");
          return signalPassFailure();
        }
        continue;
      }
      if (op.hasDynamicShape()) {
        // An edge tile stays scalar, but multiplies and adds with one
        // rounding as the vector tiles' FMAs do: a row's result does not
        // depend on where the tiling put it.
        if (failed(allowContraction(rewriter, op)))
          return signalPassFailure();
        continue;
      }
      if (op->hasAttr(kPairTile)) {
        op->removeAttr(kPairTile);
        if (failed(vectorizePairTile(rewriter, op))) {
          op->emitError("cannot vectorize a register tile in pairs");
          return signalPassFailure();
        }
        continue;
      }
      rewriter.setInsertionPoint(op);
      FailureOr<linalg::VectorizationResult> vectorized =
          linalg::vectorize(rewriter, op);
      if (failed(vectorized))
        continue;
      rewriter.replaceOp(op, vectorized->replacements);
    }

    // broadcast + mul + multi_reduction, as vectorization writes a product,
    // back to vector.contract (which lowers to FMAs).
    RewritePatternSet contractPatterns(ctx);
    vector::populateVectorReductionToContractPatterns(contractPatterns);
    // Without the unit batch dimension, the accumulator is a plain 2-D tile
    // whose rows the outer-product lowering turns into FMAs.
    vector::populateCastAwayVectorLeadingOneDimPatterns(contractPatterns);
    vector::TransferReadOp::getCanonicalizationPatterns(contractPatterns, ctx);
    vector::TransferWriteOp::getCanonicalizationPatterns(contractPatterns, ctx);
    if (failed(applyPatternsGreedily(func, std::move(contractPatterns))))
      return signalPassFailure();

    // Keep each accumulator tile in registers across its reduction loop:
    // the slice and transfer that read it, and those that write it back,
    // move out of the loop, and the vector becomes a loop-carried value.
    SmallVector<scf::ForOp> loops;
    func.walk([&](scf::ForOp loop) { loops.push_back(loop); }); // innermost first
    for (scf::ForOp loop : loops) {
      moveLoopInvariantCode(cast<LoopLikeOpInterface>(loop.getOperation()));
      hoistLoopInvariantSubsets(rewriter,
                                cast<LoopLikeOpInterface>(loop.getOperation()));
    }
  }

  LogicalResult tile(IRRewriter &rewriter, linalg::LinalgOp op,
                     const ProductDims &dims) {
    MLIRContext *ctx = &getContext();
    unsigned numLoops = op.getNumLoops();
    // Block and register tile sizes in the m and n loops.
    int64_t blockM = threadTileM, blockN = threadTileN, tileM = registerTileM,
            tileN = registerTileN;
    if (dims.packed) {
      // A packed product: its 8x32 inner tile is the register tile, so the
      // m and n loops (over inner tiles) take one step at a time, and every
      // register tile is full (packing padded the rows and columns). Its
      // rows are one of the lowering's row blocks, a parallel task already
      // (up to 320 rows), and stay one block: a second block of a few rows
      // would read every weight panel again for little work.
      blockM = 0;
      blockN = std::max<int64_t>(1, threadTileN / dims.tileN);
      tileM = tileN = 1;
    } else {
      // Narrow products (the router: one column per expert) get register
      // tiles as wide as they are, so that they are vectorized too.
      SmallVector<int64_t> ranges = op.getStaticLoopRanges();
      if (!ShapedType::isDynamic(ranges[dims.n]) && ranges[dims.n] < tileN) {
        tileN = ranges[dims.n];
        blockN = ranges[dims.n];
      }
    }
    auto sizes = [&](int64_t outer, int64_t m, int64_t n, int64_t k) {
      return tileSizes(ctx, numLoops, dims, outer, m, n, k);
    };

    // A packed product's output starts as zeros (linalg.fill of +0.0): every
    // register tile is full and written whole, so the first reduction panel's
    // tiles start their sums from a zero vector instead of reading them, and
    // the output needs no fill at all (it was a memset of every block's sums).
    // Not on AMX tiles: a tile load right after the stores of a zeroed tile
    // waits for them (bf16 Switch block 15.4 against 17.3 ms), and starting
    // from amx.tile_zero measured slower still (13.8 against 16.5 ms).
    bool zeroInit = false;
    if (dims.packed && !dims.amx) {
      OpOperand &init = op.getDpsInitsMutable()[0];
      if (auto fill = init.get().getDefiningOp<linalg::FillOp>()) {
        if (matchPattern(fill.getInputs()[0], m_PosZeroFloat())) {
          rewriter.modifyOpInPlace(op, [&] { init.set(fill.getOutputs()[0]); });
          zeroInit = true;
        }
      }
    }

    // Blocks for threads: one expert, thread-tile-m x thread-tile-n outputs.
    scf::SCFTilingOptions blocks;
    blocks.setLoopType(scf::SCFTilingOptions::LoopType::ForallOp);
    blocks.setTileSizes(sizes(1, blockM, blockN, 0));
    FailureOr<scf::SCFTilingResult> outer =
        switchyard::tileOnce(rewriter, op, blocks, "into parallel blocks");
    if (failed(outer))
      return failure();

    // Rows past the last full register tile, when the block's rows are not
    // a multiple of register-tile-m (196 tokens a Soft MoE group), go to a
    // second part whose register tiles are one row high, so that they are
    // vectorized too instead of running one scalar FMA at a time.
    bool stream = dims.packed && op->hasAttr(kStreamWeights);
    Operation *block = outer->tiledOps.front();
    SmallVector<std::pair<Operation *, int64_t>> parts = {{block, tileM}};
    if (!dims.packed && tileM > 1) {
      rewriter.setInsertionPoint(block);
      auto tiling = cast<TilingInterface>(block);
      OpFoldResult rows = tiling.getIterationDomain(rewriter)[dims.m].size;
      AffineExpr s0 = getAffineSymbolExpr(0, ctx);
      OpFoldResult fullRows = affine::makeComposedFoldedAffineApply(
          rewriter, block->getLoc(), s0.floorDiv(tileM) * tileM, {rows});
      auto [full, rest] = linalg::splitOp(rewriter, tiling, dims.m, fullRows);
      if (!full)
        return block->emitError("cannot split a block's rows");
      parts = {{full, tileM}};
      if (rest)
        parts.push_back({rest, 1});
    }
    for (auto [part, rowsPerTile] : parts)
      if (failed(tileBlock(rewriter, part, dims, rowsPerTile, tileN, stream,
                           zeroInit)))
        return failure();
    return success();
  }

  /// Makes a register tile's sums start as zeros: before its `reduction`
  /// loop, the tile's slice of the output entering the loop is filled with
  /// zeros, a fill vectorized with the tile (and folded into the zero vector
  /// the loop starts from).
  LogicalResult zeroSums(IRRewriter &rewriter, linalg::LinalgOp tile,
                         scf::ForOp reduction) {
    auto slice = tile.getDpsInits()[0].getDefiningOp<tensor::ExtractSliceOp>();
    auto carried =
        slice ? dyn_cast<BlockArgument>(slice.getSource()) : BlockArgument();
    if (!reduction || !carried || carried.getOwner() != reduction.getBody())
      return tile->emitError("a register tile's sums are not a slice of its "
                             "reduction loop's output");
    OpOperand *entering = reduction.getTiedLoopInit(carried);
    Location loc = tile.getLoc();
    rewriter.setInsertionPoint(reduction);
    IRMapping mapping;
    mapping.map(carried, entering->get());
    auto region = cast<tensor::ExtractSliceOp>(rewriter.clone(*slice, mapping));
    Value zero = arith::ConstantOp::create(rewriter, loc,
                                           rewriter.getF32FloatAttr(0.0f));
    auto fill = linalg::FillOp::create(rewriter, loc, zero, region.getResult());
    fill->setAttr(kRegisterTile, UnitAttr::get(&getContext()));
    Value filled = tensor::InsertSliceOp::create(
        rewriter, loc, fill.getResult(0), entering->get(),
        region.getMixedOffsets(), region.getMixedSizes(),
        region.getMixedStrides());
    rewriter.modifyOpInPlace(reduction, [&] { entering->set(filled); });
    return success();
  }

  /// Tiles a thread block of a product into panels and register tiles of
  /// `tileM` x `tileN`; `stream` orders a packed product's column tiles
  /// outside its panels; with `zeroInit`, the first panel's register tiles
  /// start from zeros instead of reading the output.
  LogicalResult tileBlock(IRRewriter &rewriter, Operation *block,
                          const ProductDims &dims, int64_t tileM, int64_t tileN,
                          bool stream, bool zeroInit) {
    MLIRContext *ctx = &getContext();
    unsigned numLoops = cast<linalg::LinalgOp>(block).getNumLoops();
    auto sizes = [&](int64_t outer, int64_t m, int64_t n, int64_t k) {
      return tileSizes(ctx, numLoops, dims, outer, m, n, k);
    };
    // Reduction blocks: a register-tile-n wide panel of the right operand
    // over reduction-tile-k steps stays in the L1 cache while every row
    // tile of the block passes over it.
    // In a packed product each column tile's panels follow each other in
    // memory ([N/32, K, 32]). When the product is marked as bound by
    // reading its weights (a block of few rows), the column tiles go outside
    // the panels, so that the weights stream in order; otherwise the panels
    // go outside, so that the rows' panel stays in L2 across column tiles.
    auto others = [&](ArrayRef<unsigned> last) {
      SmallVector<int64_t> order;
      for (unsigned d = 0; d < numLoops; ++d)
        if (d != dims.m && d != dims.n && d != dims.k)
          order.push_back(d);
      order.append(last.begin(), last.end());
      return order;
    };
    // On AMX tiles, a panel is as many 32-step blocks of the reduction as
    // divide it, up to 8 (256 steps), so that every register tile, a whole
    // panel, has a static reduction.
    int64_t panelK = reductionTileK;
    if (dims.amx) {
      int64_t blocks =
          cast<linalg::LinalgOp>(block).getStaticLoopRanges()[dims.k];
      panelK = 8;
      while (blocks % panelK)
        panelK /= 2;
    }
    scf::SCFTilingOptions panels;
    if (stream) {
      panels.setTileSizes(sizes(0, 0, tileN, panelK));
      panels.setInterchange(others({dims.m, dims.n, dims.k}));
    } else {
      panels.setTileSizes(sizes(0, 0, 0, panelK));
    }
    FailureOr<scf::SCFTilingResult> middle =
        switchyard::tileOnce(rewriter, block, panels, "the reduction");
    if (failed(middle))
      return failure();

    // The first panel, peeled, when its tiles start from zeros (or the only
    // panel, when the reduction is one).
    Operation *firstPanel = nullptr;
    bool onePanel = false;
    if (zeroInit) {
      auto panelLoop =
          middle->loops.empty()
              ? nullptr
              : dyn_cast<scf::ForOp>(middle->loops.back().getOperation());
      std::optional<APInt> trips =
          panelLoop ? panelLoop.getStaticTripCount() : std::nullopt;
      onePanel = !panelLoop || (trips && trips->ule(1));
      scf::ForOp first;
      if (!onePanel &&
          failed(scf::peelForLoopFirstIteration(rewriter, panelLoop, first)))
        return block->emitError("cannot peel the first reduction panel");
      if (first)
        first.getBody()->walk([&](TilingInterface op) {
          if (isa<linalg::LinalgOp>(op.getOperation()))
            firstPanel = op;
        });
    }

    if (dims.packed && !stream && !middle->loops.empty())
      middle->loops.back()->setAttr(kReductionPanels, UnitAttr::get(ctx));
    // Every loop of a streamed product, so that its register tiles, inside
    // any of them, know to prefetch their weights further ahead.
    if (stream)
      for (LoopLikeOpInterface loop : middle->loops)
        loop->setAttr(kStreamedWeights, UnitAttr::get(ctx));

    // Register tiles, columns outside rows (so the panel is reused), the
    // reduction innermost, one step at a time.
    auto tileRegisters =
        [&](Operation *panel,
            bool fromZeros) -> FailureOr<scf::SCFTilingResult> {
      scf::SCFTilingOptions registers;
      registers.setTileSizes(
          sizes(0, tileM, stream ? 0 : tileN, dims.amx ? 0 : 1));
      registers.setInterchange(others({dims.n, dims.m, dims.k}));
      FailureOr<scf::SCFTilingResult> inner = switchyard::tileOnce(
          rewriter, panel, registers, "into register tiles");
      if (failed(inner))
        return failure();
      auto tile = cast<linalg::LinalgOp>(inner->tiledOps.front());
      tile->setAttr(kRegisterTile, UnitAttr::get(ctx));
      if (dims.pair)
        tile->setAttr(kPairTile, UnitAttr::get(ctx));
      if (dims.amx)
        tile->setAttr(kAmxTile, UnitAttr::get(ctx));
      // In a compute-bound packed product, the row-tile loop (inside the
      // panels and column tiles) prefetches the next weight panel
      // (switchyard-lower-vectors).
      if (dims.packed && !stream && inner->loops.size() >= 2)
        inner->loops[1]->setAttr(kPrefetchNextPanel, UnitAttr::get(ctx));
      if (fromZeros &&
          failed(zeroSums(
              rewriter, tile,
              dyn_cast<scf::ForOp>(inner->loops.back().getOperation()))))
        return failure();
      return inner;
    };
    if (firstPanel && failed(tileRegisters(firstPanel, /*fromZeros=*/true)))
      return failure();
    FailureOr<scf::SCFTilingResult> inner =
        tileRegisters(middle->tiledOps.front(), /*fromZeros=*/onePanel);
    if (failed(inner))
      return failure();
    if (dims.packed)
      return success();

    // Peel the column and row loops: full tiles get static sizes, the
    // remainder runs once after them.
    // (The register tiling made loops for n, m and k only, in that order.)
    for (unsigned i = 0; i < 2 && i < inner->loops.size(); ++i) {
      auto loop = dyn_cast<scf::ForOp>(inner->loops[i].getOperation());
      if (!loop)
        continue;
      scf::ForOp partial;
      (void)scf::peelForLoopAndSimplifyBounds(rewriter, loop, partial);
    }
    return success();
  }
};

} // namespace
