// RUN: moe-opt %s --switchyard-cpu-pipeline -verify-diagnostics

// The pipeline lowers the module's own functions; a moe op in a nested
// module is an error (switchyard-hoist-weight-packing checks), not IR that
// reaches the LLVM dialect untouched.

module {
module @inner {
  func.func @forward(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
    // expected-error @+1 {{'moe.token_choice' was not lowered: the CPU pipeline lowers the functions at the top level of the module}}
    %y:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
        : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
    return %y#0 : tensor<2x8x16xf32>
  }
}
}
