//===- VectorizeElementwise.cpp - SIMD for the elementwise glue -----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// Norms, residual additions, bias and activation epilogues and the combine
// are all-parallel linalg.generic ops over rows whose innermost dimension is
// the model or hidden width. Lowered as they are, they run one scalar a step
// (a divide per element in the RMS norm). This pass tiles each of them into
// one row segment of a static width at a time and vectorizes the segment.
// Row reductions (sums of squares, softmax maxima and sums) are vectorized
// one whole row at a time; column reductions (softmax maxima and sums over
// tokens, column norms) one row of columns per step.
//
// An op whose payload never reads its init (a residual addition that
// convert-elementwise-to-linalg wrote into its first operand) gets a
// tensor.empty init first: bufferized as it was, the init was copied into
// the result buffer, one scalar a step, before the op overwrote it.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "Tiling.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDVECTORIZEELEMENTWISE
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;

namespace {

/// Elements of a row segment: four AVX-512 vectors of f32.
constexpr int64_t kSegment = 64;

/// Whether every operand of `op` is indexed by loops alone (a projected
/// permutation) and has `loop`, where present, as its innermost dimension:
/// contiguous, or broadcast when absent.
bool isLoopContiguous(linalg::GenericOp op, unsigned loop) {
  AffineExpr loopExpr = getAffineDimExpr(loop, op.getContext());
  for (AffineMap map : op.getIndexingMapsArray()) {
    if (!map.isProjectedPermutation())
      return false;
    if (llvm::is_contained(map.getResults().drop_back(), loopExpr))
      return false; // strided along the loop
  }
  return true;
}

/// isLoopContiguous for the innermost loop.
bool isInnerLoopContiguous(linalg::GenericOp op) {
  return isLoopContiguous(op, op.getNumLoops() - 1);
}

/// The segment width for `op`, or 0 when it is not vectorized here: every
/// iterator parallel, one tensor result, and the innermost loop either the
/// innermost dimension of an operand (contiguous) or absent from it
/// (broadcast), with a static extent that a segment divides.
int64_t segmentWidth(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInits() != 1 ||
      op.getNumReductionLoops() != 0 || op.getNumLoops() == 0)
    return 0;
  unsigned inner = op.getNumLoops() - 1;
  if (!isInnerLoopContiguous(op))
    return 0;
  AffineExpr innerExpr = getAffineDimExpr(inner, op.getContext());
  AffineMap out = op.getIndexingMapsArray().back();
  if (out.getNumResults() == 0 || out.getResults().back() != innerExpr)
    return 0;
  int64_t extent = op.getStaticLoopRanges()[inner];
  if (ShapedType::isDynamic(extent))
    return 0;
  if (extent % kSegment == 0)
    return kSegment;
  return extent <= kSegment ? extent : 0;
}

/// Elements of a row reduction's chunk: a longer row is reduced one chunk
/// at a time (16 AVX-512 vectors of f32), each chunk's lanes added as a tree
/// into the row's accumulator.
constexpr int64_t kReductionChunk = 256;

/// Whether `op` reduces rows along its innermost loop and is vectorized
/// here one row at a time: every other iterator parallel, one tensor
/// result that does not index the innermost loop, the innermost loop
/// contiguous (or broadcast) in every input, with a static extent of whole
/// AVX-512 vectors that is at most one chunk or whole chunks.
bool isRowReduction(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInits() != 1 ||
      op.getNumReductionLoops() != 1 || op.getNumLoops() < 2)
    return false;
  unsigned inner = op.getNumLoops() - 1;
  if (!linalg::isReductionIterator(op.getIteratorTypesArray()[inner]))
    return false;
  if (!isInnerLoopContiguous(op))
    return false;
  AffineExpr innerExpr = getAffineDimExpr(inner, op.getContext());
  if (llvm::is_contained(op.getIndexingMapsArray().back().getResults(),
                         innerExpr))
    return false;
  int64_t extent = op.getStaticLoopRanges()[inner];
  return !ShapedType::isDynamic(extent) && extent % 16 == 0 &&
         (extent <= kReductionChunk || extent % kReductionChunk == 0);
}

/// A column reduction vectorized here: the parallel loop `loop` that every
/// operand has as its innermost dimension (contiguous) or lacks
/// (broadcast), and `width` elements of it taken at a time.
struct ColumnTile {
  unsigned loop;
  int64_t width;
};

