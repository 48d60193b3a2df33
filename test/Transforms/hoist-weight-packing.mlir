// RUN: moe-opt %s --switchyard-hoist-weight-packing -split-input-file | FileCheck %s

// A weight whose only uses are its packing: the packing moves to
// @forward_prepack, @forward takes the packed weight, and the module records
// the weight's index among the weights (the norm weight is 0) and its
// packed shape.

// CHECK: module attributes {switchyard.prepack = [{shape = array<i64: 2, 2, 16, 32>, weight = 1 : i64}]}
// CHECK-LABEL: func.func @forward_prepack
// CHECK-SAME:    (%[[W:.+]]: tensor<2x16x64xf32>) -> tensor<2x2x16x32xf32> attributes {llvm.emit_c_interface}
// CHECK:         %[[E:.+]] = tensor.expand_shape %[[W]] {{\[}}[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
// CHECK:         %[[T:.+]] = linalg.transpose ins(%[[E]] : tensor<2x16x2x32xf32>) outs(%{{.+}} : tensor<2x2x16x32xf32>) permutation = [0, 2, 1, 3]
// CHECK-NOT:     switchyard.pack_weight
// CHECK:         return %[[T]]
// CHECK-LABEL: func.func @forward
// CHECK-SAME:    %[[N:[a-z0-9]+]]: tensor<16xf32> {switchyard.weight = "norm"}
// CHECK-SAME:    %[[P:[a-z0-9]+]]: tensor<2x2x16x32xf32> {switchyard.packed, switchyard.weight = "w1"}
// CHECK-NOT:     linalg.transpose
// CHECK:         return %[[P]], %[[N]]
module {
  func.func @forward(%x: tensor<?x16xf32>, %norm: tensor<16xf32> {switchyard.weight = "norm"},
                     %w: tensor<2x16x64xf32> {switchyard.weight = "w1"})
      -> (tensor<2x2x16x32xf32>, tensor<16xf32>) attributes {llvm.emit_c_interface} {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p, %norm : tensor<2x2x16x32xf32>, tensor<16xf32>
  }
}

// -----

// A weight that is also read unpacked stays as it is: packing it at load
// time would not save its reads.

// CHECK-NOT: switchyard.prepack
// CHECK-LABEL: func.func @forward
// CHECK-SAME:    tensor<2x16x64xf32> {switchyard.weight = "w1"}
// CHECK:         linalg.transpose
// CHECK-NOT:   func.func @forward_prepack
module {
  func.func @forward(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32> {switchyard.weight = "w1"})
      -> (tensor<2x2x16x32xf32>, tensor<2x16x64xf32>) attributes {llvm.emit_c_interface} {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p, %w : tensor<2x2x16x32xf32>, tensor<2x16x64xf32>
  }
}

// -----

// A function that is called keeps packing its weights: its callers pass them
// unpacked, and a prepack function would not reach them.

// CHECK-NOT: switchyard.prepack
// CHECK-LABEL: func.func @forward
// CHECK:         linalg.transpose
// CHECK-LABEL: func.func @caller
// CHECK-NOT: func.func @forward_prepack
module {
  func.func @forward(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32> {switchyard.weight = "w1"}) -> tensor<2x2x16x32xf32> {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p : tensor<2x2x16x32xf32>
  }
  func.func @caller(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32>) -> tensor<2x2x16x32xf32> {
    %r = func.call @forward(%x, %w) : (tensor<?x16xf32>, tensor<2x16x64xf32>) -> tensor<2x2x16x32xf32>
    return %r : tensor<2x2x16x32xf32>
  }
}


// -----

// Weights without a name are weights too (`arg<N>` in the manifest), and
// count in the index: the packed weight is the second.

// CHECK: module attributes {switchyard.prepack = [{shape = array<i64: 2, 2, 16, 32>, weight = 1 : i64}]}
// CHECK-LABEL: func.func @forward_prepack
// CHECK-LABEL: func.func @forward(
// CHECK-SAME:    tensor<2x2x16x32xf32> {switchyard.packed}
module {
  func.func @forward(%x: tensor<?x16xf32>, %router: tensor<16x2xf32>, %w: tensor<2x16x64xf32>)
      -> (tensor<2x2x16x32xf32>, tensor<16x2xf32>) {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p, %router : tensor<2x2x16x32xf32>, tensor<16x2xf32>
  }
}

// -----

// Only the entry's weights are packed when bound (the runtime binds the
// entry's); another public function keeps packing its own.

// CHECK: module attributes {switchyard.prepack = [{shape = array<i64: 2, 2, 16, 32>, weight = 0 : i64}]}
// CHECK-LABEL: func.func @block
// CHECK:         linalg.transpose
// CHECK-LABEL: func.func @forward_prepack
// CHECK-LABEL: func.func @forward(
// CHECK-SAME:    {switchyard.packed, switchyard.weight = "w1"}
// CHECK-NOT:   func.func @block_prepack
module {
  func.func @block(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32> {switchyard.weight = "w1"}) -> tensor<2x2x16x32xf32> {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p : tensor<2x2x16x32xf32>
  }
  func.func @forward(%x: tensor<?x16xf32>, %w: tensor<2x16x64xf32> {switchyard.weight = "w1"}) -> tensor<2x2x16x32xf32> {
    %e = tensor.expand_shape %w [[0], [1], [2, 3]] output_shape [2, 16, 2, 32]
        : tensor<2x16x64xf32> into tensor<2x16x2x32xf32>
    %init = tensor.empty() : tensor<2x2x16x32xf32>
    %p = linalg.transpose ins(%e : tensor<2x16x2x32xf32>) outs(%init : tensor<2x2x16x32xf32>)
        permutation = [0, 2, 1, 3] {switchyard.pack_weight}
    return %p : tensor<2x2x16x32xf32>
  }
}

// -----

// An entry without arguments has no weights (it crashed).

// CHECK-NOT: switchyard.prepack
// CHECK-LABEL: func.func @forward()
module {
  func.func @forward() {
    return
  }
}
