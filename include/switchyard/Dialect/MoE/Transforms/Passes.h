//===- Passes.h - Passes of the moe dialect ---------------------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_H
#define SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_H

#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/Pass.h"
#include "switchyard/Dialect/MoE/IR/MoEOps.h"

namespace switchyard::moe {

#define GEN_PASS_DECL
#include "switchyard/Dialect/MoE/Transforms/Passes.h.inc"

/// Patterns that rewrite the layer-level ops into routing-level ops.
void populateMoEDecomposePatterns(mlir::RewritePatternSet &patterns);

/// Patterns that fuse dispatch, experts and combine into moe.routed_experts.
void populateMoEFuseExpertsPatterns(mlir::RewritePatternSet &patterns);

/// The pattern that fuses router_logits, router_probs and
/// token_choice_route into moe.token_choice_router.
void populateMoEFuseRouterPatterns(mlir::RewritePatternSet &patterns);

/// The pattern that fuses soft_dispatch, experts and soft_combine into
/// moe.soft_experts.
void populateMoEFuseSoftPatterns(mlir::RewritePatternSet &patterns);

#define GEN_PASS_REGISTRATION
#include "switchyard/Dialect/MoE/Transforms/Passes.h.inc"

} // namespace switchyard::moe

#endif // SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_H