/// Whether `op` reduces along loops other than its rows' contiguous one (a
/// softmax's maxima and sums over tokens with one column per slot, a
/// column norm), and how it is vectorized: every reduction step adds one
/// row of `width` columns into their accumulators, so each column still
/// takes its terms in order. The loop is one with a static extent of whole
/// AVX-512 vectors, taken whole up to kReductionChunk elements and in
/// segments of kSegment beyond; the result's innermost dimension is that
/// loop. Matrix products are not column reductions here.
std::optional<ColumnTile> getColumnTile(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInits() != 1 ||
      op.getNumReductionLoops() == 0 || op.getNumLoops() < 2)
    return std::nullopt;
  // Matrix products, and the edge tiles switchyard-tile-matmuls leaves, are
  // that pass's: an edge tile multiplies and adds with one rounding, which
  // a vector.multi_reduction would split in two.
  if (linalg::isaContractionOpInterface(op))
    return std::nullopt;
  AffineMap out = op.getIndexingMapsArray().back();
  if (out.getNumResults() == 0)
    return std::nullopt;
  auto loop = dyn_cast<AffineDimExpr>(out.getResults().back());
  if (!loop)
    return std::nullopt;
  unsigned p = loop.getPosition();
  if (!isLoopContiguous(op, p))
    return std::nullopt;
  int64_t extent = op.getStaticLoopRanges()[p];
  if (ShapedType::isDynamic(extent) || extent % 16 != 0)
    return std::nullopt;
  if (extent <= kReductionChunk)
    return ColumnTile{p, extent};
  if (extent % kSegment == 0)
    return ColumnTile{p, kSegment};
  return std::nullopt;
}

/// Whether `op` is a column reduction tiled for vectorization: every loop
/// of extent 1 but the innermost, its column loop.
bool isColumnTile(linalg::GenericOp op) {
  std::optional<ColumnTile> column = getColumnTile(op);
  if (!column || column->loop != op.getNumLoops() - 1)
    return false;
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  return llvm::all_of(ArrayRef<int64_t>(ranges).drop_back(),
                      [](int64_t extent) { return extent == 1; });
}

/// Elements from which an op's segments run as parallel tasks.
constexpr int64_t kParallelElements = 1 << 15;

/// Whether `op` has at least kParallelElements iterations (a dynamic extent
/// counts as large).
bool isLarge(linalg::GenericOp op) {
  int64_t elements = 1;
  for (int64_t extent : op.getStaticLoopRanges()) {
    if (ShapedType::isDynamic(extent))
      return true;
    elements *= extent;
  }
  return elements >= kParallelElements;
}

/// Gives `op` a tensor.empty init when its payload does not read the init:
/// every element is written, so the init's values are dead.
void dropUnreadInit(RewriterBase &rewriter, linalg::GenericOp op) {
  OpOperand *init = op.getDpsInitOperand(0);
  if (op.payloadUsesValueFromOperand(init) ||
      init->get().getDefiningOp<tensor::EmptyOp>())
    return;
  rewriter.setInsertionPoint(op);
  Value empty = tensor::EmptyOp::create(
      rewriter, op.getLoc(),
      tensor::getMixedSizes(rewriter, op.getLoc(), init->get()),
      getElementTypeOrSelf(init->get().getType()));
  rewriter.modifyOpInPlace(op, [&] { init->set(empty); });
}

/// Tiles `target` by `sizes` (scf.forall loops when `parallel`, scf.for
/// otherwise), replaces it, folds the tiled op's sizes to constants with
/// `folds`, and returns the tiled op; `what` names the tiling in the error.
FailureOr<Operation *> tileAndFold(RewriterBase &rewriter, Operation *target,
                                   ArrayRef<int64_t> sizes, bool parallel,
                                   const FrozenRewritePatternSet &folds,
                                   StringRef what) {
  scf::SCFTilingOptions options;
  options.setTileSizes(getAsIndexOpFoldResult(target->getContext(), sizes));
  if (parallel)
    options.setLoopType(scf::SCFTilingOptions::LoopType::ForallOp);
  FailureOr<scf::SCFTilingResult> tiled =
      switchyard::tileOnce(rewriter, target, options, what);
  if (failed(tiled))
    return failure();
  Operation *tiledOp = tiled->tiledOps.front();
  (void)applyOpPatternsGreedily(SmallVector<Operation *>{tiledOp}, folds);
  return tiledOp;
}

