//===- Decompose.cpp - Layer level to routing level -----------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// Rewrites each layer-level op of the moe dialect into routing-level ops over
// grouped tokens [NG, G, D] (SEMANTICS.md section 1: a group is routed
// together). Each pattern builds exactly the dataflow of SEMANTICS.md.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/TypeSwitch.h"

namespace switchyard::moe {
#define GEN_PASS_DEF_MOEDECOMPOSE
#include "switchyard/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace switchyard::moe

using namespace mlir;
using namespace switchyard::moe;

namespace {

constexpr int64_t kDynamic = ShapedType::kDynamic;

RankedTensorType tensorType(ArrayRef<int64_t> shape, Type elementType) {
  return RankedTensorType::get(shape, elementType);
}

int64_t mulStatic(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) ? kDynamic
                                                              : a * b;
}

/// Regroups `x : [B, S, D]` into `[NG, G, D]`: one group per sequence, or
/// with `group = batch` one group of all `B * S` tokens.
Value groupTokens(OpBuilder &b, Location loc, Value x, Grouping grouping) {
  if (grouping == Grouping::sequence)
    return x;
  auto type = cast<RankedTensorType>(x.getType());
  Value flat = tensor::CollapseShapeOp::create(
      b, loc, x, SmallVector<ReassociationIndices>{{0, 1}, {2}});
  int64_t tokens = mulStatic(type.getDimSize(0), type.getDimSize(1));
  return tensor::ExpandShapeOp::create(
      b, loc, tensorType({1, tokens, type.getDimSize(2)}, type.getElementType()),
      flat, SmallVector<ReassociationIndices>{{0, 1}, {2}},
      SmallVector<OpFoldResult>{b.getIndexAttr(1),
                                tensor::getMixedSize(b, loc, flat, 0),
                                b.getIndexAttr(type.getDimSize(2))});
}

/// The inverse of groupTokens: `[NG, G, D]` back to the shape of `x`.
Value ungroupTokens(OpBuilder &b, Location loc, Value grouped, Value x,
                    Grouping grouping) {
  if (grouping == Grouping::sequence)
    return grouped;
  Value flat = tensor::CollapseShapeOp::create(
      b, loc, grouped, SmallVector<ReassociationIndices>{{0, 1}, {2}});
  return tensor::ExpandShapeOp::create(
      b, loc, x.getType(), flat, SmallVector<ReassociationIndices>{{0, 1}, {2}},
      tensor::getMixedSizes(b, loc, x));
}

/// Runs `moe.experts` over per-expert buffers `[E, NG, C, D]` by flattening
/// them to `[E, NG * C, D]` and back.
template <typename LayerOp>
Value applyExperts(OpBuilder &b, Location loc, Value buffers, LayerOp layer) {
  auto type = cast<RankedTensorType>(buffers.getType());
  SmallVector<ReassociationIndices> reassociation = {{0}, {1, 2}, {3}};
  Value flat = tensor::CollapseShapeOp::create(b, loc, buffers, reassociation);
  Value out = ExpertsOp::create(b, loc, flat.getType(), flat, layer.getW1(),
                                layer.getWg(), layer.getW2(), layer.getB1(),
                                layer.getB2(), layer.getActivationAttr());
  return tensor::ExpandShapeOp::create(b, loc, type, out, reassociation,
                                       tensor::getMixedSizes(b, loc, buffers));
}

/// A 0-d i64 tensor holding an index value (the capacity statistic).
Value indexToScalarTensor(OpBuilder &b, Location loc, Value index) {
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  return tensor::FromElementsOp::create(
      b, loc, tensorType({}, b.getI64Type()), ValueRange{i64});
}

/// Router logits, probabilities and capacity shared by both routed layers.
struct Router {
  Value logits, probs, capacity;
  int64_t staticCapacity;
};

template <typename LayerOp>
Router buildRouter(OpBuilder &b, Location loc, Value grouped, LayerOp layer,
                   IntegerAttr topK, FloatAttr capacityFactor) {
  auto xType = cast<RankedTensorType>(grouped.getType());
  int64_t numExperts =
      cast<RankedTensorType>(layer.getRouterWeight().getType()).getDimSize(1);
  auto f32 = b.getF32Type();
  auto routerType =
      tensorType({xType.getDimSize(0), xType.getDimSize(1), numExperts}, f32);
  Router router;
  router.logits = RouterLogitsOp::create(b, loc, routerType, grouped,
                                         layer.getRouterWeight(),
                                         layer.getRouterBias(),
                                         layer.getJitterAttr());
  router.probs = RouterProbsOp::create(b, loc, router.logits);
  auto capacity = ExpertCapacityOp::create(
      b, loc, router.probs, topK, capacityFactor, layer.getExpertCapacityAttr(),
      layer.getMinCapacityAttr());
  router.capacity = capacity;
  int64_t groupSize = xType.getDimSize(1);
  router.staticCapacity =
      ShapedType::isDynamic(groupSize)
          ? kDynamic
          : capacity.computeCapacity(groupSize, numExperts);
  return router;
}

struct DecomposeTokenChoice : OpRewritePattern<TokenChoiceOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(TokenChoiceOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value x = op.getX();
    Value grouped = groupTokens(b, loc, x, op.getGroup());
    auto xType = cast<RankedTensorType>(grouped.getType());
    int64_t numGroups = xType.getDimSize(0), groupSize = xType.getDimSize(1);
    int64_t topK = op.getTopK();
    Router router = buildRouter(b, loc, grouped, op, op.getTopKAttr(),
                                op.getCapacityFactorAttr());

    SmallVector<int64_t> routingShape = {numGroups, groupSize, topK};
    auto i64Routing = tensorType(routingShape, b.getI64Type());
    auto route = TokenChoiceRouteOp::create(
        b, loc, i64Routing, tensorType(routingShape, b.getF32Type()),
        i64Routing, tensorType(routingShape, b.getI1Type()), router.probs,
        router.capacity, op.getTopKAttr(), op.getNormalizeGatesAttr(),
        op.getPriorityAttr(), op.getRerouteDroppedAttr());

    Value combined;
    if (op.isDropless()) {
      // Dropless: the capacity is the whole group, so padded buffers would be
      // E times too large; sort the assignments by expert instead.
      int64_t numExperts =
          cast<RankedTensorType>(router.probs.getType()).getDimSize(2);
      int64_t rows = mulStatic(mulStatic(numGroups, groupSize), topK);
      auto dispatch = DispatchGroupedOp::create(
          b, loc, tensorType({rows, xType.getDimSize(2)}, xType.getElementType()),
          tensorType({numExperts + 1}, b.getI64Type()), i64Routing, grouped,
          route.getExperts(), route.getKept());
      Value out = GroupedExpertsOp::create(
          b, loc, dispatch.getRows().getType(), dispatch.getRows(),
          dispatch.getOffsets(), op.getW1(), op.getWg(), op.getW2(), op.getB1(),
          op.getB2(), op.getActivationAttr());
      combined = CombineGroupedOp::create(b, loc, grouped.getType(), out,
                                          dispatch.getSlots(), route.getKept(),
                                          route.getGates());
    } else {
      int64_t numExperts =
          cast<RankedTensorType>(router.probs.getType()).getDimSize(2);
      auto bufferType = tensorType({numExperts, numGroups,
                                    router.staticCapacity, xType.getDimSize(2)},
                                   xType.getElementType());
      Value buffers = DispatchOp::create(
          b, loc, bufferType, grouped, route.getExperts(), route.getPositions(),
          route.getKept(), router.capacity);
      Value out = applyExperts(b, loc, buffers, op);
      combined = CombineOp::create(b, loc, grouped.getType(), out,
                                   route.getExperts(), route.getPositions(),
                                   route.getKept(), route.getGates());
    }

    Value y = ungroupTokens(b, loc, combined, x, op.getGroup());
    Value aux = LoadBalancingLossOp::create(
        b, loc, op.getAuxLoss().getType(), router.probs, op.getTopKAttr(),
        op.getAuxLossWeightAttr());
    Value zLoss = ZLossOp::create(b, loc, op.getZLoss().getType(),
                                  router.logits, op.getZLossWeightAttr());
    auto stats = RoutingStatsOp::create(
        b, loc, op.getExpertCounts().getType(), op.getDropped().getType(),
        op.getUnrouted().getType(), route.getExperts(), route.getKept());
    Value capacity = indexToScalarTensor(b, loc, router.capacity);
    b.replaceOp(op, {y, aux, zLoss, stats.getExpertCounts(), stats.getDropped(),
                     stats.getUnrouted(), capacity});
    return success();
  }
};

