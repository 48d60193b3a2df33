// RUN: moe-opt %s -split-input-file -verify-diagnostics

// One case per verifier check of the moe dialect. Each message says what
// was expected and what was found.

func.func @router_width(%x: tensor<2x8x16xf32>, %wr: tensor<8x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected router_weight of shape [D, E] = [16, ?], but found [8, 4]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<8x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @router_bias(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %br: tensor<3xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected router_bias of shape [E] = [4], but found [3]}}
  %r:7 = moe.token_choice %x router(%wr bias %br) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<3xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @router_dtype(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xbf16>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{operand #1 must be 2D tensor of 32-bit float values, but got 'tensor<16x4xbf16>'}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xbf16>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

// Layer weights are static and non-empty: a dynamic E once folded the
// capacity to 0, and an empty reduction crashed the tiling.
func.func @dynamic_experts(%x: tensor<2x8x16xf32>, %wr: tensor<16x?xf32>, %w1: tensor<?x16x32xf32>, %w2: tensor<?x32x16xf32>) {
  // expected-error @+1 {{expected router_weight to have a static shape, but found 'tensor<16x?xf32>'}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x?xf32>, tensor<?x16x32xf32>, tensor<?x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<?xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @empty_ffn(%x: tensor<?x8x16xf32>, %w1: tensor<16x0xf32>, %w2: tensor<0x16xf32>) {
  // expected-error @+1 {{expected w1 to have no empty dimension, but found 'tensor<16x0xf32>'}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x8x16xf32>, tensor<16x0xf32>, tensor<0x16xf32>) -> tensor<?x8x16xf32>
  return
}

// -----

func.func @empty_sequence(%x: tensor<2x0x16xf32>, %w1: tensor<16x32xf32>, %w2: tensor<32x16xf32>) {
  // expected-error @+1 {{expected x to have no empty dimension, but found 'tensor<2x0x16xf32>'}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x0x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>) -> tensor<2x0x16xf32>
  return
}

// -----

func.func @dynamic_width(%x: tensor<2x8x?xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected x to have a static model width D, but found 'tensor<2x8x?xf32>'}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x?xf32>, tensor<16x4xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x?xf32>
  return
}

// -----

func.func @experts_count(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<3x16x32xf32>, %w2: tensor<3x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have E = 4 experts (from router_weight), but found 3}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<3x16x32xf32>, tensor<3x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @experts_width(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x8x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have model width D = 16 (from the input), but found 8}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x8x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @gated_needs_wg(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{activation 'swiglu' is gated and needs a wg weight, but none was given}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<swiglu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @wg_not_gated(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %wg: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{a wg weight is only used by the gated activations swiglu and geglu, but the activation is 'relu'}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 wg %wg w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @wg_shape(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %wg: tensor<4x16x16xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected wg of shape [E, D, F] = [4, 16, 32], but found [4, 16, 16]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 wg %wg w2 %w2) {activation = #moe.activation<geglu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x16x16xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @w2_shape(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x16x16xf32>) {
  // expected-error @+1 {{expected w2 of shape [E, F, D] = [4, 32, 16], but found [4, 16, 16]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x16x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @b1_shape(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>, %b1: tensor<4x16xf32>) {
  // expected-error @+1 {{expected b1 of shape [E, F] = [4, 32], but found [4, 16]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2 b1 %b1) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @b2_shape(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x32xf32>) {
  // expected-error @+1 {{expected b2 of shape [E, D] = [4, 16], but found [4, 32]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2 b2 %b2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>, tensor<4x32xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @weight_dtype(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xbf16>) {
  // expected-error @+1 {{expected w2 to have element type 'f32' (expert weights use the model dtype), but found 'bf16'}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xbf16>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @top_k_too_large(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected 1 <= top_k <= E = 4, but found top_k = 5}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, top_k = 5 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @top_k_zero(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected 1 <= top_k <= E = 4, but found top_k = 0}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, top_k = 0 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @capacity_factor_negative(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected capacity_factor > 0, but found -1.000000e+00}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = -1.0 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @capacity_both(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expert_capacity overrides capacity_factor: give one of them, not both}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 1.0 : f64, expert_capacity = 4 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @expert_capacity_zero(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected expert_capacity >= 1, but found 0}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, expert_capacity = 0 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @min_capacity_negative(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected min_capacity >= 0, but found -2}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, min_capacity = -2 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @reroute_top2(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{reroute_dropped is defined for top_k = 1 only, but top_k = 2}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, top_k = 2 : i64, reroute_dropped}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @aux_weight_negative(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected aux_loss_weight >= 0, but found -1.000000e-02}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, aux_loss_weight = -0.01 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @z_weight_negative(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected z_loss_weight >= 0, but found -1.000000e+00}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, z_loss_weight = -1.0 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @jitter_range(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected 0 <= jitter < 1, but found 1.500000e+00}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, jitter = 1.5 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @result_type(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected y to have the type of x, 'tensor<2x8x16xf32>', but found 'tensor<2x8x16xf16>'}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf16>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @counts_shape(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected expert_counts of shape [E] = [4], but found [5]}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<5xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @activation_unknown(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+2 {{expected ::switchyard::moe::Activation to be one of: relu, gelu, gelu_tanh, silu, swiglu, geglu}}
  // expected-error @+1 {{failed to parse MoE_ActivationAttr parameter 'value' which is to be a `::switchyard::moe::Activation`}}
  %r:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<tanh>}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @ec_capacity_factor(%x: tensor<2x8x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected capacity_factor > 0, but found 0.000000e+00}}
  %r:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, capacity_factor = 0.0 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @ec_router(%x: tensor<2x8x16xf32>, %wr: tensor<32x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected router_weight of shape [D, E] = [16, ?], but found [32, 4]}}
  %r:5 = moe.expert_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<32x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @soft_slots_zero(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected slots_per_expert >= 1, but found 0}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 0 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_phi_slots(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected phi of shape [D, E * slots_per_expert] = [16, 8], but found [16, 4]}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 2 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_phi_dtype(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xbf16>, %s: tensor<f32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected phi to have element type 'f32' (phi uses the model dtype), but found 'bf16'}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<16x4xbf16>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_noise(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected noise_std >= 0, but found -1.000000e+00}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, noise_std = -1.0 : f64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<f32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @ffn_width(%x: tensor<2x8x16xf32>, %w1: tensor<8x32xf32>, %w2: tensor<32x16xf32>) {
  // expected-error @+1 {{expected w1 to have model width D = 16 (from the input), but found 8}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<2x8x16xf32>, tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @ffn_w2(%x: tensor<2x8x16xf32>, %w1: tensor<16x32xf32>, %w2: tensor<16x16xf32>) {
  // expected-error @+1 {{expected w2 of shape [F, D] = [32, 16], but found [16, 16]}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<2x8x16xf32>, tensor<16x32xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @norm_weight(%x: tensor<2x8x16xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{expected weight of shape [D] = [16], but found [8]}}
  %y = moe.norm rms %x, %w : (tensor<2x8x16xf32>, tensor<8xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @norm_layer_bias(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{layer norm needs a bias operand, but none was given}}
  %y = moe.norm layer %x, %w : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @norm_rms_bias(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{rms norm takes no bias, but one was given}}
  %y = moe.norm rms %x, %w, %w : (tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @norm_dtype(%x: tensor<2x8x16xf32>, %w: tensor<16xbf16>) {
  // expected-error @+1 {{expected weight to have element type 'f32' (norm weights use the model dtype), but found 'bf16'}}
  %y = moe.norm rms %x, %w : (tensor<2x8x16xf32>, tensor<16xbf16>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @residual_types(%x: tensor<2x8x16xf32>, %f: tensor<2x8x16xbf16>) {
  // expected-error @+1 {{requires the same type for all operands and results}}
  %y = "moe.residual"(%x, %f) : (tensor<2x8x16xf32>, tensor<2x8x16xbf16>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @logits_shape(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) {
  // expected-error @+1 {{expected logits of shape [NG, G, E] = [2, 8, 4], but found [2, 8, 5]}}
  %z = moe.router_logits %x, %w : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x5xf32>
  return
}

// -----

func.func @logits_jitter(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>) {
  // expected-error @+1 {{expected 0 <= jitter < 1, but found -1.000000e-01}}
  %z = moe.router_logits %x, %w {jitter = -0.1 : f64} : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @capacity_dynamic_experts(%p: tensor<2x8x?xf32>) {
  // expected-error @+1 {{expected a static number of experts E, but the probabilities have a dynamic last dimension}}
  %c = moe.expert_capacity %p {capacity_factor = 1.0 : f64} : tensor<2x8x?xf32>
  return
}

// -----

func.func @capacity_top_k(%p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected 1 <= top_k <= E = 4, but found top_k = 8}}
  %c = moe.expert_capacity %p {top_k = 8 : i64} : tensor<2x8x4xf32>
  return
}

// -----

func.func @capacity_factor(%p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected capacity_factor > 0, but found -5.000000e-01}}
  %c = moe.expert_capacity %p {capacity_factor = -0.5 : f64} : tensor<2x8x4xf32>
  return
}

// -----

func.func @route_shape(%p: tensor<2x8x4xf32>, %c: index) {
  // expected-error @+1 {{expected experts of shape [NG, G, top_k] = [2, 8, 2], but found [2, 8, 1]}}
  %r:4 = moe.token_choice_route %p, %c {top_k = 2 : i64} : (tensor<2x8x4xf32>, index) -> (tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return
}

// -----

func.func @route_top_k(%p: tensor<2x8x4xf32>, %c: index) {
  // expected-error @+1 {{expected 1 <= top_k <= E = 4, but found top_k = 6}}
  %r:4 = moe.token_choice_route %p, %c {top_k = 6 : i64} : (tensor<2x8x4xf32>, index) -> (tensor<2x8x6xi64>, tensor<2x8x6xf32>, tensor<2x8x6xi64>, tensor<2x8x6xi1>)
  return
}

// -----

func.func @route_reroute(%p: tensor<2x8x4xf32>, %c: index) {
  // expected-error @+1 {{reroute_dropped is defined for top_k = 1 only, but top_k = 2}}
  %r:4 = moe.token_choice_route %p, %c {top_k = 2 : i64, reroute_dropped} : (tensor<2x8x4xf32>, index) -> (tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>)
  return
}

// -----

func.func @dispatch_buffers(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %c: index) {
  // expected-error @+1 {{expected buffers of shape [E, NG, C, D] = [?, 2, ?, 16], but found [4, 3, 2, 16]}}
  %b = moe.dispatch %x, %e, %pos, %k, %c : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, index) -> tensor<4x3x2x16xf32>
  return
}

// -----

func.func @dispatch_capacity(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>) {
  %c = arith.constant 3 : index
  // expected-error @+1 {{expected the capacity dimension C to be 3 (the capacity operand), but found 2}}
  %b = moe.dispatch %x, %e, %pos, %k, %c : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, index) -> tensor<4x2x2x16xf32>
  return
}

// -----

func.func @dispatch_kept(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>, %k: tensor<2x8x2xi1>, %c: index) {
  // expected-error @+1 {{expected kept of shape [NG, G, k] = [2, 8, 1], but found [2, 8, 2]}}
  %b = moe.dispatch %x, %e, %pos, %k, %c : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x2xi1>, index) -> tensor<4x2x2x16xf32>
  return
}

// -----

func.func @combine_result(%o: tensor<4x2x2x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %g: tensor<2x8x1xf32>) {
  // expected-error @+1 {{expected y of shape [NG, G, D] = [2, 8, 16], but found [2, 8, 32]}}
  %y = moe.combine %o, %e, %pos, %k, %g : (tensor<4x2x2x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x1xf32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @combine_dtype(%o: tensor<4x2x2x16xf32>, %e: tensor<2x8x1xi64>, %pos: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %g: tensor<2x8x1xf32>) {
  // expected-error @+1 {{expected y to have element type 'f32' (the dtype of the expert outputs), but found 'f16'}}
  %y = moe.combine %o, %e, %pos, %k, %g : (tensor<4x2x2x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x1xf32>) -> tensor<2x8x16xf16>
  return
}

// -----

func.func @grouped_rows(%x: tensor<2x8x16xf32>, %e: tensor<2x8x2xi64>, %k: tensor<2x8x2xi1>) {
  // expected-error @+1 {{expected rows of shape [NG * G * k, D] = [32, 16], but found [16, 16]}}
  %r:3 = moe.dispatch_grouped %x, %e, %k : (tensor<2x8x16xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>) -> (tensor<16x16xf32>, tensor<5xi64>, tensor<2x8x2xi64>)
  return
}

// -----

func.func @grouped_offsets(%x: tensor<2x8x16xf32>, %e: tensor<2x8x2xi64>, %k: tensor<2x8x2xi1>) {
  // expected-error @+1 {{expected offsets of static shape [E + 1] with E >= 1, but found 'tensor<?xi64>'}}
  %r:3 = moe.dispatch_grouped %x, %e, %k : (tensor<2x8x16xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>) -> (tensor<32x16xf32>, tensor<?xi64>, tensor<2x8x2xi64>)
  return
}

// -----

func.func @combine_grouped_rows(%o: tensor<30x16xf32>, %s: tensor<2x8x2xi64>, %k: tensor<2x8x2xi1>, %g: tensor<2x8x2xf32>) {
  // expected-error @+1 {{expected expert_outputs of shape [NG * G * k, D] = [32, ?], but found [30, 16]}}
  %y = moe.combine_grouped %o, %s, %k, %g : (tensor<30x16xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>, tensor<2x8x2xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @experts_count_input(%in: tensor<3x10x16xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have E = 3 experts (from the input), but found 4}}
  %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<3x10x16xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<3x10x16xf32>
  return
}

// -----

func.func @grouped_experts_count(%r: tensor<10x16xf32>, %off: tensor<4xi64>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have E = 3 experts (from offsets, which has E + 1 entries), but found 4}}
  %o = moe.grouped_experts %r, %off weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<10x16xf32>, tensor<4xi64>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<10x16xf32>
  return
}

// -----

func.func @ec_route_shape(%p: tensor<2x8x4xf32>, %c: index) {
  // expected-error @+1 {{expected tokens of shape [NG, E, C] = [2, 4, ?], but found [2, 8, 4]}}
  %t:2 = moe.expert_choice_route %p, %c : (tensor<2x8x4xf32>, index) -> (tensor<2x8x4xi64>, tensor<2x8x4xf32>)
  return
}

// -----

func.func @ec_route_capacity_past_group(%p: tensor<2x8x4xf32>) {
  %c = arith.constant 20 : index
  // expected-error @+1 {{expected the capacity C = 20 to be at most the group size G = 8}}
  %t:2 = moe.expert_choice_route %p, %c : (tensor<2x8x4xf32>, index) -> (tensor<2x4x20xi64>, tensor<2x4x20xf32>)
  return
}

// -----

func.func @ec_route_capacity(%p: tensor<2x8x4xf32>) {
  %c = arith.constant 2 : index
  // expected-error @+1 {{expected the capacity dimension C to be 2 (the capacity operand), but found 4}}
  %t:2 = moe.expert_choice_route %p, %c : (tensor<2x8x4xf32>, index) -> (tensor<2x4x4xi64>, tensor<2x4x4xf32>)
  return
}

// -----

func.func @ec_dispatch_shape(%x: tensor<2x8x16xf32>, %t: tensor<2x4x3xi64>) {
  // expected-error @+1 {{expected buffers of shape [E, NG, C, D] = [4, 2, 3, 16], but found [4, 2, 4, 16]}}
  %b = moe.expert_choice_dispatch %x, %t : (tensor<2x8x16xf32>, tensor<2x4x3xi64>) -> tensor<4x2x4x16xf32>
  return
}

// -----

func.func @ec_combine_probs(%o: tensor<4x2x3x16xf32>, %t: tensor<2x4x3xi64>, %g: tensor<2x4x3xf32>, %p: tensor<2x8x5xf32>) {
  // expected-error @+1 {{expected probs of shape [NG, G, E] = [2, ?, 4], but found [2, 8, 5]}}
  %y = moe.expert_choice_combine %o, %t, %g, %p : (tensor<4x2x3x16xf32>, tensor<2x4x3xi64>, tensor<2x4x3xf32>, tensor<2x8x5xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_logits_phi(%x: tensor<2x8x16xf32>, %phi: tensor<8x4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expected phi of shape [D, S] = [16, ?], but found [8, 4]}}
  %l = moe.soft_logits %x, %phi, %s : (tensor<2x8x16xf32>, tensor<8x4xf32>, tensor<f32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @soft_logits_shape(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{expected logits of shape [NG, m, S] = [2, 8, 4], but found [2, 8, 3]}}
  %l = moe.soft_logits %x, %phi, %s : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<f32>) -> tensor<2x8x3xf32>
  return
}

// -----

func.func @soft_dispatch_divisible(%x: tensor<2x8x16xf32>, %l: tensor<2x8x5xf32>) {
  // expected-error @+1 {{expected a static number of slots S divisible by slots_per_expert = 2, but found S = 5}}
  %s = moe.soft_dispatch %x, %l {slots_per_expert = 2 : i64} : (tensor<2x8x16xf32>, tensor<2x8x5xf32>) -> tensor<2x2x2x16xf32>
  return
}

// -----

func.func @soft_dispatch_layout(%x: tensor<2x8x16xf32>, %l: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected slots of shape [S / slots_per_expert, NG, slots_per_expert, D] = [4, 2, 1, 16], but found [2, 2, 2, 16]}}
  %s = moe.soft_dispatch %x, %l : (tensor<2x8x16xf32>, tensor<2x8x4xf32>) -> tensor<2x2x2x16xf32>
  return
}

// -----

func.func @soft_combine_shape(%l: tensor<2x8x4xf32>, %ys: tensor<4x2x1x16xf32>) {
  // expected-error @+1 {{expected y of shape [NG, m, D] = [2, 8, 16], but found [2, 4, 16]}}
  %y = moe.soft_combine %l, %ys : (tensor<2x8x4xf32>, tensor<4x2x1x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @lb_loss_top_k(%p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected 1 <= top_k <= E = 4, but found top_k = 5}}
  %a = moe.load_balancing_loss %p {top_k = 5 : i64} : tensor<2x8x4xf32>
  return
}

// -----

func.func @lb_loss_weight(%p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected weight >= 0, but found -1.000000e+00}}
  %a = moe.load_balancing_loss %p {weight = -1.0 : f64} : tensor<2x8x4xf32>
  return
}

