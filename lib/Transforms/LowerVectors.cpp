//===- LowerVectors.cpp - Accumulators in registers, contractions to FMAs -===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Transforms/Passes.h"

#include "Tiling.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Conversion/VectorToSCF/VectorToSCF.h"
#include "mlir/Dialect/AMX/AMXDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Hoisting.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Utils/MemRefUtils.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Dialect/X86Vector/X86VectorDialect.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace switchyard {
#define GEN_PASS_DEF_SWITCHYARDLOWERVECTORS
#include "switchyard/Transforms/Passes.h.inc"
} // namespace switchyard

using namespace mlir;
using switchyard::kAmxTile;
using switchyard::kPrefetchNextPanel;
using switchyard::kReductionPanels;
using switchyard::kStreamedWeights;

namespace {

/// The cache line of the x86 and Arm cores we target.
constexpr int64_t kCacheLineBytes = 64;

/// How far ahead (in bytes of its rows) a register tile's reduction loop
/// prefetches its wide operand, the first cache line of each row. Measured on
/// the Soft MoE B/16 block (bound by reading its weights), B=8, 32-column
/// rows: bf16 (64-byte rows): none 136 ms, 4 rows ahead 118, 8 rows 110, 16
/// rows 102, 32 rows 95, 64 rows 98; f32 (128-byte rows): none 165-171 ms, 4
/// rows 168, 8 rows 155-160, 16 rows 168-172, 32 rows 165. Those were on an
/// Intel Xeon; on an AMD EPYC (Zen 5) bf16 measured none 80-83 ms, 16 rows
/// 66-69, 32 rows 58-63, 64 rows 51-59, 128 rows 49-56, and f32 showed no
/// trend between 8 and 64 rows (74-96 ms, within its noise). 64 rows ahead in
/// bf16 costs the Xeon 3% and gains the EPYC 10%.
int64_t prefetchBytes(Type elementType) {
  return elementType.getIntOrFloatBitWidth() >= 32 ? 1024 : 4096;
}

/// How far ahead the register tiles of streamed products (marked
/// kStreamedWeights: blocks of few rows, bound by reading their weights)
/// prefetch, every cache line of each row. Measured on an Intel Xeon (2
/// threads, 8 rows, f32 weights packed [N/32, K, 32]; bench/kernels/
/// stream_prefetch.c): first lines 1 KiB ahead 11.7-13.4 GB/s, every line
/// 1 KiB ahead 12.6-14.6, 4 KiB ahead 15.9-16.4, 8 KiB ahead 16.3-17.6, with
/// the machine's plain read at 17.0. In compute-bound products the same
/// distance was slower (top-2 and expert choice), so they keep
/// prefetchBytes.
constexpr int64_t kStreamedPrefetchBytes = 4096;

/// Whether `inner` is inside a streamed product's loops.
bool isStreamed(Operation *inner) {
  for (Operation *op = inner; op; op = op->getParentOp())
    if (op->hasAttr(kStreamedWeights))
      return true;
  return false;
}

/// The innermost loops that feed FMAs (or bf16 dot products): the
/// reduction loops of register tiles.
SmallVector<scf::ForOp> reductionLoops(func::FuncOp func) {
  SmallVector<scf::ForOp> loops;
  func.walk([&](scf::ForOp loop) {
    bool fma = false, nested = false;
    loop.getBody()->walk([&](Operation *op) {
      fma |= isa<vector::FMAOp, x86vector::DotBF16Op>(op);
      nested |= isa<LoopLikeOpInterface>(op);
    });
    if (fma && !nested)
      loops.push_back(loop);
  });
  return loops;
}

/// Whether `slice` (or `op` itself) reads `value`.
bool readsValue(const SetVector<Operation *> &slice, Operation *op,
                Value value) {
  auto reads = [&](Operation *o) {
    return llvm::is_contained(o->getOperands(), value);
  };
  return reads(op) || llvm::any_of(slice, reads);
}

/// The bytes a vector load reads.
int64_t bytesRead(vector::LoadOp load) {
  VectorType type = load.getVectorType();
  return type.getNumElements() * type.getElementTypeBitWidth() / 8;
}

/// The backward slice of `op`'s operands inside `scope`, not through block
/// arguments (the induction variables of the loops around `op` stay).
SetVector<Operation *> addressSlice(Operation *op, Operation *scope) {
  BackwardSliceOptions options;
  options.inclusive = false;
  options.omitBlockArguments = true;
  options.filter = [&](Operation *o) { return scope->isProperAncestor(o); };
  SetVector<Operation *> slice;
  if (failed(getBackwardSlice(op, &slice, options)))
    return {};
  return slice;
}

/// Prefetches, at `b`'s insertion point, the `bytes` from `base[indices]`
/// (`op`'s base and indices, or new indices) that `op` would read when the
/// induction variables of the loops in `ivs` (all inside `scope`) took the
/// values they map to: clones what computes the address inside `scope`.
/// Returns false when the address depends on none of those variables.
bool prefetchAt(OpBuilder &b, Operation *op, Value base, ValueRange indices,
                int64_t bytes, Operation *scope, const IRMapping &ivs) {
  SetVector<Operation *> slice = addressSlice(op, scope);
  if (llvm::none_of(ivs.getValueMap(), [&](auto pair) {
        return readsValue(slice, op, pair.first);
      }))
    return false;
  IRMapping mapping = ivs;
  for (Operation *o : slice)
    b.clone(*o, mapping);
  SmallVector<Value> at = llvm::map_to_vector(
      indices, [&](Value index) { return mapping.lookupOrDefault(index); });
  int64_t elementBytes =
      cast<MemRefType>(base.getType()).getElementTypeBitWidth() / 8;
  int64_t lineElements = kCacheLineBytes / elementBytes;
  Location loc = op->getLoc();
  Value first = at.back();
  int64_t lines = llvm::divideCeil(bytes, kCacheLineBytes);
  for (int64_t line = 0; line < lines; ++line) {
    if (line)
      at.back() = arith::AddIOp::create(
          b, loc, first,
          arith::ConstantIndexOp::create(b, loc, line * lineElements));
    memref::PrefetchOp::create(b, loc, mapping.lookupOrDefault(base), at,
                               /*isWrite=*/false,
                               /*localityHint=*/3, /*isDataCache=*/true);
  }
  return true;
}

/// Prefetches every cache line `load` reads (or only the first, with
/// `firstLineOnly`) in iteration `next` of `loop` instead of its own.
bool prefetchInIteration(OpBuilder &b, vector::LoadOp load, scf::ForOp loop,
                         Value next, bool firstLineOnly = false) {
  IRMapping ivs;
  ivs.map(loop.getInductionVar(), next);
  return prefetchAt(b, load, load.getBase(), load.getIndices(),
                    firstLineOnly ? 1 : bytesRead(load), loop, ivs);
}

/// In every innermost loop that feeds FMAs (the reduction loop of a register
/// tile), prefetches what each wide vector load (a cache line or more: a row
/// of the right operand) will read prefetchBytes of its rows later. Packed
/// weights are read in order, so that is the data the loop needs next; the
/// hardware prefetchers alone leave a block of few rows waiting on memory.
void prefetchWideLoads(func::FuncOp func) {
  for (scf::ForOp loop : reductionLoops(func)) {
    SmallVector<vector::LoadOp> loads;
    loop.getBody()->walk([&](vector::LoadOp load) {
      if (bytesRead(load) >= kCacheLineBytes)
        loads.push_back(load);
    });
    if (loads.empty())
      continue;
    OpBuilder b(loop.getBody(), loop.getBody()->begin());
    Location loc = loop.getLoc();
    bool streamed = isStreamed(loop);
    for (vector::LoadOp load : loads) {
      int64_t rowBytes = bytesRead(load);
      int64_t distance =
          streamed ? kStreamedPrefetchBytes
                   : prefetchBytes(load.getVectorType().getElementType());
      b.setInsertionPointToStart(loop.getBody());
      Value ahead = arith::AddIOp::create(
          b, loc, loop.getInductionVar(),
          arith::MulIOp::create(
              b, loc, loop.getStep(),
              arith::ConstantIndexOp::create(
                  b, loc, std::max<int64_t>(1, distance / rowBytes))));
      // In compute-bound products, the first line of each row only: the
      // hardware's adjacent-line prefetch brings the second line of an f32
      // row. Prefetching it as well measured no faster there (Soft MoE B/16
      // 68.5 against 71.0 ms, expert choice 105.6 against 105.9 ms, on the
      // Zen 5). Streamed products prefetch every line (see
      // kStreamedPrefetchBytes).
      b.setInsertionPoint(load);
      (void)prefetchInIteration(b, load, loop, ahead,
                                /*firstLineOnly=*/!streamed);
    }
  }
}

/// While a register tile runs its reduction loop, prefetches the
/// accumulator rows of the next tile of the loop around it (loaded before
/// its reduction loop). They are a block's partial sums, in the L2 cache or
/// memory; without the prefetch every tile starts by waiting on them.
/// Measured on the expert-choice block (B=4, S=512, D=768, F=3072, E=8), one
/// thread: 212 to 202 ms; two threads: 114 to 105 ms. Prefetching the next
/// tile's packed rows as well, step by step, gained nothing.
void prefetchNextAccumulators(func::FuncOp func) {
  for (scf::ForOp reduction : reductionLoops(func)) {
    auto tiles = dyn_cast<scf::ForOp>(reduction->getParentOp());
    if (!tiles)
      continue;
    SmallVector<vector::LoadOp> accumulators;
    for (Operation &op : *tiles.getBody()) {
      if (&op == reduction.getOperation())
        break;
      if (auto load = dyn_cast<vector::LoadOp>(op))
        accumulators.push_back(load);
    }
    if (accumulators.empty())
      continue;
    // Only when there is a next tile: a loop of one tile (a block of few
    // rows) would read past its buffer for nothing.
    OpBuilder b(reduction);
    Location loc = tiles.getLoc();
    Value next =
        arith::AddIOp::create(b, loc, tiles.getInductionVar(), tiles.getStep());
    Value more = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, next,
                                       tiles.getUpperBound());
    auto ifMore = scf::IfOp::create(b, loc, more, /*withElseRegion=*/false);
    b.setInsertionPoint(ifMore.thenBlock()->getTerminator());
    bool any = false;
    for (vector::LoadOp load : accumulators)
      any |= prefetchInIteration(b, load, tiles, next);
    if (!any) {
      ifMore.erase();
      more.getDefiningOp()->erase();
      next.getDefiningOp()->erase();
    }
  }
}

