// RUN: moe-opt %s --switchyard-hoist-weight-packing -split-input-file -verify-diagnostics

// The prepack function's name is taken.
module {
  func.func @forward_prepack() {
    return
  }
  // expected-error @+1 {{cannot hoist the weight packing into 'forward_prepack': the module already has a symbol of that name}}
  func.func @forward(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32> {switchyard.weight = "w1"}) -> tensor<2x2x16x32xf32> {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p : tensor<2x2x16x32xf32>
  }
}
