// RUN: moe-opt %s -moe-decompose -split-input-file | FileCheck %s

// Top-1 with a capacity factor, one group per sequence: G = 8, E = 4,
// C = ceil(1 * 8 * 1.25 / 4) = 3 folds to a constant; capacity buffers.

// CHECK-LABEL: func.func @token_choice_capacity
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xf32>, %[[WR:[a-z0-9]+]]: tensor<16x4xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xf32>)
// CHECK-DAG:   %[[CAPT:.+]] = arith.constant dense<3> : tensor<i64>
// CHECK-DAG:   %[[C3:.+]] = arith.constant 3 : index
// CHECK:       %[[Z:.+]] = moe.router_logits %[[X]], %[[WR]] : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
// CHECK:       %[[P:.+]] = moe.router_probs %[[Z]] : tensor<2x8x4xf32>
// CHECK:       %[[E:[a-z0-9_]+]], %[[G:[a-z0-9_]+]], %[[POS:[a-z0-9_]+]], %[[K:[a-z0-9_]+]] = moe.token_choice_route %[[P]], %[[C3]] : (tensor<2x8x4xf32>, index) -> (tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
// CHECK:       %[[BUF:.+]] = moe.dispatch %[[X]], %[[E]], %[[POS]], %[[K]], %[[C3]] : {{.+}} -> tensor<4x2x3x16xf32>
// CHECK:       %[[FLAT:.+]] = tensor.collapse_shape %[[BUF]] {{\[}}[0], [1, 2], [3]] : tensor<4x2x3x16xf32> into tensor<4x6x16xf32>
// CHECK:       %[[OUT:.+]] = moe.experts %[[FLAT]] weights(w1 %[[W1]] w2 %[[W2]]) {activation = #moe.activation<relu>} : {{.+}} -> tensor<4x6x16xf32>
// CHECK:       %[[OUTB:.+]] = tensor.expand_shape %[[OUT]] {{\[}}[0], [1, 2], [3]] output_shape [4, 2, 3, 16]
// CHECK:       %[[Y:.+]] = moe.combine %[[OUTB]], %[[E]], %[[POS]], %[[K]], %[[G]] : {{.+}} -> tensor<2x8x16xf32>
// CHECK:       %[[AUX:.+]] = moe.load_balancing_loss %[[P]] : tensor<2x8x4xf32>
// CHECK:       %[[ZL:.+]] = moe.z_loss %[[Z]] : tensor<2x8x4xf32>
// CHECK:       %[[CNT:[a-z0-9_]+]], %[[DROP:[a-z0-9_]+]], %[[UNR:[a-z0-9_]+]] = moe.routing_stats %[[E]], %[[K]]
// CHECK:       return %[[Y]], %[[AUX]], %[[ZL]], %[[CNT]], %[[DROP]], %[[UNR]], %[[CAPT]]
func.func @token_choice_capacity(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>) {
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %r#0, %r#1, %r#2, %r#3, %r#4, %r#5, %r#6
      : tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>
}

// -----

// group = batch over a dynamic batch: all B * S tokens form one group, so G
// and C are dynamic; the capacity stays an op and sizes the buffers.

