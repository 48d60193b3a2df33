// RUN: moe-opt %s -moe-fuse-experts -split-input-file | FileCheck %s

// Capacity buffers: dispatch, the reshapes, experts and combine become one
// moe.routed_experts that keeps the capacity and the weights.

// CHECK-LABEL: func.func @capacity
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xf32>, %[[E:[a-z0-9]+]]: tensor<2x8x1xi64>, %[[POS:[a-z0-9]+]]: tensor<2x8x1xi64>, %[[K:[a-z0-9]+]]: tensor<2x8x1xi1>, %[[G:[a-z0-9]+]]: tensor<2x8x1xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xf32>, %[[B1:[a-z0-9]+]]: tensor<4x32xf32>)
// CHECK:       %[[C3:.+]] = arith.constant 3 : index
// CHECK-NEXT:  %[[Y:.+]] = moe.routed_experts %[[X]], %[[E]], %[[K]], %[[G]] capacity %[[C3]] weights(w1 %[[W1]] w2 %[[W2]] b1 %[[B1]]) {activation = #moe.activation<gelu>} : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x1xf32>, index, tensor<4x16x32xf32>, tensor<4x32x16xf32>, tensor<4x32xf32>) -> tensor<2x8x16xf32>
// CHECK-NEXT:  return %[[Y]]
func.func @capacity(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>,
                    %pos: tensor<2x8x1xi64>, %kept: tensor<2x8x1xi1>,
                    %g: tensor<2x8x1xf32>, %w1: tensor<4x16x32xf32>,
                    %w2: tensor<4x32x16xf32>, %b1: tensor<4x32xf32>)
    -> tensor<2x8x16xf32> {
  %c3 = arith.constant 3 : index
  %buf = moe.dispatch %x, %e, %pos, %kept, %c3
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, index) -> tensor<4x2x3x16xf32>
  %flat = tensor.collapse_shape %buf [[0], [1, 2], [3]]
      : tensor<4x2x3x16xf32> into tensor<4x6x16xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2 b1 %b1)
      {activation = #moe.activation<gelu>}
      : (tensor<4x6x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>,
         tensor<4x32xf32>) -> tensor<4x6x16xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 3, 16]
      : tensor<4x6x16xf32> into tensor<4x2x3x16xf32>
  %y = moe.combine %ob, %e, %pos, %kept, %g
      : (tensor<4x2x3x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, tensor<2x8x1xf32>) -> tensor<2x8x16xf32>
  return %y : tensor<2x8x16xf32>
}

// -----

// The dropless form: no capacity operand; top-2 with the gated weight.

// CHECK-LABEL: func.func @dropless
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xbf16>, %[[E:[a-z0-9]+]]: tensor<?x8x2xi64>, %[[K:[a-z0-9]+]]: tensor<?x8x2xi1>, %[[G:[a-z0-9]+]]: tensor<?x8x2xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xbf16>, %[[WG:[a-z0-9]+]]: tensor<4x16x32xbf16>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xbf16>)
// CHECK-NEXT:  %[[Y:.+]] = moe.routed_experts %[[X]], %[[E]], %[[K]], %[[G]] weights(w1 %[[W1]] wg %[[WG]] w2 %[[W2]]) {activation = #moe.activation<swiglu>}
// CHECK-NEXT:  return %[[Y]]
func.func @dropless(%x: tensor<?x8x16xbf16>, %e: tensor<?x8x2xi64>,
                    %kept: tensor<?x8x2xi1>, %g: tensor<?x8x2xf32>,
                    %w1: tensor<4x16x32xbf16>, %wg: tensor<4x16x32xbf16>,
                    %w2: tensor<4x32x16xbf16>) -> tensor<?x8x16xbf16> {
  %rows, %offsets, %slots = moe.dispatch_grouped %x, %e, %kept
      : (tensor<?x8x16xbf16>, tensor<?x8x2xi64>, tensor<?x8x2xi1>)
      -> (tensor<?x16xbf16>, tensor<5xi64>, tensor<?x8x2xi64>)
  %o = moe.grouped_experts %rows, %offsets weights(w1 %w1 wg %wg w2 %w2)
      {activation = #moe.activation<swiglu>}
      : (tensor<?x16xbf16>, tensor<5xi64>, tensor<4x16x32xbf16>,
         tensor<4x16x32xbf16>, tensor<4x32x16xbf16>) -> tensor<?x16xbf16>
  %y = moe.combine_grouped %o, %slots, %kept, %g
      : (tensor<?x16xbf16>, tensor<?x8x2xi64>, tensor<?x8x2xi1>,
         tensor<?x8x2xf32>) -> tensor<?x8x16xbf16>
  return %y : tensor<?x8x16xbf16>
}

// -----

// The expert outputs are also returned: fusing would run the MLPs twice, so
// nothing changes.

// CHECK-LABEL: func.func @outputs_used_twice
// CHECK:       moe.dispatch
// CHECK:       moe.experts
// CHECK:       moe.combine
// CHECK-NOT:   moe.routed_experts
func.func @outputs_used_twice(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>,
                              %pos: tensor<2x8x1xi64>, %kept: tensor<2x8x1xi1>,
                              %g: tensor<2x8x1xf32>, %w1: tensor<4x16x32xf32>,
                              %w2: tensor<4x32x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<4x6x16xf32>) {
  %c3 = arith.constant 3 : index
  %buf = moe.dispatch %x, %e, %pos, %kept, %c3
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, index) -> tensor<4x2x3x16xf32>
  %flat = tensor.collapse_shape %buf [[0], [1, 2], [3]]
      : tensor<4x2x3x16xf32> into tensor<4x6x16xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<4x6x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<4x6x16xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 3, 16]
      : tensor<4x6x16xf32> into tensor<4x2x3x16xf32>
  %y = moe.combine %ob, %e, %pos, %kept, %g
      : (tensor<4x2x3x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, tensor<2x8x1xf32>) -> tensor<2x8x16xf32>
  return %y, %o : tensor<2x8x16xf32>, tensor<4x6x16xf32>
}

