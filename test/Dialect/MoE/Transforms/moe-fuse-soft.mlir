// RUN: moe-opt %s -moe-fuse-soft -split-input-file | FileCheck %s

// Soft MoE: dispatch, the reshapes, experts and combine over the same logits
// become one moe.soft_experts that keeps slots_per_expert and the weights.

// CHECK-LABEL: func.func @soft
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x10x64xf32>, %[[L:[a-z0-9]+]]: tensor<?x10x8xf32>, %[[W1:[a-z0-9]+]]: tensor<4x64x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x64xf32>)
// CHECK-NEXT:  %[[Y:.+]] = moe.soft_experts %[[X]], %[[L]] weights(w1 %[[W1]] w2 %[[W2]]) {activation = #moe.activation<gelu>, slots_per_expert = 2 : i64} : (tensor<?x10x64xf32>, tensor<?x10x8xf32>, tensor<4x64x32xf32>, tensor<4x32x64xf32>) -> tensor<?x10x64xf32>
// CHECK-NEXT:  return %[[Y]]
func.func @soft(%x: tensor<?x10x64xf32>, %l: tensor<?x10x8xf32>,
                %w1: tensor<4x64x32xf32>, %w2: tensor<4x32x64xf32>)
    -> tensor<?x10x64xf32> {
  %c1 = arith.constant 1 : index
  %s = moe.soft_dispatch %x, %l {slots_per_expert = 2 : i64}
      : (tensor<?x10x64xf32>, tensor<?x10x8xf32>) -> tensor<4x?x2x64xf32>
  %flat = tensor.collapse_shape %s [[0], [1, 2], [3]]
      : tensor<4x?x2x64xf32> into tensor<4x?x64xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu>}
      : (tensor<4x?x64xf32>, tensor<4x64x32xf32>, tensor<4x32x64xf32>)
      -> tensor<4x?x64xf32>
  %ng = tensor.dim %s, %c1 : tensor<4x?x2x64xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, %ng, 2, 64]
      : tensor<4x?x64xf32> into tensor<4x?x2x64xf32>
  %y = moe.soft_combine %l, %ob
      : (tensor<?x10x8xf32>, tensor<4x?x2x64xf32>) -> tensor<?x10x64xf32>
  return %y : tensor<?x10x64xf32>
}

// -----

// One slot per expert, bf16, a gated activation with biases.

// CHECK-LABEL: func.func @gated
// CHECK-NEXT:  %[[Y:.+]] = moe.soft_experts %{{.+}}, %{{.+}} weights(w1 %{{.+}} wg %{{.+}} w2 %{{.+}} b1 %{{.+}} b2 %{{.+}}) {activation = #moe.activation<swiglu>} : (tensor<2x16x32xbf16>, tensor<2x16x4xf32>
// CHECK-NEXT:  return %[[Y]]
func.func @gated(%x: tensor<2x16x32xbf16>, %l: tensor<2x16x4xf32>,
                 %w1: tensor<4x32x64xbf16>, %wg: tensor<4x32x64xbf16>,
                 %w2: tensor<4x64x32xbf16>, %b1: tensor<4x64xbf16>,
                 %b2: tensor<4x32xbf16>) -> tensor<2x16x32xbf16> {
  %s = moe.soft_dispatch %x, %l
      : (tensor<2x16x32xbf16>, tensor<2x16x4xf32>) -> tensor<4x2x1x32xbf16>
  %flat = tensor.collapse_shape %s [[0], [1, 2], [3]]
      : tensor<4x2x1x32xbf16> into tensor<4x2x32xbf16>
  %o = moe.experts %flat weights(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2)
      {activation = #moe.activation<swiglu>}
      : (tensor<4x2x32xbf16>, tensor<4x32x64xbf16>, tensor<4x32x64xbf16>,
         tensor<4x64x32xbf16>, tensor<4x64xbf16>, tensor<4x32xbf16>)
      -> tensor<4x2x32xbf16>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 1, 32]
      : tensor<4x2x32xbf16> into tensor<4x2x1x32xbf16>
  %y = moe.soft_combine %l, %ob
      : (tensor<2x16x4xf32>, tensor<4x2x1x32xbf16>) -> tensor<2x16x32xbf16>
  return %y : tensor<2x16x32xbf16>
}

// -----

// Dispatch and combine read different logits: not one Soft MoE layer.

// CHECK-LABEL: func.func @different_logits
// CHECK-NOT:   moe.soft_experts
// CHECK:       moe.soft_combine
func.func @different_logits(%x: tensor<2x16x32xf32>, %l: tensor<2x16x4xf32>,
                            %l2: tensor<2x16x4xf32>, %w1: tensor<4x32x64xf32>,
                            %w2: tensor<4x64x32xf32>) -> tensor<2x16x32xf32> {
  %s = moe.soft_dispatch %x, %l
      : (tensor<2x16x32xf32>, tensor<2x16x4xf32>) -> tensor<4x2x1x32xf32>
  %flat = tensor.collapse_shape %s [[0], [1, 2], [3]]
      : tensor<4x2x1x32xf32> into tensor<4x2x32xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<4x2x32xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
      -> tensor<4x2x32xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 1, 32]
      : tensor<4x2x32xf32> into tensor<4x2x1x32xf32>
  %y = moe.soft_combine %l2, %ob
      : (tensor<2x16x4xf32>, tensor<4x2x1x32xf32>) -> tensor<2x16x32xf32>
  return %y : tensor<2x16x32xf32>
}

// -----

// The expert outputs are also returned: fusing would run the MLPs twice.

// CHECK-LABEL: func.func @outputs_used
// CHECK-NOT:   moe.soft_experts
// CHECK:       moe.soft_combine
func.func @outputs_used(%x: tensor<2x16x32xf32>, %l: tensor<2x16x4xf32>,
                        %w1: tensor<4x32x64xf32>, %w2: tensor<4x64x32xf32>)
    -> (tensor<2x16x32xf32>, tensor<4x2x32xf32>) {
  %s = moe.soft_dispatch %x, %l
      : (tensor<2x16x32xf32>, tensor<2x16x4xf32>) -> tensor<4x2x1x32xf32>
  %flat = tensor.collapse_shape %s [[0], [1, 2], [3]]
      : tensor<4x2x1x32xf32> into tensor<4x2x32xf32>
  %o = moe.experts %flat weights(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>}
      : (tensor<4x2x32xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>)
      -> tensor<4x2x32xf32>
  %ob = tensor.expand_shape %o [[0], [1, 2], [3]] output_shape [4, 2, 1, 32]
      : tensor<4x2x32xf32> into tensor<4x2x1x32xf32>
  %y = moe.soft_combine %l, %ob
      : (tensor<2x16x4xf32>, tensor<4x2x1x32xf32>) -> tensor<2x16x32xf32>
  return %y, %o : tensor<2x16x32xf32>, tensor<4x2x32xf32>
}