/// The loops of switchyard-tile-matmuls' compute-bound packed products are
/// reduction panels, column tiles and row tiles (marked
/// `switchyard.prefetch_next_panel`), around a register tile: a reduction
/// loop of FMAs, or AMX tile operations. A weight panel (what the tile reads
/// depending on the column tile but not on the row tile) stays in the L1
/// cache while every row tile passes over it, so the hardware prefetchers
/// see no stream to follow into the next panel, and its first row tile
/// waits on memory. So each row tile prefetches its share of the next
/// panel's rows: the next column tile's, or past the last, the first column
/// tile's in the next reduction panel.
void prefetchNextPanel(func::FuncOp func) {
  SmallVector<scf::ForOp> rowLoops;
  func.walk([&](scf::ForOp loop) {
    if (loop->hasAttr(kPrefetchNextPanel))
      rowLoops.push_back(loop);
  });
  for (scf::ForOp rows : rowLoops) {
    rows->removeAttr(kPrefetchNextPanel);
    auto columns = dyn_cast<scf::ForOp>(rows->getParentOp());
    if (!columns)
      continue;
    // The loop over reduction panels, marked by switchyard-tile-matmuls;
    // none around a first panel it peeled (whose loop of one iteration was
    // folded away): there the last column tile prefetches nothing.
    auto panels = dyn_cast<scf::ForOp>(columns->getParentOp());
    if (panels && !panels->hasAttr(kReductionPanels))
      panels = nullptr;
    Operation *scope = panels ? panels.getOperation() : columns->getParentOp();
    auto readsWeights = [&](Operation *op) {
      SetVector<Operation *> slice = addressSlice(op, scope);
      return readsValue(slice, op, columns.getInductionVar()) &&
             !readsValue(slice, op, rows.getInductionVar());
    };
    // The panel's rows, and for row `r` the loads to prefetch with their
    // base, indices, bytes and induction variables.
    int64_t steps = 0;
    std::function<void(OpBuilder &, Value, IRMapping &)> prefetchRow;
    scf::ForOp reduction;
    for (Operation &op : *rows.getBody())
      if (auto loop = dyn_cast<scf::ForOp>(op))
        reduction = loop;
    SmallVector<vector::LoadOp> vectorLoads;
    SmallVector<amx::TileLoadOp> tileLoads;
    if (reduction) {
      // FMAs (or dot products): the wide loads of the reduction loop, a row
      // of the panel a step.
      if (std::optional<APInt> trips = reduction.getStaticTripCount())
        steps = trips->getSExtValue();
      reduction.getBody()->walk([&](vector::LoadOp load) {
        if (bytesRead(load) >= kCacheLineBytes && readsWeights(load))
          vectorLoads.push_back(load);
      });
      prefetchRow = [&](OpBuilder &b, Value row, IRMapping &ivs) {
        Location loc = reduction.getLoc();
        ivs.map(reduction.getInductionVar(),
                arith::AddIOp::create(
                    b, loc, reduction.getLowerBound(),
                    arith::MulIOp::create(b, loc, row, reduction.getStep())));
        for (vector::LoadOp load : vectorLoads)
          (void)prefetchAt(b, load, load.getBase(), load.getIndices(),
                           bytesRead(load), scope, ivs);
      };
    } else {
      // AMX: the weight tiles load from one panel, [rows, pairs], whose
      // rows (a reduction step's pairs of 32 columns) follow each other.
      for (auto load : rows.getBody()->getOps<amx::TileLoadOp>())
        if (readsWeights(load))
          tileLoads.push_back(load);
      if (!tileLoads.empty()) {
        auto type = cast<MemRefType>(tileLoads.front().getBase().getType());
        if (type.getRank() == 2 && type.hasStaticShape() &&
            llvm::all_of(tileLoads, [&](amx::TileLoadOp load) {
              return load.getBase() == tileLoads.front().getBase();
            }))
          steps = type.getDimSize(0);
      }
      prefetchRow = [&](OpBuilder &b, Value row, IRMapping &ivs) {
        amx::TileLoadOp load = tileLoads.front();
        auto type = cast<MemRefType>(load.getBase().getType());
        Value zero = arith::ConstantIndexOp::create(b, load.getLoc(), 0);
        (void)prefetchAt(b, load, load.getBase(), {row, zero},
                         type.getDimSize(1) * type.getElementTypeBitWidth() / 8,
                         scope, ivs);
      };
    }
    if (steps <= 0 || (vectorLoads.empty() && tileLoads.empty()))
      continue;

    OpBuilder b(rows.getBody(), rows.getBody()->begin());
    if (reduction)
      b.setInsertionPoint(reduction);
    Location loc = rows.getLoc();
    auto c = [&](int64_t v) {
      return arith::ConstantIndexOp::create(b, loc, v);
    };
    // The next (panel, column tile) iteration.
    Value nextColumn = arith::AddIOp::create(b, loc, columns.getInductionVar(),
                                             columns.getStep());
    Value wraps = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge,
                                        nextColumn, columns.getUpperBound());
    Value column = arith::SelectOp::create(b, loc, wraps,
                                           columns.getLowerBound(), nextColumn);
    Value panel, more;
    if (panels) {
      panel = arith::SelectOp::create(
          b, loc, wraps,
          arith::AddIOp::create(b, loc, panels.getInductionVar(),
                                panels.getStep()),
          panels.getInductionVar());
      more = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, panel,
                                   panels.getUpperBound());
    } else {
      more = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                   nextColumn, columns.getUpperBound());
    }
    // This row tile's share of the panel's rows.
    Value rowTiles = arith::CeilDivUIOp::create(
        b, loc,
        arith::SubIOp::create(b, loc, rows.getUpperBound(),
                              rows.getLowerBound()),
        rows.getStep());
    Value rowTile = arith::DivUIOp::create(
        b, loc,
        arith::SubIOp::create(b, loc, rows.getInductionVar(),
                              rows.getLowerBound()),
        rows.getStep());
    Value share = arith::CeilDivUIOp::create(b, loc, c(steps), rowTiles);
    Value first = arith::MulIOp::create(b, loc, rowTile, share);
    Value last = arith::MinUIOp::create(
        b, loc, arith::AddIOp::create(b, loc, first, share), c(steps));
    auto ifMore = scf::IfOp::create(b, loc, more, /*withElseRegion=*/false);
    b.setInsertionPoint(ifMore.thenBlock()->getTerminator());
    auto each = scf::ForOp::create(b, loc, first, last, c(1));
    b.setInsertionPoint(each.getBody()->getTerminator());
    IRMapping ivs;
    ivs.map(columns.getInductionVar(), column);
    if (panels)
      ivs.map(panels.getInductionVar(), panel);
    prefetchRow(b, each.getInductionVar(), ivs);
  }
  func.walk([](scf::ForOp loop) { loop->removeAttr(kReductionPanels); });
}

/// Lowers the register tiles of products on AMX tiles
/// (switchyard-tile-matmuls' `switchyard.amx_tile`, bufferized: rows
/// [1, P, 8, 16, 2], 8 rows by 32 reduction steps a block; weights
/// [1, P, 16, 32, 2], 16 pairs by 32 columns a block; sums [1, 1, 8, 32])
/// to AMX: the sums in two 8x16 f32 tiles, loaded once, then for each of
/// the P blocks one 8x32 tile of rows, two 16x32 tiles of weight pairs and
/// two tile products (tdpbf16ps), and the sums stored back. The blocks are
/// unrolled: LLVM keeps tiles in registers within a block of code.
LogicalResult lowerAmxTiles(func::FuncOp func) {
  SmallVector<linalg::GenericOp> tiles;
  func.walk([&](linalg::GenericOp op) {
    if (op->hasAttr(kAmxTile))
      tiles.push_back(op);
  });
  for (linalg::GenericOp op : tiles) {
    if (!op.hasPureBufferSemantics() || op.getNumDpsInputs() != 2)
      return op.emitError("an AMX register tile that is not bufferized");
    Value rows = op.getDpsInputOperand(0)->get();
    Value weights = op.getDpsInputOperand(1)->get();
    Value sums = op.getDpsInitOperand(0)->get();
    auto rowsType = cast<MemRefType>(rows.getType());
    int64_t blocks = rowsType.getDimSize(1);
    if (!rowsType.hasStaticShape() ||
        rowsType.getShape() != ArrayRef<int64_t>{1, blocks, 8, 16, 2} ||
        cast<MemRefType>(weights.getType()).getShape() !=
            ArrayRef<int64_t>{1, blocks, 16, 32, 2} ||
        cast<MemRefType>(sums.getType()).getShape() !=
            ArrayRef<int64_t>{1, 1, 8, 32})
      return op.emitError("an AMX register tile of an unexpected shape");
    OpBuilder b(op);
    Location loc = op.getLoc();
    // 2-D views whose rows are the tiles' rows: rows [P * 8, 32], weights
    // [P * 16, 64] (32 columns in pairs), sums [8, 32].
    auto collapse = [&](Value v, SmallVector<ReassociationIndices> groups) {
      return memref::CollapseShapeOp::create(b, loc, v, groups).getResult();
    };
    Value rows2 = collapse(rows, {{0, 1, 2}, {3, 4}});
    Value weights2 = collapse(weights, {{0, 1, 2}, {3, 4}});
    Value sums2 = collapse(sums, {{0, 1, 2}, {3}});
    Type bf16 = b.getBF16Type(), f32 = b.getF32Type();
    auto sumsTile = amx::TileType::get({8, 16}, f32);
    auto rowsTile = amx::TileType::get({8, 32}, bf16);
    auto pairsTile = amx::TileType::get({16, 32}, bf16);
    auto index = [&](int64_t i) {
      return arith::ConstantIndexOp::create(b, loc, i).getResult();
    };
    Value left = amx::TileLoadOp::create(b, loc, sumsTile, sums2,
                                         ValueRange{index(0), index(0)});
    Value right = amx::TileLoadOp::create(b, loc, sumsTile, sums2,
                                          ValueRange{index(0), index(16)});
    // A streamed product's weights are read in memory order, panel after
    // panel of a column tile, and its few rows leave the hardware
    // prefetchers behind: each block prefetches every line of the weight
    // rows kStreamedPrefetchBytes ahead. Past the tile's last block that is
    // the next panel, or the next column tile's first, which follow it in
    // memory as in time (the addresses are computed as in the view, beyond
    // its extent; a prefetch does not fault).
    bool streamed = isStreamed(op);
    int64_t rowBytes = 64 * 2;
    int64_t aheadRows = kStreamedPrefetchBytes / rowBytes;
    for (int64_t block = 0; block < blocks; ++block) {
      if (streamed)
        for (int64_t row = 0; row < 16; ++row)
          for (int64_t line = 0; line < rowBytes / kCacheLineBytes; ++line)
            memref::PrefetchOp::create(
                b, loc, weights2,
                ValueRange{index(block * 16 + aheadRows + row),
                           index(line * kCacheLineBytes / 2)},
                /*isWrite=*/false, /*localityHint=*/3, /*isDataCache=*/true);
      Value a = amx::TileLoadOp::create(b, loc, rowsTile, rows2,
                                        ValueRange{index(block * 8), index(0)});
      Value w0 = amx::TileLoadOp::create(
          b, loc, pairsTile, weights2, ValueRange{index(block * 16), index(0)});
      Value w1 =
          amx::TileLoadOp::create(b, loc, pairsTile, weights2,
                                  ValueRange{index(block * 16), index(32)});
      left = amx::TileMulFOp::create(b, loc, sumsTile, a, w0, left);
      right = amx::TileMulFOp::create(b, loc, sumsTile, a, w1, right);
    }
    amx::TileStoreOp::create(b, loc, sums2, ValueRange{index(0), index(0)},
                             left);
    amx::TileStoreOp::create(b, loc, sums2, ValueRange{index(0), index(16)},
                             right);
    op.erase();
  }
  return success();
}

