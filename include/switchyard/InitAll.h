//===- InitAll.h - Register every Switchyard dialect and pass ---*- C++ -*-===//
//
// Part of Switchyard. The one place tools (moe-opt, moec, the Python
// package) learn about Switchyard's dialects, passes and pipelines.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_INITALL_H
#define SWITCHYARD_INITALL_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace switchyard {

/// Adds the moe dialect to `registry`.
void registerAllDialects(mlir::DialectRegistry &registry);

/// Registers Switchyard's passes and named pipelines with the global
/// registry, so `--pass-pipeline` and the command line know them.
void registerAllPasses();

} // namespace switchyard

#endif // SWITCHYARD_INITALL_H
