// The named CPU pipeline, stage by stage, and with the IR after every pass.
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=routing' | FileCheck %s --check-prefix=ROUTING
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=fused' | FileCheck %s --check-prefix=FUSED
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=fused fusion=false' | FileCheck %s --check-prefix=UNFUSED
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=linalg' | FileCheck %s --check-prefix=LINALG
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=linalg fusion=false' | FileCheck %s --check-prefix=LINALG-UNFUSED
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=loops' | FileCheck %s --check-prefix=LOOPS
// RUN: moe-opt %s --switchyard-cpu-pipeline | FileCheck %s --check-prefix=LLVM
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=linalg' --mlir-print-ir-after-all 2>&1 >/dev/null | FileCheck %s --check-prefix=AFTER
// RUN: not moe-opt %s '--switchyard-cpu-pipeline=stop-after=bogus' 2>&1 | FileCheck %s --check-prefix=BAD

// ROUTING-LABEL: func.func @block
// ROUTING:       moe.router_logits
// ROUTING:       moe.token_choice_route
// ROUTING-NOT:   moe.token_choice {{.+}} router

// FUSED-LABEL: func.func @block
// FUSED-NOT:   moe.dispatch
// FUSED:       moe.routed_experts
// FUSED-NOT:   moe.combine

// UNFUSED-LABEL: func.func @block
// UNFUSED:       moe.dispatch
// UNFUSED:       moe.experts
// UNFUSED:       moe.combine
// UNFUSED-NOT:   moe.routed_experts

// With fusion, each (expert, row block) task runs the MLP on its own rows.
// LINALG-LABEL: func.func @block
// LINALG-NOT:   moe.
// LINALG:       scf.forall
// LINALG:         linalg.matmul
// LINALG:         linalg.matmul
// LINALG:         tensor.parallel_insert_slice
// LINALG-NOT:   linalg.batch_matmul

// LINALG-UNFUSED-LABEL: func.func @block
// LINALG-UNFUSED:       linalg.batch_matmul

// LOOPS-LABEL: func.func @block
// LOOPS-SAME:    memref<?x8x16xf32>
// LOOPS:         scf.parallel
// LOOPS-NOT:     linalg.

// Buffers come from the runtime's allocator (lib/Runtime/Workspace.cpp),
// which keeps them from one run to the next, not from malloc.
// LLVM-NOT:   llvm.func @malloc
// LLVM-LABEL: llvm.func @block
// LLVM:       llvm.call @_mlir_memref_to_llvm_alloc
// LLVM:       llvm.call @_mlir_memref_to_llvm_free
// LLVM:       llvm.func @_mlir_ciface_block
// LLVM-NOT:   moe.
// LLVM-NOT:   llvm.func @malloc

// BAD: for the --stop-after option: Cannot find option named 'bogus'!

// AFTER: IR Dump After MoEInline
// AFTER: IR Dump After MoEDecompose
// AFTER: IR Dump After Canonicalizer
// AFTER: IR Dump After MoEFuseExperts
// AFTER: IR Dump After ConvertMoEToLinalg
// AFTER: IR Dump After CSE

func.func @block(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x8x16xf32>
    attributes {llvm.emit_c_interface} {
  %y:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y#0 : tensor<?x8x16xf32>
}

// A norm and a residual addition. The norm's sum of squares is a vector a
// row, its lanes added as a tree (reassoc), not in order. The residual
// addition writes a fresh buffer without first copying %x into it: %x is
// read only by the norm's two passes and the addition, each vectorized.
// LOOPS-LABEL: func.func @norm_residual
// LOOPS-SAME:    (%[[X:.+]]: memref<?x8x16xf32>
// LOOPS-NOT:     memref.load %[[X]]
// LOOPS:         vector.reduction <add>, {{.+}} : vector<16xf32> into f32
// LOOPS-NOT:     memref.load %[[X]]
// LOOPS:         return
// LLVM-LABEL: llvm.func @norm_residual
// LLVM:       "llvm.intr.vector.reduce.fadd"({{.+}}) <{fastmathFlags = #llvm.fastmath<reassoc>}> : (f32, vector<16xf32>) -> f32
func.func @norm_residual(%x: tensor<?x8x16xf32>, %w: tensor<16xf32>) -> tensor<?x8x16xf32>
    attributes {llvm.emit_c_interface} {
  %n = moe.norm rms %x, %w : (tensor<?x8x16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  %y = moe.residual %x, %n : tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}
