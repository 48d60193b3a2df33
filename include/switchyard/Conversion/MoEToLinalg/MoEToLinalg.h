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

/// dispatch/combine in the capacity, grouped and expert-choice forms.
void populateMoEDispatchToLinalgPatterns(mlir::RewritePatternSet &patterns);

/// experts and grouped_experts.
void populateMoEExpertsToLinalgPatterns(mlir::RewritePatternSet &patterns);

/// soft_logits, soft_dispatch and soft_combine.
void populateMoESoftToLinalgPatterns(mlir::RewritePatternSet &patterns);

} // namespace switchyard

#endif // SWITCHYARD_CONVERSION_MOETOLINALG_MOETOLINALG_H
