//===- MoEOps.td - Operations of the moe dialect -----------*- tablegen -*-===//
//
// Part of Switchyard. Every op states the numbers it computes by naming the
// section of SEMANTICS.md it implements; verifiers check every static shape
// relation and say what they expected and what they found.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_IR_MOEOPS_TD
#define SWITCHYARD_DIALECT_MOE_IR_MOEOPS_TD

include "switchyard/Dialect/MoE/IR/MoEDialect.td"
include "switchyard/Dialect/MoE/IR/MoEEnums.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/OpBase.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

// Activations and expert weights are stored in the model dtype.
def MoE_ModelFloat : AnyTypeOf<[F32, BF16, F16], "f32, bf16 or f16">;
def MoE_Tensor1 : TensorRankOf<[F32, BF16, F16], [1]>;
def MoE_Tensor2 : TensorRankOf<[F32, BF16, F16], [2]>;
def MoE_Tensor3 : TensorRankOf<[F32, BF16, F16], [3]>;
def MoE_Tensor4 : TensorRankOf<[F32, BF16, F16], [4]>;
// The router and every softmax run in f32 whatever the model dtype.
def MoE_F32Tensor0 : 0DTensorOf<[F32]>,
    BuildableType<"::mlir::RankedTensorType::get({}, $_builder.getF32Type())">;
def MoE_F32Tensor1 : TensorRankOf<[F32], [1]>;
def MoE_F32Tensor2 : TensorRankOf<[F32], [2]>;
def MoE_F32Tensor3 : TensorRankOf<[F32], [3]>;
def MoE_I64Tensor0 : 0DTensorOf<[I64]>;
def MoE_I64Tensor1 : TensorRankOf<[I64], [1]>;
def MoE_I64Tensor3 : TensorRankOf<[I64], [3]>;
def MoE_I1Tensor3 : TensorRankOf<[I1], [3]>;

def MoE_DefaultPriority : DefaultValuedAttr<MoE_PriorityAttr,
    "::switchyard::moe::Priority::sequence">;
def MoE_DefaultGrouping : DefaultValuedAttr<MoE_GroupingAttr,
    "::switchyard::moe::Grouping::sequence">;

//===----------------------------------------------------------------------===//
// Layer level
//===----------------------------------------------------------------------===//