// -----

// Dispatch and combine read different routing (here, different kept masks):
// not the same computation, so nothing changes.

// CHECK-LABEL: func.func @different_routing
// CHECK-NOT:   moe.routed_experts
// CHECK:       moe.combine
func.func @different_routing(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>,
                             %pos: tensor<2x8x1xi64>, %kept: tensor<2x8x1xi1>,
                             %kept2: tensor<2x8x1xi1>, %g: tensor<2x8x1xf32>,
                             %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> tensor<2x8x16xf32> {
  %c3 = arith.constant 3 : index
  %buf = moe.dispatch %x, %e, %pos, %kept, %c3
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, index) -> tensor<4x2x3x16xf32>
  %flat = tensor.collapse_shape %buf [[0], [1, 2], [3]]
      : tensor<4x2x3x16xf32> into tensor<4x6x16xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<4x6x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<4x6x16xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 3, 16]
      : tensor<4x6x16xf32> into tensor<4x2x3x16xf32>
  %y = moe.combine %ob, %e, %pos, %kept2, %g
      : (tensor<4x2x3x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>,
         tensor<2x8x1xi1>, tensor<2x8x1xf32>) -> tensor<2x8x16xf32>
  return %y : tensor<2x8x16xf32>
}

// -----

// Expert choice: dispatch, the reshapes, experts and combine become one
// moe.chosen_experts that reads the same tokens, gates and probabilities.

// CHECK-LABEL: func.func @expert_choice
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %[[T:[a-z0-9]+]]: tensor<?x4x4xi64>, %[[G:[a-z0-9]+]]: tensor<?x4x4xf32>, %[[P:[a-z0-9]+]]: tensor<?x8x4xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xf32>)
// CHECK:       %[[Y:.+]] = moe.chosen_experts %[[X]], %[[T]], %[[G]], %[[P]] weights(w1 %[[W1]] w2 %[[W2]]) {activation = #moe.activation<relu>}
// CHECK-NOT:   moe.expert_choice_dispatch
// CHECK:       return %[[Y]]
func.func @expert_choice(%x: tensor<?x8x16xf32>, %tok: tensor<?x4x4xi64>,
                         %g: tensor<?x4x4xf32>, %p: tensor<?x8x4xf32>,
                         %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> tensor<?x8x16xf32> {
  %c1 = arith.constant 1 : index
  %buf = moe.expert_choice_dispatch %x, %tok
      : (tensor<?x8x16xf32>, tensor<?x4x4xi64>) -> tensor<4x?x4x16xf32>
  %flat = tensor.collapse_shape %buf [[0], [1, 2], [3]]
      : tensor<4x?x4x16xf32> into tensor<4x?x16xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<4x?x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<4x?x16xf32>
  %ng = tensor.dim %buf, %c1 : tensor<4x?x4x16xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, %ng, 4, 16]
      : tensor<4x?x16xf32> into tensor<4x?x4x16xf32>
  %y = moe.expert_choice_combine %ob, %tok, %g, %p
      : (tensor<4x?x4x16xf32>, tensor<?x4x4xi64>, tensor<?x4x4xf32>,
         tensor<?x8x4xf32>) -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}