/// Tiles the column reduction `op` into rows of `column.width` columns:
/// its column loop goes innermost, its other parallel loops take one step
/// a tile (parallel tasks when `op` is large), and its reduction loops take
/// one step at a time in sequential loops that carry the accumulators.
LogicalResult tileColumnReduction(RewriterBase &rewriter, linalg::GenericOp op,
                                  ColumnTile column,
                                  const FrozenRewritePatternSet &folds) {
  unsigned numLoops = op.getNumLoops();
  if (column.loop != numLoops - 1) {
    SmallVector<unsigned> order;
    for (unsigned d = 0; d < numLoops; ++d)
      if (d != column.loop)
        order.push_back(d);
    order.push_back(column.loop);
    FailureOr<linalg::GenericOp> interchanged =
        linalg::interchangeGenericOp(rewriter, op, order);
    if (failed(interchanged))
      return op.emitError("cannot interchange a column reduction's loops");
    op = *interchanged;
  }
  SmallVector<utils::IteratorType> iterators = op.getIteratorTypesArray();
  SmallVector<int64_t> rows(numLoops, 0), steps(numLoops, 0);
  for (unsigned d = 0; d + 1 < numLoops; ++d)
    (linalg::isReductionIterator(iterators[d]) ? steps : rows)[d] = 1;
  rows.back() = column.width;
  // Parallel loops first (a forall may not carry the reduction), then the
  // reduction loops inside each task. A single row of columns (a column
  // norm) is one sequential loop.
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  bool oneTask = ranges.back() == column.width;
  for (unsigned d = 0; d + 1 < numLoops; ++d)
    if (rows[d] && ranges[d] != 1)
      oneTask = false;
  FailureOr<Operation *> tiled =
      tileAndFold(rewriter, op, rows, isLarge(op) && !oneTask, folds,
                  "a column reduction into rows");
  if (failed(tiled))
    return failure();
  return success(succeeded(tileAndFold(rewriter, *tiled, steps,
                                       /*parallel=*/false, folds,
                                       "a column reduction's steps")));
}

struct VectorizeElementwisePass
    : switchyard::impl::SwitchyardVectorizeElementwiseBase<
          VectorizeElementwisePass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    MLIRContext *ctx = &getContext();
    // (op, segment width); a width of 0 tiles a row reduction by rows.
    SmallVector<std::pair<linalg::GenericOp, int64_t>> ops;
    SmallVector<std::pair<linalg::GenericOp, ColumnTile>> columns;
    func.walk([&](linalg::GenericOp op) {
      // An op with an empty loop computes nothing (and tiling an empty
      // extent by 0 would mean "do not tile").
      if (llvm::is_contained(op.getStaticLoopRanges(), 0))
        return;
      if (int64_t width = segmentWidth(op))
        ops.push_back({op, width});
      else if (isRowReduction(op))
        ops.push_back({op, 0});
      else if (std::optional<ColumnTile> column = getColumnTile(op))
        columns.push_back({op, *column});
    });
    // Folds the tile sizes of each segment to constants, so that its shape
    // is static.
    RewritePatternSet foldPatterns(ctx);
    for (StringRef name : {"affine.min", "affine.apply",
                           "tensor.extract_slice", "tensor.insert_slice"})
      if (auto info = RegisteredOperationName::lookup(name, ctx))
        info->getCanonicalizationPatterns(foldPatterns, ctx);
    FrozenRewritePatternSet folds(std::move(foldPatterns));
    IRRewriter rewriter(ctx);
    for (auto [op, width] : ops) {
      if (width)
        dropUnreadInit(rewriter, op);
      unsigned numLoops = op.getNumLoops();
      // A long row reduction is reduced a chunk at a time.
      bool chunked =
          !width && op.getStaticLoopRanges().back() > kReductionChunk;
      SmallVector<int64_t> sizes(numLoops, 1);
      sizes.back() = width;
      // Segments of a large op are independent tasks (norms and residual
      // additions over every token); a small one stays a sequential loop,
      // cheaper than starting a parallel region.
      FailureOr<Operation *> segment =
          tileAndFold(rewriter, op, sizes, isLarge(op), folds,
                      "an elementwise op into row segments");
      if (failed(segment))
        return signalPassFailure();
      // A long row reduction: a sequential loop over its chunks, carrying
      // the row's accumulator.
      if (chunked) {
        SmallVector<int64_t> chunkSizes(numLoops, 0);
        chunkSizes.back() = kReductionChunk;
        if (failed(tileAndFold(rewriter, *segment, chunkSizes,
                               /*parallel=*/false, folds,
                               "a row reduction into chunks")))
          return signalPassFailure();
      }
    }
    for (auto [op, column] : columns)
      if (failed(tileColumnReduction(rewriter, op, column, folds)))
        return signalPassFailure();
    // Vectorize the segments whose shapes are static; a segment the
    // vectorizer does not support stays scalar.
    SmallVector<linalg::GenericOp> segments;
    func.walk([&](linalg::GenericOp op) {
      if ((segmentWidth(op) || isRowReduction(op) || isColumnTile(op)) &&
          !op.hasDynamicShape())
        segments.push_back(op);
    });
    for (linalg::GenericOp op : segments) {
      rewriter.setInsertionPoint(op);
      FailureOr<linalg::VectorizationResult> vectorized =
          linalg::vectorize(rewriter, op, /*inputVectorSizes=*/{},
                            /*inputScalableVecDims=*/{},
                            /*vectorizeNDExtract=*/true);
      if (succeeded(vectorized))
        rewriter.replaceOp(op, vectorized->replacements);
    }
  }
};

} // namespace
