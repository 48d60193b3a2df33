//===- FuseExperts.cpp - Dispatch, experts and combine as one op ----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// Token choice at the routing level is three ops: dispatch copies the kept
// tokens into per-expert buffers, experts runs every MLP over every buffer
// row, and combine gathers the rows back with their gates. With a capacity,
// the buffers are [E, NG, C, D] and the rows that no token claimed (20% of
// them for Switch at capacity factor 1.25) are computed and thrown away.
// `moe.routed_experts` is the same computation as one op, which the CPU
// lowering turns into per-expert products over exactly the kept rows,
// gathered from x as each row block is computed.
//
// Soft MoE at the routing level is the same three-op shape: soft_dispatch
// mixes every token into every slot, experts runs each expert over its
// slots, and soft_combine mixes the slot outputs back into every token.
// `moe.soft_experts` is the same computation as one op (moe-fuse-soft).
//
//===----------------------------------------------------------------------===//

#include "switchyard/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dominance.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace switchyard::moe {
#define GEN_PASS_DEF_MOEFUSEEXPERTS
#define GEN_PASS_DEF_MOEFUSESOFT
#define GEN_PASS_DEF_MOEFUSEROUTER
#include "switchyard/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace switchyard::moe

using namespace mlir;
using namespace switchyard::moe;

namespace {

/// Looks through the reshapes moe-decompose puts between the capacity
/// buffers `[E, NG, C, D]` and the experts' `[E, NG * C, D]`.
Value skipReshape(Value v) {
  if (auto expand = v.getDefiningOp<tensor::ExpandShapeOp>())
    return expand.getSrc();
  if (auto collapse = v.getDefiningOp<tensor::CollapseShapeOp>())
    return collapse.getSrc();
  return v;
}

/// The expert outputs must feed only the combine (directly or through one
/// reshape), or fusing would compute the MLPs twice.
bool onlyFeedsCombine(Value expertOutputs, Operation *combine) {
  for (Operation *user : expertOutputs.getUsers()) {
    if (user == combine)
      continue;
    auto expand = dyn_cast<tensor::ExpandShapeOp>(user);
    if (!expand || !expand.getResult().hasOneUse() ||
        *expand.getResult().getUsers().begin() != combine)
      return false;
  }
  return true;
}

/// The moe.experts a combine reads, through a reshape, and the dispatch of
/// type DispatchOpTy it reads, through a reshape, when the expert outputs
/// feed only that combine.
template <typename DispatchOpTy>
FailureOr<std::pair<ExpertsOp, DispatchOpTy>>
matchExpertsChain(PatternRewriter &rewriter, Operation *combine,
                  Value expertOutputs) {
  auto experts = skipReshape(expertOutputs).getDefiningOp<ExpertsOp>();
  if (!experts)
    return rewriter.notifyMatchFailure(combine, "not fed by moe.experts");
  auto dispatch = skipReshape(experts.getInput()).getDefiningOp<DispatchOpTy>();
  if (!dispatch)
    return rewriter.notifyMatchFailure(
        combine, "the experts are not fed by the matching dispatch");
  if (!onlyFeedsCombine(experts.getOutput(), combine))
    return rewriter.notifyMatchFailure(combine,
                                       "the expert outputs have other users");
  return std::make_pair(experts, dispatch);
}

template <typename ExpertsOpTy>
RoutedExpertsOp buildRoutedExperts(PatternRewriter &rewriter, Operation *root,
                                   Value x, Value experts, Value kept,
                                   Value gates, Value capacity,
                                   ExpertsOpTy expertsOp) {
  return RoutedExpertsOp::create(
      rewriter, root->getLoc(), root->getResult(0).getType(), x, experts,
      kept, gates, capacity, expertsOp.getW1(), expertsOp.getWg(),
      expertsOp.getW2(), expertsOp.getB1(), expertsOp.getB2(),
      expertsOp.getActivation());
}

/// combine(experts(dispatch(x))) with capacity buffers.
struct FuseCapacityExperts : OpRewritePattern<CombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(CombineOp combine,
                                PatternRewriter &rewriter) const override {
    auto chain = matchExpertsChain<DispatchOp>(rewriter, combine,
                                               combine.getExpertOutputs());
    if (failed(chain))
      return failure();
    auto [experts, dispatch] = *chain;
    if (dispatch.getExperts() != combine.getExperts() ||
        dispatch.getPositions() != combine.getPositions() ||
        dispatch.getKept() != combine.getKept())
      return rewriter.notifyMatchFailure(
          combine, "dispatch and combine use different routing");
    rewriter.replaceOp(
        combine, buildRoutedExperts(rewriter, combine, dispatch.getX(),
                                    combine.getExperts(), combine.getKept(),
                                    combine.getGates(), dispatch.getCapacity(),
                                    experts));
    return success();
  }
};