struct DecomposeExpertChoice : OpRewritePattern<ExpertChoiceOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ExpertChoiceOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value x = op.getX();
    Value grouped = groupTokens(b, loc, x, op.getGroup());
    auto xType = cast<RankedTensorType>(grouped.getType());
    int64_t numGroups = xType.getDimSize(0);
    // An explicit capacity overrides the factor (SEMANTICS.md section 4).
    FloatAttr factor;
    if (!op.getExpertCapacity())
      factor = b.getF64FloatAttr(op.getCapacityFactor().convertToDouble());
    Router router =
        buildRouter(b, loc, grouped, op, b.getI64IntegerAttr(1), factor);
    int64_t numExperts =
        cast<RankedTensorType>(router.probs.getType()).getDimSize(2);

    SmallVector<int64_t> choiceShape = {numGroups, numExperts,
                                        router.staticCapacity};
    auto route = ExpertChoiceRouteOp::create(
        b, loc, tensorType(choiceShape, b.getI64Type()),
        tensorType(choiceShape, b.getF32Type()), router.probs, router.capacity);
    auto bufferType =
        tensorType({numExperts, numGroups, router.staticCapacity,
                    xType.getDimSize(2)},
                   xType.getElementType());
    Value buffers = ExpertChoiceDispatchOp::create(b, loc, bufferType, grouped,
                                                   route.getTokens());
    Value out = applyExperts(b, loc, buffers, op);
    Value combined = ExpertChoiceCombineOp::create(
        b, loc, grouped.getType(), out, route.getTokens(), route.getGates(),
        router.probs);

    Value y = ungroupTokens(b, loc, combined, x, op.getGroup());
    Value zLoss = ZLossOp::create(b, loc, op.getZLoss().getType(),
                                  router.logits, op.getZLossWeightAttr());
    auto stats = ExpertChoiceStatsOp::create(
        b, loc, op.getExpertCounts().getType(), op.getUnrouted().getType(),
        route.getTokens(), router.probs);
    Value capacity = indexToScalarTensor(b, loc, router.capacity);
    b.replaceOp(op, {y, zLoss, stats.getExpertCounts(), stats.getUnrouted(),
                     capacity});
    return success();
  }
};