/// `v` (an n-D vector) as a 1-D vector of its elements in order. When `v`
/// is the whole of a contiguous buffer, read by vector.transfer_read, the
/// buffer is read as one 1-D vector instead: lowered as it is, an n-D
/// transfer becomes one load per row, and a register tile's pairs would be
/// read two elements at a time and put back together.
Value flatten(PatternRewriter &rewriter, Location loc, Value v) {
  auto type = cast<VectorType>(v.getType());
  auto flatType =
      VectorType::get({type.getNumElements()}, type.getElementType());
  auto read = v.getDefiningOp<vector::TransferReadOp>();
  auto memref =
      read ? dyn_cast<MemRefType>(read.getBase().getType()) : MemRefType();
  if (memref && memref.getShape() == type.getShape() &&
      read.getPermutationMap().isMinorIdentity() && !read.getMask() &&
      llvm::all_of(read.getIndices(),
                   [](Value i) { return isConstantIntValue(i, 0); }) &&
      memref::isStaticShapeAndContiguousRowMajor(memref)) {
    ReassociationIndices all =
        llvm::to_vector(llvm::seq<int64_t>(0, memref.getRank()));
    Value buffer = memref::CollapseShapeOp::create(
        rewriter, loc, read.getBase(), SmallVector<ReassociationIndices>{all});
    return vector::LoadOp::create(
        rewriter, loc, flatType, buffer,
        ValueRange{arith::ConstantIndexOp::create(rewriter, loc, 0)});
  }
  return vector::ShapeCastOp::create(rewriter, loc, flatType, v);
}

