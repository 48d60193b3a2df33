//===- Passes.td - Switchyard conversion passes ------------*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_CONVERSION_PASSES_TD
#define SWITCHYARD_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMoEToLinalg : Pass<"convert-moe-to-linalg"> {
  let summary = "Lower routing-level moe ops to linalg, tensor, scf, arith and math";
  let description = [{
    Lowers every routing-level op of the `moe` dialect (and `moe.norm`) to
    destination-style ops on tensors, computing exactly SEMANTICS.md:

    * router: `router_logits`, `router_probs` (stable softmax), `z_loss`
      (its sum over a group's tokens in f64),
      `moe.norm` and the dynamic `expert_capacity` as `linalg.generic` and
      arith;
    * routing: `token_choice_route` (top-k by successive maxima, capacity
      positions by running per-expert counts in priority order; batch
      priority through a stable LSD radix sort of the rank-1 probabilities),
      `expert_choice_route` (the same sort per expert), the load-balancing
      loss and statistics as `scf.for` loops over tokens: linear in the
      number of tokens, no quadratic search;
    * dispatch/combine: gathers as `linalg.generic` bodies that read the
      routing tables, so padded capacity rows are zero and cost no scatter;
    * experts: where d_model and d_ff are multiples of 32, packed products
      by row blocks, one parallel task per expert and block of rows (the
      dropless grouped form reads expert e's rows `[offsets[e],
      offsets[e + 1])`), the products of the fused `moe.routed_experts`, so
      that fusion changes no bits; otherwise `linalg.batch_matmul` (f32
      accumulation) with bias and activation epilogues, and the grouped form
      one `linalg.matmul` per expert over its rows;
    * soft MoE: numerically stable softmaxes over tokens and over slots as
      `linalg.generic` reductions.

    Layer-level ops must be decomposed first (`moe-decompose`).

    With `bf16-dot-products`, the packed products of bf16 experts read
    their operands in pairs along the reduction (weights `[N/32, K/2, 32,
    2]`, rows `[M/8, K/2, 8, 2]`), the layout of the AVX-512 BF16
    dot-product instruction (`vdpbf16ps`), which `switchyard-lower-vectors`
    then uses: two products a lane per instruction, no widening
    (`moec --bf16-dot-products`; off by default, see docs/Rationale.md).

    With `bf16-amx`, the packed products of bf16 experts are for AMX tiles:
    the weights in pairs as above, a block's rows `[M/8, K/32, 8, 32]` in
    bf16 (8 rows by 32 reduction steps, an AMX tile of rows), read as
    `[M/8, K/32, 8, 16, 2]` against the weights read as `[N/32, K/32, 16, 32,
    2]`, and the hidden activations written in the accumulator's own layout,
    `[M/8, F/32, 8, 32]`, in bf16. It takes precedence over
    `bf16-dot-products`. The driver sets it when the host has AMX
    (`moec --bf16-amx`).
  }];
  let options = [
    Option<"bf16DotProducts", "bf16-dot-products", "bool", "false",
           "Pack bf16 expert products in pairs along the reduction for the "
           "AVX-512 BF16 dot-product instruction">,
    Option<"bf16Amx", "bf16-amx", "bool", "false",
           "Pack bf16 expert products for AMX tiles: the weights in pairs, "
           "the rows in blocks of 8 rows by 32 reduction steps">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // SWITCHYARD_CONVERSION_PASSES_TD
