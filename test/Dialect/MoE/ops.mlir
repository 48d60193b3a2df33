// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// Every op of the moe dialect with every attribute, printed and parsed back.

// CHECK-LABEL: func.func @token_choice_defaults
func.func @token_choice_defaults(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x8x16xf32> {
  // CHECK: %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} = moe.token_choice %{{[a-zA-Z0-9_#]+}} router(%{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<relu>, capacity_factor = 1.250000e+00 : f64}
  %y, %aux, %z, %counts, %dropped, %unrouted, %cap = moe.token_choice %x router(%wr)
      experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.25 : f64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y : tensor<?x8x16xf32>
}

// CHECK-LABEL: func.func @token_choice_every_option
func.func @token_choice_every_option(%x: tensor<2x8x16xbf16>, %wr: tensor<16x4xf32>,
    %br: tensor<4xf32>, %w1: tensor<4x16x32xbf16>, %wg: tensor<4x16x32xbf16>,
    %w2: tensor<4x32x16xbf16>, %b1: tensor<4x32xbf16>, %b2: tensor<4x16xbf16>) -> tensor<2x8x16xbf16> {
  // CHECK: moe.token_choice %{{[a-zA-Z0-9_#]+}} router(%{{[a-zA-Z0-9_#]+}} bias %{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} wg %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}} b1 %{{[a-zA-Z0-9_#]+}} b2 %{{[a-zA-Z0-9_#]+}})
  // CHECK-SAME: activation = #moe.activation<swiglu>
  // CHECK-SAME: aux_loss_weight = 2.000000e-02 : f64
  // CHECK-SAME: capacity_factor = 2.000000e+00 : f64
  // CHECK-SAME: group = #moe.group<batch>
  // CHECK-SAME: jitter = 1.000000e-02 : f64
  // CHECK-SAME: min_capacity = 4 : i64
  // CHECK-SAME: normalize_gates
  // CHECK-SAME: priority = #moe.priority<batch>
  // CHECK-SAME: top_k = 2 : i64
  // CHECK-SAME: z_loss_weight = 1.000000e-02 : f64
  %y:7 = moe.token_choice %x router(%wr bias %br)
      experts(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2)
      {activation = #moe.activation<swiglu>, top_k = 2 : i64, capacity_factor = 2.0 : f64,
       min_capacity = 4 : i64, normalize_gates, priority = #moe.priority<batch>,
       group = #moe.group<batch>, aux_loss_weight = 0.02 : f64, z_loss_weight = 0.01 : f64,
       jitter = 0.01 : f64}
      : (tensor<2x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>, tensor<4x16x32xbf16>,
         tensor<4x16x32xbf16>, tensor<4x32x16xbf16>, tensor<4x32xbf16>, tensor<4x16xbf16>)
      -> (tensor<2x8x16xbf16>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y#0 : tensor<2x8x16xbf16>
}

// CHECK-LABEL: func.func @token_choice_capacity_forms
func.func @token_choice_capacity_forms(%x: tensor<2x8x16xf16>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf16>, %w2: tensor<4x32x16xf16>) {
  // CHECK: moe.token_choice
  // CHECK-SAME: {activation = #moe.activation<gelu>, expert_capacity = 3 : i64, reroute_dropped}
  %a:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu>, expert_capacity = 3 : i64, reroute_dropped}
      : (tensor<2x8x16xf16>, tensor<16x4xf32>, tensor<4x16x32xf16>, tensor<4x32x16xf16>)
      -> (tensor<2x8x16xf16>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  // Neither a factor nor a capacity: dropless.
  // CHECK: moe.token_choice
  // CHECK-SAME: {activation = #moe.activation<gelu_tanh>}
  %b:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu_tanh>}
      : (tensor<2x8x16xf16>, tensor<16x4xf32>, tensor<4x16x32xf16>, tensor<4x32x16xf16>)
      -> (tensor<2x8x16xf16>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// CHECK-LABEL: func.func @expert_choice
func.func @expert_choice(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>, %br: tensor<4xf32>,
    %w1: tensor<4x16x32xf32>, %wg: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>,
    %b1: tensor<4x32xf32>, %b2: tensor<4x16xf32>) {
  // CHECK: moe.expert_choice %{{[a-zA-Z0-9_#]+}} router(%{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<silu>}
  %a:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<silu>}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  // CHECK: moe.expert_choice %{{[a-zA-Z0-9_#]+}} router(%{{[a-zA-Z0-9_#]+}} bias %{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} wg %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}} b1 %{{[a-zA-Z0-9_#]+}} b2 %{{[a-zA-Z0-9_#]+}})
  // CHECK-SAME: {activation = #moe.activation<geglu>, capacity_factor = 1.000000e+00 : f64, group = #moe.group<batch>, jitter = 5.000000e-02 : f64, min_capacity = 2 : i64, z_loss_weight = 0.000000e+00 : f64}
  %b:5 = moe.expert_choice %x router(%wr bias %br) experts(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2)
      {activation = #moe.activation<geglu>, capacity_factor = 1.0 : f64, min_capacity = 2 : i64,
       group = #moe.group<batch>, z_loss_weight = 0.0 : f64, jitter = 0.05 : f64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4xf32>, tensor<4x16x32xf32>,
         tensor<4x16x32xf32>, tensor<4x32x16xf32>, tensor<4x32xf32>, tensor<4x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  // CHECK: moe.expert_choice
  // CHECK-SAME: expert_capacity = 5 : i64
  %c:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<relu>, expert_capacity = 5 : i64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  return
}

// CHECK-LABEL: func.func @soft_moe
func.func @soft_moe(%x: tensor<?x8x16xf32>, %phi: tensor<16x8xf32>, %s: tensor<f32>,
    %w1: tensor<4x16x32xf32>, %wg: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>,
    %b1: tensor<4x32xf32>, %b2: tensor<4x16xf32>) {
  // CHECK: moe.soft_moe %{{[a-zA-Z0-9_#]+}} phi(%{{[a-zA-Z0-9_#]+}} scale %{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}})
  // CHECK-SAME: {activation = #moe.activation<gelu>, slots_per_expert = 2 : i64}
  %a = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2)
      {activation = #moe.activation<gelu>, slots_per_expert = 2 : i64}
      : (tensor<?x8x16xf32>, tensor<16x8xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<?x8x16xf32>
  // CHECK: moe.soft_moe %{{[a-zA-Z0-9_#]+}} phi(%{{[a-zA-Z0-9_#]+}} scale %{{[a-zA-Z0-9_#]+}}) experts(w1 %{{[a-zA-Z0-9_#]+}} wg %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}} b1 %{{[a-zA-Z0-9_#]+}} b2 %{{[a-zA-Z0-9_#]+}})
  // CHECK-SAME: {activation = #moe.activation<swiglu>, group = #moe.group<batch>, noise_std = 1.000000e-01 : f64, normalize = false, slots_per_expert = 2 : i64}
  %b = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2)
      {activation = #moe.activation<swiglu>, slots_per_expert = 2 : i64, normalize = false,
       group = #moe.group<batch>, noise_std = 0.1 : f64}
      : (tensor<?x8x16xf32>, tensor<16x8xf32>, tensor<f32>, tensor<4x16x32xf32>,
         tensor<4x16x32xf32>, tensor<4x32x16xf32>, tensor<4x32xf32>, tensor<4x16xf32>)
      -> tensor<?x8x16xf32>
  return
}

// CHECK-LABEL: func.func @ffn_norm_residual
func.func @ffn_norm_residual(%x: tensor<?x8x16xf32>, %w1: tensor<16x32xf32>,
    %wg: tensor<16x32xf32>, %w2: tensor<32x16xf32>, %b1: tensor<32xf32>, %b2: tensor<16xf32>,
    %nw: tensor<16xf32>, %nb: tensor<16xf32>) -> tensor<?x8x16xf32> {
  // CHECK: %[[N:[a-zA-Z0-9_#]+]] = moe.norm rms %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} : (tensor<?x8x16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  %n = moe.norm rms %x, %nw : (tensor<?x8x16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.norm layer %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} : (tensor<?x8x16xf32>, tensor<16xf32>, tensor<16xf32>)
  %l = moe.norm layer %n, %nw, %nb : (tensor<?x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.ffn %{{[a-zA-Z0-9_#]+}} weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<relu>}
  %f = moe.ffn %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.ffn %{{[a-zA-Z0-9_#]+}} weights(w1 %{{[a-zA-Z0-9_#]+}} wg %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}} b1 %{{[a-zA-Z0-9_#]+}} b2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<geglu>}
  %g = moe.ffn %f weights(w1 %w1 wg %wg w2 %w2 b1 %b1 b2 %b2) {activation = #moe.activation<geglu>}
      : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<32x16xf32>,
         tensor<32xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.residual %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} : tensor<?x8x16xf32>
  %y = moe.residual %x, %g : tensor<?x8x16xf32>
  return %y : tensor<?x8x16xf32>
}

// CHECK-LABEL: func.func @token_choice_routing
func.func @token_choice_routing(%x: tensor<?x8x16xf32>, %wr: tensor<16x4xf32>, %br: tensor<4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // CHECK: %[[Z:[a-zA-Z0-9_#]+]] = moe.router_logits %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} {jitter = 1.000000e-01 : f64} : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4xf32>) -> tensor<?x8x4xf32>
  %z = moe.router_logits %x, %wr, %br {jitter = 0.1 : f64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4xf32>) -> tensor<?x8x4xf32>
  // CHECK: %[[P:[a-zA-Z0-9_#]+]] = moe.router_probs %[[Z]] : tensor<?x8x4xf32>
  %p = moe.router_probs %z : tensor<?x8x4xf32>
  // CHECK: %[[C:[a-zA-Z0-9_#]+]] = moe.expert_capacity %[[P]] {capacity_factor = 1.500000e+00 : f64, min_capacity = 1 : i64, top_k = 2 : i64} : tensor<?x8x4xf32>
  %c = moe.expert_capacity %p {top_k = 2 : i64, capacity_factor = 1.5 : f64, min_capacity = 1 : i64}
      : tensor<?x8x4xf32>
  // CHECK: moe.expert_capacity %[[P]] {expert_capacity = 2 : i64} : tensor<?x8x4xf32>
  %c2 = moe.expert_capacity %p {expert_capacity = 2 : i64} : tensor<?x8x4xf32>
  // CHECK: %[[E:[a-zA-Z0-9_#]+]], %[[G:[a-zA-Z0-9_#]+]], %[[POS:[a-zA-Z0-9_#]+]], %[[K:[a-zA-Z0-9_#]+]] = moe.token_choice_route %[[P]], %[[C]] {normalize_gates, priority = #moe.priority<batch>, top_k = 2 : i64}
  %e, %g, %pos, %kept = moe.token_choice_route %p, %c
      {top_k = 2 : i64, normalize_gates, priority = #moe.priority<batch>}
      : (tensor<?x8x4xf32>, index)
      -> (tensor<?x8x2xi64>, tensor<?x8x2xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>)
  // CHECK: moe.token_choice_route %[[P]], %[[C]] {reroute_dropped}
  %e1:4 = moe.token_choice_route %p, %c {reroute_dropped}
      : (tensor<?x8x4xf32>, index)
      -> (tensor<?x8x1xi64>, tensor<?x8x1xf32>, tensor<?x8x1xi64>, tensor<?x8x1xi1>)
  // CHECK: %[[BUF:[a-zA-Z0-9_#]+]] = moe.dispatch %{{[a-zA-Z0-9_#]+}}, %[[E]], %[[POS]], %[[K]], %[[C]]
  %buf = moe.dispatch %x, %e, %pos, %kept, %c
      : (tensor<?x8x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi64>, tensor<?x8x2xi1>, index)
      -> tensor<4x?x6x16xf32>
  %flat = tensor.collapse_shape %buf [[0], [1, 2], [3]] : tensor<4x?x6x16xf32> into tensor<4x?x16xf32>
  // CHECK: moe.experts %{{[a-zA-Z0-9_#]+}} weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<relu>}
  %o = moe.experts %flat weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<4x?x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<4x?x16xf32>
  // CHECK: moe.combine %[[BUF]], %[[E]], %[[POS]], %[[K]], %[[G]]
  %y = moe.combine %buf, %e, %pos, %kept, %g
      : (tensor<4x?x6x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi64>, tensor<?x8x2xi1>, tensor<?x8x2xf32>)
      -> tensor<?x8x16xf32>
  // CHECK: %[[ROWS:[a-zA-Z0-9_#]+]], %[[OFF:[a-zA-Z0-9_#]+]], %[[SLOTS:[a-zA-Z0-9_#]+]] = moe.dispatch_grouped %{{[a-zA-Z0-9_#]+}}, %[[E]], %[[K]]
  %rows, %offsets, %slots = moe.dispatch_grouped %x, %e, %kept
      : (tensor<?x8x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>)
      -> (tensor<?x16xf32>, tensor<5xi64>, tensor<?x8x2xi64>)
  // CHECK: %[[GO:[a-zA-Z0-9_#]+]] = moe.grouped_experts %[[ROWS]], %[[OFF]] weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<silu>}
  %go = moe.grouped_experts %rows, %offsets weights(w1 %w1 w2 %w2) {activation = #moe.activation<silu>}
      : (tensor<?x16xf32>, tensor<5xi64>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x16xf32>
  // CHECK: moe.combine_grouped %[[GO]], %[[SLOTS]], %[[K]], %[[G]]
  %gy = moe.combine_grouped %go, %slots, %kept, %g
      : (tensor<?x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>, tensor<?x8x2xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.routed_experts %{{[a-zA-Z0-9_#]+}}, %[[E]], %[[K]], %[[G]] capacity %[[C]] weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<relu>}
  %ry = moe.routed_experts %x, %e, %kept, %g capacity %c weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>, tensor<?x8x2xf32>, index, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.routed_experts %{{[a-zA-Z0-9_#]+}}, %[[E]], %[[K]], %[[G]] weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<silu>}
  %rdy = moe.routed_experts %x, %e, %kept, %g weights(w1 %w1 w2 %w2) {activation = #moe.activation<silu>}
      : (tensor<?x8x16xf32>, tensor<?x8x2xi64>, tensor<?x8x2xi1>, tensor<?x8x2xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x8x16xf32>
  // CHECK: moe.load_balancing_loss %[[P]] {top_k = 2 : i64, weight = 1.000000e-01 : f64} : tensor<?x8x4xf32>
  %aux = moe.load_balancing_loss %p {top_k = 2 : i64, weight = 0.1 : f64} : tensor<?x8x4xf32>
  // CHECK: moe.z_loss %[[Z]] {weight = 1.000000e-02 : f64} : tensor<?x8x4xf32>
  %zl = moe.z_loss %z {weight = 0.01 : f64} : tensor<?x8x4xf32>
  // CHECK: moe.routing_stats %[[E]], %[[K]] : (tensor<?x8x2xi64>, tensor<?x8x2xi1>) -> (tensor<4xi64>, tensor<i64>, tensor<i64>)
  %counts, %dropped, %unrouted = moe.routing_stats %e, %kept
      : (tensor<?x8x2xi64>, tensor<?x8x2xi1>) -> (tensor<4xi64>, tensor<i64>, tensor<i64>)
  return
}

// CHECK-LABEL: func.func @expert_choice_routing
func.func @expert_choice_routing(%x: tensor<2x8x16xf32>, %p: tensor<2x8x4xf32>,
    %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  %c = arith.constant 4 : index
  // CHECK: %[[T:[a-zA-Z0-9_#]+]], %[[G:[a-zA-Z0-9_#]+]] = moe.expert_choice_route %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} : (tensor<2x8x4xf32>, index) -> (tensor<2x4x4xi64>, tensor<2x4x4xf32>)
  %tok, %gate = moe.expert_choice_route %p, %c
      : (tensor<2x8x4xf32>, index) -> (tensor<2x4x4xi64>, tensor<2x4x4xf32>)
  // CHECK: %[[B:[a-zA-Z0-9_#]+]] = moe.expert_choice_dispatch %{{[a-zA-Z0-9_#]+}}, %[[T]] : (tensor<2x8x16xf32>, tensor<2x4x4xi64>) -> tensor<4x2x4x16xf32>
  %buf = moe.expert_choice_dispatch %x, %tok
      : (tensor<2x8x16xf32>, tensor<2x4x4xi64>) -> tensor<4x2x4x16xf32>
  // CHECK: moe.expert_choice_combine %[[B]], %[[T]], %[[G]], %{{[a-zA-Z0-9_#]+}}
  %y = moe.expert_choice_combine %buf, %tok, %gate, %p
      : (tensor<4x2x4x16xf32>, tensor<2x4x4xi64>, tensor<2x4x4xf32>, tensor<2x8x4xf32>)
      -> tensor<2x8x16xf32>
  // CHECK: moe.chosen_experts %{{[a-zA-Z0-9_#]+}}, %[[T]], %[[G]], %{{[a-zA-Z0-9_#]+}} weights(w1 %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<relu>}
  %cy = moe.chosen_experts %x, %tok, %gate, %p weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x4x4xi64>, tensor<2x4x4xf32>, tensor<2x8x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>)
      -> tensor<2x8x16xf32>
  // CHECK: moe.expert_choice_stats %[[T]], %{{[a-zA-Z0-9_#]+}} : (tensor<2x4x4xi64>, tensor<2x8x4xf32>) -> (tensor<4xi64>, tensor<i64>)
  %counts, %unrouted = moe.expert_choice_stats %tok, %p
      : (tensor<2x4x4xi64>, tensor<2x8x4xf32>) -> (tensor<4xi64>, tensor<i64>)
  return
}

// CHECK-LABEL: func.func @soft_routing
func.func @soft_routing(%x: tensor<?x8x16xbf16>, %phi: tensor<16x8xbf16>, %s: tensor<f32>) {
  // CHECK: %[[L:[a-zA-Z0-9_#]+]] = moe.soft_logits %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} {noise_std = 5.000000e-01 : f64, normalize = false}
  %l = moe.soft_logits %x, %phi, %s {normalize = false, noise_std = 0.5 : f64}
      : (tensor<?x8x16xbf16>, tensor<16x8xbf16>, tensor<f32>) -> tensor<?x8x8xf32>
  // CHECK: %[[XS:[a-zA-Z0-9_#]+]] = moe.soft_dispatch %{{[a-zA-Z0-9_#]+}}, %[[L]] {slots_per_expert = 2 : i64} : (tensor<?x8x16xbf16>, tensor<?x8x8xf32>) -> tensor<4x?x2x16xbf16>
  %xs = moe.soft_dispatch %x, %l {slots_per_expert = 2 : i64}
      : (tensor<?x8x16xbf16>, tensor<?x8x8xf32>) -> tensor<4x?x2x16xbf16>
  // CHECK: moe.soft_combine %[[L]], %[[XS]] : (tensor<?x8x8xf32>, tensor<4x?x2x16xbf16>) -> tensor<?x8x16xbf16>
  %y = moe.soft_combine %l, %xs : (tensor<?x8x8xf32>, tensor<4x?x2x16xbf16>) -> tensor<?x8x16xbf16>
  return
}

// CHECK-LABEL: func.func @soft_experts
func.func @soft_experts(%x: tensor<?x8x16xbf16>, %l: tensor<?x8x8xf32>,
                        %w1: tensor<4x16x32xbf16>, %wg: tensor<4x16x32xbf16>,
                        %w2: tensor<4x32x16xbf16>, %b2: tensor<4x16xbf16>) {
  // CHECK: moe.soft_experts %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} weights(w1 %{{[a-zA-Z0-9_#]+}} wg %{{[a-zA-Z0-9_#]+}} w2 %{{[a-zA-Z0-9_#]+}} b2 %{{[a-zA-Z0-9_#]+}}) {activation = #moe.activation<geglu>, slots_per_expert = 2 : i64}
  %y = moe.soft_experts %x, %l weights(w1 %w1 wg %wg w2 %w2 b2 %b2)
      {activation = #moe.activation<geglu>, slots_per_expert = 2 : i64}
      : (tensor<?x8x16xbf16>, tensor<?x8x8xf32>, tensor<4x16x32xbf16>,
         tensor<4x16x32xbf16>, tensor<4x32x16xbf16>, tensor<4x16xbf16>)
      -> tensor<?x8x16xbf16>
  return
}

// CHECK-LABEL: func.func @token_choice_router
func.func @token_choice_router(%x: tensor<?x8x16xbf16>, %w: tensor<16x4xf32>, %b: tensor<4xf32>, %c: index) {
  // CHECK: moe.token_choice_router %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} bias %{{[a-zA-Z0-9_#]+}} capacity %{{[a-zA-Z0-9_#]+}} {normalize_gates, priority = #moe.priority<batch>, top_k = 2 : i64}
  %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %w bias %b capacity %c
      {top_k = 2 : i64, normalize_gates, priority = #moe.priority<batch>}
      : (tensor<?x8x16xbf16>, tensor<16x4xf32>, tensor<4xf32>, index)
      -> (tensor<?x8x4xf32>, tensor<?x8x4xf32>, tensor<?x8x2xi64>, tensor<?x8x2xf32>,
          tensor<?x8x2xi64>, tensor<?x8x2xi1>)
  // CHECK: moe.token_choice_router %{{[a-zA-Z0-9_#]+}}, %{{[a-zA-Z0-9_#]+}} capacity %{{[a-zA-Z0-9_#]+}} {reroute_dropped}
  %z1, %p1, %e1, %g1, %pos1, %kept1 = moe.token_choice_router %x, %w capacity %c {reroute_dropped}
      : (tensor<?x8x16xbf16>, tensor<16x4xf32>, index)
      -> (tensor<?x8x4xf32>, tensor<?x8x4xf32>, tensor<?x8x1xi64>, tensor<?x8x1xf32>,
          tensor<?x8x1xi64>, tensor<?x8x1xi1>)
  return
}

