// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=loops' | FileCheck %s
// RUN: moe-opt %s --switchyard-cpu-pipeline | FileCheck %s --check-prefix=LLVM

// A layer in a loop (a block whose weights every iteration shares): each
// iteration yields a fresh buffer, and the deallocation pipeline frees the
// one before it.

// CHECK-LABEL: func.func @forward
// The loop carries its buffer and whether it owns it.
// CHECK:         scf.for {{.+}} iter_args(%{{.+}} = %{{.+}}, %{{.+}} = %false) -> (memref<2x8x16xf32>, i1)
// CHECK:           scf.parallel
// CHECK:           memref.dealloc
// CHECK:           scf.yield
// CHECK:         return

// LLVM-LABEL: llvm.func @forward
// LLVM-NOT:     moe.
// LLVM-NOT:     scf.
func.func @forward(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %r = scf.for %i = %c0 to %c3 step %c1 iter_args(%h = %x) -> tensor<2x8x16xf32> {
    %y:7 = moe.token_choice %h router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
        : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
    scf.yield %y#0 : tensor<2x8x16xf32>
  }
  return %r : tensor<2x8x16xf32>
}