struct DecomposeSoftMoE : OpRewritePattern<SoftMoEOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SoftMoEOp op,
                                PatternRewriter &b) const override {
    Location loc = op.getLoc();
    Value x = op.getX();
    Value grouped = groupTokens(b, loc, x, op.getGroup());
    auto xType = cast<RankedTensorType>(grouped.getType());
    int64_t numSlots =
        cast<RankedTensorType>(op.getPhi().getType()).getDimSize(1);
    int64_t slotsPerExpert = op.getSlotsPerExpert();
    Value logits = SoftLogitsOp::create(
        b, loc,
        tensorType({xType.getDimSize(0), xType.getDimSize(1), numSlots},
                   b.getF32Type()),
        grouped, op.getPhi(), op.getScale(), op.getNormalizeAttr(),
        op.getNoiseStdAttr());
    auto slotType = tensorType({numSlots / slotsPerExpert, xType.getDimSize(0),
                                slotsPerExpert, xType.getDimSize(2)},
                               xType.getElementType());
    Value slots = SoftDispatchOp::create(b, loc, slotType, grouped, logits,
                                         op.getSlotsPerExpertAttr());
    Value out = applyExperts(b, loc, slots, op);
    Value combined =
        SoftCombineOp::create(b, loc, grouped.getType(), logits, out);
    b.replaceOp(op, ungroupTokens(b, loc, combined, x, op.getGroup()));
    return success();
  }
};

