//===- Passes.h - Switchyard conversion passes ------------------*- C++ -*-===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_CONVERSION_PASSES_H
#define SWITCHYARD_CONVERSION_PASSES_H

#include "switchyard/Conversion/MoEToLinalg/MoEToLinalg.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Pass/Pass.h"

namespace switchyard {

#define GEN_PASS_DECL
#include "switchyard/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "switchyard/Conversion/Passes.h.inc"

} // namespace switchyard

#endif // SWITCHYARD_CONVERSION_PASSES_H
