// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=routing' | FileCheck %s
// RUN: moe-opt %s '--switchyard-cpu-pipeline=stop-after=loops' | FileCheck %s --check-prefix=LOOPS

// The pipeline inlines the calls of the model: the called function's layers
// then read the entry's weights, which are packed once, when bound
// (`@forward_prepack`), instead of on every call.

// CHECK-NOT:   func.func private @block
// CHECK-LABEL: func.func @forward
// CHECK-NOT:     call
// CHECK:         moe.experts
// CHECK-NOT:     call
// CHECK:         moe.experts
// CHECK-NOT:     call
// CHECK:         return

// LOOPS:       module attributes {switchyard.prepack = [{shape = array<i64: 4, 2, 32, 32>, weight = 1 : i64}, {shape = array<i64: 4, 1, 64, 32>, weight = 2 : i64}]}
// LOOPS-LABEL: func.func @forward_prepack
// LOOPS-SAME:    -> (memref<4x2x32x32xf32>, memref<4x1x64x32xf32>)
// LOOPS-LABEL: func.func @forward(
// LOOPS-SAME:    %{{.+}}: memref<4x2x32x32xf32> {switchyard.packed, switchyard.weight = "w1"}
// LOOPS-SAME:    %{{.+}}: memref<4x1x64x32xf32> {switchyard.packed, switchyard.weight = "w2"}
// LOOPS-NOT:   func.func private @block
func.func private @block(%h: tensor<?x40x32xf32>, %wr: tensor<32x4xf32>, %w1: tensor<4x32x64xf32>, %w2: tensor<4x64x32xf32>) -> tensor<?x40x32xf32> {
  %y:7 = moe.token_choice %h router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
      : (tensor<?x40x32xf32>, tensor<32x4xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> (tensor<?x40x32xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y#0 : tensor<?x40x32xf32>
}

func.func @forward(%x: tensor<?x40x32xf32>, %wr: tensor<32x4xf32> {switchyard.weight = "wr"},
                    %w1: tensor<4x32x64xf32> {switchyard.weight = "w1"}, %w2: tensor<4x64x32xf32> {switchyard.weight = "w2"}) -> tensor<?x40x32xf32> {
  %a = func.call @block(%x, %wr, %w1, %w2) : (tensor<?x40x32xf32>, tensor<32x4xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x40x32xf32>
  %b = func.call @block(%a, %wr, %w1, %w2) : (tensor<?x40x32xf32>, tensor<32x4xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<?x40x32xf32>
  return %b : tensor<?x40x32xf32>
}
