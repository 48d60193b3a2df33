//===- MoEEnums.td - Enum attributes of the moe dialect ----*- tablegen -*-===//
//
// Closed choices of SEMANTICS.md are enum attributes, never strings.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_IR_MOEENUMS_TD
#define SWITCHYARD_DIALECT_MOE_IR_MOEENUMS_TD

include "switchyard/Dialect/MoE/IR/MoEDialect.td"
include "mlir/IR/EnumAttr.td"

def MoE_Activation : I32EnumAttr<"Activation",
    "expert activation (SEMANTICS.md section 1)", [
      I32EnumAttrCase<"relu", 0>,
      I32EnumAttrCase<"gelu", 1>,       // exact, erf
      I32EnumAttrCase<"gelu_tanh", 2>,
      I32EnumAttrCase<"silu", 3>,
      I32EnumAttrCase<"swiglu", 4>,     // gated: silu(v Wg) * (v W1)
      I32EnumAttrCase<"geglu", 5>       // gated: gelu(v Wg) * (v W1)
    ]> {
  let cppNamespace = "::switchyard::moe";
  let genSpecializedAttr = 0;
}
def MoE_ActivationAttr : EnumAttr<MoE_Dialect, MoE_Activation, "activation"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_Priority : I32EnumAttr<"Priority",
    "order in which assignments claim expert capacity (SEMANTICS.md 3.3)", [
      I32EnumAttrCase<"sequence", 0>,
      I32EnumAttrCase<"batch", 1>
    ]> {
  let cppNamespace = "::switchyard::moe";
  let genSpecializedAttr = 0;
}
def MoE_PriorityAttr : EnumAttr<MoE_Dialect, MoE_Priority, "priority"> {
  let assemblyFormat = "`<` $value `>`";
}

def MoE_Grouping : I32EnumAttr<"Grouping",
    "which tokens are routed together (SEMANTICS.md section 1)", [
      I32EnumAttrCase<"sequence", 0>,
      I32EnumAttrCase<"batch", 1>
    ]> {
  let cppNamespace = "::switchyard::moe";
  let genSpecializedAttr = 0;
}
def MoE_GroupingAttr : EnumAttr<MoE_Dialect, MoE_Grouping, "group"> {
  let assemblyFormat = "`<` $value `>`";
}

// Used only as a keyword of `moe.norm`, so it is the plain integer-backed
// enum attribute, which an assembly format prints bare (`moe.norm rms ...`).
def MoE_NormKindAttr : I32EnumAttr<"NormKind",
    "pre-norm of a block (SEMANTICS.md section 7)", [
      I32EnumAttrCase<"rms", 0>,
      I32EnumAttrCase<"layer", 1>
    ]> {
  let cppNamespace = "::switchyard::moe";
}

#endif // SWITCHYARD_DIALECT_MOE_IR_MOEENUMS_TD
