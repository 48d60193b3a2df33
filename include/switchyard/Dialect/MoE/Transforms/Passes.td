//===- Passes.td - Passes of the moe dialect ---------------*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEInline : Pass<"moe-inline", "::mlir::ModuleOp"> {
  let summary = "Inline the calls of a model, up to a budget of layer ops";
  let description = [{
    Inlines `func.call`s (MLIR's inliner, bottom up over the call graph, with
    no clean-up pipeline in between), so that a called function's layers
    read the entry's weights, which `switchyard-hoist-weight-packing` then
    packs once, when they are bound, instead of on every call.

    Every inlined call copies the callee's layer ops, and each copy is
    compiled on its own: a chain of functions that each call the next twice
    would grow as 2^depth. So a call is inlined only while the module keeps
    at most `max-layers` layer ops (`moe.token_choice`, `moe.expert_choice`,
    `moe.soft_moe`, `moe.ffn`); past that it stays a call, with a warning
    that its weights are packed on every call. Calls of functions without
    layer ops are always inlined. Recursive calls stay calls, and so does a
    function of several blocks called from a single-block region (the body
    of an `scf.for`).
  }];
  let options = [
    Option<"maxLayers", "max-layers", "int64_t", "128",
           "Layer ops the module may hold after inlining">
  ];
}

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

    A layer grouped by batch (a dense FFN always is) whose input has both a
    dynamic batch and a dynamic sequence length is an error: reshaping its
    `[B * S, D]` tokens back to `[B, S, D]` crashes MLIR 22's
    `expand-strided-metadata` later in the CPU pipeline.
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
    unchanged (without a capacity, the unfused `moe.grouped_experts` runs
    on the same row-block products), and the tests compare fused and
    unfused outputs exactly.
  }];
  let dependentDialects = [
    "::switchyard::moe::MoEDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoEFuseRouter : Pass<"moe-fuse-router"> {
  let summary = "Fuse the router and token-choice routing into "
                "moe.token_choice_router";
  let description = [{
    Rewrites `moe.token_choice_route(moe.router_probs(moe.router_logits(x)))`
    into one `moe.token_choice_router`, whose results replace all three
    ops' (the losses keep reading the logits and probabilities). A capacity
    computed from the probabilities' shape (`moe.expert_capacity` of a
    dynamic group size) is recomputed from the same shape before the router.
    Router jitter is a training option: a router with jitter is left
    unfused.

    What it saves: the CPU lowering computes each tile of 64 tokens' logits,
    softmax and top-k choices in one parallel pass while the tile is in
    cache, instead of a product, a softmax and a sequential top-k loop over
    all tokens; only the capacity positions, which follow the priority
    order, stay a sequential pass over each group's choices. The result is
    the same, bit for bit (the same logits, softmax and choices per token),
    and the tests compare fused and unfused outputs exactly.
  }];
  let dependentDialects = [
    "::switchyard::moe::MoEDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MoEFuseSoft : Pass<"moe-fuse-soft"> {
  let summary = "Fuse Soft MoE's dispatch, experts and combine into "
                "moe.soft_experts";
  let description = [{
    Rewrites `moe.soft_combine(L, moe.experts(moe.soft_dispatch(x, L)))`
    (through the reshapes between them) into one `moe.soft_experts`, when
    the expert outputs feed only the combine and both softmaxes read the
    same logits.

    What it saves: the CPU lowering takes the dispatch softmax over tokens
    online, a tile of tokens at a time, and the combine softmax over slots a
    tile of tokens at a time, so neither `[NG, m, S]` weight matrix is ever
    materialized beyond a tile (the unfused lowering materializes both). The
    slot inputs are read into each expert's packed row block straight from
    the `[NG, S, D]` mix, and the combine reads the expert outputs where the
    MLPs wrote them: the two `[n, NG, p, D]` transposes of the unfused
    lowering are gone. Soft MoE B/16 is bound by reading its expert weights,
    which neither form changes; `bench/RESULTS.md` has both columns. The
    result differs from the unfused form by rounding only: the slot mix is
    divided by the softmax sum after the product instead of before it.
  }];
  let dependentDialects = [
    "::switchyard::moe::MoEDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // SWITCHYARD_DIALECT_MOE_TRANSFORMS_PASSES_TD