// -----

func.func @stats_counts(%e: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>) {
  // expected-error @+1 {{expected expert_counts of static shape [E], but found 'tensor<?xi64>'}}
  %s:3 = moe.routing_stats %e, %k : (tensor<2x8x1xi64>, tensor<2x8x1xi1>) -> (tensor<?xi64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @stats_kept(%e: tensor<2x8x1xi64>, %k: tensor<2x8x2xi1>) {
  // expected-error @+1 {{expected kept of shape [NG, G, k] = [2, 8, 1], but found [2, 8, 2]}}
  %s:3 = moe.routing_stats %e, %k : (tensor<2x8x1xi64>, tensor<2x8x2xi1>) -> (tensor<4xi64>, tensor<i64>, tensor<i64>)
  return
}

// -----

func.func @ec_stats_counts(%t: tensor<2x4x3xi64>, %p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{expected expert_counts of shape [E] = [4], but found [3]}}
  %s:2 = moe.expert_choice_stats %t, %p : (tensor<2x4x3xi64>, tensor<2x8x4xf32>) -> (tensor<3xi64>, tensor<i64>)
  return
}

// -----

func.func @routed_experts_gates(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %g: tensor<2x8x2xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected gates of shape [NG, G, k] = [2, 8, 1], but found [2, 8, 2]}}
  %y = moe.routed_experts %x, %e, %k, %g weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x2xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @routed_experts_width(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %g: tensor<2x8x1xf32>, %w1: tensor<4x8x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have model width D = 16 (from the input), but found 8}}
  %y = moe.routed_experts %x, %e, %k, %g weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x1xf32>, tensor<4x8x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @routed_experts_result(%x: tensor<2x8x16xf32>, %e: tensor<2x8x1xi64>, %k: tensor<2x8x1xi1>, %g: tensor<2x8x1xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected y to have the type of x, 'tensor<2x8x16xf32>', but found 'tensor<2x8x16xbf16>'}}
  %y = moe.routed_experts %x, %e, %k, %g weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>, tensor<2x8x1xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xbf16>
  return
}