// CHECK-LABEL: func.func @token_choice_batch_group
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>
// CHECK:       %[[FLAT:.+]] = tensor.collapse_shape %[[X]] {{\[}}[0, 1], [2]] : tensor<?x8x16xf32> into tensor<?x16xf32>
// CHECK:       %[[N:.+]] = tensor.dim %[[FLAT]]
// CHECK:       %[[GX:.+]] = tensor.expand_shape %[[FLAT]] {{\[}}[0, 1], [2]] output_shape [1, %[[N]], 16] : tensor<?x16xf32> into tensor<1x?x16xf32>
// CHECK:       %[[Z:.+]] = moe.router_logits %[[GX]]
// CHECK:       %[[P:.+]] = moe.router_probs %[[Z]] : tensor<1x?x4xf32>
// CHECK:       %[[C:.+]] = moe.expert_capacity %[[P]] {capacity_factor = 2.000000e+00 : f64, min_capacity = 2 : i64, top_k = 2 : i64} : tensor<1x?x4xf32>
// CHECK:       moe.token_choice_route %[[P]], %[[C]] {normalize_gates, priority = #moe.priority<batch>, top_k = 2 : i64} : (tensor<1x?x4xf32>, index) -> (tensor<1x?x2xi64>, tensor<1x?x2xf32>, tensor<1x?x2xi64>, tensor<1x?x2xi1>)
// CHECK:       %[[BUF:.+]] = moe.dispatch %[[GX]], {{.+}}, %[[C]] : {{.+}} -> tensor<4x1x?x16xf32>
// CHECK:       %[[YG:.+]] = moe.combine {{.+}} -> tensor<1x?x16xf32>
// CHECK:       %[[YF:.+]] = tensor.collapse_shape %[[YG]] {{\[}}[0, 1], [2]] : tensor<1x?x16xf32> into tensor<?x16xf32>
// CHECK:       %[[B:.+]] = tensor.dim %[[X]]
// CHECK:       %[[Y:.+]] = tensor.expand_shape %[[YF]] {{\[}}[0, 1], [2]] output_shape [%[[B]], 8, 16] : tensor<?x16xf32> into tensor<?x8x16xf32>
// CHECK:       moe.load_balancing_loss %[[P]] {top_k = 2 : i64} : tensor<1x?x4xf32>
// CHECK:       %[[CAP:.+]] = arith.index_cast %[[C]] : index to i64
// CHECK:       tensor.from_elements %[[CAP]] : tensor<i64>
// CHECK:       return %[[Y]]
func.func @token_choice_batch_group(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> (tensor<?x8x16xf32>, tensor<f32>, tensor<i64>) {
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, top_k = 2 : i64, capacity_factor = 2.0 : f64,
       min_capacity = 2 : i64, normalize_gates, priority = #moe.priority<batch>,
       group = #moe.group<batch>}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %r#0, %r#1, %r#6 : tensor<?x8x16xf32>, tensor<f32>, tensor<i64>
}

// -----

// Dropless: C = G = 8; no capacity buffers, assignments sorted by expert.

// CHECK-LABEL: func.func @token_choice_dropless
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %{{[a-z0-9]+}}: tensor<16x4xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xf32>)
// CHECK:       %[[C:.+]] = arith.constant 8 : index
// CHECK:       %[[P:.+]] = moe.router_probs
// CHECK:       %[[E:[a-z0-9_]+]], %[[G:[a-z0-9_]+]], %{{[a-z0-9_]+}}, %[[K:[a-z0-9_]+]] = moe.token_choice_route %[[P]], %[[C]] {top_k = 2 : i64}
// CHECK-NOT:   moe.dispatch %
// CHECK:       %[[ROWS:[a-z0-9_]+]], %[[OFF:[a-z0-9_]+]], %[[SLOTS:[a-z0-9_]+]] = moe.dispatch_grouped %[[X]], %[[E]], %[[K]] : (tensor<?x8x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>) -> (tensor<?x16xf32>, tensor<5xi64>, tensor<?x8x2xi64>)
// CHECK:       %[[OUT:.+]] = moe.grouped_experts %[[ROWS]], %[[OFF]] weights(w1 %[[W1]] w2 %[[W2]]) {activation = #moe.activation<silu>}
// CHECK:       %[[Y:.+]] = moe.combine_grouped %[[OUT]], %[[SLOTS]], %[[K]], %[[G]] : {{.+}} -> tensor<?x8x16xf32>
// CHECK-NOT:   moe.combine %
// CHECK:       return %[[Y]]
func.func @token_choice_dropless(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x8x16xf32> {
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<silu>, top_k = 2 : i64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %r#0 : tensor<?x8x16xf32>
}

// -----

// Every routing option reaches the op that implements it: the router bias
// and jitter the logits, reroute_dropped and priority the routing, the loss
// weights the losses, the gated weights and biases the experts. An explicit
// capacity caps at G: min(16, 8) = 8.

// CHECK-LABEL: func.func @token_choice_options
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xbf16>, %[[WR:[a-z0-9]+]]: tensor<16x4xf32>, %[[BR:[a-z0-9]+]]: tensor<4xf32>, %[[W1:[a-z0-9]+]]: tensor<4x16x32xbf16>, %[[WG:[a-z0-9]+]]: tensor<4x16x32xbf16>, %[[W2:[a-z0-9]+]]: tensor<4x32x16xbf16>, %[[B1:[a-z0-9]+]]: tensor<4x32xbf16>, %[[B2:[a-z0-9]+]]: tensor<4x16xbf16>)
// CHECK:       %[[C8:.+]] = arith.constant 8 : index
// CHECK:       %[[Z:.+]] = moe.router_logits %[[X]], %[[WR]], %[[BR]] {jitter = 1.000000e-01 : f64} : (tensor<2x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>) -> tensor<2x8x4xf32>
// CHECK:       %[[P:.+]] = moe.router_probs %[[Z]]
// CHECK:       moe.token_choice_route %[[P]], %[[C8]] {priority = #moe.priority<batch>, reroute_dropped}
// CHECK:       moe.dispatch {{.+}} -> tensor<4x2x8x16xbf16>
// CHECK:       moe.experts %{{.+}} weights(w1 %[[W1]] wg %[[WG]] w2 %[[W2]] b1 %[[B1]] b2 %[[B2]]) {activation = #moe.activation<swiglu>} : {{.+}} -> tensor<4x16x16xbf16>
// CHECK:       moe.combine {{.+}} -> tensor<2x8x16xbf16>
// CHECK:       moe.load_balancing_loss %[[P]] {weight = 1.000000e-01 : f64}
// CHECK:       moe.z_loss %[[Z]] {weight = 0.000000e+00 : f64}
func.func @token_choice_options(%x: tensor<2x8x16xbf16>, %wr: tensor<16x4xf32>, %br: tensor<4xf32>,
    %w1: tensor<4x16x32xbf16>, %wg: tensor<4x16x32xbf16>, %w2: tensor<4x32x16xbf16>,
    %b1: tensor<4x32xbf16>, %b2: tensor<4x16xbf16>) -> (tensor<2x8x16xbf16>, tensor<f32>, tensor<f32>) {
  %r:7 = moe.token_choice %x router(%wr bias %br) experts(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2)
      {activation = #moe.activation<swiglu>, expert_capacity = 16 : i64, reroute_dropped,
       priority = #moe.priority<batch>, aux_loss_weight = 0.1 : f64, z_loss_weight = 0.0 : f64,
       jitter = 0.1 : f64}
      : (tensor<2x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>, tensor<4x16x32xbf16>,
         tensor<4x16x32xbf16>, tensor<4x32x16xbf16>, tensor<4x32xbf16>, tensor<4x16xbf16>)
      -> (tensor<2x8x16xbf16>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %r#0, %r#1, %r#2 : tensor<2x8x16xbf16>, tensor<f32>, tensor<f32>
}

// -----

// Expert choice: C = ceil(G * cf / E) = ceil(8 * 2 / 4) = 4 with the default
// factor 2.0; each expert gathers its C tokens.

// CHECK-LABEL: func.func @expert_choice
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<2x8x16xf32>
// CHECK-DAG:   %[[CAPT:.+]] = arith.constant dense<4> : tensor<i64>
// CHECK-DAG:   %[[C4:.+]] = arith.constant 4 : index
// CHECK:       %[[Z:.+]] = moe.router_logits %[[X]]
// CHECK:       %[[P:.+]] = moe.router_probs %[[Z]]
// CHECK:       %[[T:[a-z0-9_]+]], %[[G:[a-z0-9_]+]] = moe.expert_choice_route %[[P]], %[[C4]] : (tensor<2x8x4xf32>, index) -> (tensor<2x4x4xi64>, tensor<2x4x4xf32>)
// CHECK:       %[[BUF:.+]] = moe.expert_choice_dispatch %[[X]], %[[T]] : (tensor<2x8x16xf32>, tensor<2x4x4xi64>) -> tensor<4x2x4x16xf32>
// CHECK:       %[[FLAT:.+]] = tensor.collapse_shape %[[BUF]]
// CHECK:       %[[OUT:.+]] = moe.experts %[[FLAT]]
// CHECK:       %[[OUTB:.+]] = tensor.expand_shape %[[OUT]]
// CHECK:       %[[Y:.+]] = moe.expert_choice_combine %[[OUTB]], %[[T]], %[[G]], %[[P]]
// CHECK:       %[[ZL:.+]] = moe.z_loss %[[Z]]
// CHECK:       %[[CNT:[a-z0-9_]+]], %[[UNR:[a-z0-9_]+]] = moe.expert_choice_stats %[[T]], %[[P]]
// CHECK-NOT:   moe.load_balancing_loss
// CHECK:       return %[[Y]], %[[ZL]], %[[CNT]], %[[UNR]], %[[CAPT]]
func.func @expert_choice(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>) {
  %r:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  return %r#0, %r#1, %r#2, %r#3, %r#4 : tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>
}

// -----

// An explicit expert-choice capacity overrides the factor: C = min(2, 8).

// CHECK-LABEL: func.func @expert_choice_explicit_capacity
// CHECK:       %[[C2:.+]] = arith.constant 2 : index
// CHECK:       moe.expert_choice_route %{{.+}}, %[[C2]] : (tensor<2x8x4xf32>, index) -> (tensor<2x4x2xi64>, tensor<2x4x2xf32>)
func.func @expert_choice_explicit_capacity(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  %r:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, expert_capacity = 2 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  return %r#0 : tensor<2x8x16xf32>
}

// -----

// Soft MoE with two slots per expert: slots are laid out [E, NG, P, D] so
// the experts see [E, NG * P, D].

// CHECK-LABEL: func.func @soft_moe
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %[[PHI:[a-z0-9]+]]: tensor<16x8xf32>, %[[S:[a-z0-9]+]]: tensor<f32>
// CHECK:       %[[L:.+]] = moe.soft_logits %[[X]], %[[PHI]], %[[S]] {normalize = false} : (tensor<?x8x16xf32>, tensor<16x8xf32>, tensor<f32>) -> tensor<?x8x8xf32>
// CHECK:       %[[XS:.+]] = moe.soft_dispatch %[[X]], %[[L]] {slots_per_expert = 2 : i64} : (tensor<?x8x16xf32>, tensor<?x8x8xf32>) -> tensor<4x?x2x16xf32>
// CHECK:       %[[FLAT:.+]] = tensor.collapse_shape %[[XS]] {{\[}}[0], [1, 2], [3]] : tensor<4x?x2x16xf32> into tensor<4x?x16xf32>
// CHECK:       %[[OUT:.+]] = moe.experts %[[FLAT]]
// CHECK:       %[[YS:.+]] = tensor.expand_shape %[[OUT]] {{\[}}[0], [1, 2], [3]] output_shape [4, %{{.+}}, 2, 16]
// CHECK:       %[[Y:.+]] = moe.soft_combine %[[L]], %[[YS]] : (tensor<?x8x8xf32>, tensor<4x?x2x16xf32>) -> tensor<?x8x16xf32>
// CHECK:       return %[[Y]]
func.func @soft_moe(%x: tensor<?x8x16xf32>, %phi: tensor<16x8xf32>, %s: tensor<f32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x8x16xf32> {
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu>, slots_per_expert = 2 : i64, normalize = false}
      : (tensor<?x8x16xf32>, tensor<16x8xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// Soft MoE over batch groups with the default normalization.

// CHECK-LABEL: func.func @soft_moe_batch_group
// CHECK:       %[[GX:.+]] = tensor.expand_shape {{.+}} into tensor<1x?x16xf32>
// CHECK:       %[[L:.+]] = moe.soft_logits %[[GX]], %{{.+}}, %{{.+}} : (tensor<1x?x16xf32>, tensor<16x4xf32>, tensor<f32>) -> tensor<1x?x4xf32>
// CHECK:       moe.soft_dispatch %[[GX]], %[[L]] : (tensor<1x?x16xf32>, tensor<1x?x4xf32>) -> tensor<4x1x1x16xf32>
func.func @soft_moe_batch_group(%x: tensor<?x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x8x16xf32> {
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, group = #moe.group<batch>}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// A dense FFN is one expert over all tokens.

// CHECK-LABEL: func.func @ffn
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %[[W1:[a-z0-9]+]]: tensor<16x32xf32>, %[[WG:[a-z0-9]+]]: tensor<16x32xf32>, %[[W2:[a-z0-9]+]]: tensor<32x16xf32>, %[[B1:[a-z0-9]+]]: tensor<32xf32>)
// CHECK:       %[[ROWS:.+]] = tensor.expand_shape {{.+}} into tensor<1x?x16xf32>
// CHECK-DAG:   %[[EW1:.+]] = tensor.expand_shape %[[W1]] {{\[}}[0, 1], [2]] output_shape [1, 16, 32] : tensor<16x32xf32> into tensor<1x16x32xf32>
// CHECK-DAG:   %[[EWG:.+]] = tensor.expand_shape %[[WG]] {{\[}}[0, 1], [2]] output_shape [1, 16, 32]
// CHECK-DAG:   %[[EW2:.+]] = tensor.expand_shape %[[W2]] {{\[}}[0, 1], [2]] output_shape [1, 32, 16]
// CHECK-DAG:   %[[EB1:.+]] = tensor.expand_shape %[[B1]] {{\[}}[0, 1]] output_shape [1, 32]
// CHECK:       %[[OUT:.+]] = moe.experts %[[ROWS]] weights(w1 %[[EW1]] wg %[[EWG]] w2 %[[EW2]] b1 %[[EB1]]) {activation = #moe.activation<swiglu>} : {{.+}} -> tensor<1x?x16xf32>
// CHECK:       %[[FLAT:.+]] = tensor.collapse_shape %[[OUT]]
// CHECK:       %[[Y:.+]] = tensor.expand_shape %[[FLAT]] {{.+}} into tensor<?x8x16xf32>
// CHECK:       return %[[Y]]
func.func @ffn(%x: tensor<?x8x16xf32>, %w1: tensor<16x32xf32>, %wg: tensor<16x32xf32>,
    %w2: tensor<32x16xf32>, %b1: tensor<32xf32>) -> tensor<?x8x16xf32> {
  %y = moe.ffn %x weights(w1 %w1 wg %wg w2 %w2 b1 %b1) {activation = #moe.activation<swiglu>}
      : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<32xf32>)
      -> tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// Norms stay; the residual connection becomes an addition.

// CHECK-LABEL: func.func @norm_residual
// CHECK-SAME: (%[[X:[a-z0-9]+]]: tensor<?x8x16xf32>, %[[W:[a-z0-9]+]]: tensor<16xf32>)
// CHECK:       %[[N:.+]] = moe.norm rms %[[X]], %[[W]]
// CHECK:       %[[Y:.+]] = arith.addf %[[X]], %[[N]] : tensor<?x8x16xf32>
// CHECK-NOT:   moe.residual
// CHECK:       return %[[Y]]
func.func @norm_residual(%x: tensor<?x8x16xf32>, %w: tensor<16xf32>) -> tensor<?x8x16xf32> {
  %n = moe.norm rms %x, %w : (tensor<?x8x16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  %y = moe.residual %x, %n : tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// -----

// A positive factor keeps at least a row, as the ceiling of a positive
// number is: 1 * 8 * 5e-324 / 4 underflows to 0 in float64, but C = 1.

// CHECK-LABEL: func.func @subnormal_capacity_factor
// CHECK:       %[[C1:.+]] = arith.constant 1 : index
// CHECK:       moe.token_choice_route %{{.+}}, %[[C1]]
func.func @subnormal_capacity_factor(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<2x8x16xf32> {
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, capacity_factor = 4.9406564584124654E-324 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %r#0 : tensor<2x8x16xf32>
}
