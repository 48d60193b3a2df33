// RUN: moe-opt %s -moe-fuse-router -split-input-file | FileCheck %s

// The router product, its softmax and token-choice routing become one
// moe.token_choice_router; the losses read its logits and probabilities.

// CHECK-LABEL: func.func @router
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xbf16>, %[[W:[a-z0-9]+]]: tensor<16x4xf32>, %[[B:[a-z0-9]+]]: tensor<4xf32>)
// CHECK:       %[[C3:.+]] = arith.constant 3 : index
// CHECK-NEXT:  %[[Z:.+]], %[[P:.+]], %[[E:.+]], %[[G:.+]], %[[POS:.+]], %[[K:.+]] = moe.token_choice_router %[[X]], %[[W]] bias %[[B]] capacity %[[C3]] {normalize_gates, priority = #moe.priority<batch>, top_k = 2 : i64} : (tensor<2x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>, index) -> (tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>)
// CHECK-NEXT:  %[[AUX:.+]] = moe.load_balancing_loss %[[P]]
// CHECK-NEXT:  %[[ZL:.+]] = moe.z_loss %[[Z]]
// CHECK-NEXT:  return %[[E]], %[[G]], %[[POS]], %[[K]], %[[AUX]], %[[ZL]]
func.func @router(%x: tensor<2x8x16xbf16>, %w: tensor<16x4xf32>, %b: tensor<4xf32>)
    -> (tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>,
        tensor<f32>, tensor<f32>) {
  %c3 = arith.constant 3 : index
  %z = moe.router_logits %x, %w, %b
      : (tensor<2x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>) -> tensor<2x8x4xf32>
  %p = moe.router_probs %z : tensor<2x8x4xf32>
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c3
      {top_k = 2 : i64, normalize_gates, priority = #moe.priority<batch>}
      : (tensor<2x8x4xf32>, index)
      -> (tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>)
  %aux = moe.load_balancing_loss %p {top_k = 2 : i64} : tensor<2x8x4xf32>
  %zl = moe.z_loss %z : tensor<2x8x4xf32>
  return %e, %g, %pos, %kept, %aux, %zl
      : tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>,
        tensor<f32>, tensor<f32>
}

// -----

// A dynamic group size: the capacity read the probabilities' shape, so it is
// recomputed from the same shape before the router.

// CHECK-LABEL: func.func @dynamic_capacity
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<1x?x16xf32>, %[[W:[a-z0-9]+]]: tensor<16x4xf32>)
// CHECK:       %[[G:.+]] = tensor.dim %[[X]], %{{.+}} : tensor<1x?x16xf32>
// CHECK-NEXT:  %[[SHAPE:.+]] = tensor.empty(%[[G]]) : tensor<1x?x4xf32>
// CHECK-NEXT:  %[[C:.+]] = moe.expert_capacity %[[SHAPE]] {capacity_factor = 1.250000e+00 : f64} : tensor<1x?x4xf32>
// CHECK-NEXT:  %{{.+}}, %{{.+}}, %[[E:.+]], %{{.+}}, %{{.+}}, %[[K:.+]] = moe.token_choice_router %[[X]], %[[W]] capacity %[[C]]
// CHECK-NOT:   moe.expert_capacity
// CHECK:       return %[[E]], %[[K]], %[[C]]
func.func @dynamic_capacity(%x: tensor<1x?x16xf32>, %w: tensor<16x4xf32>)
    -> (tensor<1x?x1xi64>, tensor<1x?x1xi1>, index) {
  %z = moe.router_logits %x, %w : (tensor<1x?x16xf32>, tensor<16x4xf32>) -> tensor<1x?x4xf32>
  %p = moe.router_probs %z : tensor<1x?x4xf32>
  %c = moe.expert_capacity %p {capacity_factor = 1.25 : f64} : tensor<1x?x4xf32>
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c
      : (tensor<1x?x4xf32>, index)
      -> (tensor<1x?x1xi64>, tensor<1x?x1xf32>, tensor<1x?x1xi64>, tensor<1x?x1xi1>)
  return %e, %kept, %c : tensor<1x?x1xi64>, tensor<1x?x1xi1>, index
}

// -----

// Router jitter is a training option: left unfused.

// CHECK-LABEL: func.func @jitter
// CHECK:       %[[Z:.+]] = moe.router_logits {{.+}} {jitter = 1.000000e-02 : f64}
// CHECK-NEXT:  %[[P:.+]] = moe.router_probs %[[Z]]
// CHECK-NEXT:  moe.token_choice_route %[[P]],
// CHECK-NOT:   moe.token_choice_router
// CHECK:       return
func.func @jitter(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) -> tensor<2x8x1xi64> {
  %c3 = arith.constant 3 : index
  %z = moe.router_logits %x, %w {jitter = 0.01 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  %p = moe.router_probs %z : tensor<2x8x4xf32>
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c3
      : (tensor<2x8x4xf32>, index)
      -> (tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return %e : tensor<2x8x1xi64>
}

// -----

// Probabilities that do not come from moe.router_logits stay as they are.

// CHECK-LABEL: func.func @given_probs
// CHECK-NOT:   moe.token_choice_router
// CHECK:       moe.token_choice_route %arg0,
// CHECK-NOT:   moe.token_choice_router
// CHECK:       return
func.func @given_probs(%p: tensor<2x8x4xf32>) -> tensor<2x8x1xi64> {
  %c3 = arith.constant 3 : index
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c3
      : (tensor<2x8x4xf32>, index)
      -> (tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return %e : tensor<2x8x1xi64>
}