// -----

func.func @chosen_experts_tokens(%x: tensor<2x8x16xf32>, %t: tensor<2x3x4xi64>, %g: tensor<2x3x4xf32>, %p: tensor<2x8x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected tokens of shape [NG, E, C] = [2, 4, ?], but found [2, 3, 4]}}
  %y = moe.chosen_experts %x, %t, %g, %p weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x3x4xi64>, tensor<2x3x4xf32>, tensor<2x8x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_experts_slots(%x: tensor<2x8x16xf32>, %l: tensor<2x8x6xf32>, %w1: tensor<3x16x32xf32>, %w2: tensor<3x32x16xf32>) {
  // expected-error @+1 {{expected a static number of slots S divisible by slots_per_expert = 4, but found S = 6}}
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 4 : i64}
      : (tensor<2x8x16xf32>, tensor<2x8x6xf32>, tensor<3x16x32xf32>, tensor<3x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_experts_experts(%x: tensor<2x8x16xf32>, %l: tensor<2x8x6xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) {
  // expected-error @+1 {{expected w1 to have E = 3 experts (from S / slots_per_expert), but found 4}}
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 2 : i64}
      : (tensor<2x8x16xf32>, tensor<2x8x6xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_experts_logits(%x: tensor<2x8x16xf32>, %l: tensor<2x7x6xf32>, %w1: tensor<6x16x32xf32>, %w2: tensor<6x32x16xf32>) {
  // expected-error @+1 {{expected logits of shape [NG, m, S] = [2, 8, ?], but found [2, 7, 6]}}
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<2x8x16xf32>, tensor<2x7x6xf32>, tensor<6x16x32xf32>, tensor<6x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @soft_experts_slots_per_expert(%x: tensor<2x8x16xf32>, %l: tensor<2x8x6xf32>, %w1: tensor<6x16x32xf32>, %w2: tensor<6x32x16xf32>) {
  // expected-error @+1 {{expected slots_per_expert >= 1, but found 0}}
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 0 : i64}
      : (tensor<2x8x16xf32>, tensor<2x8x6xf32>, tensor<6x16x32xf32>, tensor<6x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @token_choice_router_reroute(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>, %c: index) {
  // expected-error @+1 {{reroute_dropped is defined for top_k = 1 only, but top_k = 2}}
  %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %w capacity %c {top_k = 2 : i64, reroute_dropped}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, index)
      -> (tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x8x2xi64>, tensor<2x8x2xf32>, tensor<2x8x2xi64>, tensor<2x8x2xi1>)
  return
}

// -----

func.func @token_choice_router_probs(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>, %c: index) {
  // expected-error @+1 {{expected probs of shape [NG, G, E] = [2, 8, 4], but found [2, 8, 3]}}
  %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %w capacity %c
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, index)
      -> (tensor<2x8x4xf32>, tensor<2x8x3xf32>, tensor<2x8x1xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return
}

// -----

func.func @token_choice_router_experts(%x: tensor<2x8x16xf32>, %w: tensor<16x4xf32>, %c: index) {
  // expected-error @+1 {{expected experts of shape [NG, G, top_k] = [2, 8, 1], but found [2, 8, 2]}}
  %z, %p, %e, %g, %pos, %kept = moe.token_choice_router %x, %w capacity %c
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, index)
      -> (tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x8x2xi64>, tensor<2x8x1xf32>, tensor<2x8x1xi64>, tensor<2x8x1xi1>)
  return
}

// -----

func.func @experts_empty_width(%in: tensor<4x6x0xf32>, %w1: tensor<4x0x32xf32>, %w2: tensor<4x32x0xf32>) {
  // expected-error @+1 {{expected w1 to have no empty dimension, but found 'tensor<4x0x32xf32>'}}
  %o = moe.experts %in weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<4x6x0xf32>, tensor<4x0x32xf32>, tensor<4x32x0xf32>) -> tensor<4x6x0xf32>
  return
}

// -----

func.func @load_balancing_loss_dynamic_experts(%p: tensor<2x8x?xf32>) {
  // expected-error @+1 {{expected probs with a static number of experts E, but found 'tensor<2x8x?xf32>'}}
  %a = moe.load_balancing_loss %p {top_k = 3 : i64} : tensor<2x8x?xf32>
  return
}

// -----

func.func @soft_moe_slots_overflow(%x: tensor<2x8x16xf32>, %phi: tensor<16x4xf32>, %s: tensor<f32>, %w1: tensor<2x16x32xf32>, %w2: tensor<2x32x16xf32>) {
  // expected-error @+1 {{expected E * slots_per_expert to fit in 64 bits, but E = 2 and slots_per_expert = 4611686018427387904}}
  %y = moe.soft_moe %x phi(%phi scale %s) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, slots_per_expert = 4611686018427387904 : i64}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<f32>, tensor<2x16x32xf32>, tensor<2x32x16xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

// Routing-level ops need k, E and D static (only NG, G and C follow the
// batch): the lowering unrolls over k, and a dynamic k combined nothing.
func.func @combine_dynamic_k(%out: tensor<4x2x3x16xf32>, %e: tensor<2x8x?xi64>, %pos: tensor<2x8x?xi64>, %kept: tensor<2x8x?xi1>, %g: tensor<2x8x?xf32>) {
  // expected-error @+1 {{expected a static number of choices k (dimension 2 of experts), but found 'tensor<2x8x?xi64>'}}
  %y = moe.combine %out, %e, %pos, %kept, %g : (tensor<4x2x3x16xf32>, tensor<2x8x?xi64>, tensor<2x8x?xi64>, tensor<2x8x?xi1>, tensor<2x8x?xf32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @expert_choice_stats_dynamic_experts(%p: tensor<2x8x4xf32>, %t: tensor<2x4x3xi64>) {
  // expected-error @+1 {{expected a static number of experts E (dimension 0 of expert_counts), but found 'tensor<?xi64>'}}
  %c, %u = moe.expert_choice_stats %t, %p : (tensor<2x4x3xi64>, tensor<2x8x4xf32>) -> (tensor<?xi64>, tensor<i64>)
  return
}

// -----

func.func @soft_experts_dynamic_width(%x: tensor<1x8x?xf32>, %l: tensor<1x8x2xf32>, %w1: tensor<2x?x32xf32>, %w2: tensor<2x32x?xf32>) {
  // expected-error @+1 {{expected a static model width D (dimension 2 of x), but found 'tensor<1x8x?xf32>'}}
  %y = moe.soft_experts %x, %l weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>} : (tensor<1x8x?xf32>, tensor<1x8x2xf32>, tensor<2x?x32xf32>, tensor<2x32x?xf32>) -> tensor<1x8x?xf32>
  return
}
