//===- Passes.td - Passes of the moe dialect ---------------*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEDecompose : Pass<"moe-decompose"> {
  let summary = "Rewrite layer-level moe ops into routing-level moe ops";
  let description = [{
    Rewrites every layer-level op (`moe.token_choice`, `moe.expert_choice`,
    `moe.soft_moe`, `moe.ffn`, `moe.residual`) into the routing level:

    * tokens are regrouped to `[NG, G, D]` (`group = sequence`: one group per
      sequence; `group = batch`: one group of all `B * S` tokens);
    * token choice becomes `router_logits`, `router_probs`, `expert_capacity`,
      `token_choice_route`, then either capacity buffers (`dispatch`,
      `experts`, `combine`) or, when dropless, the grouped form
      (`dispatch_grouped`, `grouped_experts`, `combine_grouped`), plus the
      losses and `routing_stats`;
    * expert choice becomes `expert_choice_route`, `expert_choice_dispatch`,
      `experts`, `expert_choice_combine`, `z_loss`, `expert_choice_stats`;
    * soft MoE becomes `soft_logits`, `soft_dispatch`, `experts`,
      `soft_combine`;
    * a dense FFN becomes `experts` with a single expert;
    * `moe.residual` becomes `arith.addf`.

    `moe.norm` is left as it is: it is already a single computation.
  }];
  let dependentDialects = [
    "::switchyard::moe::MoEDialect",
    "::mlir::arith::ArithDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoEFuseExperts : Pass<"moe-fuse-experts"> {
  let summary = "Fuse dispatch, experts and combine into moe.routed_experts "
                "(token choice) or moe.chosen_experts (expert choice)";
  let description = [{
    Rewrites `moe.combine(moe.experts(moe.dispatch(x)))` (capacity buffers,
    through the reshapes between them) and
    `moe.combine_grouped(moe.grouped_experts(moe.dispatch_grouped(x)))`
    (dropless) into one `moe.routed_experts`, and
    `moe.expert_choice_combine(moe.experts(moe.expert_choice_dispatch(x)))`
    into one `moe.chosen_experts`, when the expert outputs feed only the
    combine and dispatch and combine read the same routing.

    What it saves: the CPU lowering of `moe.routed_experts` runs each
    expert's MLP over exactly its kept rows, rounded up to the 8-row
    register tile, and gathers them from `x` one row block at a time. The
    `[E, NG, C, D]` dispatch buffer is never materialized and the padded
    capacity rows (20% of the rows of the Switch block at B=4) are never
    computed: the Switch block at B=4 went from 185 to 139 ms with it (before
    packed products; `bench/RESULTS.md` has the fused and fusion-off columns
    of the current code). `moe.chosen_experts` reads each expert's chosen tokens from
    `x` the same way, so its `[E, NG, C, D]` buffer is not materialized
    either (expert choice has no padding: that saves about 1%). The result
    is the same, bit for bit: each row's MLP and the combine's f32 sum are
    unchanged, and the tests compare fused and unfused outputs exactly.
  }];
  let dependentDialects = [
    "::switchyard::moe::MoEDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD
