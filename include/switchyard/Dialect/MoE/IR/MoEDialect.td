//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_TD
#define SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let summary = "Mixture-of-Experts routing, dispatch, experts and combine";
  let description = [{
    The `moe` dialect represents Mixture-of-Experts layers at two levels.

    * The **layer level** has one op per block kind of a model: token-choice
      MoE (`moe.token_choice`, Switch / GShard / Mixtral routing with expert
      capacity), expert-choice MoE (`moe.expert_choice`), Soft MoE
      (`moe.soft_moe`), a dense feed-forward block (`moe.ffn`), and the
      pre-norm and residual pieces around them (`moe.norm`, `moe.residual`).
      Weights are operands; every option of the semantics is a typed or
      enum attribute.
    * The **routing level** splits each layer into the pieces that fusion and
      code generation work on: router logits and probabilities, top-k or
      expert-choice routing with capacity positions, dispatch into per-expert
      buffers (or the dropless grouped form), all experts at once, combine,
      soft dispatch/combine, and the auxiliary losses. Routing-level ops work
      on *grouped* tensors `[NG, G, ...]`: `NG` groups of `G` tokens that are
      routed together. `moe-decompose` rewrites the layer level into it.

    The numbers every op computes are those of `SEMANTICS.md`; each op's
    description names the section it implements.
  }];
  let cppNamespace = "::switchyard::moe";
  let useDefaultAttributePrinterParser = 1;
  let hasConstantMaterializer = 1;
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_TD
