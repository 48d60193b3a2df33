//===- MoEToLinalg.h - Routing level to linalg/scf --------------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
// One populate function per concern; the convert-moe-to-linalg pass uses
// them all.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_CONVERSION_MOETOLINALG_MOETOLINALG_H
#define SWITCHYARD_CONVERSION_MOETOLINALG_MOETOLINALG_H

namespace mlir {
class RewritePatternSet;
} // namespace mlir

namespace switchyard {

/// router_logits, router_probs, z_loss, expert_capacity and norm.
void populateMoERouterToLinalgPatterns(mlir::RewritePatternSet &patterns);

/// token_choice_route, expert_choice_route, load_balancing_loss and the
/// statistics, as loops over tokens.
void populateMoERoutingToSCFPatterns(mlir::RewritePatternSet &patterns);

/// dispatch/combine in the capacity, grouped and expert-choice forms, and
/// the fused routed_experts and chosen_experts. `bf16DotProducts` packs
/// bf16 expert products in pairs (convert-moe-to-linalg's
/// bf16-dot-products), here and below.
void populateMoEDispatchToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                         bool bf16DotProducts = false);

/// experts and grouped_experts.
void populateMoEExpertsToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                        bool bf16DotProducts = false);

/// soft_logits, soft_dispatch, soft_combine and soft_experts.
void populateMoESoftToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                     bool bf16DotProducts = false);

} // namespace switchyard

#endif // SWITCHYARD_CONVERSION_MOETOLINALG_MOETOLINALG_H