/// combine_grouped(grouped_experts(dispatch_grouped(x))), the dropless form.
struct FuseGroupedExperts : OpRewritePattern<CombineGroupedOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(CombineGroupedOp combine,
                                PatternRewriter &rewriter) const override {
    auto experts = combine.getExpertOutputs().getDefiningOp<GroupedExpertsOp>();
    if (!experts)
      return rewriter.notifyMatchFailure(combine,
                                         "not fed by moe.grouped_experts");
    auto dispatch = experts.getRows().getDefiningOp<DispatchGroupedOp>();
    if (!dispatch || experts.getOffsets() != dispatch.getOffsets() ||
        combine.getSlots() != dispatch.getSlots())
      return rewriter.notifyMatchFailure(
          combine, "rows, offsets and slots are not one moe.dispatch_grouped");
    if (dispatch.getKept() != combine.getKept())
      return rewriter.notifyMatchFailure(
          combine, "dispatch and combine use different routing");
    if (!experts.getOutput().hasOneUse())
      return rewriter.notifyMatchFailure(combine,
                                         "the expert outputs have other users");
    rewriter.replaceOp(
        combine, buildRoutedExperts(rewriter, combine, dispatch.getX(),
                                    dispatch.getExperts(), combine.getKept(),
                                    combine.getGates(), Value(), experts));
    return success();
  }
};

/// expert_choice_combine(experts(expert_choice_dispatch(x))).
struct FuseExpertChoice : OpRewritePattern<ExpertChoiceCombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ExpertChoiceCombineOp combine,
                                PatternRewriter &rewriter) const override {
    auto chain = matchExpertsChain<ExpertChoiceDispatchOp>(
        rewriter, combine, combine.getExpertOutputs());
    if (failed(chain))
      return failure();
    auto [experts, dispatch] = *chain;
    if (dispatch.getTokens() != combine.getTokens())
      return rewriter.notifyMatchFailure(
          combine, "dispatch and combine use different tokens");
    rewriter.replaceOpWithNewOp<ChosenExpertsOp>(
        combine, combine.getY().getType(), dispatch.getX(), combine.getTokens(),
        combine.getGates(), combine.getProbs(), experts.getW1(),
        experts.getWg(), experts.getW2(), experts.getB1(), experts.getB2(),
        experts.getActivation());
    return success();
  }
};

/// soft_combine(L, experts(soft_dispatch(x, L))).
struct FuseSoftExperts : OpRewritePattern<SoftCombineOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(SoftCombineOp combine,
                                PatternRewriter &rewriter) const override {
    auto chain = matchExpertsChain<SoftDispatchOp>(rewriter, combine,
                                                   combine.getSlotOutputs());
    if (failed(chain))
      return failure();
    auto [experts, dispatch] = *chain;
    if (dispatch.getLogits() != combine.getLogits())
      return rewriter.notifyMatchFailure(
          combine, "dispatch and combine use different logits");
    rewriter.replaceOpWithNewOp<SoftExpertsOp>(
        combine, combine.getY().getType(), dispatch.getX(), combine.getLogits(),
        experts.getW1(), experts.getWg(), experts.getW2(), experts.getB1(),
        experts.getB2(), experts.getActivation(),
        dispatch.getSlotsPerExpert());
    return success();
  }
};