/// Prepends a unit expert dimension to a dense weight.
Value addExpertDim(OpBuilder &b, Location loc, Value weight) {
  if (!weight)
    return weight;
  auto type = cast<RankedTensorType>(weight.getType());
  SmallVector<int64_t> shape = {1};
  llvm::append_range(shape, type.getShape());
  SmallVector<ReassociationIndices> reassociation;
  reassociation.push_back({0, 1});
  for (int64_t i = 1; i < type.getRank(); ++i)
    reassociation.push_back({i + 1});
  return tensor::ExpandShapeOp::create(
      b, loc, tensorType(shape, type.getElementType()), weight, reassociation);
}

struct DecomposeFFN : OpRewritePattern<FFNOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(FFNOp op, PatternRewriter &b) const override {
    // A dense FFN is one expert that every token of one big group visits.
    Location loc = op.getLoc();
    Value x = op.getX();
    Value rows = groupTokens(b, loc, x, Grouping::batch);
    Value out = ExpertsOp::create(
        b, loc, rows.getType(), rows, addExpertDim(b, loc, op.getW1()),
        addExpertDim(b, loc, op.getWg()), addExpertDim(b, loc, op.getW2()),
        addExpertDim(b, loc, op.getB1()), addExpertDim(b, loc, op.getB2()),
        op.getActivationAttr());
    b.replaceOp(op, ungroupTokens(b, loc, out, x, Grouping::batch));
    return success();
  }
};

struct DecomposeResidual : OpRewritePattern<ResidualOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ResidualOp op,
                                PatternRewriter &b) const override {
    b.replaceOpWithNewOp<arith::AddFOp>(op, op.getX(), op.getF());
    return success();
  }
};

struct MoEDecomposePass
    : switchyard::moe::impl::MoEDecomposeBase<MoEDecomposePass> {
  void runOnOperation() override {
    // A layer over all of a batch's tokens reshapes them [B * S, D] and
    // back; with B and S both dynamic, MLIR 22's expand-strided-metadata
    // crashes on the reshape back (an upstream bug), so it is refused here.
    WalkResult refused = getOperation()->walk([](Operation *op) {
      bool batch =
          llvm::TypeSwitch<Operation *, bool>(op)
              .Case<TokenChoiceOp, ExpertChoiceOp, SoftMoEOp>([](auto layer) {
                return layer.getGroup() == Grouping::batch;
              })
              .Case([](FFNOp) { return true; })
              .Default([](Operation *) { return false; });
      if (!batch)
        return WalkResult::advance();
      auto x = cast<RankedTensorType>(op->getOperand(0).getType());
      if (!x.isDynamicDim(0) || !x.isDynamicDim(1))
        return WalkResult::advance();
      op->emitOpError("groups the tokens of a batch whose size and sequence "
                      "length are both dynamic, which the CPU pipeline does "
                      "not support: give the sequence length a static size");
      return WalkResult::interrupt();
    });
    if (refused.wasInterrupted())
      return signalPassFailure();
    RewritePatternSet patterns(&getContext());
    populateMoEDecomposePatterns(patterns);
    // Fold the static capacities and shape computations that the patterns
    // create, so the routing level reads with constants where shapes allow.
    tensor::CollapseShapeOp::getCanonicalizationPatterns(patterns,
                                                         &getContext());
    tensor::ExpandShapeOp::getCanonicalizationPatterns(patterns, &getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void switchyard::moe::populateMoEDecomposePatterns(
    RewritePatternSet &patterns) {
  patterns.add<DecomposeTokenChoice, DecomposeExpertChoice, DecomposeSoftMoE,
               DecomposeFFN, DecomposeResidual>(patterns.getContext());
}