/// Gathers from a memref.cast that only makes the layout more dynamic read
/// the cast's source instead: convert-vector-to-llvm lowers a gather only
/// from a memref whose innermost stride is known to be 1 (a loop-carried
/// buffer in a function of several blocks bufferized to such a cast).
struct FoldCastIntoGather : OpRewritePattern<vector::GatherOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(vector::GatherOp op,
                                PatternRewriter &rewriter) const override {
    auto cast = op.getBase().getDefiningOp<memref::CastOp>();
    if (!cast || !memref::CastOp::canFoldIntoConsumerOp(cast))
      return failure();
    rewriter.modifyOpInPlace(
        op, [&] { op.getBaseMutable().assign(cast.getSource()); });
    return success();
  }
};

/// A contraction in pairs, `acc[i, j] += lhs[i, p] * rhs[j, p]` over
/// `vector<Mx2xbf16>` and `vector<Nx2xbf16>` into `vector<MxNxf32>` (a
/// register tile of a product in pairs), as one AVX-512 BF16 dot product
/// per row i and 16 columns: lhs's pair (i, 0..1) broadcast to every lane,
/// rhs's 16 columns' pairs, the row's 16 f32 sums.
struct ContractPairsToDotBF16 : OpRewritePattern<vector::ContractionOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(vector::ContractionOp op,
                                PatternRewriter &rewriter) const override {
    auto lhsType = op.getLhsType(), rhsType = op.getRhsType();
    auto accType = dyn_cast<VectorType>(op.getAccType());
    MLIRContext *ctx = op.getContext();
    AffineExpr i = getAffineDimExpr(0, ctx), j = getAffineDimExpr(1, ctx),
               p = getAffineDimExpr(2, ctx);
    SmallVector<AffineMap> maps = op.getIndexingMapsArray();
    if (op.getKind() != vector::CombiningKind::ADD || !accType ||
        !lhsType.getElementType().isBF16() ||
        !rhsType.getElementType().isBF16() ||
        !accType.getElementType().isF32() || lhsType.getRank() != 2 ||
        rhsType.getRank() != 2 || accType.getRank() != 2 ||
        lhsType.getDimSize(1) != 2 || rhsType.getDimSize(1) != 2 ||
        rhsType.getDimSize(0) % 16 != 0 || lhsType.isScalable() ||
        rhsType.isScalable() ||
        maps != SmallVector<AffineMap>{AffineMap::get(3, 0, {i, p}, ctx),
                                       AffineMap::get(3, 0, {j, p}, ctx),
                                       AffineMap::get(3, 0, {i, j}, ctx)})
      return rewriter.notifyMatchFailure(op, "not a contraction in pairs");
    Location loc = op.getLoc();
    int64_t rows = lhsType.getDimSize(0), cols = rhsType.getDimSize(0);
    Type bf16 = rewriter.getBF16Type(), f32 = rewriter.getF32Type();
    auto pairsType = VectorType::get({32}, bf16);
    auto sumsType = VectorType::get({16}, f32);
    // rhs's columns 16 at a time, each a vector<32xbf16> of pairs.
    Value rhsFlat = flatten(rewriter, loc, op.getRhs());
    SmallVector<Value> columns;
    for (int64_t c = 0; c < cols; c += 16)
      columns.push_back(vector::ExtractStridedSliceOp::create(
          rewriter, loc, rhsFlat, ArrayRef<int64_t>{2 * c},
          ArrayRef<int64_t>{32}, ArrayRef<int64_t>{1}));
    // lhs's rows, each pair as one i32.
    Value lhsPairs = vector::BitCastOp::create(
        rewriter, loc, VectorType::get({rows}, rewriter.getI32Type()),
        flatten(rewriter, loc, op.getLhs()));
    Value result = op.getAcc();
    for (int64_t r = 0; r < rows; ++r) {
      Value pair = vector::ExtractOp::create(rewriter, loc, lhsPairs, r);
      Value broadcast = vector::BitCastOp::create(
          rewriter, loc, pairsType,
          vector::BroadcastOp::create(
              rewriter, loc, VectorType::get({16}, rewriter.getI32Type()),
              pair));
      Value row = vector::ExtractOp::create(rewriter, loc, result, r);
      for (auto [c, column] : llvm::enumerate(columns)) {
        int64_t offset = static_cast<int64_t>(c) * 16;
        Value sums = vector::ExtractStridedSliceOp::create(
            rewriter, loc, row, ArrayRef<int64_t>{offset},
            ArrayRef<int64_t>{16}, ArrayRef<int64_t>{1});
        Value dot = x86vector::DotBF16Op::create(rewriter, loc, sumsType, sums,
                                                 broadcast, column);
        row = vector::InsertStridedSliceOp::create(rewriter, loc, dot, row,
                                                   ArrayRef<int64_t>{offset},
                                                   ArrayRef<int64_t>{1});
      }
      result = vector::InsertOp::create(rewriter, loc, row, result, r);
    }
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerVectorsPass
    : switchyard::impl::SwitchyardLowerVectorsBase<LowerVectorsPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    MLIRContext *ctx = &getContext();
    if (failed(lowerAmxTiles(func)))
      return signalPassFailure();

    // Unit dimensions first (the batch and reduction steps of a register
    // tile), so that the accumulator transfers are plain 2-D ones.
    {
      RewritePatternSet patterns(ctx);
      // broadcast + mul + multi_reduction (what linalg vectorization makes
      // of a product) -> vector.contract, which lowers to FMAs.
      vector::populateVectorReductionToContractPatterns(patterns);
      vector::populateCastAwayVectorLeadingOneDimPatterns(patterns);
      vector::populateVectorTransferDropUnitDimsPatterns(patterns);
      vector::populateVectorTransferPermutationMapLoweringPatterns(patterns);
      // extf(broadcast(v)) -> broadcast(extf(v)): a bf16 register tile
      // widens one row and one column a step, not the whole broadcast tile.
      vector::populateSinkVectorOpsPatterns(patterns);
      vector::ContractionOp::getCanonicalizationPatterns(patterns, ctx);
      if (failed(applyPatternsGreedily(func, std::move(patterns))))
        return signalPassFailure();
    }
    // The accumulator tile stays in registers across the reduction loop.
    linalg::hoistRedundantVectorTransfers(func);

    // Contractions in pairs to bf16 dot products, before the others become
    // FMAs.
    {
      RewritePatternSet patterns(ctx);
      patterns.add<ContractPairsToDotBF16, FoldCastIntoGather>(ctx);
      if (failed(applyPatternsGreedily(func, std::move(patterns))))
        return signalPassFailure();
    }

    RewritePatternSet patterns(ctx);
    vector::populateVectorContractLoweringPatterns(
        patterns, vector::VectorContractLowering::ParallelArith);
    vector::populateVectorOuterProductLoweringPatterns(patterns);
    vector::populateVectorTransferPermutationMapLoweringPatterns(patterns);
    // n-D transfers to unrolled 1-D ones, then to loads and stores.
    populateVectorToSCFConversionPatterns(
        patterns, VectorTransferToSCFOptions().enableFullUnroll());
    vector::populateVectorTransferLoweringPatterns(patterns,
                                                   /*maxTransferRank=*/1);
    vector::populateVectorBroadcastLoweringPatterns(patterns);
    vector::populateVectorShapeCastLoweringPatterns(patterns);
    vector::populateVectorMultiReductionLoweringPatterns(
        patterns, vector::VectorMultiReductionLowering::InnerReduction);
    vector::populateVectorTransposeLoweringPatterns(
        patterns, vector::VectorTransposeLowering::EltWise);
    if (failed(applyPatternsGreedily(func, std::move(patterns))))
      return signalPassFailure();
    prefetchWideLoads(func);
    prefetchNextAccumulators(func);
    prefetchNextPanel(func);
    func.walk([](Operation *op) { op->removeAttr(kStreamedWeights); });
  }
};

} // namespace