def MoE_TokenChoiceOp : MoE_Op<"token_choice",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "token-choice MoE layer (Switch top-1, GShard/Mixtral top-k)";
  let description = [{
    Routes every token of `x : [B, S, D]` to its `top_k` most probable experts
    (SEMANTICS.md sections 2, 3 and 6) and returns the gate-weighted sum of
    the expert MLPs, the load-balancing loss, the router z-loss and routing
    statistics.

    Capacity: with `capacity_factor = cf`,
    `C = min(G, max(min_capacity, ceil(top_k * G * cf / E)))`; with
    `expert_capacity = N`, `C = min(N, G)`; with neither attribute the layer
    is *dropless* (`C = G`). `priority` orders the assignments that claim
    capacity, `reroute_dropped` (top-1 only) gives dropped tokens a second
    chance, `group` selects which tokens are routed together. `jitter` is a
    training-only router input noise; inference never applies it.

    Operands: `router(Wr [D, E] f32, optional br [E] f32)`,
    `experts(w1 [E, D, F], optional wg [E, D, F] (gated activations only),
    w2 [E, F, D], optional b1 [E, F], optional b2 [E, D])`, all expert weights
    in the dtype of `x`.

    Results: `y` like `x`; `aux_loss` and `z_loss` (weighted, averaged over
    groups); `expert_counts [E]` kept assignments per expert over all groups;
    `dropped` assignments; `unrouted` tokens with nothing kept; `capacity` C.

    ```mlir
    %y, %aux, %z, %counts, %dropped, %unrouted, %cap = moe.token_choice %x
        router(%wr) experts(w1 %w1 w2 %w2)
        {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
        : (tensor<?x512x768xf32>, tensor<768x8xf32>, tensor<8x768x3072xf32>,
           tensor<8x3072x768xf32>)
        -> (tensor<?x512x768xf32>, tensor<f32>, tensor<f32>, tensor<8xi64>,
            tensor<i64>, tensor<i64>, tensor<i64>)
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x,
      MoE_F32Tensor2:$router_weight, Optional<MoE_F32Tensor1>:$router_bias,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation,
      DefaultValuedAttr<I64Attr, "1">:$top_k,
      OptionalAttr<F64Attr>:$capacity_factor,
      OptionalAttr<I64Attr>:$expert_capacity,
      DefaultValuedAttr<I64Attr, "0">:$min_capacity,
      UnitAttr:$normalize_gates,
      MoE_DefaultPriority:$priority,
      UnitAttr:$reroute_dropped,
      MoE_DefaultGrouping:$group,
      DefaultValuedAttr<F64Attr, "0.01">:$aux_loss_weight,
      DefaultValuedAttr<F64Attr, "0.001">:$z_loss_weight,
      DefaultValuedAttr<F64Attr, "0.0">:$jitter);
  let results = (outs MoE_Tensor3:$y, MoE_F32Tensor0:$aux_loss,
      MoE_F32Tensor0:$z_loss, MoE_I64Tensor1:$expert_counts,
      MoE_I64Tensor0:$dropped, MoE_I64Tensor0:$unrouted,
      MoE_I64Tensor0:$capacity);
  let assemblyFormat = [{
    $x `router` `(` $router_weight (`bias` $router_bias^)? `)`
    `experts` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// True when neither a capacity factor nor an explicit capacity is set.
    bool isDropless() {
      return !getCapacityFactor() && !getExpertCapacity();
    }
  }];
}

def MoE_ExpertChoiceOp : MoE_Op<"expert_choice",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "expert-choice MoE layer (Zhou et al. 2022)";
  let description = [{
    Every expert takes the `C` tokens of its group with the largest router
    probability for it, `C = min(G, max(min_capacity, ceil(G * cf / E)))` or
    `min(expert_capacity, G)` (SEMANTICS.md section 4). A token's output is the
    probability-weighted sum of the experts that took it, zero if none did.
    Operands as in `moe.token_choice`. Results: `y`, `z_loss`,
    `expert_counts [E]` (tokens taken per expert over all groups),
    `unrouted` (tokens no expert took) and `capacity`.

    ```mlir
    %y, %z, %counts, %unrouted, %cap = moe.expert_choice %x router(%wr)
        experts(w1 %w1 w2 %w2) {activation = #moe.activation<gelu>}
        : (tensor<2x64x32xf32>, tensor<32x4xf32>, tensor<4x32x64xf32>,
           tensor<4x64x32xf32>)
        -> (tensor<2x64x32xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>,
            tensor<i64>)
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x,
      MoE_F32Tensor2:$router_weight, Optional<MoE_F32Tensor1>:$router_bias,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation,
      DefaultValuedAttr<F64Attr, "2.0">:$capacity_factor,
      OptionalAttr<I64Attr>:$expert_capacity,
      DefaultValuedAttr<I64Attr, "0">:$min_capacity,
      MoE_DefaultGrouping:$group,
      DefaultValuedAttr<F64Attr, "0.001">:$z_loss_weight,
      DefaultValuedAttr<F64Attr, "0.0">:$jitter);
  let results = (outs MoE_Tensor3:$y, MoE_F32Tensor0:$z_loss,
      MoE_I64Tensor1:$expert_counts, MoE_I64Tensor0:$unrouted,
      MoE_I64Tensor0:$capacity);
  let assemblyFormat = [{
    $x `router` `(` $router_weight (`bias` $router_bias^)? `)`
    `experts` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SoftMoEOp : MoE_Op<"soft_moe", [Pure, AttrSizedOperandSegments]> {
  let summary = "Soft MoE layer (Puigcerver et al. 2023)";
  let description = [{
    Every slot is a softmax-weighted mix of all tokens of its group, every
    output a softmax-weighted mix of all slots (SEMANTICS.md section 5).
    `phi : [D, E * slots_per_expert]`, `scale : tensor<f32>`; with
    `normalize` (the default) tokens and `phi` columns are L2-normalized
    before the logits. `noise_std` is training-only logit noise. No token is
    ever dropped.

    ```mlir
    %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2)
        {activation = #moe.activation<gelu>, slots_per_expert = 2 : i64}
        : (tensor<?x196x768xf32>, tensor<768x256xf32>, tensor<f32>,
           tensor<128x768x3072xf32>, tensor<128x3072x768xf32>)
        -> tensor<?x196x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_Tensor2:$phi, MoE_F32Tensor0:$scale,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation,
      DefaultValuedAttr<I64Attr, "1">:$slots_per_expert,
      DefaultValuedAttr<BoolAttr, "true">:$normalize,
      MoE_DefaultGrouping:$group,
      DefaultValuedAttr<F64Attr, "0.0">:$noise_std);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $x `phi` `(` $phi `scale` $scale `)`
    `experts` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_FFNOp : MoE_Op<"ffn", [Pure, AttrSizedOperandSegments]> {
  let summary = "dense feed-forward layer (one expert applied to every token)";
  let description = [{
    `y_t = act(x_t W1 + b1) W2 + b2`, or the gated form with `wg`
    (SEMANTICS.md sections 1 and 7). `w1 : [D, F]`, `w2 : [F, D]`.

    ```mlir
    %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
        : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>)
        -> tensor<?x8x16xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x,
      MoE_Tensor2:$w1, Optional<MoE_Tensor2>:$wg, MoE_Tensor2:$w2,
      Optional<MoE_Tensor1>:$b1, Optional<MoE_Tensor1>:$b2,
      MoE_ActivationAttr:$activation);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $x `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_NormOp : MoE_Op<"norm", [Pure]> {
  let summary = "RMS or layer normalization over the model width";
  let description = [{
    `rms(v) = v / sqrt(mean(v^2) + 1e-6) * w`,
    `layer(v) = (v - mean v) / sqrt(var v + 1e-5) * w + b`, over the last
    dimension (SEMANTICS.md section 7). `layer` takes a bias, `rms` none.
    Statistics are computed in f32 whatever the dtype.

    ```mlir
    %n = moe.norm rms %x, %w : (tensor<?x8x16xbf16>, tensor<16xbf16>) -> tensor<?x8x16xbf16>
    ```
  }];
  let arguments = (ins MoE_NormKindAttr:$kind, MoE_Tensor3:$x,
      MoE_Tensor1:$weight, Optional<MoE_Tensor1>:$bias);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $kind $x `,` $weight (`,` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ResidualOp : MoE_Op<"residual", [Pure, SameOperandsAndResultType]> {
  let summary = "the residual connection of a block: x + layer(norm(x))";
  let description = [{
    Marks the end of a pre-norm residual block (SEMANTICS.md section 7):
    `y = x + f`. `moe-decompose` turns it into `arith.addf`.

    ```mlir
    %y = moe.residual %x, %f : tensor<?x8x16xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_Tensor3:$f);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = "$x `,` $f attr-dict `:` type($y)";
}

//===----------------------------------------------------------------------===//
// Routing level: router
//===----------------------------------------------------------------------===//

def MoE_RouterLogitsOp : MoE_Op<"router_logits", [Pure]> {
  let summary = "f32 router logits of grouped tokens";
  let description = [{
    `z = float32(x) . Wr (+ br)` for `x : [NG, G, D]` in the model dtype,
    `Wr : [D, E]` f32; the result `[NG, G, E]` is f32 (SEMANTICS.md section 2,
    selective precision). `jitter` is carried for training and not applied
    at inference.

    ```mlir
    %z = moe.router_logits %x, %wr : (tensor<4x512x768xbf16>, tensor<768x8xf32>) -> tensor<4x512x8xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_F32Tensor2:$weight,
      Optional<MoE_F32Tensor1>:$bias,
      DefaultValuedAttr<F64Attr, "0.0">:$jitter);
  let results = (outs MoE_F32Tensor3:$logits);
  let assemblyFormat = [{
    $x `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RouterProbsOp : MoE_Op<"router_probs", [Pure, SameOperandsAndResultType]> {
  let summary = "stable softmax of router logits over the experts";
  let description = [{
    `p = softmax(z)` over the last (expert) dimension, computed by subtracting
    the row maximum (SEMANTICS.md section 2). A row with a non-finite logit
    gives a NaN row, which routing treats as a token routed nowhere.

    ```mlir
    %p = moe.router_probs %z : tensor<4x512x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$logits);
  let results = (outs MoE_F32Tensor3:$probs);
  let assemblyFormat = "$logits attr-dict `:` type($probs)";
}

def MoE_ExpertCapacityOp : MoE_Op<"expert_capacity", [Pure]> {
  let summary = "rows per expert per group";
  let description = [{
    For router probabilities `[NG, G, E]`: with `capacity_factor = cf`,
    `C = min(G, max(min_capacity, ceil(top_k * G * cf / E)))`; with
    `expert_capacity = N`, `C = min(N, G)`; with neither, `C = G` (dropless)
    (SEMANTICS.md 3.2 and 4). Folds to a constant when `G` is static.

    ```mlir
    %c = moe.expert_capacity %p {capacity_factor = 1.25 : f64} : tensor<?x512x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$probs,
      DefaultValuedAttr<I64Attr, "1">:$top_k,
      OptionalAttr<F64Attr>:$capacity_factor,
      OptionalAttr<I64Attr>:$expert_capacity,
      DefaultValuedAttr<I64Attr, "0">:$min_capacity);
  let results = (outs Index:$capacity);
  let assemblyFormat = "$probs attr-dict `:` type($probs)";
  let hasVerifier = 1;
  let hasFolder = 1;
  let extraClassDeclaration = [{
    /// The capacity for a group of `groupSize` tokens and `numExperts`.
    int64_t computeCapacity(int64_t groupSize, int64_t numExperts);
    /// The least capacity a capacity factor gives: min_capacity, and a row
    /// for a positive factor, as the ceiling of a positive number is (a
    /// subnormal factor's product underflows to 0).
    int64_t getCapacityFloor();
  }];
}

//===----------------------------------------------------------------------===//
// Routing level: token choice
//===----------------------------------------------------------------------===//

def MoE_TokenChoiceRouteOp : MoE_Op<"token_choice_route", [Pure]> {
  let summary = "top-k choices, gates, capacity positions and kept mask";
  let description = [{
    For probabilities `p : [NG, G, E]` and capacity `C`, computes per token
    and choice rank `j < top_k` (SEMANTICS.md 3.1-3.5): `experts` (ties towards
    the smaller index), `gates` (renormalized with `normalize_gates`),
    `positions` (assignments to the same expert earlier in `priority` order)
    and `kept` (`position < C`). With `reroute_dropped` (top-1 only) a dropped
    token takes its next most probable expert with a free row. A token whose
    probabilities are not finite has no assignment: expert `-1`, position
    `-1`, not kept, gate NaN; it takes no capacity.

    ```mlir
    %e, %g, %pos, %kept = moe.token_choice_route %p, %c {top_k = 2 : i64}
        : (tensor<4x512x8xf32>, index)
        -> (tensor<4x512x2xi64>, tensor<4x512x2xf32>, tensor<4x512x2xi64>, tensor<4x512x2xi1>)
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$probs, Index:$capacity,
      DefaultValuedAttr<I64Attr, "1">:$top_k,
      UnitAttr:$normalize_gates,
      MoE_DefaultPriority:$priority,
      UnitAttr:$reroute_dropped);
  let results = (outs MoE_I64Tensor3:$experts, MoE_F32Tensor3:$gates,
      MoE_I64Tensor3:$positions, MoE_I1Tensor3:$kept);
  let assemblyFormat = [{
    $probs `,` $capacity attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_TokenChoiceRouterOp : MoE_Op<"token_choice_router", [Pure]> {
  let summary = "router logits, probabilities and token-choice routing as one computation";
  let description = [{
    The fused form of `moe.router_logits` + `moe.router_probs` +
    `moe.token_choice_route`, as `moe-fuse-router` forms it: `logits` and
    `probs` as those ops define them (SEMANTICS.md section 2, f32 whatever
    the model dtype), then `experts`, `gates`, `positions` and `kept` as
    `moe.token_choice_route` defines them for `probs` and `capacity`.

    The CPU lowering computes each tile of tokens' logits, softmax and top-k
    choices in one parallel pass over the tokens, while the tile is in
    cache; only the capacity positions, which follow the priority order,
    take a second, sequential pass over each group's choices.

    ```mlir
    %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %wr capacity %c
        {top_k = 2 : i64}
        : (tensor<4x512x768xf32>, tensor<768x8xf32>, index)
        -> (tensor<4x512x8xf32>, tensor<4x512x8xf32>, tensor<4x512x2xi64>,
            tensor<4x512x2xf32>, tensor<4x512x2xi64>, tensor<4x512x2xi1>)
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_F32Tensor2:$weight,
      Optional<MoE_F32Tensor1>:$bias, Index:$capacity,
      DefaultValuedAttr<I64Attr, "1">:$top_k,
      UnitAttr:$normalize_gates,
      MoE_DefaultPriority:$priority,
      UnitAttr:$reroute_dropped);
  let results = (outs MoE_F32Tensor3:$logits, MoE_F32Tensor3:$probs,
      MoE_I64Tensor3:$experts, MoE_F32Tensor3:$gates,
      MoE_I64Tensor3:$positions, MoE_I1Tensor3:$kept);
  let assemblyFormat = [{
    $x `,` $weight (`bias` $bias^)? `capacity` $capacity attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure]> {
  let summary = "scatter kept tokens into per-expert capacity buffers";
  let description = [{
    `buffers[e, g, c, :] = x[g, t, :]` for every kept assignment of token `t`
    of group `g` to expert `e` at position `c`; rows no token claimed are
    zero. `x : [NG, G, D]`, routing tensors `[NG, G, k]`, result
    `[E, NG, C, D]` where `C` is the `capacity` operand.

    ```mlir
    %buf = moe.dispatch %x, %e, %pos, %kept, %c
        : (tensor<4x512x768xf32>, tensor<4x512x1xi64>, tensor<4x512x1xi64>,
           tensor<4x512x1xi1>, index) -> tensor<8x4x80x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_I64Tensor3:$experts,
      MoE_I64Tensor3:$positions, MoE_I1Tensor3:$kept, Index:$capacity);
  let results = (outs MoE_Tensor4:$buffers);
  let assemblyFormat = [{
    $x `,` $experts `,` $positions `,` $kept `,` $capacity attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", [Pure]> {
  let summary = "gate-weighted gather of expert outputs back to tokens";
  let description = [{
    `y[g, t] = sum over kept j of gates[g, t, j] * out[e, g, pos, :]`
    (SEMANTICS.md 3.6), accumulated in f32; a token with nothing kept gets
    zero, a token with a NaN gate (non-finite router input) gets NaN.
    `out : [E, NG, C, D]`, result `[NG, G, D]`.

    ```mlir
    %y = moe.combine %out, %e, %pos, %kept, %g
        : (tensor<8x4x80x768xf32>, tensor<4x512x1xi64>, tensor<4x512x1xi64>,
           tensor<4x512x1xi1>, tensor<4x512x1xf32>) -> tensor<4x512x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor4:$expert_outputs, MoE_I64Tensor3:$experts,
      MoE_I64Tensor3:$positions, MoE_I1Tensor3:$kept, MoE_F32Tensor3:$gates);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $expert_outputs `,` $experts `,` $positions `,` $kept `,` $gates attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_DispatchGroupedOp : MoE_Op<"dispatch_grouped", [Pure]> {
  let summary = "dropless dispatch: tokens sorted by expert plus offsets";
  let description = [{
    The dropless form of dispatch (MegaBlocks-style grouped layout). Every
    kept assignment `(g, t, j)` becomes one row of `rows : [NG * G * k, D]`;
    rows are sorted by expert (stable in group, token, rank order), expert
    `e` owns rows `[offsets[e], offsets[e + 1])`, `offsets : [E + 1]`.
    `slots : [NG, G, k]` gives the row of each assignment (`-1` when not
    kept); rows past `offsets[E]` are zero.

    ```mlir
    %rows, %offsets, %slots = moe.dispatch_grouped %x, %e, %kept
        : (tensor<?x512x768xf32>, tensor<?x512x2xi64>, tensor<?x512x2xi1>)
        -> (tensor<?x768xf32>, tensor<9xi64>, tensor<?x512x2xi64>)
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_I64Tensor3:$experts,
      MoE_I1Tensor3:$kept);
  let results = (outs MoE_Tensor2:$rows, MoE_I64Tensor1:$offsets,
      MoE_I64Tensor3:$slots);
  let assemblyFormat = [{
    $x `,` $experts `,` $kept attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CombineGroupedOp : MoE_Op<"combine_grouped", [Pure]> {
  let summary = "combine for the dropless grouped form";
  let description = [{
    `y[g, t] = sum over kept j of gates[g, t, j] * out[slots[g, t, j]]`,
    accumulated in f32; NaN gates give NaN rows as in `moe.combine`.

    ```mlir
    %y = moe.combine_grouped %out, %slots, %kept, %g
        : (tensor<?x768xf32>, tensor<?x512x2xi64>, tensor<?x512x2xi1>,
           tensor<?x512x2xf32>) -> tensor<?x512x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor2:$expert_outputs, MoE_I64Tensor3:$slots,
      MoE_I1Tensor3:$kept, MoE_F32Tensor3:$gates);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $expert_outputs `,` $slots `,` $kept `,` $gates attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Routing level: experts
//===----------------------------------------------------------------------===//

def MoE_ExpertsOp : MoE_Op<"experts", [Pure, AttrSizedOperandSegments]> {
  let summary = "all expert MLPs at once over per-expert row buffers";
  let description = [{
    `out[e] = act(in[e] W1[e] + b1[e]) W2[e] + b2[e]` (or the gated form) for
    `in : [E, M, D]`; matrix products accumulate in f32, results are stored
    in the dtype of `in` (SEMANTICS.md section 1).

    ```mlir
    %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
        : (tensor<8x320x768xf32>, tensor<8x768x3072xf32>, tensor<8x3072x768xf32>)
        -> tensor<8x320x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$input,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation);
  let results = (outs MoE_Tensor3:$output);
  let assemblyFormat = [{
    $input `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_GroupedExpertsOp : MoE_Op<"grouped_experts",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "expert MLPs over rows sorted by expert (dropless form)";
  let description = [{
    Applies expert `e` to rows `[offsets[e], offsets[e + 1])` of
    `rows : [A, D]`; rows past `offsets[E]` are zero in the result.

    ```mlir
    %o = moe.grouped_experts %rows, %offsets weights(w1 %w1 w2 %w2)
        {activation = #moe.activation<silu>}
        : (tensor<?x768xf32>, tensor<9xi64>, tensor<8x768x3072xf32>,
           tensor<8x3072x768xf32>) -> tensor<?x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor2:$rows, MoE_I64Tensor1:$offsets,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation);
  let results = (outs MoE_Tensor2:$output);
  let assemblyFormat = [{
    $rows `,` $offsets
    `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RoutedExpertsOp : MoE_Op<"routed_experts",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "dispatch, expert MLPs and combine as one computation";
  let description = [{
    The fused form of `moe.dispatch` + `moe.experts` + `moe.combine` (with a
    `capacity`) and of `moe.dispatch_grouped` + `moe.grouped_experts` +
    `moe.combine_grouped` (without one), as `moe-fuse-experts` forms it:

    `y[g, t] = sum over kept j of gates[g, t, j] * f_e(x[g, t])` with
    `e = experts[g, t, j]`, accumulated in f32 in `j` order; a token with
    nothing kept gets zero, one with a NaN gate gets NaN, exactly as the
    unfused ops. Each expert's MLP runs on the rows of its kept assignments
    only: no capacity buffer `[E, NG, C, D]` is materialized and padded rows
    are never computed. `capacity`, when present, bounds the kept rows of an
    expert in a group (it sizes the row buffers; routing already applied it
    to `kept`).

    ```mlir
    %y = moe.routed_experts %x, %e, %kept, %g capacity %c
        weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
        : (tensor<4x512x768xf32>, tensor<4x512x1xi64>, tensor<4x512x1xi1>,
           tensor<4x512x1xf32>, index, tensor<8x768x3072xf32>,
           tensor<8x3072x768xf32>) -> tensor<4x512x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_I64Tensor3:$experts,
      MoE_I1Tensor3:$kept, MoE_F32Tensor3:$gates, Optional<Index>:$capacity,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $x `,` $experts `,` $kept `,` $gates (`capacity` $capacity^)?
    `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ChosenExpertsOp : MoE_Op<"chosen_experts",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "expert-choice dispatch, expert MLPs and combine as one computation";
  let description = [{
    The fused form of `moe.expert_choice_dispatch` + `moe.experts` +
    `moe.expert_choice_combine`, as `moe-fuse-experts` forms it: every
    expert's MLP runs on the tokens it chose (`tokens : [NG, E, C]`, -1 for
    none), read straight from `x`, and each token's output is the f32 sum,
    in expert order, of `gates[g, e, c]` times the rows that chose it; a
    token with non-finite router probabilities gets NaN, exactly as the
    unfused ops. No `[E, NG, C, D]` buffer is materialized.

    ```mlir
    %y = moe.chosen_experts %x, %tok, %gates, %probs
        weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
        : (tensor<4x512x768xf32>, tensor<4x8x128xi64>, tensor<4x8x128xf32>,
           tensor<4x512x8xf32>, tensor<8x768x3072xf32>,
           tensor<8x3072x768xf32>) -> tensor<4x512x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_I64Tensor3:$tokens,
      MoE_F32Tensor3:$gates, MoE_F32Tensor3:$probs,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $x `,` $tokens `,` $gates `,` $probs
    `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Routing level: expert choice
//===----------------------------------------------------------------------===//

def MoE_ExpertChoiceRouteOp : MoE_Op<"expert_choice_route", [Pure]> {
  let summary = "every expert picks its top-C tokens";
  let description = [{
    For `p : [NG, G, E]`, `tokens[g, e, c]` is the token of group `g` with the
    `c`-th largest `p[g, :, e]` (ties towards the smaller token index) and
    `gates[g, e, c]` its probability (SEMANTICS.md section 4). Tokens with
    non-finite probabilities are never picked; slots left empty hold token
    `-1` and gate 0.

    ```mlir
    %tok, %gate = moe.expert_choice_route %p, %c
        : (tensor<2x64x4xf32>, index) -> (tensor<2x4x32xi64>, tensor<2x4x32xf32>)
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$probs, Index:$capacity);
  let results = (outs MoE_I64Tensor3:$tokens, MoE_F32Tensor3:$gates);
  let assemblyFormat = [{
    $probs `,` $capacity attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertChoiceDispatchOp : MoE_Op<"expert_choice_dispatch", [Pure]> {
  let summary = "gather the tokens each expert picked";
  let description = [{
    `buffers[e, g, c, :] = x[g, tokens[g, e, c], :]`, zero for empty slots.
    Result `[E, NG, C, D]`.

    ```mlir
    %buf = moe.expert_choice_dispatch %x, %tok
        : (tensor<2x64x32xf32>, tensor<2x4x32xi64>) -> tensor<4x2x32x32xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_I64Tensor3:$tokens);
  let results = (outs MoE_Tensor4:$buffers);
  let assemblyFormat = [{
    $x `,` $tokens attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertChoiceCombineOp : MoE_Op<"expert_choice_combine", [Pure]> {
  let summary = "probability-weighted scatter-add of expert outputs";
  let description = [{
    `y[g, t] = sum over (e, c) with tokens[g, e, c] = t of gates[g, e, c] *
    out[e, g, c]`, accumulated in f32; zero for tokens no expert took, NaN for
    tokens whose router probabilities `probs : [NG, G, E]` are not finite.

    ```mlir
    %y = moe.expert_choice_combine %out, %tok, %gate, %p
        : (tensor<4x2x32x32xf32>, tensor<2x4x32xi64>, tensor<2x4x32xf32>,
           tensor<2x64x4xf32>) -> tensor<2x64x32xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor4:$expert_outputs, MoE_I64Tensor3:$tokens,
      MoE_F32Tensor3:$gates, MoE_F32Tensor3:$probs);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $expert_outputs `,` $tokens `,` $gates `,` $probs attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Routing level: Soft MoE
//===----------------------------------------------------------------------===//

def MoE_SoftLogitsOp : MoE_Op<"soft_logits", [Pure]> {
  let summary = "Soft MoE token-slot logits";
  let description = [{
    `L = Xh Phih : [NG, m, S]` in f32 with `Xh`, `Phih` normalized as in
    SEMANTICS.md 5.1 when `normalize` is set (`Phih = scale * Phi / ||phi_j||`),
    else `Xh = X`, `Phih = scale * Phi`. `noise_std` is training-only.

    ```mlir
    %l = moe.soft_logits %x, %phi, %s {normalize = true}
        : (tensor<?x196x768xf32>, tensor<768x128xf32>, tensor<f32>) -> tensor<?x196x128xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_Tensor2:$phi, MoE_F32Tensor0:$scale,
      DefaultValuedAttr<BoolAttr, "true">:$normalize,
      DefaultValuedAttr<F64Attr, "0.0">:$noise_std);
  let results = (outs MoE_F32Tensor3:$logits);
  let assemblyFormat = [{
    $x `,` $phi `,` $scale attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SoftDispatchOp : MoE_Op<"soft_dispatch", [Pure]> {
  let summary = "slot inputs: softmax over tokens, then a weighted mix";
  let description = [{
    `Dw = softmax over tokens of L`, `Xs = Dw^T X` (SEMANTICS.md 5.3-5.4),
    laid out by expert: result `[n, NG, p, D]` holds slot `s = e * p + i` of
    group `g` at `[e, g, i]` (`p = slots_per_expert`, `n * p = S`).

    ```mlir
    %xs = moe.soft_dispatch %x, %l {slots_per_expert = 1 : i64}
        : (tensor<?x196x768xf32>, tensor<?x196x128xf32>) -> tensor<128x?x1x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_F32Tensor3:$logits,
      DefaultValuedAttr<I64Attr, "1">:$slots_per_expert);
  let results = (outs MoE_Tensor4:$slots);
  let assemblyFormat = [{
    $x `,` $logits attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SoftCombineOp : MoE_Op<"soft_combine", [Pure]> {
  let summary = "outputs: softmax over slots, then a weighted mix";
  let description = [{
    `Cw = softmax over slots of L`, `Y = Cw Ys` (SEMANTICS.md 5.6-5.7) with
    `Ys : [n, NG, p, D]` laid out as `moe.soft_dispatch` produces it; result
    `[NG, m, D]`.

    ```mlir
    %y = moe.soft_combine %l, %ys
        : (tensor<?x196x128xf32>, tensor<128x?x1x768xf32>) -> tensor<?x196x768xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$logits, MoE_Tensor4:$slot_outputs);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $logits `,` $slot_outputs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SoftExpertsOp : MoE_Op<"soft_experts", [Pure, AttrSizedOperandSegments]> {
  let summary = "Soft MoE dispatch, expert MLPs and combine as one computation";
  let description = [{
    The fused form of `moe.soft_dispatch` + `moe.experts` +
    `moe.soft_combine` over the same logits `L : [NG, m, S]`, as
    `moe-fuse-soft` forms it (SEMANTICS.md 5.3-5.7, `S = n * p`):
    slot inputs `Xs[g, s] = sum_i softmax_i(L[g, :, s])[i] x[g, i]`, rounded
    to the dtype of `x`; `Ys[g, s] = f_{s / p}(Xs[g, s])`;
    `y[g, i] = sum_s softmax_s(L[g, i, :])[s] Ys[g, s]`.

    The CPU lowering takes the softmax over tokens online, one tile of
    tokens at a time (a running maximum and sum per slot, the slot
    accumulators rescaled when the maximum grows), and the softmax over
    slots one tile of tokens at a time: neither weight matrix
    `[NG, m, S]` is materialized beyond a tile. Each expert's slots are
    read from the slot inputs as its row block is packed, and the combine
    reads the expert outputs where the MLPs wrote them.

    ```mlir
    %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2)
        {activation = #moe.activation<gelu>, slots_per_expert = 1 : i64}
        : (tensor<?x196x768xf32>, tensor<?x196x128xf32>,
           tensor<128x768x3072xf32>, tensor<128x3072x768xf32>)
        -> tensor<?x196x768xf32>
    ```
  }];
  let arguments = (ins MoE_Tensor3:$x, MoE_F32Tensor3:$logits,
      MoE_Tensor3:$w1, Optional<MoE_Tensor3>:$wg, MoE_Tensor3:$w2,
      Optional<MoE_Tensor2>:$b1, Optional<MoE_Tensor2>:$b2,
      MoE_ActivationAttr:$activation,
      DefaultValuedAttr<I64Attr, "1">:$slots_per_expert);
  let results = (outs MoE_Tensor3:$y);
  let assemblyFormat = [{
    $x `,` $logits
    `weights` `(` `w1` $w1 (`wg` $wg^)? `w2` $w2 (`b1` $b1^)? (`b2` $b2^)? `)`
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Routing level: losses and statistics
//===----------------------------------------------------------------------===//

def MoE_LoadBalancingLossOp : MoE_Op<"load_balancing_loss", [Pure]> {
  let summary = "Switch load-balancing loss, averaged over groups";
  let description = [{
    `L_aux = weight * E * sum_e f_e * P_e` per group, where `f_e` is the
    fraction of tokens with `e` among their `top_k` choices (before any
    dropping) and `P_e` the mean probability (SEMANTICS.md section 6); the
    result is the mean over groups, NaN for a group with a non-finite token.

    ```mlir
    %aux = moe.load_balancing_loss %p {top_k = 1 : i64, weight = 0.01 : f64}
        : tensor<4x512x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$probs,
      DefaultValuedAttr<I64Attr, "1">:$top_k,
      DefaultValuedAttr<F64Attr, "0.01">:$weight);
  let results = (outs MoE_F32Tensor0:$loss);
  let assemblyFormat = "$probs attr-dict `:` type($probs)";
  let hasVerifier = 1;
}

def MoE_ZLossOp : MoE_Op<"z_loss", [Pure]> {
  let summary = "ST-MoE router z-loss, averaged over groups";
  let description = [{
    `L_z = weight * (1/G) * sum_t (logsumexp_e z_t[e])^2` per group, mean over
    groups (SEMANTICS.md section 6); logsumexp is computed stably.

    ```mlir
    %lz = moe.z_loss %z {weight = 1.0e-3 : f64} : tensor<4x512x8xf32>
    ```
  }];
  let arguments = (ins MoE_F32Tensor3:$logits,
      DefaultValuedAttr<F64Attr, "0.001">:$weight);
  let results = (outs MoE_F32Tensor0:$loss);
  let assemblyFormat = "$logits attr-dict `:` type($logits)";
}

def MoE_RoutingStatsOp : MoE_Op<"routing_stats", [Pure]> {
  let summary = "token-choice statistics: kept per expert, dropped, unrouted";
  let description = [{
    From the routing of `moe.token_choice_route` (SEMANTICS.md section 6):
    `expert_counts [E]` kept assignments per expert over all groups,
    `dropped` assignments that had an expert but no row, `unrouted` tokens
    with nothing kept.

    ```mlir
    %counts, %dropped, %unrouted = moe.routing_stats %e, %kept
        : (tensor<4x512x1xi64>, tensor<4x512x1xi1>)
        -> (tensor<8xi64>, tensor<i64>, tensor<i64>)
    ```
  }];
  let arguments = (ins MoE_I64Tensor3:$experts, MoE_I1Tensor3:$kept);
  let results = (outs MoE_I64Tensor1:$expert_counts, MoE_I64Tensor0:$dropped,
      MoE_I64Tensor0:$unrouted);
  let assemblyFormat = [{
    $experts `,` $kept attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertChoiceStatsOp : MoE_Op<"expert_choice_stats", [Pure]> {
  let summary = "expert-choice statistics: tokens per expert, unrouted tokens";
  let description = [{
    `expert_counts [E]`: tokens taken per expert over all groups; `unrouted`:
    tokens of the groups of `probs : [NG, G, E]` that no expert took.

    ```mlir
    %counts, %unrouted = moe.expert_choice_stats %tok, %p
        : (tensor<2x4x32xi64>, tensor<2x64x4xf32>) -> (tensor<4xi64>, tensor<i64>)
    ```
  }];
  let arguments = (ins MoE_I64Tensor3:$tokens, MoE_F32Tensor3:$probs);
  let results = (outs MoE_I64Tensor1:$expert_counts, MoE_I64Tensor0:$unrouted);
  let assemblyFormat = [{
    $tokens `,` $probs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

#endif // SWITCHYARD_DIALECT_MOE_IR_MOEOPS_TD
