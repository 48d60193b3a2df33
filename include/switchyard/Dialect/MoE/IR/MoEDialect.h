//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_H
#define SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "switchyard/Dialect/MoE/IR/MoEOpsDialect.h.inc"

#endif // SWITCHYARD_DIALECT_MOE_IR_MOEDIALECT_H
