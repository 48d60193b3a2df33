//===- moe-opt.cpp - The moe dialect's opt tool ---------------------------===//
//
// Part of Switchyard. All upstream dialects and passes plus Switchyard's, with
// the usual mlir-opt flags (--pass-pipeline, --mlir-print-ir-after-all,
// --mlir-timing, -split-input-file, -verify-diagnostics, ...).
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

#include "switchyard/InitAll.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllPasses();
  switchyard::registerAllDialects(registry);
  switchyard::registerAllPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "Switchyard modular optimizer driver\n", registry));
}
