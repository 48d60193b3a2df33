//===- InitAll.cpp - Register every Switchyard dialect and pass -----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/InitAll.h"

#include "switchyard/Conversion/Passes.h"
#include "switchyard/Dialect/MoE/IR/MoEDialect.h"
#include "switchyard/Dialect/MoE/Transforms/Passes.h"
#include "switchyard/Pipelines/Pipelines.h"
#include "switchyard/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"

void switchyard::registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<moe::MoEDialect>();
}

void switchyard::registerAllPasses() {
  moe::registerMoEPasses();
  registerConversionPasses();
  registerSwitchyardPasses();
  registerPipelines();
}
