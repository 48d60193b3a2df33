//===- Pipelines.h - Switchyard's named compilation pipelines ---*- C++ -*-===//
//
// Part of Switchyard. The one source of truth for "how do we compile": moec,
// moe-opt (as --switchyard-cpu-pipeline) and the Python package all build
// their pass managers from these functions.
//
//===----------------------------------------------------------------------===//

#ifndef SWITCHYARD_PIPELINES_PIPELINES_H
#define SWITCHYARD_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassOptions.h"

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace switchyard {

/// Where the CPU pipeline stops.
enum class CPUStage {
  Routing, ///< moe dialect, routing level (after moe-decompose)
  Fused,   ///< moe dialect, routing level after the fusion passes
  Linalg,  ///< linalg/tensor/scf/arith/math on tensors
  Loops,   ///< bufferized, lowered to loops
  LLVM,    ///< the LLVM dialect
};

struct CPUPipelineOptions
    : public mlir::PassPipelineOptions<CPUPipelineOptions> {
  Option<bool> parallel{*this, "parallel",
                        llvm::cl::desc("Run independent loops on OpenMP "
                                       "threads (scf.parallel -> omp); "
                                       "default true"),
                        llvm::cl::init(true)};
  Option<bool> fusion{*this, "fusion",
                      llvm::cl::desc("Run the moe fusion passes "
                                     "(moe-fuse-router, moe-fuse-experts, "
                                     "moe-fuse-soft); default true"),
                      llvm::cl::init(true)};
  Option<bool> bf16DotProducts{
      *this, "bf16-dot-products",
      llvm::cl::desc("Multiply bf16 expert weights with the AVX-512 BF16 "
                     "dot-product instruction (vdpbf16ps): the target must "
                     "have avx512bf16"),
      llvm::cl::init(false)};
  Option<bool> bf16Amx{
      *this, "bf16-amx",
      llvm::cl::desc("Multiply bf16 expert weights on AMX tiles (tdpbf16ps): "
                     "the target must have amx-tile and amx-bf16 (moec and "
                     "the Python package set it when the host has them)"),
      llvm::cl::init(false)};
  Option<CPUStage> stopAfter{
      *this, "stop-after", llvm::cl::desc("The stage to stop after"),
      llvm::cl::init(CPUStage::LLVM),
      llvm::cl::values(
          clEnumValN(CPUStage::Routing, "routing",
                     "the moe dialect, routing level"),
          clEnumValN(CPUStage::Fused, "fused",
                     "the moe dialect after the fusion passes"),
          clEnumValN(CPUStage::Linalg, "linalg", "linalg on tensors"),
          clEnumValN(CPUStage::Loops, "loops", "bufferized loops"),
          clEnumValN(CPUStage::LLVM, "llvm", "the LLVM dialect"))};
};

/// Adds the CPU pipeline, from the layer-level moe dialect down to the LLVM
/// dialect (or the stage `options.stopAfter` names), to `pm`, which must be
/// anchored on builtin.module.
void buildCPUPipeline(mlir::OpPassManager &pm,
                      const CPUPipelineOptions &options);

/// Registers `switchyard-cpu-pipeline` with the global pass registry.
void registerPipelines();

} // namespace switchyard

#endif // SWITCHYARD_PIPELINES_PIPELINES_H