/// token_choice_route(router_probs(router_logits(x))).
struct FuseRouter : OpRewritePattern<TokenChoiceRouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(TokenChoiceRouteOp route,
                                PatternRewriter &rewriter) const override {
    auto probs = route.getProbs().getDefiningOp<RouterProbsOp>();
    auto logits = probs ? probs.getLogits().getDefiningOp<RouterLogitsOp>()
                        : RouterLogitsOp();
    if (!logits)
      return rewriter.notifyMatchFailure(
          route, "not fed by moe.router_probs of moe.router_logits");
    if (!logits.getJitter().isZero())
      return rewriter.notifyMatchFailure(route, "the router has jitter");
    Value capacity = route.getCapacity();
    if (!DominanceInfo().properlyDominates(capacity, logits)) {
      // The capacity of a dynamic group size reads the probabilities'
      // shape: recompute it from that shape before the router.
      auto old = capacity.getDefiningOp<ExpertCapacityOp>();
      if (!old || old.getProbs() != probs.getResult())
        return rewriter.notifyMatchFailure(
            route, "the capacity depends on the routing it bounds");
      rewriter.setInsertionPoint(logits);
      Location loc = old.getLoc();
      // [NG, G, E]: NG and G are x's, E the router weight's columns.
      auto probsType = cast<RankedTensorType>(probs.getType());
      SmallVector<Value> dynamicSizes;
      for (int64_t i = 0; i < 3; ++i)
        if (probsType.isDynamicDim(i))
          dynamicSizes.push_back(
              i < 2 ? tensor::DimOp::create(rewriter, loc, logits.getX(), i)
                    : tensor::DimOp::create(rewriter, loc, logits.getWeight(),
                                            1));
      Value shape =
          tensor::EmptyOp::create(rewriter, loc, probsType.getShape(),
                                  probsType.getElementType(), dynamicSizes);
      auto recomputed = cast<ExpertCapacityOp>(rewriter.clone(*old));
      recomputed.getProbsMutable().assign(shape);
      rewriter.replaceOp(old, recomputed.getResult());
      capacity = recomputed.getResult();
    }
    rewriter.setInsertionPoint(logits);
    auto fused = TokenChoiceRouterOp::create(
        rewriter, route.getLoc(), logits.getType(), probs.getType(),
        route.getExperts().getType(), route.getGates().getType(),
        route.getPositions().getType(), route.getKept().getType(),
        logits.getX(), logits.getWeight(), logits.getBias(), capacity,
        route.getTopKAttr(), route.getNormalizeGatesAttr(),
        route.getPriorityAttr(), route.getRerouteDroppedAttr());
    rewriter.replaceOp(route, fused->getResults().drop_front(2));
    rewriter.replaceOp(probs, fused.getProbs());
    rewriter.replaceOp(logits, fused.getLogits());
    return success();
  }
};

/// Applies the patterns `populate` adds to `op`; the body of every fusion
/// pass.
LogicalResult applyFusion(Operation *op,
                          void (*populate)(RewritePatternSet &)) {
  RewritePatternSet patterns(op->getContext());
  populate(patterns);
  return applyPatternsGreedily(op, std::move(patterns));
}

struct FuseRouterPass
    : switchyard::moe::impl::MoEFuseRouterBase<FuseRouterPass> {
  void runOnOperation() override {
    if (failed(applyFusion(getOperation(), populateMoEFuseRouterPatterns)))
      signalPassFailure();
  }
};

struct FuseSoftPass : switchyard::moe::impl::MoEFuseSoftBase<FuseSoftPass> {
  void runOnOperation() override {
    if (failed(applyFusion(getOperation(), populateMoEFuseSoftPatterns)))
      signalPassFailure();
  }
};

struct FuseExpertsPass
    : switchyard::moe::impl::MoEFuseExpertsBase<FuseExpertsPass> {
  void runOnOperation() override {
    if (failed(applyFusion(getOperation(), populateMoEFuseExpertsPatterns)))
      signalPassFailure();
  }
};

} // namespace

void switchyard::moe::populateMoEFuseExpertsPatterns(
    RewritePatternSet &patterns) {
  patterns.add<FuseCapacityExperts, FuseGroupedExperts, FuseExpertChoice>(
      patterns.getContext());
}

void switchyard::moe::populateMoEFuseSoftPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseSoftExperts>(patterns.getContext());
}

void switchyard::moe::populateMoEFuseRouterPatterns(
    RewritePatternSet &patterns) {
  patterns.add<FuseRouter>(patterns.getContext());
}
