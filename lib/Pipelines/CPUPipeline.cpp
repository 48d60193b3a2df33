//===- CPUPipeline.cpp - From the moe dialect to LLVM on the CPU ----------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//

#include "switchyard/Pipelines/Pipelines.h"

#include "switchyard/Conversion/Passes.h"
#include "switchyard/Dialect/MoE/Transforms/Passes.h"
#include "switchyard/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void switchyard::buildCPUPipeline(OpPassManager &pm,
                                  const CPUPipelineOptions &options) {
  // The pipeline nests its own function passes and ends with module passes
  // (weight packing, the lowering to LLVM): it runs on a module.
  std::optional<StringRef> anchor = pm.getOpName();
  if (anchor && *anchor != ModuleOp::getOperationName())
    llvm::report_fatal_error(
        "switchyard-cpu-pipeline runs on a builtin.module, not nested under '" +
            *anchor +
            "': use --switchyard-cpu-pipeline or "
            "--pass-pipeline='builtin.module(switchyard-cpu-pipeline)'",
        /*gen_crash_diag=*/false);
  CPUStage stage = options.stopAfter;
  // Calls inlined (up to a budget of layer ops): the layers of a called
  // function then take the entry's weights, which
  // switchyard-hoist-weight-packing packs once, when bound; a function the
  // model calls is otherwise lowered on its own, packing its weights on
  // every call.
  pm.addPass(moe::createMoEInline());
  // Layer level -> routing level.
  OpPassManager &funcPm = pm.nest<func::FuncOp>();
  funcPm.addPass(moe::createMoEDecompose());
  funcPm.addPass(createCanonicalizerPass());
  if (stage == CPUStage::Routing)
    return;
  if (options.fusion) {
    funcPm.addPass(moe::createMoEFuseRouter());
    funcPm.addPass(moe::createMoEFuseExperts());
    funcPm.addPass(moe::createMoEFuseSoft());
  }
  if (stage == CPUStage::Fused)
    return;

  // Routing level -> linalg on tensors.
  ConvertMoEToLinalgOptions toLinalg;
  toLinalg.bf16DotProducts = options.bf16DotProducts;
  toLinalg.bf16Amx = options.bf16Amx;
  funcPm.addPass(createConvertMoEToLinalg(toLinalg));
  // The residual additions that moe-decompose leaves as arith on tensors.
  funcPm.addPass(createConvertElementwiseToLinalgPass());
  funcPm.addPass(createCanonicalizerPass());
  funcPm.addPass(createCSEPass());
  if (stage == CPUStage::Linalg)
    return;

  // Weights are packed once, when bound (the runtime calls the prepack
  // function), not on every run.
  pm.addPass(createSwitchyardHoistWeightPacking());

  // Matrix products: parallel blocks and vectorized register tiles.
  pm.nest<func::FuncOp>().addPass(createSwitchyardTileMatmuls());
  // Norms, epilogues, the combine and residuals by SIMD row segments.
  pm.nest<func::FuncOp>().addPass(createSwitchyardVectorizeElementwise());
  // Tiling leaves loops that carry a tensor and a slice of it unchanged
  // through their iterations; bufferized as they are, every register tile
  // would copy its accumulator into a fresh buffer and back. Folding those
  // iteration arguments away lets the tiles update the result in place.
  pm.nest<func::FuncOp>().addPass(createCanonicalizerPass());

  // Tensors -> buffers -> loops. Function boundaries get identity layouts so
  // the C interface sees plain strided descriptors.
  pm.addPass(createSwitchyardBufferize());
  bufferization::BufferDeallocationPipelineOptions dealloc;
  bufferization::buildBufferDeallocationPipeline(pm, dealloc);
  OpPassManager &loopsPm = pm.nest<func::FuncOp>();
  loopsPm.addPass(createSwitchyardLowerVectors());
  loopsPm.addPass(createForallToParallelLoopPass());
  if (options.parallel)
    loopsPm.addPass(createConvertLinalgToParallelLoopsPass());
  else
    loopsPm.addPass(createConvertLinalgToLoopsPass());
  loopsPm.addPass(createCanonicalizerPass());
  if (stage == CPUStage::Loops)
    return;

  // Loops -> LLVM. memref lowering comes before scf-to-cf so that OpenMP
  // regions verify (see docs/TOOLCHAIN notes in the README).
  // bf16 <-> f32 conversions as integer ops: LLVM would otherwise call
  // compiler-rt's __truncsfbf2, which the artifacts do not link.
  // bf16 arithmetic (the residual additions of a bf16 model) in f32, each
  // result rounded back: what LLVM's own promotion of bf16 computes, but
  // done here, where vector widths do not matter (LLVM's x86 backend could
  // not lower `fadd <9 x bfloat>`: d_model 9, 17, 25, ...). f16 vectors of
  // those widths lower, with AVX512-FP16 and without.
  arith::ArithEmulateUnsupportedFloatsOptions emulate;
  emulate.sourceTypeStrs = {"bf16"};
  pm.addPass(arith::createArithEmulateUnsupportedFloats(emulate));
  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addPass(arith::createArithExpandOpsPass(expand));
  if (options.parallel) {
    pm.nest<func::FuncOp>().addPass(createSwitchyardSerializeNestedParallel());
    pm.addPass(createConvertSCFToOpenMPPass());
  }
  pm.addPass(createConvertBufferizationToMemRefPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  // exp and erf as polynomials: LLVM would call libm once an element.
  pm.nest<func::FuncOp>().addPass(createSwitchyardApproximateMath());
  pm.addPass(createConvertMathToLLVMPass());
  // tanh has no LLVM intrinsic: libm's tanhf, exact to f32. Vector operands
  // are unrolled into calls with vector.extract/insert, which
  // convert-vector-to-llvm then lowers.
  pm.addPass(createConvertMathToLibmPass());
  // Row reductions (norms, softmax sums) add their vector's lanes as a
  // tree: in order, a 768-element sum would be 768 dependent additions.
  ConvertVectorToLLVMPassOptions vectorToLLVM;
  vectorToLLVM.reassociateFPReductions = true;
  // The bf16 dot products of switchyard-lower-vectors (x86vector.avx512.dot)
  // as calls of their LLVM intrinsic.
  vectorToLLVM.x86Vector = true;
  // And the AMX tile operations of bf16 products on AMX.
  vectorToLLVM.amx = true;
  pm.addPass(createConvertVectorToLLVMPass(vectorToLLVM));
  // Allocations call the runtime's allocator (lib/Runtime/Workspace.cpp),
  // which keeps a run's freed buffers for the next run.
  FinalizeMemRefToLLVMConversionPassOptions memrefToLLVM;
  memrefToLLVM.useGenericFunctions = true;
  pm.addPass(createFinalizeMemRefToLLVMConversionPass(memrefToLLVM));
  pm.addPass(createSCFToControlFlowPass());
  if (options.parallel)
    pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  // bf16 vectors of odd widths through memory as i16: LLVM's x86 back end
  // cannot select their loads and stores (d_model 9, 17, 25, ...).
  pm.addPass(createSwitchyardBF16VectorsThroughMemoryAsI16());
}

void switchyard::registerPipelines() {
  PassPipelineRegistration<CPUPipelineOptions>(
      "switchyard-cpu-pipeline",
      "Compile the moe dialect (layer level) to the LLVM dialect for the CPU",
      buildCPUPipeline);
}
