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

/// How bf16 expert products are packed (convert-moe-to-linalg's options).
struct BF16Products {
  bool dot = false; ///< bf16-dot-products: pairs for vdpbf16ps
  bool amx = false; ///< bf16-amx: AMX tiles
};

/// router_logits, router_probs, z_loss, expert_capacity and norm.
void populateMoERouterToLinalgPatterns(mlir::RewritePatternSet &patterns);

/// token_choice_route, expert_choice_route, load_balancing_loss and the
/// statistics, as loops over tokens.
void populateMoERoutingToSCFPatterns(mlir::RewritePatternSet &patterns);

/// dispatch/combine in the capacity, grouped and expert-choice forms, and
/// the fused routed_experts and chosen_experts. `bf16` says how bf16 expert
/// products are packed (convert-moe-to-linalg's bf16-dot-products and
/// bf16-amx), here and below.
void populateMoEDispatchToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                         const BF16Products &bf16);

/// experts and grouped_experts.
void populateMoEExpertsToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                        const BF16Products &bf16);

/// soft_logits, soft_dispatch, soft_combine and soft_experts.
void populateMoESoftToLinalgPatterns(mlir::RewritePatternSet &patterns,
                                     const BF16Products &bf16);

} // namespace switchyard

#endif // SWITCHYARD_CONVERSION_MOETOLINALG_MOETOLINALG_H
