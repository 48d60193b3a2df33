// RUN: moe-opt %s -moe-decompose -split-input-file -verify-diagnostics

// A batch's tokens as one group, with B and S both dynamic: reshaping them
// back to [B, S, D] would crash MLIR 22's expand-strided-metadata later.
func.func @ffn_dynamic_batch_and_sequence(%x: tensor<?x?x16xf32>, %w1: tensor<16x32xf32>, %w2: tensor<32x16xf32>) -> tensor<?x?x16xf32> {
  // expected-error @+1 {{'moe.ffn' op groups the tokens of a batch whose size and sequence length are both dynamic, which the CPU pipeline does not support: give the sequence length a static size}}
  %y = moe.ffn %x weights(w1 %w1 w2 %w2) {activation = #moe.activation<relu>}
      : (tensor<?x?x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>) -> tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}

// -----

func.func @token_choice_batch_group(%x: tensor<?x?x16xf32>, %wr: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>) -> tensor<?x?x16xf32> {
  // expected-error @+1 {{'moe.token_choice' op groups the tokens of a batch}}
  %y:7 = moe.token_choice %x router(%wr) experts(w1 %w1 w2 %w2) {activation = #moe.activation<relu>, group = #moe.group<batch>}
      : (tensor<?x?x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> (tensor<?x?x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>, tensor<i64>, tensor<i64>)
  return %y#0 : tensor<?x?x16xf32>
}
