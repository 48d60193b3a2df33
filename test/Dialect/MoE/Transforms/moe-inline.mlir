// RUN: moe-opt %s --moe-inline -split-input-file | FileCheck %s
// RUN: moe-opt %s '--moe-inline=max-layers=3' -split-input-file -verify-diagnostics | FileCheck %s --check-prefix=BUDGET

// A chain of functions that each call the next twice: within the budget
// (128 layer ops by default), every call is inlined and the private
// functions go.

// CHECK-NOT:   func.func private
// CHECK-LABEL: func.func @forward
// CHECK-NOT:     call
// CHECK-COUNT-4: moe.token_choice
// CHECK-NOT:     call
// CHECK:         return

// With a budget of 3 layer ops, @f1 takes its two copies of @f2's layer
// (3 in the module, counting @f2's own), and @forward's calls of @f1 stay
// calls, with one warning.

// BUDGET-NOT:   func.func private @f2
// BUDGET-LABEL: func.func private @f1
// BUDGET-NOT:     call
// BUDGET-COUNT-2: moe.token_choice
// BUDGET-LABEL: func.func @forward
// BUDGET:         call @f1
// BUDGET:         call @f1
func.func private @f2(%h: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  %y:7 = moe.token_choice %h router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y#0 : tensor<2x8x16xf32>
}
func.func private @f1(%h: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  %a = func.call @f2(%h, %wr, %w1, %w2) : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  %b = func.call @f2(%a, %wr, %w1, %w2) : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return %b : tensor<2x8x16xf32>
}
func.func @forward(%h: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  // expected-warning @+1 {{not inlined: the module would hold more than 3 layer ops (moe-inline's max-layers); this call and any further ones pack their layers' weights on every call}}
  %a = func.call @f1(%h, %wr, %w1, %w2) : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  %b = func.call @f1(%a, %wr, %w1, %w2) : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return %b : tensor<2x8x16xf32>
}
